"""Exhaustive budgeted search speed versus the machine's roofline, measured in the same run.

For every dimension, storage dtype and paper budget, times ``score_tiers`` (the
kernel behind ``MultiVectorIndex.search``) with every compiled backend available
(native C and numba, side by side) on tiered storage held in memory, one query
at a time and in batches; optionally
also the pure-torch backend and the end-to-end ``MultiVectorIndex.search`` on a
memory-mapped index. The roofline is measured in the same run: the fp32 GEMM
peak (a large torch matmul) and the DRAM read bandwidth (a sum over an array far
larger than the caches). A configuration's roofline time is the larger of its
FLOP time at the peak and its byte time at the bandwidth; "% roof" is that time
divided by the measured time, with the best peak and bandwidth seen in the run (a
lower bound). Beside it, "alongside" sets the row against the same peak and the
read bandwidth sampled between the row's own runs (``BandwidthProbe``): on a
shared VM whose bandwidth moves by 2x from one second to the next, that says how
close a memory-bound row came to the machine of that moment.

Usage::

    .venv/bin/python bench/index_search.py                      # full run (several minutes)
    .venv/bin/python bench/index_search.py --quick              # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metaembed.budget import PAPER_GROUPS, Budget
from metaembed.index.codecs import STORAGE_DTYPES, bytes_per_vector, encode
from metaembed.index.kernels import available_backends, score_tiers
from metaembed.index.kernels_native import instruction_sets, score_tiers_native
from metaembed.index.multivector import MultiVectorIndex
from metaembed.index.storage import tier_bounds

RESULTS = Path(__file__).parent / "results" / "index_search.json"


def best_time(function, repeats: int, min_seconds: float, between=None) -> float:
    """The fastest of at least ``repeats`` timed runs (after one untimed), and of as many more
    as fit in ``min_seconds`` of timed runs (at most 1,000): on a shared VM a few runs often
    all land in a noisy moment, and the roofline is measured the same way. ``between``, if
    given, is called (untimed) after every ~50 ms of timed runs."""
    function()
    best, spent, runs, since = float("inf"), 0.0, 0, 0.0
    while runs < repeats or (spent < min_seconds and runs < 1000):
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
        best, spent, runs, since = min(best, seconds), spent + seconds, runs + 1, since + seconds
        if between is not None and since >= 0.05:
            between()
            since = 0.0
    return best


class BandwidthProbe:
    """DRAM read bandwidth sampled between a row's runs (``sample``), so that a row can be set
    against the bandwidth of the same moment as well as the run's best.

    Each sample sums the next 256 MiB slice of a 1 GiB array (four slices in turn: a slice
    was last read three samples ago, so none of it is in the 32 MiB or smaller caches).
    On the 2-core Zen 4 VM the bandwidth sat at 32-34 GB/s for most 2 s windows and jumped
    to 52-64 for a few, so a row timed in a slow window is memory-bound far below the run's
    best; the bandwidth seen alongside it says how far below the machine of that moment.
    """

    def __init__(self) -> None:
        self.array = torch.ones(256 * 1024 * 1024)  # 1 GiB of float32
        self.slices = self.array.view(4, -1)  # (4, 64 Mi): 256 MiB each
        self.turn = 0
        self.best_gbs = 0.0

    def sample(self) -> None:
        """Time one slice's sum and keep the best GB/s since ``reset``."""
        part = self.slices[self.turn % 4]
        self.turn += 1
        start = time.perf_counter()
        part.sum()
        seconds = time.perf_counter() - start
        self.best_gbs = max(self.best_gbs, part.numel() * 4 / seconds / 1e9)
        # torch's OpenMP threads spin for a while after the sum and take cores from the next
        # timed run: one query (4, 8) D = 128 ran 9.6 ms right after a sample, 6.4 without
        # samples and 7.0 with this pause after each
        time.sleep(0.02)

    def reset(self) -> None:
        self.best_gbs = 0.0


def best_time_alongside(
    function, probe: BandwidthProbe, repeats: int, min_seconds: float
) -> tuple[float, float]:
    """``best_time`` with a bandwidth sample after every ~50 ms of the function's runs.

    Returns the function's best seconds and the best read bandwidth (GB/s) sampled in the
    same window, so the two are measured side by side.
    """
    probe.reset()
    probe.sample()
    best = best_time(function, repeats, min_seconds, between=probe.sample)
    probe.sample()
    return best, probe.best_gbs


