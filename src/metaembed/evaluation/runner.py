"""Benchmark runners: encode each distinct item once, then score every budget.

:func:`run_mmeb` and :func:`run_vidore` share one pattern:

1. gather the queries and candidates of a task and encode each *distinct*
   one once, at the model's full number of vectors (through the
   :class:`~metaembed.evaluation.cache.EmbeddingCache` when given);
2. for each budget, score with prefixes of those embeddings (MetaEmbed's
   vectors are nested, so no re-encoding is needed);
3. collect ``{budget: {task: metric}}`` in a
   :class:`~metaembed.evaluation.sweep.SweepResult`.

Any object with ``encode_queries`` / ``encode_candidates`` returning
``(N, R, D)`` tensors works as the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from metaembed.budget import Budget, parse_budgets
from metaembed.evaluation.cache import EmbeddingCache, encode_items
from metaembed.evaluation.mmeb import META_TASKS, MMEBTask, precision_at_1
from metaembed.evaluation.sweep import SweepResult

__all__ = ["trained_budgets", "resolve_budgets", "run_mmeb", "run_vidore"]

logger = logging.getLogger(__name__)


def trained_budgets(model: Any) -> tuple[Budget, ...]:
    """Return the budgets a model was trained for: its MMR groups that fit its vectors.

    Single-vector models (``pooling`` ``last`` or ``mean``) give ``(1x1,)``;
    a model without a MetaEmbed config gives its largest budget only when known.
    """
    config = getattr(model, "config", None)
    groups = getattr(config, "groups", None)
    num_vectors = getattr(config, "num_vectors", None)
    if groups is None or num_vectors is None:
        raise ValueError(
            "the model has no MetaEmbed config with groups; pass budgets explicitly, e.g. '16x64'"
        )
    rq, rc = num_vectors("query"), num_vectors("candidate")
    fitting = tuple(group for group in groups if group.fits(rq, rc))
    return fitting or (Budget(rq, rc),)


def resolve_budgets(model: Any, budgets: str | Iterable[Any] | None) -> tuple[Budget, ...]:
    """Return :func:`trained_budgets` for ``None`` / ``"all"``, else the parsed budgets.

    Accepts ``"1x1 16x64"``, ``"1x1,16x64"``, pairs or :class:`Budget` values.
    """
    if budgets is None or (isinstance(budgets, str) and budgets.strip().lower() == "all"):
        return trained_budgets(model)
    if isinstance(budgets, str):
        budgets = budgets.replace(",", " ") if "x" in budgets.lower() else budgets
    parsed = tuple(sorted(set(parse_budgets(budgets))))
    if not parsed:
        raise ValueError("no budgets given; use 'all' or a list such as '1x1,16x64'")
    return parsed


def _progress(tasks: Sequence[Any], benchmark: str, enabled: bool) -> Any:
    """Iterate over tasks with a progress bar when ``enabled`` and stderr is a terminal."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        tasks, desc=f"{benchmark} tasks", unit="task", disable=not (enabled and sys.stderr.isatty())
    )


