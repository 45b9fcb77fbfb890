"""MMEB loading (real schema, placeholders, bad rows) and Precision@1 scoring."""

from __future__ import annotations

import pytest
import torch

from metaembed.budget import Budget
from metaembed.evaluation.metrics import evaluate
from metaembed.evaluation.mmeb import IND_TASKS, MMEB_TASKS, load_mmeb, precision_at_1, rows_to_task
from metaembed.evaluation.runner import run_mmeb


def test_registry_matches_table1():
    counts = {
        meta: sum(1 for m in MMEB_TASKS.values() if m == meta) for meta in set(MMEB_TASKS.values())
    }
    assert counts == {"Classification": 10, "VQA": 10, "Retrieval": 12, "Grounding": 4}
    assert len(IND_TASKS) == 20 and IND_TASKS <= set(MMEB_TASKS)


def test_load_local_folder(mmeb_folder):
    tasks, revision = load_mmeb(mmeb_folder)
    assert [t.name for t in tasks] == ["ImageNet-1K", "MSCOCO_t2i"]
    assert revision.startswith("local-")
    classification, retrieval = tasks
    assert (classification.meta_task, classification.split) == ("Classification", "IND")
    row = classification.rows[0]
    assert row.query.text is None and row.query.image.is_file()
    assert row.query.instruction == "Represent the given image for classification"
    assert [c.text for c in row.candidates][:2] == ["red", "green"]
    caption = retrieval.rows[0].query.text
    assert "红色" in caption and "—" in caption  # non-ASCII text kept as is
    assert (
        retrieval.rows[0].candidates[0].text is None
        and retrieval.rows[0].candidates[0].image.name == "red.png"
    )


def test_missing_image_is_an_error_or_a_counted_skip(mmeb_folder):
    (mmeb_folder / "eval_images" / "ImageNet-1K" / "blue.png").unlink()
    with pytest.raises(ValueError, match=r"ImageNet-1K.*row 2.*blue\.png.*not found"):
        load_mmeb(mmeb_folder, ["ImageNet-1K"])
    tasks, _ = load_mmeb(mmeb_folder, ["ImageNet-1K"], on_invalid="skip")
    assert len(tasks[0].rows) == 4 and tasks[0].skipped == {"missing_image": 1}


def test_empty_candidate_list_and_bad_rows(kit):
    rows = kit.classification_rows("x")
    rows[1]["tgt_text"], rows[1]["tgt_img_path"] = [], []
    for row in rows:
        row["qry_img_path"], row["qry_text"], row["qry_inst"] = "", "a query", None
    with pytest.raises(ValueError, match="row 1.*candidate list.*empty"):
        rows_to_task("T", rows)
    task = rows_to_task("T", rows, on_invalid="skip")
    assert task.skipped == {"empty_candidates": 1} and len(task.rows) == 4
    assert (task.meta_task, task.split) == ("Other", None)
    bad = [dict(rows[0], qry_text="<|image_1|>\nwhat is this")]
    with pytest.raises(ValueError, match="image path is empty"):
        rows_to_task("T", bad)
    with pytest.raises(ValueError, match="parallel"):
        rows_to_task("T", [dict(rows[0], tgt_img_path=[""])])
    with pytest.raises(ValueError, match="no valid rows"):
        rows_to_task("T", [rows[1]], on_invalid="skip")


def test_hub_id_without_images_root_explains(monkeypatch):
    with pytest.raises(ValueError, match="images.zip"):
        load_mmeb("TIGER-Lab/MMEB-eval", ["ImageNet-1K"])


def test_precision_at_1_agrees_with_trec_eval_convention():
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(6, 2, 4, generator=generator), dim=-1)
    candidates = torch.nn.functional.normalize(torch.randn(9, 4, 4, generator=generator), dim=-1)
    lists = [[i, (i + 1) % 9, (i + 4) % 9] for i in range(6)]
    budget = Budget(2, 4)
    from metaembed.maxsim import maxsim

    run, qrels = {}, {}
    for q, rows in enumerate(lists):
        scores = maxsim(queries[q : q + 1], candidates[rows], budget)[0]
        # positive named "c0": trec_eval breaks ties by doc id descending, so it loses ties.
        run[f"q{q}"] = {f"c{j}": float(s) for j, s in enumerate(scores)}
        qrels[f"q{q}"] = {"c0": 1}
    expected = evaluate(run, qrels, ["p@1"])["p@1"]
    assert precision_at_1(queries, candidates, list(range(6)), lists, budget) == pytest.approx(
        expected
    )


def test_run_mmeb_end_to_end_with_stand_in(mmeb_folder, encoder):
    tasks, revision = load_mmeb(mmeb_folder)
    result = run_mmeb(encoder, tasks, "all", revision=revision, show_progress=False)
    assert result.budgets == ["1x1", "2x4", "4x8"]
    for budget in result.budgets:
        assert result.scores[budget] == {"ImageNet-1K": 1.0, "MSCOCO_t2i": 1.0}
        summary = result.summary(budget)
        assert (
            summary["Classification"]
            == summary["Retrieval"]
            == summary["IND"]
            == summary["overall"]
            == 1.0
        )
    # each distinct candidate encoded once: 5 labels, then 5 images (shared across rows).
    assert ("candidate", 5) in encoder.calls and all(n <= 5 for _, n in encoder.calls)
    assert result.tasks["MSCOCO_t2i"]["distinct_candidates"] == 5
    assert result.tasks["ImageNet-1K"]["chance"] == pytest.approx(1 / 5)


def test_wrong_answers_are_counted(mmeb_folder, encoder, kit):
    rows = kit.classification_rows("ImageNet-1K")
    rows[0]["tgt_text"] = ["green", "red", "blue"]  # the declared positive is wrong for a red image
    rows[0]["tgt_img_path"] = ["", "", ""]
    kit.write_parquet(mmeb_folder / "Broken" / "test.parquet", rows)
    tasks, _ = load_mmeb(mmeb_folder, ["Broken"], images_root=mmeb_folder / "eval_images")
    result = run_mmeb(encoder, tasks, "1x1", show_progress=False)
    assert result.scores["1x1"]["Broken"] == pytest.approx(0.8)


def test_non_ascii_image_paths_and_texts(tmp_path, kit, encoder):
    images = tmp_path / "données" / "图片"
    images.mkdir(parents=True)
    for colour in kit.palette:
        (images / f"{colour}-é.png").write_bytes(kit.colour_png(colour))
    rows = [
        {
            "qry_text": f"<|image_1|>\nQuelle couleur ? {colour} — 颜色",
            "qry_img_path": f"图片/{colour}-é.png",
            "tgt_text": [colour, *[c for c in kit.palette if c != colour]],
            "tgt_img_path": None,
        }
        for colour in kit.palette
    ]
    kit.write_parquet(tmp_path / "données" / "Ünïcode" / "test.parquet", rows)
    tasks, _ = load_mmeb(tmp_path / "données")
    assert tasks[0].name == "Ünïcode" and tasks[0].rows[0].query.text.endswith("颜色")
    result = run_mmeb(encoder, tasks, "1x1", show_progress=False)
    assert result.scores["1x1"]["Ünïcode"] == 1.0
