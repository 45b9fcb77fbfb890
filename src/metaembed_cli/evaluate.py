r"""``metaembed eval``: MMEB (Precision@1) and ViDoRe v1/v2 (NDCG@5) at every budget.

Examples::

    metaembed eval mmeb --model runs/me-7b --data TIGER-Lab/MMEB-eval \
        --images ~/mmeb/eval_images --budgets all --output results/mmeb
    metaembed eval mmeb --model runs/me-7b --data ~/mmeb-local --tasks ImageNet-1K,CIRR --output out
    metaembed eval vidore-v2 --model runs/me-7b --output results/vidore2   # table 2, 7 tracks
    metaembed eval vidore-v1 --model runs/me-7b --data ~/vidore/docvqa_test_subsampled --output out

``--data`` is a Hub id or a local folder in the Hub layout (MMEB: one
sub-folder of parquet files per task, images beside them; ViDoRe v2:
``corpus/``, ``queries/``, ``qrels/``; a folder of such folders evaluates each).
Writes ``DIR/results.json`` (per budget: per task and averaged), ``results.md``
and ``results.png``. Embeddings are cached under ``--cache`` (keyed by model,
dataset and revision), so a second run or a new budget encodes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "vidore_specs"]

logger = logging.getLogger(__name__)

BENCHMARKS = ("mmeb", "vidore-v1", "vidore-v2")
DEFAULT_CACHE = Path.home() / ".cache" / "metaembed" / "embeddings"


def register(subparsers: Any) -> None:
    """Add the ``eval`` sub-command."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on MMEB or ViDoRe at every retrieval budget",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("benchmark", choices=BENCHMARKS)
    parser.add_argument("--model", required=True, help="saved MetaEmbed model folder or Hub id")
    parser.add_argument(
        "--data",
        action="append",
        help="Hub id or local folder (repeatable); default: the paper's set",
    )
    parser.add_argument("--output", required=True, help="output folder for results.json/.md/.png")
    parser.add_argument(
        "--budgets", default="all", help="'all' (the model's trained groups) or e.g. '1x1,16x64'"
    )
    parser.add_argument("--tasks", help="MMEB: comma-separated task names (default: all in --data)")
    parser.add_argument(
        "--images", help="MMEB: folder the image paths are relative to (extracted images.zip)"
    )
    parser.add_argument("--language", help="ViDoRe v2: keep only queries in this language")
    parser.add_argument("--revision", help="Hub dataset revision")
    parser.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE),
        help=f"embedding cache folder (default {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the embedding cache"
    )
    parser.add_argument(
        "--on-invalid",
        choices=("error", "skip"),
        default="error",
        help="rows with missing images or no candidates: stop (default) or skip and count them",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default: the model's)")
    parser.add_argument("--no-plot", action="store_true", help="skip results.png")
    parser.set_defaults(func=run)


def vidore_specs(
    version: str, data: list[str] | None, language: str | None
) -> list[tuple[str, str, str | None]]:
    """``(task name, data, language)`` for each ViDoRe task to evaluate."""
    from metaembed.evaluation import sources
    from metaembed.evaluation.vidore import VIDORE_V1_TASKS, VIDORE_V2_TASKS

    if not data:
        if version == "v1":
            return [(hub.split("/")[-1], hub, None) for hub in VIDORE_V1_TASKS]
        return [(name, hub, language or lang) for name, (hub, lang) in VIDORE_V2_TASKS.items()]
    specs: list[tuple[str, str, str | None]] = []
    for entry in data:
        folder = Path(entry).expanduser()
        single = (
            not folder.is_dir() or sources.parquet_files(folder) or (folder / "corpus").is_dir()
        )
        if single:
            specs.append((Path(entry.rstrip("/")).name, entry, language))
            continue
        children = sorted(child for child in folder.iterdir() if child.is_dir())
        by_hub_name = {
            hub.split("/")[-1]: (name, lang) for name, (hub, lang) in VIDORE_V2_TASKS.items()
        }
        if (
            version == "v2"
            and language is None
            and any(child.name in by_hub_name for child in children)
        ):
            for name, (hub, lang) in VIDORE_V2_TASKS.items():
                if (folder / hub.split("/")[-1]).is_dir():
                    specs.append((name, str(folder / hub.split("/")[-1]), lang))
        else:
            specs.extend((child.name, str(child), language) for child in children)
    return specs


def _load_model(args: argparse.Namespace) -> Any:
    from metaembed.model.modeling import MetaEmbedModel

    return MetaEmbedModel.from_pretrained(args.model, device=args.device)


def _load_tasks(args: argparse.Namespace, pages_dir: Path) -> tuple[list[Any], str, str]:
    if args.benchmark == "mmeb":
        from metaembed.evaluation.mmeb import MMEB_HUB_ID, load_mmeb

        data = (args.data or [MMEB_HUB_ID])[0]
        tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
        loaded, revision = load_mmeb(
            data, tasks, images_root=args.images, revision=args.revision, on_invalid=args.on_invalid
        )
        return loaded, revision, data
    from metaembed.evaluation.vidore import load_vidore

    version = args.benchmark.split("-")[1]
    loaded, revisions = [], []
    for name, data, language in vidore_specs(version, args.data, args.language):
        task, revision = load_vidore(
            data,
            version,
            name=name,
            language=language,
            image_dir=pages_dir,
            revision=args.revision,
            on_invalid=args.on_invalid,
        )
        loaded.append(task)
        revisions.append(revision)
    return loaded, "+".join(sorted(set(revisions))), ",".join(args.data or ["paper suite"])


def run(args: argparse.Namespace) -> int:
    """Load the model and data, sweep the budgets, write the results."""
    from metaembed.evaluation.cache import EmbeddingCache, model_fingerprint
    from metaembed.evaluation.runner import run_mmeb, run_vidore

    started = time.perf_counter()
    output = Path(args.output)
    try:
        model = _load_model(args)
        tasks, revision, data = _load_tasks(args, Path(args.cache) / "pages")
        model_key = model_fingerprint(model)
        cache = None if args.no_cache else EmbeddingCache(args.cache, model_key)
        common = dict(
            budgets=args.budgets,
            cache=cache,
            revision=revision,
            batch_size=args.batch_size,
            show_progress=sys.stderr.isatty(),
            benchmark=args.benchmark,
        )
        runner = run_mmeb if args.benchmark == "mmeb" else run_vidore
        dataset_key = data if args.benchmark == "mmeb" else args.benchmark
        result = runner(model, tasks, dataset_key=dataset_key, **common)
    except (ValueError, FileNotFoundError) as error:
        print(f"metaembed eval: error: {error}", file=sys.stderr)
        return 2
    result.metadata.update(
        {
            "model": str(args.model),
            "model_key": model_key,
            "data": data,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    paths = result.write(output, plot=not args.no_plot)
    print(result.markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
