"""TrainingConfig: paper defaults, YAML/TOML files, --key value overrides, baselines."""

from __future__ import annotations

import pytest

from metaembed.budget import PAPER_GROUPS, Budget
from metaembed.training.arguments import TrainingConfig, load_config, parse_overrides


def test_defaults_are_the_papers():
    config = TrainingConfig()
    assert config.learning_rate == 1e-4 and config.temperature == 0.03
    assert config.groups == PAPER_GROUPS and config.num_hard_negatives == 1
    assert (config.lora_r, config.lora_alpha) == (32, 32)
    assert config.eval_fraction == 0.01
    assert config.model_fields()["pooling"] == "meta"


@pytest.mark.parametrize(
    ("baseline", "pooling", "groups", "sizes"),
    [
        ("nommr", "meta", ["16x64"], (16, 64)),
        ("single-last", "last", ["1x1"], (16, 64)),
        ("single-mean", "mean", ["1x1"], (16, 64)),
        ("split-16x64", "split", ["16x64"], (16, 64)),
        ("split-4x8", "split", ["4x8"], (4, 8)),
    ],
)
def test_baselines_map_to_pooling_and_groups(baseline, pooling, groups, sizes):
    fields = TrainingConfig(baseline=baseline).model_fields()
    assert fields["pooling"] == pooling
    assert [str(g) for g in fields["groups"]] == groups
    assert (fields["num_query_tokens"], fields["num_candidate_tokens"]) == sizes
    from metaembed.model.config import MetaEmbedConfig

    MetaEmbedConfig(family="llama", **fields)  # the model config accepts the mapping


def test_yaml_and_toml_with_overrides(tmp_path):
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "a.yaml").write_text(
        "tiny_family: llama\ngroups: ['1x1', '2x4']\nbatch_size: 4\ntrain_data: [data.jsonl]\n"
    )
    config = load_config(
        tmp_path / "a.yaml", ["--batch_size", "8", "--learning-rate=3e-4", "--max_steps", "none"]
    )
    assert config.batch_size == 8 and config.learning_rate == 3e-4 and config.max_steps is None
    assert config.groups == (Budget(1, 1), Budget(2, 4))
    assert config.train_data == (
        str(tmp_path / "data.jsonl"),
    )  # resolved against the file's folder
    (tmp_path / "b.toml").write_text('tiny_family = "llama"\ngradient_checkpointing = true\n')
    config = load_config(
        tmp_path / "b.toml", ["--gradient_checkpointing", "false", "--groups", "1x1,4x8"]
    )
    assert config.gradient_checkpointing is False and config.groups == (Budget(1, 1), Budget(4, 8))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--learning_rat", "1"], "unknown training config keys"),
        (["--batch_size", "many"], "expects int"),
        (["--baseline", "colbert"], "baseline must be one of"),
        (["--strategy", "deepspeed"], "strategy must be one of"),
        (["--max_steps"], "has no value"),
        (["max_steps", "3"], "expected --key value"),
    ],
)
def test_bad_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig.from_mapping({}, overrides)


def test_parse_overrides_keeps_order_and_last_value():
    assert parse_overrides(["--a", "1", "--a", "2"]) == {"a": "2"}


def test_shipped_training_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs"
    configs = [folder / "tiny-llama.yaml", *sorted(folder.glob("paper-*.yaml"))]
    assert len(configs) >= 2
    for path in configs:
        config = load_config(path)
        assert config.train_data and config.output_dir.startswith("runs/"), path


def test_data_and_image_folders_resolve_against_the_config_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(
        "tiny_family: llama\ntrain_data:\n  - {path: train.jsonl, images_root: images}\n"
        "  - {path: 'hf:vidore/colpali_train_set'}\n"
    )
    first, hub = load_config(tmp_path / "c.yaml").train_data
    assert first == {"path": str(tmp_path / "train.jsonl"), "images_root": str(tmp_path / "images")}
    assert hub == {"path": "hf:vidore/colpali_train_set"}
