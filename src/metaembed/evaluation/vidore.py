"""ViDoRe: load v1 (QA format) and v2 (BEIR format) tasks; NDCG@5 over the whole corpus.

* **v1** sets (``vidore/docvqa_test_subsampled`` ...) are one table with
  ``query``, ``image`` and ``image_filename``: every distinct page
  (``image_filename``) is a corpus document, and each row with a query is
  relevant to its own page only. Rows without a query are corpus-only pages.
* **v2** sets (``vidore/esg_reports_v2`` ...) have three configs, ``corpus``
  (``corpus-id``, ``image``), ``queries`` (``query-id``, ``query``, optionally
  ``language``) and ``qrels`` (``query-id``, ``corpus-id``, ``score``). Ids are
  compared as strings. Queries without a relevant page are not scored and are
  counted in :attr:`ViDoReTask.skipped`, as trec_eval averages only queries
  present in both run and qrels.

Every query is scored against every page with :func:`metaembed.maxsim` and the
run goes through :func:`metaembed.evaluation.metrics.evaluate` (trec_eval
conventions, linear gain). Page images are written once to an image folder and
passed as paths, so a corpus is never held decoded in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaembed.budget import Budget
from metaembed.items import Item

__all__ = [
    "VIDORE_V1_TASKS",
    "VIDORE_V2_TASKS",
    "ViDoReTask",
    "v1_rows_to_task",
    "v2_rows_to_task",
    "load_vidore",
    "score_task",
]

logger = logging.getLogger(__name__)

VIDORE_V1_TASKS = tuple(
    f"vidore/{name}"
    for name in (
        "arxivqa_test_subsampled docvqa_test_subsampled infovqa_test_subsampled "
        "tabfquad_test_subsampled tatdqa_test shiftproject_test "
        "syntheticDocQA_artificial_intelligence_test syntheticDocQA_energy_test "
        "syntheticDocQA_government_reports_test syntheticDocQA_healthcare_industry_test"
    ).split()
)
"""The ten ViDoRe v1 Hub datasets."""

VIDORE_V2_TASKS: dict[str, tuple[str, str | None]] = {
    "ESG_Human": ("vidore/esg_reports_human_labeled_v2", "english"),
    "Eco_Mul": ("vidore/economics_reports_v2", None),
    "Bio": ("vidore/biomedical_lectures_v2", "english"),
    "ESG_Syn": ("vidore/esg_reports_v2", "english"),
    "ESG_Syn_Mul": ("vidore/esg_reports_v2", None),
    "Bio_Mul": ("vidore/biomedical_lectures_v2", None),
    "Eco": ("vidore/economics_reports_v2", "english"),
}
"""Table 2's seven tracks: ``name -> (Hub id, query language or None for all languages)``."""


@dataclass(frozen=True)
class ViDoReTask:
    """One retrieval task: queries, the whole corpus and graded relevance."""

    name: str
    query_ids: tuple[str, ...]
    query_items: tuple[Item, ...]
    corpus_ids: tuple[str, ...]
    corpus_items: tuple[Item, ...]
    qrels: dict[str, dict[str, int]]
    skipped: dict[str, int] = field(default_factory=dict)
    revision: str = ""