def measure_roofline(probe: BandwidthProbe, repeats: int, min_seconds: float) -> dict[str, float]:
    """fp32 GEMM peak (GFLOP/s) and the read bandwidth of the probe's whole 1 GiB (GB/s)."""
    left, right = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm = best_time(lambda: left @ right, repeats, min_seconds)
    big = probe.array  # 1 GiB of float32, far above L3
    read = best_time(lambda: big.sum(), repeats, min_seconds)
    return {"gemm_gflops": 2 * 2048**3 / gemm / 1e9, "read_gbs": big.numel() * 4 / read / 1e9}


def tier_candidates(num_candidates: int, dim: int, dtype: str, max_bytes: float) -> list[int]:
    """Candidates generated per tier: all ``num_candidates`` while the tiers fit ``max_bytes``.

    Tiers are filled first to last; a tier that does not fit whole gets fewer
    candidates (never more than the tier before it), so budgets that read it are
    timed on fewer candidates (every row reports its N).
    """
    counts, left = [], max_bytes
    for first, last in tier_bounds(64):
        per_candidate = (last - first) * bytes_per_vector(dtype, dim)
        count = int(min(num_candidates, left // per_candidate, counts[-1] if counts else 1e18))
        counts.append(max(count, 0))
        left -= count * per_candidate
    return counts


def make_tiers(counts: list[int], dim: int, dtype: str, seed: int = 0):
    """Random unit vectors encoded per tier (``counts[t]`` candidates), in bounded chunks."""
    rng = np.random.default_rng(seed)
    tiers, scales = [], [] if dtype == "int8" else None
    for (first, last), count in zip(tier_bounds(64), counts, strict=True):
        size = last - first
        chunk = max(1, 2**26 // (size * dim))
        tier = tier_scales = None
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            values = rng.standard_normal((stop - start, size, dim), dtype=np.float32)
            values /= np.linalg.norm(values, axis=-1, keepdims=True)
            raw, chunk_scales = encode(values, dtype)
            if tier is None:
                tier = np.empty((count, size, dim), raw.dtype)
                tier_scales = np.empty((count, size), np.float32)
            tier[start:stop] = raw
            tier_scales[start:stop] = chunk_scales if chunk_scales is not None else 1.0
        tiers.append(tier)
        if scales is not None:
            scales.append(tier_scales)
    return tiers, scales


def budget_view(tiers, scales, r_c: int):
    """The tiers a budget reads, cut to the candidates every one of them holds."""
    used = [t for t, (first, _) in enumerate(tier_bounds(64)) if first < r_c]
    count = min(tiers[t].shape[0] for t in used)
    view = [tiers[t][:count] for t in used]
    return view, (None if scales is None else [scales[t][:count] for t in used]), count


def roofline_seconds(flops: float, read_bytes: float, gflops: float, gbs: float) -> float:
    """The larger of the FLOP time at ``gflops`` and the byte time at ``gbs``."""
    return max(flops / (gflops * 1e9), read_bytes / (gbs * 1e9))


def row(roof, label, dim, dtype, budget, num_candidates, num_queries, seconds, alongside_gbs):
    """One timed configuration; ``alongside_gbs`` is the read bandwidth sampled beside it."""
    flops = budget.scoring_flops(num_candidates, dim) * num_queries
    read_bytes = num_candidates * budget.r_c * bytes_per_vector(dtype, dim)
    values = {
        "backend": label,
        "dim": dim,
        "dtype": dtype,
        "budget": str(budget),
        "num_candidates": num_candidates,
        "batch": num_queries,
        "ms_per_query": seconds * 1e3 / num_queries,
        "gflops": flops / seconds / 1e9,
        "gbs": read_bytes / seconds / 1e9,
        "read_gbs_alongside": alongside_gbs,
    }
    score_against(values, roof)
    return values


def score_against(values, roof) -> None:
    """Set a row's bound and % of roofline: against ``roof`` (the run's best GEMM peak and
    bandwidth), and against the same peak with the bandwidth sampled alongside the row."""
    seconds = values["ms_per_query"] * values["batch"] / 1e3
    flops = values["gflops"] * 1e9 * seconds
    read_bytes = values["gbs"] * 1e9 * seconds
    gemm, best_gbs = roof["gemm_gflops"], roof["read_gbs"]
    values["bound"] = "compute" if flops / gemm > read_bytes / best_gbs else "memory"
    values["percent_of_roofline"] = (
        100 * roofline_seconds(flops, read_bytes, gemm, best_gbs) / seconds
    )
    alongside = roofline_seconds(flops, read_bytes, gemm, values["read_gbs_alongside"])
    values["percent_of_roofline_alongside"] = 100 * alongside / seconds


def bench_config(args, roof, probe, dim, dtype, num_candidates, rows):
    counts = tier_candidates(num_candidates, dim, dtype, args.max_gib * 2**30)
    if min(counts) == 0:
        print(f"skipping D={dim} {dtype}: --max-gib {args.max_gib} is too small", flush=True)
        return
    tiers, all_scales = make_tiers(counts, dim, dtype)
    roof = update_roof(roof, measure_roofline(probe, args.repeats, args.min_seconds))
    queries = torch.nn.functional.normalize(torch.randn(args.batch, 16, dim), dim=-1)
    for budget in args.budgets:
        view, scales, count = budget_view(tiers, all_scales, budget.r_c)

        for backend in args.backends:

            def search(batch: int):
                if backend.startswith("native-"):  # one instruction set of the C kernel
                    return score_tiers_native(
                        queries[:batch, : budget.r_q], view, scales, budget.r_c, dtype,
                        instruction_set=backend.removeprefix("native-"),
                    )  # fmt: skip
                return score_tiers(
                    queries[:batch, : budget.r_q], view, budget.r_c, dtype, scales,
                    backend=backend,
                )  # fmt: skip

            single, gbs = best_time_alongside(
                lambda: search(1), probe, args.repeats, args.min_seconds
            )
            rows.append(row(roof, backend, dim, dtype, budget, count, 1, single, gbs))
            print_row(rows[-1])
            if args.batch > 1:
                batched, gbs = best_time_alongside(
                    lambda: search(args.batch), probe, args.repeats, args.min_seconds
                )
                rows.append(row(roof, backend, dim, dtype, budget, count, args.batch, batched, gbs))
                print_row(rows[-1])
        if args.torch and dtype in ("float32", "float16") and budget.r_c <= 8:
            slow, gbs = best_time_alongside(
                lambda: score_tiers(
                    queries[:1, : budget.r_q], view, budget.r_c, dtype, scales, backend="torch"
                ),
                probe,
                1,
                0.0,
            )
            rows.append(row(roof, "torch", dim, dtype, budget, count, 1, slow, gbs))
            print_row(rows[-1])
    del tiers, all_scales


def bench_end_to_end(args, roof, probe, rows):
    """MultiVectorIndex.search (memory-mapped files, top-k merge) for float16, D=128."""
    dim, num_candidates = 128, args.num_candidates
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        index = MultiVectorIndex.create(Path(folder) / "idx", dim=dim, dtype="float16")
        rng = np.random.default_rng(1)
        for start in range(0, num_candidates, 20000):
            values = rng.standard_normal(
                (min(20000, num_candidates - start), 64, dim), dtype=np.float32
            )
            index.add(
                np.arange(start, start + len(values)),
                values / np.linalg.norm(values, axis=-1, keepdims=True),
            )
        index.compact()
        queries = torch.nn.functional.normalize(torch.randn(1, 16, dim), dim=-1)
        for budget in PAPER_GROUPS:
            seconds, gbs = best_time_alongside(
                lambda: index.search(queries, k=10, budget=budget),
                probe,
                args.repeats,
                args.min_seconds,
            )
            rows.append(
                row(roof, "index.search", dim, "float16", budget, num_candidates, 1, seconds, gbs)
            )
            print_row(rows[-1])


def update_roof(best: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    """Keep the highest peak and bandwidth seen: percentages against it are lower bounds."""
    best.update({key: max(best[key], value) for key, value in new.items()})
    return best


def rescore(rows, roof):
    """Recompute % of roofline for every row against the final (best) roofline."""
    for values in rows:
        score_against(values, roof)


def target_summary(rows, target: float = 70.0) -> list[str]:
    """Per backend, dtype and batch: how many rows reach ``target`` % of the roofline, against
    the run's best and against the bandwidth sampled alongside."""
    groups: dict[tuple, list[dict]] = {}
    for values in rows:
        groups.setdefault((values["backend"], values["dtype"], values["batch"]), []).append(values)
    lines = []
    for (backend, dtype, batch), members in groups.items():
        best = sum(v["percent_of_roofline"] >= target for v in members)
        alongside = sum(v["percent_of_roofline_alongside"] >= target for v in members)
        lines.append(
            f"{backend} {dtype} batch={batch}: {best}/{len(members)} rows at >= {target:.0f}% "
            f"of the run's best roofline, {alongside}/{len(members)} against the bandwidth "
            "sampled alongside"
        )
    return lines


def print_row(values):
    print(
        f"{values['backend']:>12} D={values['dim']:<5} {values['dtype']:>8} {values['budget']:>6} "
        f"N={values['num_candidates']:<7} batch={values['batch']:<3} "
        f"{values['ms_per_query']:>10.2f} ms/q "
        f"{values['gflops']:>7.1f} GFLOP/s {values['gbs']:>6.2f} GB/s {values['bound']:>7}-bound "
        f"{values['percent_of_roofline']:>5.0f}% roof "
        f"({values['percent_of_roofline_alongside']:>4.0f}% at {values['read_gbs_alongside']:.0f} "
        "GB/s alongside)",
        flush=True,
    )


def default_backends() -> list[str]:
    """Every compiled backend, and the native kernel's narrower instruction sets beside it."""
    names = [name for name in available_backends() if name != "torch"]
    if "native" in names:
        names[1:1] = [f"native-{name}" for name in instruction_sets()[1:]]
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-candidates", type=int, default=100_000)
    parser.add_argument(
        "--max-gib",
        type=float,
        default=6.0,
        help="memory for one configuration's stored vectors; tiers that do not fit get fewer "
        "candidates (each row reports its N)",
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1024])
    parser.add_argument(
        "--budgets", type=Budget.parse, nargs="+", default=list(PAPER_GROUPS), help="e.g. 1x1 2x4"
    )
    parser.add_argument("--dtypes", nargs="+", default=list(STORAGE_DTYPES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="each row (and the roofline) keeps timing until its runs add up to this",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--backends",
        nargs="+",
        default=default_backends(),
        help="compiled backends to time side by side (default: all available here; "
        "native-avx512 and native-avx2 are the C kernel held to one instruction set)",
    )
    parser.add_argument("--torch", action="store_true", help="also time the pure-torch backend")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also time MultiVectorIndex.search"
    )
    parser.add_argument("--tmp", default=None, help="folder for the end-to-end index")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.num_candidates, args.repeats, args.min_seconds = 5000, 1, 0.0
    torch.set_num_threads(args.threads)
    probe = BandwidthProbe()
    roof = measure_roofline(probe, args.repeats + 2, args.min_seconds)
    roof_first = dict(roof)
    print(
        f"roofline: fp32 GEMM peak {roof['gemm_gflops']:.1f} GFLOP/s, "
        f"DRAM read {roof['read_gbs']:.1f} GB/s, "
        f"{args.threads} threads, backends {args.backends}, native kernel instruction sets "
        f"{instruction_sets()} ('native' picks per shape: AMX where it pays, else the widest "
        "copy that pays)"
    )
    rows: list[dict] = []
    for dim in args.dims:
        for dtype in args.dtypes:
            bench_config(args, roof, probe, dim, dtype, args.num_candidates, rows)
    if args.end_to_end:
        bench_end_to_end(args, roof, probe, rows)
    roof_after = measure_roofline(probe, args.repeats + 2, args.min_seconds)
    best_roof = update_roof(dict(roof), roof_after)
    rescore(rows, best_roof)
    print(
        f"\nbest roofline seen in this run: {best_roof['gemm_gflops']:.1f} GFLOP/s, "
        f"{best_roof['read_gbs']:.1f} GB/s (end: {roof_after['gemm_gflops']:.1f}, "
        f"{roof_after['read_gbs']:.1f}); % of roofline is against the best (a lower bound)"
    )
    for values in rows:
        print_row(values)
    for line in target_summary(rows):
        print(line)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
            "native_instruction_sets": list(instruction_sets()),
        },
        "roofline_start": roof_first,
        "roofline_end": roof_after,
        "roofline_best": best_roof,
        "rows": rows,
    }
    args.output.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
