"""``metaembed eval`` end to end: fixtures in the real schemas, stand-in and real tiny models."""

from __future__ import annotations

import json

import pytest

from metaembed_cli import evaluate as eval_cli
from metaembed_cli.main import main


@pytest.fixture
def stand_in(monkeypatch, encoder):
    monkeypatch.setattr(eval_cli, "_load_model", lambda args: encoder)
    return encoder


def test_eval_mmeb_writes_results_and_reuses_cache(tmp_path, mmeb_folder, stand_in, capsys):
    argv = [
        "eval",
        "mmeb",
        "--model",
        "stand-in",
        "--data",
        str(mmeb_folder),
        "--budgets",
        "all",
        "--output",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["budgets"] == ["1x1", "2x4", "4x8"]
    assert results["results"]["4x8"]["tasks"] == {"ImageNet-1K": 1.0, "MSCOCO_t2i": 1.0}
    assert results["results"]["1x1"]["averages"]["overall"] == 1.0
    assert (tmp_path / "out" / "results.png").is_file()
    assert "| (1, 1) |" in (tmp_path / "out" / "results.md").read_text()
    calls = len(stand_in.calls)
    assert main(argv + ["--budgets", "1x1"]) == 0
    assert len(stand_in.calls) == calls  # everything came from the cache


def test_eval_reports_bad_data_clearly(tmp_path, mmeb_folder, stand_in, capsys):
    (mmeb_folder / "eval_images" / "ImageNet-1K" / "green.png").unlink()  # the query image of row 1
    argv = [
        "eval",
        "mmeb",
        "--model",
        "m",
        "--data",
        str(mmeb_folder),
        "--output",
        str(tmp_path / "o"),
        "--no-cache",
    ]
    assert main(argv) == 2
    assert "green.png" in capsys.readouterr().err
    assert main(argv + ["--on-invalid", "skip"]) == 0
    tasks = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"]
    assert (
        tasks["ImageNet-1K"]["skipped_rows"] == {"missing_image": 1}
        and tasks["ImageNet-1K"]["num_rows"] == 4
    )
    assert tasks["MSCOCO_t2i"]["skipped_rows"] == {}


def test_eval_vidore_v1_and_v2(tmp_path, vidore_v1_folder, vidore_v2_folder, stand_in):
    for benchmark, folder in (("vidore-v1", vidore_v1_folder), ("vidore-v2", vidore_v2_folder)):
        out = tmp_path / benchmark
        argv = [
            "eval",
            benchmark,
            "--model",
            "m",
            "--data",
            str(folder),
            "--budgets",
            "1x1,2x4",
            "--output",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--no-plot",
        ]
        assert main(argv) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["metric"] == "ndcg@5" and list(results["results"]) == ["1x1", "2x4"]
        assert 0.0 < results["results"]["1x1"]["averages"]["overall"] <= 1.0


def test_vidore_specs_default_and_folder_of_tasks(tmp_path, vidore_v2_folder):
    assert len(eval_cli.vidore_specs("v2", None, None)) == 7
    assert eval_cli.vidore_specs("v1", None, None)[0][1].startswith("vidore/")
    specs = eval_cli.vidore_specs("v2", [str(tmp_path)], None)
    # the fixture folder is named like the Hub's esg_reports_v2: both of its tracks are evaluated
    assert [(name, lang) for name, _, lang in specs] == [
        ("ESG_Syn", "english"),
        ("ESG_Syn_Mul", None),
    ]


@pytest.mark.slow
def test_eval_with_a_saved_tiny_model(tmp_path, kit):
    from metaembed.testing import tiny_model

    model_dir = tmp_path / "model"
    tiny_model(
        "llama", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"]
    ).save_pretrained(model_dir)
    rows = []
    words = ["alpha", "beta", "gamma", "delta", "日本語"]
    for word in words:
        rows.append(
            {
                "qry_inst": "Find the word:",
                "qry_text": word,
                "qry_img_path": "",
                "tgt_inst": None,
                "tgt_text": [word, *[w for w in words if w != word]],
                "tgt_img_path": [""] * len(words),
            }
        )
    kit.write_parquet(tmp_path / "data" / "Words" / "test-00000-of-00001.parquet", rows)
    argv = [
        "eval",
        "mmeb",
        "--model",
        str(model_dir),
        "--data",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache"),
        "--no-plot",
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["budgets"] == ["1x1", "2x4"]
    value = results["results"]["2x4"]["tasks"]["Words"]
    assert value in {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2


@pytest.mark.slow
def test_eval_vidore_v2_with_a_saved_tiny_vision_model(tmp_path, vidore_v2_folder):
    from metaembed.testing import tiny_model

    model_dir = tmp_path / "model"
    model = tiny_model(
        "qwen2_vl", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"]
    )
    model.save_pretrained(model_dir)
    argv = [
        "eval",
        "vidore-v2",
        "--model",
        str(model_dir),
        "--data",
        str(vidore_v2_folder.parent),  # a folder of Hub-named datasets: table 2 tracks
        "--output",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache"),
        "--no-plot",
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["budgets"] == ["1x1", "2x4"] and results["metric"] == "ndcg@5"
    # both tracks of the folder (English and all languages), every query scored over 5 pages
    assert set(results["results"]["2x4"]["tasks"]) == {"ESG_Syn", "ESG_Syn_Mul"}
    assert results["tasks"]["ESG_Syn_Mul"]["num_queries"] == 3
    assert results["tasks"]["ESG_Syn"]["num_corpus"] == 5
    assert all(0.0 <= v <= 1.0 for v in results["results"]["1x1"]["tasks"].values())
