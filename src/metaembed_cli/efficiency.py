"""``metaembed efficiency``: scoring FLOPs, index memory and scoring latency per budget.

``metaembed efficiency --candidates 100000 --dim 3584 --dtype bfloat16`` prints
the FLOPs and memory columns of the paper's table 3. ``--latency`` also times
scoring on this machine (on at most ``--latency-candidates`` candidates, since
the full index may not fit in memory), and ``--compare-paper`` adds the values
printed in the paper.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

__all__ = ["register", "run", "format_table"]


def register(subparsers: Any) -> None:
    """Add the ``efficiency`` sub-command."""
    parser = subparsers.add_parser(
        "efficiency",
        help="scoring FLOPs, index memory and latency per retrieval budget (paper table 3)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--candidates", type=int, default=100_000, help="number of candidates N (default 100000)"
    )
    parser.add_argument(
        "--dim", type=int, default=3584, help="embedding dimension D (default 3584)"
    )
    parser.add_argument(
        "--dtype", default="bfloat16", help="index dtype: float32, float16, bfloat16, int8"
    )
    parser.add_argument(
        "--budgets", default="1x1,2x4,4x8,8x16,16x64", help="budgets, e.g. '1x1,16x64'"
    )
    parser.add_argument("--latency", action="store_true", help="also measure scoring latency here")
    parser.add_argument(
        "--latency-candidates",
        type=int,
        default=10_000,
        help="candidates used for timing (default 10000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed runs per budget (default 10)"
    )
    parser.add_argument(
        "--engine", choices=("auto", "index", "maxsim"), default="auto", help="scoring engine"
    )
    parser.add_argument(
        "--compare-paper", action="store_true", help="add the values printed in table 3"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    parser.set_defaults(func=run)


def format_table(rows: list[Any], compare_paper: bool = False) -> str:
    """Markdown table of efficiency rows (FLOPs in G, memory in GiB, latency in ms)."""
    from metaembed.evaluation.efficiency import PAPER_TABLE3

    header = ["Retrieval Budget", "Scoring FLOPs (G)", "Index Memory (GiB)"]
    has_latency = any(row.latency_ms_mean is not None for row in rows)
    if has_latency:
        header.append("Latency (ms)")
    if compare_paper:
        header += ["Paper FLOPs (G)", "Paper Memory (GiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"({row.budget.r_q}, {row.budget.r_c})",
            f"{row.scoring_gflops:.2f}",
            f"{row.index_memory_gib:.2f}",
        ]
        if has_latency:
            cells.append(
                "-"
                if row.latency_ms_mean is None
                else f"{row.latency_ms_mean:.2f} ± {row.latency_ms_std:.2f}"
            )
        if compare_paper:
            paper = PAPER_TABLE3.get(row.budget)
            cells += (
                ["-", "-"]
                if paper is None
                else [
                    f"{paper['scoring_gflops']:.2f}",
                    f"{paper['index_memory_gib']:.2f}",
                ]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compute (and optionally time) every budget; print a table."""
    from metaembed.budget import parse_budgets
    from metaembed.evaluation.efficiency import (
        efficiency_table,
        measure_scoring_latency,
        scoring_engine,
    )

    try:
        budgets = parse_budgets(args.budgets.replace(",", " "))
        rows = efficiency_table(args.candidates, args.dim, args.dtype, budgets)
        if args.latency:
            num_timed = min(args.candidates, args.latency_candidates)
            latencies = measure_scoring_latency(
                budgets, num_timed, args.dim, args.dtype, repeats=args.repeats, engine=args.engine
            )
            rows = [
                dataclasses.replace(
                    row,
                    latency_ms_mean=latencies[row.budget][0],
                    latency_ms_std=latencies[row.budget][1],
                    latency_candidates=num_timed,
                )
                for row in rows
            ]
    except ValueError as error:
        print(f"metaembed efficiency: error: {error}", file=sys.stderr)
        return 2
    print(
        f"N = {args.candidates:,} candidates, D = {args.dim}, index dtype {args.dtype}; "
        "FLOPs = 2*N*r_q*r_c*D per query, memory = N*r_c*D*bytes"
    )
    if args.latency:
        print(
            f"latency: one query scored against {rows[0].latency_candidates:,} candidates "
            f"on this machine with {scoring_engine(args.engine)}"
        )
    print(format_table(rows, compare_paper=args.compare_paper))
    if args.json:
        from metaembed.evaluation.io import write_json_atomic

        write_json_atomic(
            args.json,
            {
                "candidates": args.candidates,
                "dim": args.dim,
                "dtype": args.dtype,
                "rows": [row.to_dict() for row in rows],
            },
        )
    return 0
