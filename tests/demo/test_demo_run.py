"""The demo end to end on a synthetic clipart tree: train a tiny composite model, fit the baseline,
run the budget sweep through the index, write the JSON and the plot, and print through the CLI."""

from __future__ import annotations

import json
import math

import pytest

from metaembed.demo.report import PLOT_FILENAME, RESULTS_FILENAME, format_table, write_outputs
from metaembed.demo.runner import DemoSettings, run_demo
from metaembed.demo.training import fit_demo_baseline
from metaembed.training import TrainingConfig, train
from tests.demo.clipart_support import write_clipart_tree


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo's training path at tiny size: ``metaembed train`` on the openclipart source."""
    folder = tmp_path_factory.mktemp("demo")
    root = write_clipart_tree(folder / "openclipart")
    config = TrainingConfig(
        base_model="tiny-cnn+tiny-llama;grid=2;projector=linear",
        family="composite",
        warm_start_projector=True,
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=("1x1", "2x4"),
        lora_r=4,
        lora_alpha=4,
        train_data=(
            {
                "source": "openclipart",
                "root": str(root),
                "cache": str(folder / "cache"),
                "heldout_size": 4,
            },
        ),
        num_hard_negatives=0,
        check_images=False,
        batch_sampler="subset",
        batch_size=3,
        min_batch_size=2,
        eval_fraction=0.0,
        eval_steps=None,
        max_steps=3,
        save_steps=2,
        show_progress=False,
        output_dir=str(folder / "run"),
    )
    result = train(config)
    model_dir = result.final_checkpoint
    fit_demo_baseline(model_dir)
    return folder, root, model_dir, result


def test_training_runs_and_records_the_split(trained):
    folder, _, model_dir, result = trained
    assert result.steps == 3
    losses = [record["loss"] for record in result.history if "loss" in record]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    saved = json.loads((model_dir / "training_config.json").read_text())
    assert saved["train_data"][0]["source"] == "openclipart"
    assert saved["train_data"][0]["heldout_size"] == 4
    assert (model_dir / "baseline_linear_map.safetensors").is_file()
    assert (model_dir / "base_model").is_dir()  # the warm-started projector is saved


def test_demo_sweeps_every_trained_budget_plus_the_baseline(trained, tmp_path):
    folder, root, model_dir, _ = trained
    settings = DemoSettings(
        model_dir=str(model_dir),
        openclipart_root=str(root),
        data_cache=str(folder / "cache"),
        work_dir=str(tmp_path / "work"),
        show_progress=False,
    )
    result = run_demo(settings)
    assert [(row["model"], row["budget"]) for row in result.rows] == [
        ("MetaEmbed", "1x1"),
        ("MetaEmbed", "2x4"),
        ("baseline: MiniLM + EfficientNet linear map", "1x1"),
    ]
    for row in result.rows:
        for metric in ("recall@1", "recall@10", "ndcg@10", "classification_accuracy"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["latency_ms_per_query"] > 0
    small, large = result.rows[0], result.rows[1]
    assert large["scoring_flops"] == 8 * small["scoring_flops"]  # 2x4 vs 1x1, same N and D
    images, dim = 4, 32  # held-out images, tiny LM width; the index stores float16
    assert large["index_bytes"] - small["index_bytes"] == images * (4 - 1) * dim * 2
    # 4 held-out images: recall@10 of image retrieval is 1 whatever the model
    assert large["per_task"]["t2i-title"]["recall@10"] == pytest.approx(1.0)
    assert result.examples and len(result.examples[0]["top"]) == 3
    paths = write_outputs(result, tmp_path / "out")
    written = json.loads(paths["results"].read_text())
    assert (
        written["rows"][1]["budget"] == "2x4" and "| MetaEmbed | 2x4 |" in written["table_markdown"]
    )
    assert paths["plot"].name == PLOT_FILENAME and paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert "| baseline: MiniLM + EfficientNet linear map | 1x1 |" in format_table(result.rows)


def test_cli_prints_the_table_and_writes_outputs(trained, tmp_path, capsys, monkeypatch):
    from metaembed_cli.main import main

    folder, root, model_dir, _ = trained
    monkeypatch.setenv("METAEMBED_CACHE_DIR", str(tmp_path / "cache"))
    code = main(
        [
            "demo",
            "--model", str(model_dir),
            "--openclipart-root", str(root),
            "--cache", str(folder / "cli-cache"),
            "--output", str(tmp_path / "out"),
            "--examples", "2",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "| MetaEmbed | 2x4 |" in printed and "example searches" in printed
    assert (tmp_path / "out" / RESULTS_FILENAME).is_file()


def test_cli_names_the_install_command_when_clipart_is_missing(tmp_path, capsys):
    from metaembed_cli.main import main

    code = main(["demo", "--no-install", "--openclipart-root", str(tmp_path / "nowhere")])
    assert code == 2
    assert "apt-get install -y openclipart-png openclipart-svg" in capsys.readouterr().err
