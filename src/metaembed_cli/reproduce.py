"""``metaembed reproduce ablations``: the paper's ablations at small scale, on CPU.

Trains MetaEmbed (MMR), NoMMR, single-last, single-mean and split-16x64
identically on the synthetic benchmark from scratch (a tiny model), evaluates
every budget, and writes ``ablations.md``, ``ablations.json`` and
``ablations.png`` into ``--output`` (default ``docs/results``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` sub-command."""
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's ablations at small scale (CPU, minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", choices=("ablations",))
    parser.add_argument(
        "--output", default="docs/results", help="report folder (default docs/results)"
    )
    parser.add_argument("--work-dir", help="where data and models go (default: a temporary folder)")
    parser.add_argument(
        "--variants",
        default="MetaEmbed,NoMMR,single-last,single-mean,split",
        help="comma-separated subset of the variants",
    )
    parser.add_argument("--steps", type=int, help="training steps per variant")
    parser.add_argument("--batch-size", type=int, help="triples per step")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--eval-rows", type=int, help="evaluation rows per task")
    parser.add_argument("--train-examples", type=int, help="training examples per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", help="tiny backbone family (default qwen2_vl)")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    import dataclasses

    from metaembed.evaluation.reproduce import AblationSettings

    settings = AblationSettings(seed=args.seed)
    changes = {
        name: getattr(args, name)
        for name in ("steps", "batch_size", "learning_rate", "family")
        if getattr(args, name) is not None
    }
    data_changes = {
        name: value
        for name, value in (("eval_rows", args.eval_rows), ("train_examples", args.train_examples))
        if value is not None
    }
    data = dataclasses.replace(settings.data, seed=args.seed, **data_changes)
    return dataclasses.replace(settings, data=data, **changes)


def run(args: argparse.Namespace) -> int:
    """Train and evaluate every variant, then write the report."""
    from metaembed.evaluation.ablation_report import write_ablation_report
    from metaembed.evaluation.reproduce import VARIANTS, run_ablations

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        print(
            f"metaembed reproduce: error: unknown variants {unknown}; choose from {VARIANTS}",
            file=sys.stderr,
        )
        return 2
    settings = _settings(args)
    command = (
        "metaembed " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if len(sys.argv) > 1 else ""
    )
    with tempfile.TemporaryDirectory(prefix="metaembed-ablations-") as scratch:
        results = run_ablations(args.work_dir or scratch, settings, variants)
    paths = write_ablation_report(
        results, args.output, command=command or "metaembed reproduce ablations"
    )
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
