"""QdrantIndex's collection layout on Qdrant's Rust engine, in-process (qdrant-edge-py).

qdrant-client's local mode is a pure-Python engine; Qdrant Edge embeds the same
Rust segment engine a Qdrant server runs per shard. Building the same named
vectors here (dense ``first`` with HNSW, cumulative-prefix ``p4``..``p64``
multivectors with MAX_SIM and ``m=0``) and sending the same requests as
``QdrantIndex`` shows what the scale-out path costs per shard, and checks that the
layout is exact on the real engine (top-10 against ``metaembed.maxsim``).

Used by ``bench/peers.py``; runs alone too::

    bench/.venv-peers/bin/python bench/qdrant_edge_bench.py --candidates 20000
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import numpy as np
import torch

from metaembed import PAPER_GROUPS, Budget, maxsim
from metaembed.index.qdrant_layout import FIRST_VECTOR, QdrantLayout, default_prefix_sizes

K = 10


def build_shard(qdrant_edge, path: str, candidates: np.ndarray, batch_size: int = 256):
    """An EdgeShard holding ``candidates`` (N, 64, D) in QdrantIndex's layout."""
    layout = QdrantLayout(dim=candidates.shape[2], prefix_sizes=default_prefix_sizes(64))
    dot = qdrant_edge.Distance.Dot
    vectors = {FIRST_VECTOR: qdrant_edge.EdgeVectorParams(size=layout.dim, distance=dot)}
    for size in layout.multivector_sizes:
        vectors[layout.vector_name(size)] = qdrant_edge.EdgeVectorParams(
            size=layout.dim,
            distance=dot,
            multivector_config=qdrant_edge.MultiVectorConfig(
                qdrant_edge.MultiVectorComparator.MaxSim
            ),
            hnsw_config=qdrant_edge.HnswIndexConfig(
                m=0, ef_construct=100, full_scan_threshold=10_000
            ),
        )
    shard = qdrant_edge.EdgeShard.create(path, qdrant_edge.EdgeConfig(vectors=vectors))
    for start in range(0, len(candidates), batch_size):
        points = []
        for offset, item in enumerate(candidates[start : start + batch_size]):
            named = {
                layout.vector_name(size): item[:size].tolist() for size in layout.multivector_sizes
            }
            named[FIRST_VECTOR] = item[0].tolist()
            points.append(qdrant_edge.Point(id=start + offset, vector=named))
        shard.update(qdrant_edge.UpdateOperation.upsert_points(points))
    shard.optimize()  # build the HNSW graph on `first`, as a server's optimizer would
    return shard, layout


def request(
    qdrant_edge, layout: QdrantLayout, query: np.ndarray, budget: Budget, exact: bool, limit: int
):
    """The request QdrantIndex sends for one query (r_q, D) under ``budget``."""
    params = (
        qdrant_edge.SearchParams(exact=True)
        if exact
        else qdrant_edge.SearchParams(hnsw_ef=max(limit, 64))
    )
    if budget.r_c == 1:
        nearest = qdrant_edge.Query.Nearest(query.sum(axis=0).tolist(), using=FIRST_VECTOR)
        return qdrant_edge.QueryRequest(limit=K, query=nearest, params=params)
    nearest = qdrant_edge.Query.Nearest(query.tolist(), using=layout.vector_name(budget.r_c))
    if exact:
        return qdrant_edge.QueryRequest(limit=K, query=nearest, params=params)
    first = qdrant_edge.Query.Nearest(query[0].tolist(), using=FIRST_VECTOR)
    prefetch = qdrant_edge.Prefetch(limit=limit, query=first, params=params)
    return qdrant_edge.QueryRequest(limit=K, query=nearest, prefetches=[prefetch])


def best_seconds(fn, repeats: int) -> tuple[float, object]:
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def qdrant_edge_section(
    num_candidates: int, repeats: int, dim: int = 128, prefetch_limit: int = 200
) -> list[dict]:
    """Per budget: exact and prefetch ms/query on the Rust engine, top-10 vs maxsim."""
    try:
        import qdrant_edge
    except ImportError:
        print("qdrant-edge-py not installed: skipping the Qdrant engine section")
        return []
    generator = torch.Generator().manual_seed(13)
    candidates = torch.randn(num_candidates, 64, dim, generator=generator)
    candidates = torch.nn.functional.normalize(candidates, dim=-1)  # (N, 64, D)
    query = torch.nn.functional.normalize(torch.randn(1, 16, dim, generator=generator), dim=-1)
    rows = []
    with tempfile.TemporaryDirectory() as path:
        start = time.perf_counter()
        shard, layout = build_shard(qdrant_edge, path, candidates.numpy())
        build_seconds = time.perf_counter() - start
        for budget in PAPER_GROUPS:
            reference = set(maxsim(query, candidates, budget)[0].topk(K).indices.tolist())
            query_prefix = query[0, : budget.r_q].numpy()  # (r_q, D)
            for exact in (True, False):
                built = request(qdrant_edge, layout, query_prefix, budget, exact, prefetch_limit)
                seconds, points = best_seconds(functools.partial(shard.query, built), repeats)
                rows.append(
                    {
                        "engine": "qdrant-edge (Rust, in-process)",
                        "budget": str(budget),
                        "mode": "exact" if exact else f"prefetch K'={prefetch_limit}",
                        "candidates": num_candidates,
                        "dim": dim,
                        "ms_per_query": 1e3 * seconds,
                        "top10_agreement": len(reference & {int(p.id) for p in points}) / K,
                        "build_seconds": build_seconds,
                    }
                )
        shard.close()
    return rows


def print_section(rows: list[dict]) -> None:
    for row in rows:
        print(
            f"  N={row['candidates']} D={row['dim']} {row['budget']:>6} {row['mode']:<18} "
            f"{row['ms_per_query']:>9.1f} ms  top10 {row['top10_agreement']:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_section(qdrant_edge_section(args.candidates, args.repeats))
