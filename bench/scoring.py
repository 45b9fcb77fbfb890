"""Benchmark the reference MaxSim scorer per budget against the machine's roofline.

Prints a table (N, D, budget, ms/query, GFLOP/s, GB/s, % of roofline) and writes
``bench/results/scoring.json``. The roofline is measured in the same run.

    python bench/scoring.py [--candidates 20000] [--dims 128 1024] [--queries 1 8]

This measures :func:`metaembed.maxsim`, the *reference* implementation (chunked torch,
fp32 compute). The index's fused kernels are measured by ``bench/index_search.py``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import torch
from roofline import measure

from metaembed import PAPER_GROUPS, maxsim

RESULTS = Path(__file__).parent / "results"


def time_call(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    roofline = measure()
    print(
        f"roofline: {roofline.gemm_gflops:.1f} GFLOP/s fp32 GEMM, "
        f"{roofline.read_gbps:.1f} GB/s read, {roofline.threads} threads"
    )
    dtype = getattr(torch, args.dtype)
    rows = []
    header = (
        f"{'N':>7} {'D':>5} {'Nq':>3} {'budget':>6} {'ms/query':>9} "
        f"{'GFLOP/s':>8} {'GB/s':>6} {'%roof':>6}"
    )
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        generator = torch.Generator().manual_seed(0)
        candidates = torch.nn.functional.normalize(
            torch.randn(args.candidates, 64, dim, generator=generator), dim=-1
        ).to(dtype)  # (N, 64, D)
        for num_queries in args.queries:
            queries = torch.nn.functional.normalize(
                torch.randn(num_queries, 16, dim, generator=generator), dim=-1
            )
            for budget in PAPER_GROUPS:
                score = functools.partial(maxsim, queries, candidates, budget)
                seconds = time_call(score, args.repeats)
                flops = budget.scoring_flops(args.candidates, dim) * num_queries
                bytes_read = args.candidates * budget.r_c * dim * candidates.element_size()
                bound = roofline.seconds(flops, bytes_read)
                row = {
                    "candidates": args.candidates,
                    "dim": dim,
                    "queries": num_queries,
                    "budget": str(budget),
                    "dtype": args.dtype,
                    "ms_per_query": 1e3 * seconds / num_queries,
                    "gflops": flops / seconds / 1e9,
                    "gbps": bytes_read / seconds / 1e9,
                    "percent_of_roofline": 100 * bound / seconds,
                }
                rows.append(row)
                print(
                    f"{args.candidates:>7} {dim:>5} {num_queries:>3} {str(budget):>6} "
                    f"{row['ms_per_query']:>9.2f} {row['gflops']:>8.1f} {row['gbps']:>6.1f} "
                    f"{row['percent_of_roofline']:>6.1f}"
                )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": platform.processor() or platform.machine(),
        "roofline": roofline.__dict__,
        "rows": rows,
    }
    (RESULTS / "scoring.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'scoring.json'}")


if __name__ == "__main__":
    main()
