"""Peer MaxSim scorers side by side with metaembed's, on the same data in the same run.

Run it in its own environment (the peers are not metaembed dependencies)::

    bash bench/peers-setup.sh
    bench/.venv-peers/bin/python bench/peers.py [--candidates 100000] [--dims 128 1024]

For every dim, query batch size and paper budget it times, best of ``--repeats``:

* ``metaembed.index``: ``MultiVectorIndex.search`` (when metaembed.index.multivector
  exists), float16 storage (its default) and float32;
* ``metaembed.maxsim``: the reference scorer (chunked torch, fp32);
* ``maxsim-cpu`` 0.1.0 (one query per call; run in a forked child, because it
  segfaults for D >= 384 and the crash is recorded, not fatal);
* PyLate 1.6.0 ``colbert_scores`` (torch backend; called on candidate chunks so its
  ``(Nq, N, r_q, r_c)`` block stays bounded);
* colpali-engine 0.3.18 ``score_multi_vector`` (batch sizes 128 and 1024, best kept).

Peers get a contiguous float32 ``(N, r_c, D)`` array per budget, sliced outside
the timed region (the most favourable input for them); every timed call ends with
the top-10. Each peer's top-10 is checked against ``metaembed.maxsim``. Two more
sections: a ragged check (candidates with 1-64 vectors, zero padded, where zero
slots can beat negative similarities) and QdrantIndex in local mode on a small N.
Prints tables and writes ``bench/results/peers.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from metaembed import PAPER_GROUPS, maxsim

sys.path.insert(0, str(Path(__file__).parent))
from peer_scorers import (  # noqa: E402
    K,
    agreement,
    best_seconds,
    colpali_search,
    load_colpali_scorer,
    load_pylate_scorer,
    maxsim_cpu_search,
    pylate_search,
    top_ids,
)
from qdrant_edge_bench import print_section, qdrant_edge_section  # noqa: E402
from roofline import measure  # noqa: E402

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------- metaembed index


def build_metaembed_indexes(args, candidates: torch.Tensor, workdir: Path) -> dict[str, object]:
    """MultiVectorIndex per dtype and backend, or {} if the embedded index is not there yet."""
    try:
        from metaembed.index.multivector import MultiVectorIndex
    except ImportError:
        print("metaembed.index.multivector not available: timing metaembed.maxsim only")
        return {}
    indexes = {}
    for dtype in args.index_dtypes:
        try:
            start = time.perf_counter()
            index = MultiVectorIndex.create(
                workdir / dtype, dim=candidates.shape[2], num_vectors=64, dtype=dtype
            )
            index.add(np.arange(candidates.shape[0]), candidates)
            print(f"built MultiVectorIndex[{dtype}] in {time.perf_counter() - start:.1f} s")
        except Exception:  # a benchmark reports, it does not stop
            traceback.print_exc()
            continue
        for backend in args.index_backends:
            opened = MultiVectorIndex.open(workdir / dtype, verify=False, backend=backend)
            indexes[f"metaembed.index[{dtype},{backend}]"] = opened
            if args.index_in_ram:  # tiers loaded into RAM (device="cpu") instead of mapped
                in_ram = MultiVectorIndex.open(
                    workdir / dtype, verify=False, backend=backend, device="cpu"
                )
                indexes[f"metaembed.index[{dtype},{backend},ram]"] = in_ram
    return indexes


# ------------------------------------------------------------------ sections


def scorers_for(args, indexes: dict, pylate_scores, colpali_scores) -> dict[str, Callable]:
    """name -> fn(queries (Nq, 16, D), prefix (N, r_c, D), budget) -> top-10 ids (Nq, K)."""
    scorers: dict[str, Callable] = {}
    for name, index in indexes.items():
        scorers[name] = lambda q, c, b, index=index: index.search(q, k=K, budget=b).ids
    scorers["metaembed.maxsim"] = lambda q, c, b: top_ids(maxsim(q[:, : b.r_q], c))
    scorers["pylate"] = lambda q, c, b: pylate_search(pylate_scores, q[:, : b.r_q].contiguous(), c)
    for batch_size in args.colpali_batch_sizes:
        scorers[f"colpali[bs={batch_size}]"] = lambda q, c, b, bs=batch_size: colpali_search(
            colpali_scores, q[:, : b.r_q].contiguous(), c, bs
        )
    return scorers


def time_budget(scorers: dict, queries, prefix, budget, base: dict, repeats: int) -> list[dict]:
    """Time every scorer on one (queries, budget); top-10 checked against metaembed.maxsim."""
    reference = top_ids(maxsim(queries[:, : budget.r_q], prefix))
    rows = []
    for name, scorer in scorers.items():
        try:
            seconds, ids = best_seconds(functools.partial(scorer, queries, prefix, budget), repeats)
            status = {
                "status": "ok",
                "seconds": seconds,
                "top10_agreement": agreement(ids, reference),
            }
        except Exception as error:  # a benchmark reports, it does not stop
            status = {"status": f"error: {error!r}"[:200]}
        rows.append({**base, "scorer": name, **status})
    peer = maxsim_cpu_search(queries[:, : budget.r_q].numpy(), prefix.numpy(), repeats)
    row = {**base, "scorer": "maxsim-cpu", "status": peer["status"]}
    if peer["status"] == "ok":
        row.update(seconds=peer["seconds"], top10_agreement=agreement(peer["ids"], reference))
    return [*rows, row]


def time_dim(args, dim: int, num_candidates: int, loaders: tuple) -> list[dict]:
    generator = torch.Generator().manual_seed(dim)
    candidates = torch.randn(num_candidates, 64, dim, generator=generator)
    candidates = torch.nn.functional.normalize(candidates, dim=-1)  # (N, 64, D) float32
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        indexes = build_metaembed_indexes(args, candidates, Path(workdir))
        scorers = scorers_for(args, indexes, *loaders)
        for num_queries in args.queries:
            queries = torch.randn(num_queries, 16, dim, generator=generator)
            queries = torch.nn.functional.normalize(queries, dim=-1)  # (Nq, 16, D)
            for budget in PAPER_GROUPS:
                prefix = candidates[:, : budget.r_c].contiguous()  # (N, r_c, D), untimed
                base = {"dim": dim, "candidates": num_candidates, "queries": num_queries}
                new_rows = time_budget(
                    scorers, queries, prefix, budget, {**base, "budget": str(budget)}, args.repeats
                )
                print_rows(new_rows)
                rows += new_rows
    return rows


def ragged_check(loaders: tuple, dim: int = 128, num_candidates: int = 2000) -> list[dict]:
    """Candidates with 1..64 vectors, zero padded: does a padding slot ever win the max?

    The reference masks padding out; a scorer that multiplies by the mask (PyLate)
    or relies on zero padding (colpali-engine) scores a padding slot 0, which beats
    a row of negative similarities. Reports how many scores differ, and top-10 agreement.
    """
    pylate_scores, colpali_scores = loaders
    generator = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 65, (num_candidates,), generator=generator)
    lengths[: num_candidates // 2] = torch.randint(
        1, 4, (num_candidates // 2,), generator=generator
    )
    candidates = torch.nn.functional.normalize(
        torch.randn(num_candidates, 64, dim, generator=generator), dim=-1
    )
    mask = torch.arange(64)[None] < lengths[:, None]  # (N, 64) True for real vectors
    candidates = candidates * mask[..., None]  # zero padding
    queries = torch.nn.functional.normalize(torch.randn(8, 16, dim, generator=generator), dim=-1)
    reference = maxsim(queries, candidates, candidate_mask=mask)  # (Nq, N)
    ragged_list = [candidates[i, : lengths[i]] for i in range(num_candidates)]
    scores = {
        "pylate (documents_mask)": pylate_scores(
            queries, candidates, documents_mask=mask.float(), backend="torch"
        ),
        "colpali (list of ragged tensors)": colpali_scores(
            queries, ragged_list, batch_size=128, device="cpu"
        ),
    }
    peer = maxsim_cpu_search(queries.numpy(), [t.numpy() for t in ragged_list], repeats=0)
    if peer["status"] == "ok":
        scores["maxsim-cpu (maxsim_scores_variable)"] = torch.as_tensor(peer["ids"])
    rows = (
        [{"scorer": "maxsim-cpu (maxsim_scores_variable)", "status": peer["status"]}]
        if peer["status"] != "ok"
        else []
    )
    for name, peer_scores in scores.items():
        differs = (torch.as_tensor(peer_scores) - reference).abs() > 1e-3  # (Nq, N)
        rows.append(
            {
                "scorer": name,
                "status": "ok",
                "scores_differing": float(differs.float().mean()),
                "max_abs_difference": float((torch.as_tensor(peer_scores) - reference).abs().max()),
                "top10_agreement": agreement(top_ids(peer_scores), top_ids(reference)),
            }
        )
    return rows


def qdrant_local(
    num_candidates: int, repeats: int, dim: int = 128, prefetch_limit: int = 200
) -> list[dict]:
    """QdrantIndex in qdrant-client's local mode (a Python loop per point), for reference."""
    from metaembed.index.qdrant import QdrantIndex

    generator = torch.Generator().manual_seed(11)
    candidates = torch.nn.functional.normalize(
        torch.randn(num_candidates, 64, dim, generator=generator), dim=-1
    )
    query = torch.nn.functional.normalize(torch.randn(1, 16, dim, generator=generator), dim=-1)
    index = QdrantIndex.create(":memory:", dim=dim, num_vectors=64, prefetch_limit=prefetch_limit)
    start = time.perf_counter()
    index.add(np.arange(num_candidates), candidates)
    add_seconds = time.perf_counter() - start
    rows = []
    for budget in PAPER_GROUPS:
        reference = top_ids(maxsim(query, candidates, budget))
        for exact in (True, False):
            search = functools.partial(index.search, query, k=K, budget=budget, exact=exact)
            seconds, result = best_seconds(search, repeats)
            ids = result.ids
            rows.append(
                {
                    "budget": str(budget),
                    "mode": "exact" if exact else f"prefetch K'={prefetch_limit}",
                    "candidates": num_candidates,
                    "dim": dim,
                    "ms_per_query": 1e3 * seconds,
                    "top10_agreement": agreement(ids, reference),
                    "add_seconds": add_seconds,
                }
            )
    index.close()
    return rows


