"""The demo run: encode the held-out openclipart tasks once, index them, sweep every trained budget.

Steps (each timed, see :attr:`DemoResult.timings`):

1. data: parse openclipart (cached), rebuild the split the model was trained
   with (read from the model folder's ``training_config.json``), flatten the
   held-out images on white, build the five tasks;
2. model: load the shipped MetaEmbed model;
3. encode every distinct query and candidate once at the full budget
   (MetaEmbed's vectors are nested: a smaller budget is a prefix);
4. index the three candidate collections (held-out images, their titles,
   the category names) in :class:`metaembed.MultiVectorIndex`;
5. for each trained budget, search every task, score it with trec_eval
   conventions, and time the image-collection search per query;
6. the single-vector baseline on the same tasks (:mod:`.baselines`);
7. a few example searches (query -> top titles).

Nothing here prints; :mod:`metaembed_cli.demo` renders the result.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaembed.budget import Budget
from metaembed.data.clipart_tasks import RetrievalTask
from metaembed.demo.baselines import LINEAR_MAP_FILENAME
from metaembed.items import Item

__all__ = ["DemoSettings", "DemoResult", "RETRIEVAL_TASKS", "run_demo", "search_tasks"]

logger = logging.getLogger(__name__)

RETRIEVAL_TASKS = ("t2i-title", "t2i-keywords", "t2i-description", "i2t-title")
"""Tasks averaged in the Recall / NDCG columns; ``classification`` has its own column."""

METRICS = ("recall@1", "recall@10", "ndcg@10", "p@1")


@dataclass(frozen=True)
class DemoSettings:
    """Where things are and how the demo runs."""

    model_dir: str = "models/demo"
    openclipart_root: str = "/usr/share/openclipart"
    data_cache: str = "cache/openclipart"
    work_dir: str = "runs/demo"
    batch_size: int = 16
    index_dtype: str = "float16"
    index_backend: str = "auto"  # the fastest kernel here (native C, else numba, else torch)
    k: int = 10
    num_examples: int = 4
    show_progress: bool = True


@dataclass
class DemoResult:
    """Everything the demo measured (``to_dict`` is what ``demo-results.json`` holds)."""

    rows: list[dict[str, Any]]
    examples: list[dict[str, Any]]
    timings: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "rows": self.rows,
            "examples": self.examples,
            "timings_s": self.timings,
            "info": self.info,
        }


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def measure(self, name: str):  # noqa: ANN201 - context manager
        timer = self

        class _Span:
            def __enter__(self) -> None:
                self.start = time.perf_counter()

            def __exit__(self, *args: Any) -> None:
                timer.timings[name] = (
                    timer.timings.get(name, 0.0) + time.perf_counter() - self.start
                )

        return _Span()


def _collections(tasks: dict[str, RetrievalTask]) -> dict[str, str]:
    """Task -> name of its candidate collection (t2i tasks share the image collection)."""
    return {name: ("images" if name.startswith("t2i") else name) for name in tasks}


def encode_tasks(
    model: Any, tasks: dict[str, RetrievalTask], batch_size: int = 16, show_progress: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Encode at the full budget: ``{task: (Nq, R_q, D)}`` and ``{collection: (Nc, R_c, D)}``.

    Distinct query items are encoded once across tasks; the t2i tasks share one image collection.
    """
    query_items = list(dict.fromkeys(item for task in tasks.values() for item in task.queries))
    query_vectors = model.encode_queries(
        query_items, batch_size=batch_size, show_progress=show_progress
    )
    row_of = {item: row for row, item in enumerate(query_items)}
    queries = {
        name: query_vectors[[row_of[item] for item in task.queries]] for name, task in tasks.items()
    }
    candidates: dict[str, torch.Tensor] = {}
    for name, collection in _collections(tasks).items():
        if collection not in candidates:
            items = list(tasks[name].candidates)
            candidates[collection] = model.encode_candidates(
                items, batch_size=batch_size, show_progress=show_progress
            )
    return queries, candidates


def build_indexes(
    candidates: dict[str, torch.Tensor],
    folder: Path,
    groups: Sequence[Budget],
    dtype: str,
    backend: str = "auto",
) -> dict[str, Any]:
    """One :class:`MultiVectorIndex` per collection under ``folder`` (recreated), ids ``0..N-1``."""
    from metaembed.index.multivector import MultiVectorIndex

    if folder.exists():
        shutil.rmtree(folder)
    indexes = {}
    for name, vectors in candidates.items():  # (N, R_c, D)
        fitting = [group for group in groups if group.r_c <= vectors.shape[1]] or [
            Budget(1, vectors.shape[1])
        ]
        index = MultiVectorIndex.create(
            folder / name,
            dim=vectors.shape[2],
            num_vectors=vectors.shape[1],
            dtype=dtype,
            groups=fitting,
            backend=backend,
        )
        index.add(list(range(vectors.shape[0])), vectors)
        indexes[name] = index
    return indexes