def _count(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def _page(
    value: Any,
    roots: Sequence[Path],
    image_dir: Path,
    where: str,
    on_invalid: str,
    skipped: dict[str, int],
) -> Item | None:
    from metaembed.evaluation.sources import materialise_image

    try:
        return Item(image=materialise_image(value, roots, image_dir, where))
    except ValueError:
        if on_invalid == "error":
            raise
        _count(skipped, "missing_image")
        return None


def _query_text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def v1_rows_to_task(
    name: str,
    rows: Sequence[dict[str, Any]],
    image_dir: Path,
    roots: Sequence[Path] = (),
    on_invalid: str = "error",
) -> ViDoReTask:
    """Build a task from ViDoRe v1 QA rows (``query``, ``image``, ``image_filename``)."""
    corpus: dict[str, Item] = {}
    queries: list[tuple[str, Item, str]] = []
    skipped: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"{name} row {index}"
        page_id = str(row.get("image_filename") or f"row-{index}")
        if page_id not in corpus:
            page = _page(row.get("image"), roots, image_dir, where, on_invalid, skipped)
            if page is None:
                continue
            corpus[page_id] = page
        text = _query_text(row.get("query"))
        if text is not None:
            queries.append((f"q{index}", Item(text=text), page_id))
    qrels = {qid: {page_id: 1} for qid, _, page_id in queries}
    return _finish(name, [(q, item) for q, item, _ in queries], corpus, qrels, skipped)


def v2_rows_to_task(
    name: str,
    corpus_rows: Sequence[dict[str, Any]],
    query_rows: Sequence[dict[str, Any]],
    qrel_rows: Sequence[dict[str, Any]],
    image_dir: Path,
    roots: Sequence[Path] = (),
    language: str | None = None,
    on_invalid: str = "error",
) -> ViDoReTask:
    """Build a task from ViDoRe v2 BEIR configs; ``language`` keeps only queries in it."""
    skipped: dict[str, int] = {}
    corpus: dict[str, Item] = {}
    for index, row in enumerate(corpus_rows):
        page = _page(
            row.get("image"), roots, image_dir, f"{name} corpus row {index}", on_invalid, skipped
        )
        if page is not None:
            corpus[str(row["corpus-id"])] = page
    qrels: dict[str, dict[str, int]] = {}
    for row in qrel_rows:
        if int(row.get("score", 1)) >= 1 and str(row["corpus-id"]) in corpus:
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(
                row.get("score", 1)
            )
    queries = []
    for row in query_rows:
        if language is not None and str(row.get("language", language)).lower() != language.lower():
            continue
        qid, text = str(row["query-id"]), _query_text(row.get("query"))
        if text is None:
            _count(skipped, "empty_query")
        elif qid not in qrels:
            _count(skipped, "no_relevant_page")
        else:
            queries.append((qid, Item(text=text)))
    return _finish(name, queries, corpus, qrels, skipped)


def _finish(
    name: str,
    queries: list[tuple[str, Item]],
    corpus: dict[str, Item],
    qrels: dict[str, dict[str, int]],
    skipped: dict[str, int],
) -> ViDoReTask:
    if not corpus:
        raise ValueError(f"ViDoRe task {name!r} has no corpus page with an image")
    if not queries:
        raise ValueError(
            f"ViDoRe task {name!r} has no query with a relevant page (skipped: {skipped})"
        )
    if skipped:
        logger.warning("%s: skipped %s", name, skipped)
    kept = {qid for qid, _ in queries}
    return ViDoReTask(
        name=name,
        query_ids=tuple(qid for qid, _ in queries),
        query_items=tuple(item for _, item in queries),
        corpus_ids=tuple(corpus),
        corpus_items=tuple(corpus.values()),
        qrels={qid: grades for qid, grades in qrels.items() if qid in kept},
        skipped=skipped,
    )


def _rows(data: str, config: str | None, revision: str | None) -> list[dict[str, Any]]:
    from metaembed.evaluation import sources

    if sources.is_local(data):
        folder = Path(data).expanduser() / (config or "")
        return sources.read_parquet_rows(folder)
    return sources.load_hub_rows(data, config, "test", revision)


def load_vidore(
    data: str | Path,
    version: str = "v2",
    *,
    name: str | None = None,
    language: str | None = None,
    image_dir: str | Path | None = None,
    revision: str | None = None,
    on_invalid: str = "error",
) -> tuple[ViDoReTask, str]:
    """Load one ViDoRe task from a Hub id or a local folder in the Hub layout.

    A local v1 folder holds parquet files (directly or in one sub-folder); a
    local v2 folder holds ``corpus/``, ``queries/`` and ``qrels/`` sub-folders.
    Page images are written to ``image_dir`` (a temporary folder by default).

    Returns
    -------
    task : ViDoReTask
    revision : str
        Cache key of the data version.
    """
    from metaembed.evaluation import sources

    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    data = str(data)
    name = name or Path(data.rstrip("/")).name
    image_dir = (
        Path(image_dir)
        if image_dir is not None
        else Path(tempfile.mkdtemp(prefix="metaembed-pages-"))
    )
    local = sources.is_local(data)
    roots = [Path(data).expanduser()] if local else []
    key = sources.local_revision(data) if local else sources.hub_revision(data, revision)
    if version == "v1":
        config = None
        if local and not sources.parquet_files(data):
            configs = sources.list_local_configs(data)
            config = configs[0] if len(configs) == 1 else None
        task = v1_rows_to_task(name, _rows(data, config, revision), image_dir, roots, on_invalid)
        return dataclasses.replace(task, revision=key), key
    corpus, queries, qrels = (
        _rows(data, part, revision) for part in ("corpus", "queries", "qrels")
    )
    task = v2_rows_to_task(name, corpus, queries, qrels, image_dir, roots, language, on_invalid)
    key += f"-{language}" if language else ""
    return dataclasses.replace(task, revision=key), key


def score_task(
    task: ViDoReTask,
    query_embeddings: torch.Tensor,
    corpus_embeddings: torch.Tensor,
    budget: Budget,
    metrics: Sequence[str] = ("ndcg@5",),
) -> dict[str, float]:
    """Score every query against the whole corpus and compute ``metrics`` (trec_eval conventions).

    Parameters
    ----------
    query_embeddings : torch.Tensor, shape (len(task.query_ids), Rq, D)
    corpus_embeddings : torch.Tensor, shape (len(task.corpus_ids), Rc, D)
    """
    from metaembed.evaluation.metrics import evaluate
    from metaembed.maxsim import maxsim

    scores = maxsim(query_embeddings, corpus_embeddings, budget)  # (Nq, Nc)
    run = {
        qid: dict(zip(task.corpus_ids, row.tolist(), strict=True))
        for qid, row in zip(task.query_ids, scores, strict=True)
    }
    return evaluate(run, task.qrels, metrics)
