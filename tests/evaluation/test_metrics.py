"""Our metrics against pytrec_eval (trec_eval's own C code) on random runs."""

from __future__ import annotations

import random

import pytest

from metaembed.evaluation import evaluate, parse_metric, per_query

pytrec_eval = pytest.importorskip("pytrec_eval")


def random_case(seed: int, num_queries: int = 25, num_docs: int = 30):
    rng = random.Random(seed)
    run, qrels = {}, {}
    for q in range(num_queries):
        qid = f"q{q}"
        docs = [f"d{d}" for d in rng.sample(range(num_docs * 2), num_docs)]
        # Coarse scores create ties, which trec_eval breaks by doc id.
        run[qid] = {
            doc: float(rng.randint(0, 12)) / 4 for doc in rng.sample(docs, rng.randint(1, num_docs))
        }
        qrels[qid] = {
            doc: rng.choice([0, 1, 1, 2, 3]) for doc in rng.sample(docs, rng.randint(1, 8))
        }
    return run, qrels


def reference(run, qrels, k: int) -> dict[str, float]:
    measures = {f"ndcg_cut.{k}", f"P.{k}", f"recall.{k}"}
    results = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    cut_run = {
        qid: dict(sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k])
        for qid, docs in run.items()
    }
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut_run)
    n = len(results)
    return {
        f"ndcg@{k}": sum(r[f"ndcg_cut_{k}"] for r in results.values()) / n,
        f"p@{k}": sum(r[f"P_{k}"] for r in results.values()) / n,
        f"recall@{k}": sum(r[f"recall_{k}"] for r in results.values()) / n,
        f"mrr@{k}": sum(r["recip_rank"] for r in reciprocal.values()) / n,
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_matches_pytrec_eval(seed: int, k: int) -> None:
    run, qrels = random_case(seed)
    ours = evaluate(run, qrels, metrics=(f"ndcg@{k}", f"p@{k}", f"recall@{k}", f"mrr@{k}"))
    expected = reference(run, qrels, k)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name  # trec_eval prints 4 decimals


def test_hit_at_k() -> None:
    run = {"a": {"x": 2.0, "y": 1.0}, "b": {"x": 2.0, "y": 1.0}}
    qrels = {"a": {"y": 1}, "b": {"z": 1}}
    assert evaluate(run, qrels, ["hit@1", "hit@2"]) == {"hit@1": 0.0, "hit@2": 0.5}


def test_query_sets() -> None:
    run = {"a": {"x": 1.0}, "extra": {"x": 1.0}}
    qrels = {"a": {"x": 1}, "missing": {"x": 1}}
    assert evaluate(run, qrels, ["p@1"]) == {"p@1": 1.0}
    assert evaluate(run, qrels, ["p@1"], missing_as_zero=True) == {"p@1": 0.5}
    assert set(per_query(run, qrels, ["p@1"])) == {"a"}
    with pytest.raises(ValueError, match="no query"):
        evaluate({"x": {"d": 1.0}}, {"y": {"d": 1}})


@pytest.mark.parametrize("name", ["ndcg", "ndcg@0", "map@10", "p@x", ""])
def test_unknown_metric(name: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(name)