def _mmeb_groups(tasks: Sequence[MMEBTask]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    metas = list(META_TASKS) + sorted({t.meta_task for t in tasks} - set(META_TASKS))
    for meta in metas:
        names = tuple(t.name for t in tasks if t.meta_task == meta)
        if names:
            groups[meta] = names
    for split in ("IND", "OOD"):
        names = tuple(t.name for t in tasks if t.split == split)
        if names:
            groups[split] = names
    return groups


def run_mmeb(
    model: Any,
    tasks: Sequence[MMEBTask],
    budgets: str | Iterable[Any] | None = "all",
    *,
    cache: EmbeddingCache | None = None,
    dataset_key: str = "mmeb",
    revision: str = "default",
    batch_size: int = 16,
    show_progress: bool = True,
    benchmark: str = "mmeb",
) -> SweepResult:
    """Precision@1 of every task at every budget (each row ranks its own candidates).

    Returns
    -------
    SweepResult
        ``scores[budget][task]`` in [0, 1], with the meta-task and IND/OOD groups of table 1.
    """
    budget_list = resolve_budgets(model, budgets)
    scores: dict[str, dict[str, float]] = {str(b): {} for b in budget_list}
    task_facts: dict[str, dict[str, Any]] = {}
    for task in _progress(tasks, benchmark, show_progress):
        started = time.perf_counter()
        queries = [row.query for row in task.rows]
        flat_candidates = [item for row in task.rows for item in row.candidates]
        common = dict(
            cache=cache,
            dataset_key=f"{dataset_key}/{task.name}",
            revision=revision,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        query_embeddings, query_positions = encode_items(
            model, queries, "query", **common
        )  # (Nq, Rq, D)
        candidate_embeddings, flat_positions = encode_items(
            model, flat_candidates, "candidate", **common
        )  # (Nc, Rc, D)
        candidate_positions, start = [], 0
        for row in task.rows:
            candidate_positions.append(flat_positions[start : start + len(row.candidates)])
            start += len(row.candidates)
        for budget in budget_list:
            scores[str(budget)][task.name] = precision_at_1(
                query_embeddings, candidate_embeddings, query_positions, candidate_positions, budget
            )
        task_facts[task.name] = {
            "meta_task": task.meta_task,
            "split": task.split,
            "num_rows": len(task.rows),
            "skipped_rows": dict(task.skipped),
            "distinct_queries": int(query_embeddings.shape[0]),
            "distinct_candidates": int(candidate_embeddings.shape[0]),
            "chance": sum(1 / len(row.candidates) for row in task.rows) / len(task.rows),
            "seconds": round(time.perf_counter() - started, 3),
        }
        logger.info("%s: %s", task.name, {b: round(scores[b][task.name], 4) for b in scores})
    metadata = {"revision": revision, "budgets_trained": [str(b) for b in budget_list]}
    return SweepResult(benchmark, "p@1", scores, _mmeb_groups(tasks), task_facts, metadata)


def run_vidore(
    model: Any,
    tasks: Sequence[Any],
    budgets: str | Iterable[Any] | None = "all",
    *,
    cache: EmbeddingCache | None = None,
    dataset_key: str = "vidore",
    revision: str = "default",
    batch_size: int = 16,
    show_progress: bool = True,
    benchmark: str = "vidore",
    metrics: Sequence[str] = ("ndcg@5",),
) -> SweepResult:
    """NDCG@5 (first of ``metrics``) of every ViDoRe task at every budget, over the whole corpus."""
    from metaembed.evaluation.vidore import score_task

    budget_list = resolve_budgets(model, budgets)
    scores: dict[str, dict[str, float]] = {str(b): {} for b in budget_list}
    extra: dict[str, dict[str, Any]] = {}
    task_facts: dict[str, dict[str, Any]] = {}
    for task in _progress(tasks, benchmark, show_progress):
        started = time.perf_counter()
        common = dict(
            cache=cache,
            dataset_key=f"{dataset_key}/{task.name}",
            revision=task.revision or revision,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        query_embeddings, query_positions = encode_items(
            model, task.query_items, "query", **common
        )  # (Nq, Rq, D)
        corpus_embeddings, corpus_positions = encode_items(
            model, task.corpus_items, "candidate", **common
        )  # (Nc, Rc, D)
        for budget in budget_list:
            values = score_task(
                task,
                query_embeddings[query_positions],
                corpus_embeddings[corpus_positions],
                budget,
                metrics,
            )
            scores[str(budget)][task.name] = values[metrics[0]]
            extra.setdefault(str(budget), {})[task.name] = values
        task_facts[task.name] = {
            "num_queries": len(task.query_items),
            "num_corpus": len(task.corpus_items),
            "skipped_rows": dict(task.skipped),
            "seconds": round(time.perf_counter() - started, 3),
        }
        logger.info("%s: %s", task.name, {b: round(scores[b][task.name], 4) for b in scores})
    metadata = {"revision": revision, "all_metrics": extra}
    return SweepResult(benchmark, metrics[0], scores, {}, task_facts, metadata)
