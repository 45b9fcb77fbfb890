"""Side-by-side timing of native kernel variants: builds and instruction sets, one process.

A kernel change is judged by its ratio to the kernel before it, and on a shared VM whose
read bandwidth moves by 2x from one second to the next, timings from two runs (or two
processes) do not compare. This script loads every build given (``--builds``: a
``_native*.so``, or a checkout whose ``src/metaembed/index`` holds one; ``installed`` for
the installed package's) through :func:`metaembed.index.kernels_native.open_library`, and
times each (build, instruction set) variant on the same tiered storage in interleaved
rounds: each round first samples the read bandwidth (``BandwidthProbe``, with its pause
after the sum), then runs every variant once, in forward order on even rounds and in
reverse on odd ones, so that neither side always runs first after the sample. A variant's
time is its best over the rounds. Before timing, every variant's scores are checked
against the first variant's.

List the baseline twice (``--builds installed /tmp/old installed``) to see the noise floor
of the moment: on the 2-core Zen 4 VM, 20k float16 candidates, 25 rounds, the installed build
against itself came out 0.99-1.07x and against a second build of the same source 0.82-1.10x,
so differences under about 10-20% there need repeated runs.

Usage::

    # the installed build against another checkout's, one query, float16, D = 128
    .venv/bin/python bench/kernel_ab.py --builds installed /tmp/old-checkout \\
        --budgets 2x4 4x8 --dtypes float16
    # instruction sets of the installed build side by side
    .venv/bin/python bench/kernel_ab.py --instruction-sets avx512 avx2
    # the AVX-512 copy with its lane-groups form for 3-8 query vectors held on and off
    .venv/bin/python bench/kernel_ab.py --instruction-sets avx512/lanes avx512/grouped
    .venv/bin/python bench/kernel_ab.py --quick                 # smoke run

Prints a table (ms per variant; the first variant's time over this one's, so above 1x is
faster than the first; the best bandwidth sampled in the rounds) and saves JSON
(``--output``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from index_search import BandwidthProbe, budget_view, make_tiers, tier_candidates

from metaembed.budget import Budget
from metaembed.index.kernels_native import (
    instruction_sets,
    load_library,
    open_library,
    score_tiers_native,
)

RESULTS = Path(__file__).parent / "results" / "kernel_ab.json"


def library_path(build: str) -> Path:
    """The ``_native*.so`` of ``build`` (a file, or a checkout built in place)."""
    path = Path(build)
    if path.is_file():
        return path
    found = sorted((path / "src" / "metaembed" / "index").glob("_native*.so"))
    if not found:
        raise SystemExit(
            f"no _native*.so under {path}/src/metaembed/index: build that checkout in place "
            "first (python setup.py build_ext --inplace)"
        )
    return found[0]


FORMS = {"": None, "lanes": True, "grouped": False}  # spec suffix -> lane_groups


def parse_isa(spec: str) -> tuple[str | None, bool | None]:
    """``auto``, ``avx512`` or ``avx512/lanes`` -> (instruction set or None, lane_groups)."""
    isa, _, form = spec.partition("/")
    if form not in FORMS:
        raise SystemExit(f"form {form!r} of {spec!r} is not one of {sorted(f for f in FORMS if f)}")
    if isa != "auto" and isa not in instruction_sets():
        raise SystemExit(f"instruction set {isa!r} is not available: {instruction_sets()}")
    return (None if isa == "auto" else isa), FORMS[form]


def open_variants(builds: list[str], isas: list[str]) -> list[tuple[str, object, tuple]]:
    """(label, library, (instruction set or None for the kernel's pick, lane_groups))."""
    parsed = [parse_isa(isa) for isa in isas]
    variants = []
    for build in builds:
        if build == "installed":
            library, name = load_library(), "installed"
        else:
            path = library_path(build)
            library = open_library(path)
            name = build if Path(build).is_file() else str(path.parents[3])
        if library is None:
            raise SystemExit(f"the native kernel of {build} does not run on this machine")
        for isa, choice in zip(isas, parsed, strict=True):
            label = name if len(isas) == 1 else f"{name} {isa}"
            variants.append((label, library, choice))
    return variants


def compare(variants, queries, view, view_scales, r_c, dtype, threads, probe, rounds):
    """Best seconds per variant over interleaved rounds, and the best GB/s sampled."""

    def run(variant):
        _, library, (isa, lane_groups) = variant
        return score_tiers_native(
            queries, view, view_scales, r_c, dtype, threads, isa, library, lane_groups
        )

    reference = run(variants[0])
    for variant in variants[1:]:
        gap = float((run(variant) - reference).abs().max())
        if gap > 1e-3:
            raise SystemExit(f"{variant[0]} disagrees with {variants[0][0]}: max |diff| {gap:.2e}")
    best = [float("inf")] * len(variants)
    probe.reset()
    for round_index in range(rounds):
        probe.sample()
        order = range(len(variants)) if round_index % 2 == 0 else reversed(range(len(variants)))
        for index in order:
            start = time.perf_counter()
            run(variants[index])
            best[index] = min(best[index], time.perf_counter() - start)
    return best, probe.best_gbs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--builds", nargs="+", default=["installed"])
    parser.add_argument("--instruction-sets", nargs="+", default=["auto"])
    parser.add_argument("--num-candidates", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["float16"])
    parser.add_argument("--budgets", nargs="+", default=["1x1", "2x4", "4x8", "8x16", "16x64"])
    parser.add_argument("--queries", type=int, default=1, help="queries per call")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--max-gib", type=float, default=4.0, help="tiers held in memory per dtype (GiB)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.num_candidates, args.rounds, args.budgets = 2_000, 3, ["1x1", "2x4"]
    variants = open_variants(args.builds, args.instruction_sets)
    budgets = [Budget(*map(int, text.split("x"))) for text in args.budgets]
    probe = BandwidthProbe()
    rows = []
    labels = [label for label, _, _ in variants]
    print(f"{'dtype':<9} {'budget':<8} {'N':>7} " + " ".join(f"{v[:24]:>24}" for v in labels))
    for dtype in args.dtypes:
        counts = tier_candidates(args.num_candidates, args.dim, dtype, args.max_gib * 2**30)
        tiers, scales = make_tiers(counts, args.dim, dtype)
        for budget in budgets:
            view, view_scales, count = budget_view(tiers, scales, budget.r_c)
            queries = torch.nn.functional.normalize(
                torch.randn(args.queries, budget.r_q, args.dim), dim=-1
            )  # (queries, r_q, dim)
            best, gbs = compare(
                variants, queries, view, view_scales, budget.r_c, dtype, args.threads, probe,
                args.rounds,
            )  # fmt: skip
            rows.append({
                "dtype": dtype, "budget": [budget.r_q, budget.r_c], "num_candidates": count,
                "dim": args.dim, "queries": args.queries,
                "ms": dict(zip(labels, (seconds * 1e3 for seconds in best), strict=True)),
                "ratio_to_first": [best[0] / seconds for seconds in best],
                "read_gbs_sampled": gbs,
            })  # fmt: skip
            cells = " ".join(
                f"{seconds * 1e3:>14.3f} ms {best[0] / seconds:>5.2f}x" for seconds in best
            )
            print(
                f"{dtype:<9} {budget.r_q}x{budget.r_c:<6} {count:>7} {cells}  "
                f"({gbs:.0f} GB/s sampled)",
                flush=True,
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "threads": args.threads,
                "variants": labels,
                "rounds": args.rounds,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
