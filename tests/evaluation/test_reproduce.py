"""Ablation variants, the report (table 5 rows, findings, plot) and the reproduce command."""

from __future__ import annotations

import json

import pytest
import torch

from metaembed.budget import Budget
from metaembed.evaluation.ablation_report import ablation_rows, write_ablation_report
from metaembed.evaluation.reproduce import AblationSettings, eval_budgets, variant_config
from metaembed.evaluation.sweep import SweepResult


def _sweep(values: dict[str, float], rows: int = 100) -> dict:
    scores = {budget: {"T1": value, "T2": value} for budget, value in values.items()}
    tasks = {"T1": {"num_rows": rows}, "T2": {"num_rows": rows}}
    return SweepResult("synthetic", "p@1", scores, {"Retrieval": ("T1", "T2")}, tasks).to_dict()


PAPER_SETTINGS = AblationSettings(
    num_query_tokens=16, num_candidate_tokens=64, groups=("1x1", "2x4", "4x8", "8x16", "16x64")
)


@pytest.fixture
def results() -> dict:
    settings = PAPER_SETTINGS
    curve = dict(zip(settings.groups, (0.30, 0.40, 0.50, 0.55, 0.60), strict=True))
    flat = dict(zip(settings.groups, (0.10, 0.20, 0.40, 0.50, 0.59), strict=True))
    variants = {
        "MetaEmbed": _sweep(curve),
        "NoMMR": _sweep(flat),
        "single-last": _sweep({"1x1": 0.35}),
        "single-mean": _sweep({"1x1": 0.33}),
        "split-16x64": _sweep({"16x64": 0.20}),
    }
    return {
        "settings": {**settings.__dict__, "data": settings.data.__dict__},
        "trainer": "test",
        "variants": {
            k: {"sweep": v, "losses": [1.0, 0.5], "train_seconds": 1, "eval_seconds": 1}
            for k, v in variants.items()
        },
    }


def test_variant_configs_differ_only_in_pooling_and_groups():
    settings = PAPER_SETTINGS
    configs = {
        v: variant_config(v, settings)
        for v in ("MetaEmbed", "NoMMR", "single-last", "single-mean", "split")
    }
    assert configs["MetaEmbed"]["groups"] == list(settings.groups)
    assert configs["NoMMR"]["groups"] == ["16x64"] and configs["NoMMR"]["pooling"] == "meta"
    assert configs["split"]["pooling"] == "split" and configs["single-mean"]["pooling"] == "mean"
    shared = {k: v for k, v in configs["MetaEmbed"].items() if k not in ("pooling", "groups")}
    assert all({k: c[k] for k in shared} == shared for c in configs.values())
    assert eval_budgets("NoMMR", settings) == eval_budgets("MetaEmbed", settings)
    assert eval_budgets("split", settings) == [Budget(16, 64)] and eval_budgets(
        "single-last", settings
    ) == [Budget(1, 1)]
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("colbert", settings)


def test_rows_and_deltas(results):
    rows = {row["name"]: row for row in ablation_rows(results)}
    assert rows["single-last"]["delta"] == pytest.approx(0.0)
    assert rows["MetaEmbed (16, 64)"]["delta"] == pytest.approx(25.0)
    assert rows["NoMMR (1, 1)"]["overall"] == pytest.approx(0.10)
    assert rows["split-16x64"]["delta"] == pytest.approx(-15.0)
    assert rows["MetaEmbed (1, 1)"]["stderr"] == pytest.approx((0.3 * 0.7 / 200) ** 0.5)


def test_report_files_and_findings(tmp_path, results):
    paths = write_ablation_report(results, tmp_path, command="metaembed reproduce ablations")
    text = paths["markdown"].read_text()
    assert "| MetaEmbed (16, 64) | 60.0 |" in text and "| split-16x64 | 20.0 |" in text
    assert "MetaEmbed (1, 1) 30.0 vs NoMMR (1, 1) 10.0: +20.0 points (higher" in text
    assert "MetaEmbed (16, 64) 60.0 vs NoMMR (16, 64) 59.0: +1.0 points (within noise" in text
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads(paths["json"].read_text())["table"]) == 13


@pytest.mark.slow
def test_reproduce_command_end_to_end(tmp_path):
    from metaembed_cli.main import main

    argv = [
        "reproduce",
        "ablations",
        "--output",
        str(tmp_path / "report"),
        "--work-dir",
        str(tmp_path / "work"),
        "--variants",
        "MetaEmbed,single-last",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--eval-rows",
        "3",
        "--train-examples",
        "4",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "report" / "ablations.json").read_text())
    assert set(data["variants"]) == {"MetaEmbed", "single-last"}
    assert len(data["variants"]["MetaEmbed"]["losses"]) == 2
    assert data["variants"]["MetaEmbed"]["sweep"]["budgets"] == [
        "1x1",
        "2x4",
        "4x8",
        "8x16",
    ]
    assert (tmp_path / "report" / "ablations.md").is_file()


def test_word_tokens_are_whole_distinct_and_encode():
    from metaembed.evaluation.reproduce import add_word_tokens, synthetic_vocabulary
    from metaembed.testing import tiny_model

    model = tiny_model(
        "qwen2_vl", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"]
    )
    before = model.encode_queries(["a red circle"], show_progress=False)
    added = add_word_tokens(model, synthetic_vocabulary())
    assert added >= len(synthetic_vocabulary())
    assert model.adapter.tokenizer.tokenize("a large red circle")[1:] == [
        " large",
        " red",
        " circle",
    ]
    rows = model.adapter.model.get_input_embeddings().weight[-added:]
    assert torch.cdist(rows, rows).add(torch.eye(added) * 1e3).min() > 0  # no two rows equal
    after = model.encode_queries(["a red circle"], show_progress=False)
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_chance_row_and_line(tmp_path, results):
    for entry in results["variants"].values():
        for facts in entry["sweep"]["tasks"].values():
            facts["chance"] = 0.125
    text = write_ablation_report(results, tmp_path)["markdown"].read_text()
    assert "| chance (random scores) | 12.5 | 0.0 | - |" in text
    assert "Random scores would give 12.5%" in text and "split-16x64 +7.5" in text
