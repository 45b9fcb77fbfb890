"""Ranking metrics with trec_eval conventions.

``evaluate(run, qrels)`` returns the mean over queries of each metric, computed
the way trec_eval (and pytrec_eval) compute ``ndcg_cut_k``, ``P_k``,
``recall_k`` and ``recip_rank`` (the latter on the run cut at ``k``):

* a run is ranked by score, descending; ties are broken by document id,
  descending, as trec_eval does;
* a document is relevant when its grade is >= 1; NDCG uses the grade as a
  linear gain with a ``log2(rank + 1)`` discount, and the ideal ranking from
  the qrels;
* queries are averaged over those present in both the run and the qrels
  (trec_eval's default); a query of the qrels absent from the run is not
  counted -- pass ``missing_as_zero=True`` to count it as zero.

>>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}}
>>> qrels = {"q1": {"d2": 1, "d3": 2}}
>>> scores = evaluate(run, qrels, metrics=("p@1", "recall@2", "mrr@10", "ndcg@3"))
>>> {name: round(value, 4) for name, value in scores.items()}
{'p@1': 0.0, 'recall@2': 0.5, 'mrr@10': 0.5, 'ndcg@3': 0.6199}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["evaluate", "per_query", "parse_metric", "SUPPORTED_METRICS"]

SUPPORTED_METRICS = ("ndcg", "p", "recall", "mrr", "hit")
"""Metric families, each written ``name@k``.

``hit@k`` is 1 when any relevant document is in the top k, else 0.
"""

_METRIC_PATTERN = re.compile(r"^(ndcg|p|recall|mrr|hit)@(\d+)$")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def parse_metric(name: str) -> tuple[str, int]:
    """Split ``"ndcg@5"`` into ``("ndcg", 5)``; raise ``ValueError`` for unknown names.

    >>> parse_metric("Recall@10")
    ('recall', 10)
    """
    match = _METRIC_PATTERN.match(name.strip().lower())
    if match is None or int(match.group(2)) < 1:
        raise ValueError(
            f"unknown metric {name!r}: use one of {', '.join(m + '@k' for m in SUPPORTED_METRICS)} "
            "with k >= 1, e.g. 'ndcg@5'"
        )
    return match.group(1), int(match.group(2))


def _ranked(documents: Mapping[str, float]) -> list[str]:
    # trec_eval order: score descending, then document id descending.
    return [
        doc
        for doc, _ in sorted(documents.items(), key=lambda item: (item[1], item[0]), reverse=True)
    ]


def _metric(family: str, k: int, ranking: Sequence[str], grades: Mapping[str, int]) -> float:
    top = ranking[:k]
    relevant_in_top = [1 if grades.get(doc, 0) >= 1 else 0 for doc in top]
    num_relevant = sum(1 for grade in grades.values() if grade >= 1)
    if family == "p":
        return sum(relevant_in_top) / k
    if family == "recall":
        return sum(relevant_in_top) / num_relevant if num_relevant else 0.0
    if family == "hit":
        return 1.0 if any(relevant_in_top) else 0.0
    if family == "mrr":
        for rank, is_relevant in enumerate(relevant_in_top, start=1):
            if is_relevant:
                return 1.0 / rank
        return 0.0
    # ndcg: linear gain, log2 discount, ideal from the qrels.
    dcg = sum(max(grades.get(doc, 0), 0) / math.log2(rank + 1) for rank, doc in enumerate(top, 1))
    ideal_grades = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal_grades, 1))
    return dcg / ideal if ideal > 0 else 0.0


def per_query(
    run: Run, qrels: Qrels, metrics: Iterable[str] = ("ndcg@5", "p@1", "recall@10", "mrr@10")
) -> dict[str, dict[str, float]]:
    """Metric values per query: ``{qid: {metric: value}}`` for queries in both run and qrels."""
    parsed = [(name, *parse_metric(name)) for name in metrics]
    results: dict[str, dict[str, float]] = {}
    for qid, documents in run.items():
        if qid not in qrels:
            continue
        ranking = _ranked(documents)
        grades = qrels[qid]
        results[qid] = {name: _metric(family, k, ranking, grades) for name, family, k in parsed}
    return results


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Iterable[str] = ("ndcg@5", "p@1", "recall@10", "mrr@10"),
    *,
    missing_as_zero: bool = False,
) -> dict[str, float]:
    """Mean of each metric over the evaluated queries.

    Parameters
    ----------
    run : dict[str, dict[str, float]]
        ``{query_id: {doc_id: score}}``; higher scores rank first.
    qrels : dict[str, dict[str, int]]
        ``{query_id: {doc_id: grade}}``; grade >= 1 is relevant.
    metrics : iterable of str
        Names such as ``"ndcg@5"``, ``"p@1"``, ``"recall@10"``, ``"mrr@10"``, ``"hit@10"``.
    missing_as_zero : bool
        Count queries of the qrels that are absent from the run as zero.

    Returns
    -------
    dict[str, float]
        Metric name -> mean value.
    """
    metrics = list(metrics)
    for name in metrics:
        parse_metric(name)
    values = per_query(run, qrels, metrics)
    num_queries = len(values)
    if missing_as_zero:
        num_queries += sum(1 for qid in qrels if qid not in run)
    if num_queries == 0:
        raise ValueError(
            "no query is in both the run and the qrels: check that query ids match (str vs int)"
        )
    return {name: sum(v[name] for v in values.values()) / num_queries for name in metrics}
