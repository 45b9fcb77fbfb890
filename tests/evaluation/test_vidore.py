"""ViDoRe v1 (QA) and v2 (BEIR) loading in the real schemas, NDCG@5 over the whole corpus."""

from __future__ import annotations

import pytest

from metaembed.evaluation.runner import run_vidore
from metaembed.evaluation.vidore import VIDORE_V2_TASKS, load_vidore, v2_rows_to_task


def test_v1_qa_format(vidore_v1_folder, tmp_path, encoder):
    task, revision = load_vidore(vidore_v1_folder, "v1", image_dir=tmp_path / "pages")
    assert (
        len(task.corpus_ids) == 6 and len(task.query_ids) == 5
    )  # a query-less page stays in the corpus
    assert task.qrels["q0"] == {"red.png": 1}
    assert all(item.image.is_file() for item in task.corpus_items)
    result = run_vidore(
        encoder,
        [task],
        "1x1 4x8",
        revision=revision,
        show_progress=False,
        benchmark="vidore-v1",
        metrics=("ndcg@5", "recall@1"),
    )
    # at 1x1 the red query ties the red page with the extra red page; trec_eval's tie break (doc id
    # descending) puts "red.png" first, so every query finds its page at rank 1.
    assert result.metric == "ndcg@5"
    assert result.scores["1x1"][task.name] == pytest.approx(1.0)
    assert 0.5 < result.scores["4x8"][task.name] <= 1.0
    assert set(result.metadata["all_metrics"]["4x8"][task.name]) == {"ndcg@5", "recall@1"}


def test_v2_beir_format_and_language(vidore_v2_folder, tmp_path, encoder):
    task, _ = load_vidore(vidore_v2_folder, "v2", image_dir=tmp_path / "p")
    assert task.query_ids == ("10", "11", "12")  # ids as strings; 13 has no relevant page
    assert task.skipped == {"no_relevant_page": 1}
    assert task.qrels["11"] == {"2": 1, "3": 1}
    english, _ = load_vidore(vidore_v2_folder, "v2", language="english", image_dir=tmp_path / "p")
    assert english.query_ids == ("10", "11")
    result = run_vidore(
        encoder, [english], "1x1", show_progress=False, metrics=("recall@1", "ndcg@1")
    )
    # query 10 (red) ranks its only page first: recall@1 = 1; query 11 (blue) ranks page 2
    # first but its second relevant page (yellow) is elsewhere: recall@1 = 1/2.
    assert result.metric == "recall@1"
    assert result.scores["1x1"]["esg_reports_v2"] == pytest.approx(0.75)
    assert result.metadata["all_metrics"]["1x1"]["esg_reports_v2"]["ndcg@1"] == pytest.approx(1.0)


def test_v2_missing_page_image(tmp_path, kit):
    corpus = [{"corpus-id": 1, "image": {"bytes": None, "path": "gone.png"}}]
    with pytest.raises(ValueError, match="gone.png.*not found"):
        v2_rows_to_task("T", corpus, [], [], tmp_path)
    corpus.append({"corpus-id": 2, "image": {"bytes": kit.colour_png("red"), "path": "r.png"}})
    task = v2_rows_to_task(
        "T",
        corpus,
        [{"query-id": 5, "query": "red"}],
        [{"query-id": 5, "corpus-id": 2, "score": 1}],
        tmp_path,
        on_invalid="skip",
    )
    assert task.skipped == {"missing_image": 1} and task.corpus_ids == ("2",)
    with pytest.raises(ValueError, match="no query with a relevant page"):
        v2_rows_to_task("T", corpus[1:], [{"query-id": 5, "query": "  "}], [], tmp_path)


def test_hub_without_datasets_explains(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match="pip install 'metaembed\\[hub\\]'"):
        load_vidore("vidore/esg_reports_v2", "v2")
    assert len(VIDORE_V2_TASKS) == 7


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no corpus page"):
        v2_rows_to_task("T", [], [{"query-id": 1, "query": "red"}], [], tmp_path)