def search_tasks(
    tasks: dict[str, RetrievalTask],
    queries: dict[str, torch.Tensor],
    indexes: dict[str, Any],
    budget: Budget,
    k: int = 10,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], float]:
    """Search every task under ``budget``; return per-task metrics, results, ms per t2i query."""
    from metaembed.evaluation.metrics import evaluate

    collections = _collections(tasks)
    metrics: dict[str, dict[str, float]] = {}
    results: dict[str, Any] = {}
    milliseconds = float("nan")
    for name, task in tasks.items():
        index = indexes[collections[name]]
        task_budget = Budget(
            min(budget.r_q, queries[name].shape[1]), min(budget.r_c, index.num_vectors)
        )
        task_queries = queries[name][:, : task_budget.r_q]  # (Nq, r_q, D)
        if name == "t2i-title":  # one untimed call first: first-use costs are not latency
            index.search(task_queries[:1], k=min(k, len(index)), budget=task_budget)
        start = time.perf_counter()
        result = index.search(task_queries, k=min(k, len(index)), budget=task_budget)
        elapsed = time.perf_counter() - start
        if name == "t2i-title":
            milliseconds = 1000.0 * elapsed / len(task.queries)
        run = {
            query_id: {task.candidate_ids[i]: score for i, score in result.hits(row)}
            for row, query_id in enumerate(task.query_ids)
        }
        metrics[name] = evaluate(run, task.qrels, METRICS)
        results[name] = result
    return metrics, results, milliseconds


def summary_row(
    label: str,
    budget: Budget,
    metrics: dict[str, dict[str, float]],
    milliseconds: float,
    num_images: int,
    dim: int,
    index: Any,
) -> dict[str, Any]:
    """One table row: retrieval means, classification accuracy, FLOPs, latency, index memory."""
    retrieval = [metrics[name] for name in RETRIEVAL_TASKS if name in metrics]

    def mean(metric: str) -> float:
        return sum(values[metric] for values in retrieval) / max(1, len(retrieval))

    return {
        "model": label,
        "budget": str(budget),
        "recall@1": mean("recall@1"),
        "recall@10": mean("recall@10"),
        "ndcg@10": mean("ndcg@10"),
        "classification_accuracy": metrics.get("classification", {}).get("p@1", float("nan")),
        "scoring_flops": budget.scoring_flops(num_images, dim),
        "latency_ms_per_query": milliseconds,
        "index_bytes": int(index.stats()["bytes_per_budget"].get(str(budget), 0)),
        "per_task": metrics,
    }


def baseline_rows(
    model: Any,
    tasks: dict[str, RetrievalTask],
    model_dir: Path,
    folder: Path,
    k: int,
    dtype: str,
    show_progress: bool,
    backend: str = "auto",
) -> list[dict[str, Any]]:
    """Run the single-vector baseline (:mod:`.baselines`) on the same tasks and index code."""
    from metaembed.demo.baselines import MiniLMEncoder, load_linear_map, map_images

    image_map = load_linear_map(model_dir)
    minilm = MiniLMEncoder()
    images = list(
        dict.fromkeys(
            item.image
            for task in tasks.values()
            for item in (*task.queries, *task.candidates)
            if item.image
        )
    )
    grids = model.adapter.frozen_image_features(images, show_progress=show_progress)  # (N, G, C)
    features = grids.mean(dim=1)  # (N, C)
    image_vectors = dict(zip(images, map_images(image_map, features), strict=False))  # path -> (D,)

    texts = list(
        dict.fromkeys(
            item.text or ""
            for task in tasks.values()
            for item in (*task.queries, *task.candidates)
            if item.image is None
        )
    )
    text_vectors = dict(zip(texts, minilm.encode(texts, show_progress=show_progress), strict=True))

    def vectors(items: Sequence[Item]) -> torch.Tensor:
        rows = [
            image_vectors[item.image] if item.image is not None else text_vectors[item.text or ""]
            for item in items
        ]
        return torch.stack(rows).unsqueeze(1)  # (N, 1, D)

    queries = {name: vectors(task.queries) for name, task in tasks.items()}
    candidates: dict[str, torch.Tensor] = {}
    for name, collection in _collections(tasks).items():
        if collection not in candidates:
            candidates[collection] = vectors(tasks[name].candidates)
    indexes = build_indexes(candidates, folder, [Budget(1, 1)], dtype, backend)
    metrics, _, milliseconds = search_tasks(tasks, queries, indexes, Budget(1, 1), k)
    dim = candidates["images"].shape[2]
    label = "baseline: MiniLM + EfficientNet linear map"
    return [
        summary_row(
            label,
            Budget(1, 1),
            metrics,
            milliseconds,
            len(tasks["t2i-title"].candidates),
            dim,
            indexes["images"],
        )
    ]


