"""Sweep results: averages as in table 1, JSON round trip, Markdown and PNG outputs."""

from __future__ import annotations

import math

import pytest

from metaembed.evaluation.sweep import SweepResult, markdown_table, plot_budget_curves


@pytest.fixture
def result() -> SweepResult:
    scores = {
        "16x64": {"A": 0.9, "B": 0.7, "C": 0.5},
        "1x1": {"A": 0.6, "B": 0.4, "C": 0.2},
    }
    groups = {
        "Classification": ("A", "B"),
        "Grounding": ("C",),
        "IND": ("A",),
        "OOD": ("B", "C"),
        "VQA": ("Z",),
    }
    return SweepResult("mmeb", "p@1", scores, groups, {"A": {"num_rows": 3}}, {"model": "m"})


def test_summary_is_mean_over_tasks(result):
    summary = result.summary("16x64")
    assert summary["Classification"] == pytest.approx(0.8)
    assert summary["OOD"] == pytest.approx(0.6)
    assert summary["overall"] == pytest.approx(0.7)
    assert "VQA" not in summary  # no evaluated task in that group
    assert result.budgets == ["1x1", "16x64"]


def test_write_round_trip_markdown_and_png(tmp_path, result):
    paths = result.write(tmp_path / "out")
    again = SweepResult.read(paths["json"])
    assert again.scores == result.scores and again.task_groups["OOD"] == ("B", "C")
    text = paths["markdown"].read_text()
    assert "| (1, 1) | 50.0 | 20.0 | 60.0 | 30.0 | 40.0 |" in text
    assert "| A | 60.0 | 90.0 |" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_missing_values_show_as_dash(tmp_path):
    assert "| x | - |" in markdown_table("T", ["a"], {"x": {"a": math.nan}})
    path = plot_budget_curves(
        {"a": {"1x1": 0.5, "4x8": 0.6}, "b": {"16x64": 0.7}},
        tmp_path / "p.png",
        baselines={"single": 0.55},
    )
    assert path.stat().st_size > 1000