# ------------------------------------------------------------------- output


def add_ratios(rows: list[dict]) -> None:
    """ratio = peer ms / metaembed ms (the best metaembed entry of the same setting)."""
    settings: dict[tuple, float] = {}
    for row in rows:
        if row["scorer"].startswith("metaembed") and row.get("status") == "ok":
            key = (row["dim"], row["queries"], row["budget"])
            settings[key] = min(settings.get(key, float("inf")), row["seconds"])
    for row in rows:
        best = settings.get((row["dim"], row["queries"], row["budget"]))
        if row.get("status") == "ok":
            row["ms_per_query"] = 1e3 * row["seconds"] / row["queries"]
            row["ratio_to_metaembed"] = row["seconds"] / best if best else None


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        if row.get("status") != "ok":
            print(
                f"{row['dim']:>5} {row['candidates']:>7} {row['queries']:>3} {row['budget']:>6} "
                f"{row['scorer']:<32} {row['status']}"
            )
            continue
        print(
            f"{row['dim']:>5} {row['candidates']:>7} {row['queries']:>3} {row['budget']:>6} "
            f"{row['scorer']:<32} {1e3 * row['seconds'] / row['queries']:>10.2f} "
            f"{row['top10_agreement']:>6.2f}",
            flush=True,
        )