def example_searches(
    tasks: dict[str, RetrievalTask],
    results: dict[str, Any],
    titles: dict[str, str],
    count: int,
    top: int = 3,
) -> list[dict[str, Any]]:
    """Return the first ``count`` title queries with the titles of their top images."""
    task = tasks["t2i-title"]
    result = results["t2i-title"]
    examples = []
    for row in range(min(count, len(task.queries))):
        hits = [task.candidate_ids[i] for i, _ in result.hits(row)[:top]]
        relevant = set(task.qrels[task.query_ids[row]])
        examples.append(
            {
                "query": task.queries[row].text,
                "top": [
                    {"title": titles[hit], "image_id": hit, "relevant": hit in relevant}
                    for hit in hits
                ],
            }
        )
    return examples


def reference_points(tasks: dict[str, RetrievalTask]) -> dict[str, float]:
    """Scores that need no model: random R@10 over the images, majority-class accuracy."""
    points: dict[str, float] = {}
    if "t2i-title" in tasks:
        points["random_recall@10_images"] = min(1.0, 10 / len(tasks["t2i-title"].candidates))
    if "classification" in tasks:
        labels = [next(iter(relevant)) for relevant in tasks["classification"].qrels.values()]
        points["majority_class_accuracy"] = max(labels.count(label) for label in set(labels)) / len(
            labels
        )
    return points


def run_demo(settings: DemoSettings = DemoSettings()) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it measured."""
    from metaembed.data.clipart_dataset import prepare_clipart_data
    from metaembed.demo.training import split_settings
    from metaembed.evaluation.runner import trained_budgets
    from metaembed.model.modeling import MetaEmbedModel

    timer = _Timer()
    model_dir = Path(settings.model_dir)
    split = split_settings(model_dir)
    with timer.measure("data"):
        data = prepare_clipart_data(
            settings.openclipart_root,
            settings.data_cache,
            include_train=False,
            show_progress=settings.show_progress,
            **split,
        )
    with timer.measure("model_load"):
        model = MetaEmbedModel.from_pretrained(model_dir)
    with timer.measure("encode"):
        queries, candidates = encode_tasks(
            model, data.tasks, settings.batch_size, settings.show_progress
        )
    budgets = trained_budgets(model)
    work = Path(settings.work_dir)
    with timer.measure("index"):
        indexes = build_indexes(
            candidates, work / "index", budgets, settings.index_dtype, settings.index_backend
        )
    rows, results = [], {}
    with timer.measure("search"):
        for budget in budgets:
            metrics, results, milliseconds = search_tasks(
                data.tasks, queries, indexes, budget, settings.k
            )
            dim = candidates["images"].shape[2]
            rows.append(
                summary_row(
                    "MetaEmbed",
                    budget,
                    metrics,
                    milliseconds,
                    len(data.heldout),
                    dim,
                    indexes["images"],
                )
            )
    with timer.measure("baseline"):
        if not (model_dir / LINEAR_MAP_FILENAME).is_file():
            logger.warning(
                "no %s in %s: the baseline is skipped "
                "(fit it with: metaembed demo --fit-baseline MODEL_DIR)",
                LINEAR_MAP_FILENAME,
                model_dir,
            )
        else:
            rows += baseline_rows(
                model,
                data.tasks,
                model_dir,
                work / "baseline-index",
                settings.k,
                settings.index_dtype,
                settings.show_progress,
                settings.index_backend,
            )
    titles = {image.image_id: image.title for image in data.heldout}
    examples = example_searches(data.tasks, results, titles, settings.num_examples)
    info = {
        "model_dir": str(model_dir),
        "model_config": model.config.to_dict(),
        "heldout_images": len(data.heldout),
        "tasks": {
            name: {"queries": len(t.queries), "candidates": len(t.candidates)}
            for name, t in data.tasks.items()
        },
        "index_dtype": settings.index_dtype,
        "reference_points": reference_points(data.tasks),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    return DemoResult(rows=rows, examples=examples, timings=timer.timings, info=info)
