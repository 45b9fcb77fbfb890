"""Cascade search: recall@10 against exhaustive full-budget search, and speed-up, over K'.

First stages: exhaustive search at (1, 1) and at (4, 8) on the contiguous tiers,
and an HNSW graph (hnswlib) over each candidate's first vector. The rerank scores
the first stage's ``K'`` candidates at the full budget (16, 64). Ground truth is
exhaustive (16, 64) search on the same index; speed-up is its time per query
divided by the cascade's, both measured on the same batch of queries.

The data are synthetic nested multi-vectors with structure (no trained encoder
is reachable offline): candidates belong to clusters, each has a gist (its first
vector, low noise) and facets (later vectors); a query is a noisy view of one
candidate's gist and facets. How well (1, 1) predicts (16, 64) on real MetaEmbed
embeddings is what the paper's table 3 measures; this benchmark measures the
machinery (speed, and recall on data where the first vector is informative).

Usage::

    .venv/bin/python bench/cascade.py            # N = 20,000, D = 128, float16
    .venv/bin/python bench/cascade.py --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metaembed.index.cascade import CascadeSearcher
from metaembed.index.multivector import MultiVectorIndex

RESULTS = Path(__file__).parent / "results" / "cascade.json"


def unit(values: np.ndarray) -> np.ndarray:
    return (values / np.linalg.norm(values, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(num_candidates: int, num_queries: int, dim: int, seed: int = 0):
    """Clustered candidates (N, 64, D) with a gist first vector and facets; queries (Nq, 16, D)."""
    rng = np.random.default_rng(seed)
    clusters = unit(rng.standard_normal((max(1, num_candidates // 100), dim)))
    assignment = rng.integers(0, len(clusters), num_candidates)
    gists = unit(
        clusters[assignment] + 0.8 * unit(rng.standard_normal((num_candidates, dim)))
    )  # (N, D)
    facets = unit(
        gists[:, None] + 0.9 * unit(rng.standard_normal((num_candidates, 8, dim)))
    )  # (N, 8, D)
    candidates = np.empty((num_candidates, 64, dim), np.float32)
    candidates[:, 0] = unit(gists + 0.2 * unit(rng.standard_normal((num_candidates, dim))))
    for j in range(1, 64):
        noise = unit(rng.standard_normal((num_candidates, dim)))
        candidates[:, j] = unit(facets[:, j % 8] + 0.4 * noise)
    targets = rng.integers(0, num_candidates, num_queries)
    queries = np.empty((num_queries, 16, dim), np.float32)
    queries[:, 0] = unit(gists[targets] + 0.7 * unit(rng.standard_normal((num_queries, dim))))
    for i in range(1, 16):
        noise = unit(rng.standard_normal((num_queries, dim)))
        queries[:, i] = unit(facets[targets, i % 8] + 0.8 * noise)
    return candidates, torch.from_numpy(queries)


def timed(function, repeats: int):
    result = function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return result, best


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-candidates", type=int, default=20_000)
    parser.add_argument("--num-queries", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.num_candidates, args.num_queries, args.depths, args.repeats = 2000, 8, [10, 100], 1
    candidates, queries = synthetic(args.num_candidates, args.num_queries, args.dim)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        index = MultiVectorIndex.create(Path(folder) / "idx", dim=args.dim, dtype=args.dtype)
        index.add(np.arange(args.num_candidates), candidates)
        del candidates
        truth, exhaustive = timed(
            lambda: index.search(queries, k=10, budget="16x64").ids, args.repeats
        )
        exhaustive_ms = exhaustive * 1e3 / args.num_queries
        print(
            f"exhaustive 16x64: {exhaustive_ms:.2f} ms/query "
            f"(N={args.num_candidates}, D={args.dim}, {args.dtype})"
        )
        stages = [("exhaustive", "1x1"), ("exhaustive", "4x8"), ("hnsw", "1x1")]
        for stage, first_budget in stages:
            cascade = CascadeSearcher(index, first_stage=stage, first_budget=first_budget)
            if stage == "hnsw":
                start = time.perf_counter()
                cascade.build()
                print(f"hnsw build: {time.perf_counter() - start:.1f} s")
            for depth in args.depths:
                cascade.rerank_depth = min(depth, args.num_candidates)
                found, seconds = timed(
                    lambda: cascade.search(queries, k=10, budget="16x64").ids, args.repeats
                )
                milliseconds = seconds * 1e3 / args.num_queries
                rows.append(
                    {
                        "first_stage": f"{stage}-{first_budget}"
                        if stage == "exhaustive"
                        else "hnsw-first-vector",
                        "rerank_depth": depth,
                        "recall_at_10": recall_at_10(found, truth),
                        "ms_per_query": milliseconds,
                        "speedup": exhaustive_ms / milliseconds,
                    }
                )
                values = rows[-1]
                print(
                    f"{values['first_stage']:>18} K'={depth:<5} "
                    f"recall@10={values['recall_at_10']:.3f} "
                    f"{milliseconds:8.2f} ms/q  speed-up {values['speedup']:6.1f}x",
                    flush=True,
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "num_candidates": args.num_candidates,
        "num_queries": args.num_queries,
        "dim": args.dim,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "exhaustive_ms_per_query": exhaustive_ms,
        "rows": rows,
    }
    args.output.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