def print_summary(rows: list[dict]) -> None:
    header = (
        f"{'D':>5} {'N':>7} {'Nq':>3} {'budget':>6} {'scorer':<32} "
        f"{'ms/query':>10} {'x meta':>7} {'top10':>6}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        if row.get("status") != "ok":
            print(
                f"{row['dim']:>5} {row['candidates']:>7} {row['queries']:>3} {row['budget']:>6} "
                f"{row['scorer']:<32} {row['status']}"
            )
            continue
        ratio = row.get("ratio_to_metaembed")
        print(
            f"{row['dim']:>5} {row['candidates']:>7} {row['queries']:>3} {row['budget']:>6} "
            f"{row['scorer']:<32} {row['ms_per_query']:>10.2f} {ratio:>7.2f} "
            f"{row['top10_agreement']:>6.2f}"
        )


def markdown_table(rows: list[dict]) -> str:
    """One line per (D, N, Nq, budget): ms/query of every scorer, and its ratio to metaembed."""
    scorers = list(dict.fromkeys(row["scorer"] for row in rows))
    settings = list(
        dict.fromkeys((r["dim"], r["candidates"], r["queries"], r["budget"]) for r in rows)
    )
    cells = {(r["dim"], r["candidates"], r["queries"], r["budget"], r["scorer"]): r for r in rows}
    lines = [
        "| D | N | Nq | budget | " + " | ".join(scorers) + " |",
        "|---|---|---|---|" + "---|" * len(scorers),
    ]
    for setting in settings:
        values = []
        for scorer in scorers:
            row = cells.get((*setting, scorer), {})
            if row.get("status") != "ok":
                values.append("crash" if "crash" in str(row.get("status")) else "error")
                continue
            ratio = row.get("ratio_to_metaembed")
            values.append(f"{row['ms_per_query']:.1f} ({ratio:.1f}x)")
        lines.append("| " + " | ".join(str(v) for v in setting) + " | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument(
        "--max-gib", type=float, default=5.0, help="cap on the float32 (N, 64, D) array"
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--qdrant-candidates", type=int, default=2000)
    parser.add_argument("--qdrant-edge-candidates", type=int, default=20_000)
    parser.add_argument("--index-dtypes", nargs="+", default=["float16", "float32"])
    parser.add_argument(
        "--index-backends", nargs="+", default=["auto"], help="auto, native, numba, torch"
    )
    parser.add_argument(
        "--index-in-ram",
        action="store_true",
        help="also time each index opened with device='cpu' (tiers in RAM, not memory-mapped)",
    )
    parser.add_argument("--colpali-batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--workdir", default=None, help="folder for the temporary metaembed index")
    parser.add_argument("--output", default=str(RESULTS / "peers.json"))
    parser.add_argument("--markdown", help="print the markdown table of a results JSON and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown_table(json.loads(Path(args.markdown).read_text())["rows"]))
        return

    torch.set_num_threads(args.threads)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # maxsim-cpu's pool, read in the child
    roofline = measure()
    print(
        f"roofline: {roofline.gemm_gflops:.1f} GFLOP/s, {roofline.read_gbps:.1f} GB/s, "
        f"{args.threads} threads"
    )
    loaders = (load_pylate_scorer(), load_colpali_scorer())
    rows = []
    for dim in args.dims:
        num_candidates = min(args.candidates, int(args.max_gib * 2**30 // (64 * dim * 4)))
        rows += time_dim(args, dim, num_candidates, loaders)
    add_ratios(rows)
    print_summary(rows)
    ragged = ragged_check(loaders)
    print("\nragged candidates (1-64 vectors, zero padded) vs masked metaembed.maxsim:")
    for row in ragged:
        if row["status"] != "ok":
            print(f"  {row['scorer']:<38} {row['status']}")
            continue
        print(
            f"  {row['scorer']:<38} scores differing {100 * row['scores_differing']:5.1f}%  "
            f"max |diff| {row['max_abs_difference']:.3f}  "
            f"top-10 agreement {row['top10_agreement']:.2f}"
        )
    qdrant = qdrant_local(args.qdrant_candidates, args.repeats) if args.qdrant_candidates else []
    print("\nQdrantIndex, qdrant-client local mode (pure Python), one query:")
    print_section(qdrant)
    edge = (
        qdrant_edge_section(args.qdrant_edge_candidates, args.repeats)
        if args.qdrant_edge_candidates
        else []
    )
    print("\nQdrantIndex's layout on Qdrant's Rust engine (qdrant-edge-py, in-process), one query:")
    print_section(edge)
    output = {
        "machine": platform.processor() or platform.machine(),
        "note": "2-core machine shared with other jobs; best of repeats",
        "threads": args.threads,
        "roofline": roofline.__dict__,
        "config": vars(args),
        "versions": peer_versions(),
        "rows": rows,
        "ragged": ragged,
        "qdrant_local": qdrant,
        "qdrant_edge": edge,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(output, indent=2, default=str))
    print(f"wrote {args.output}")


def peer_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    names = ("torch", "maxsim-cpu", "pylate", "colpali-engine", "qdrant-client", "qdrant-edge-py")
    for name in (*names, "metaembed"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    return versions


if __name__ == "__main__":
    main()
