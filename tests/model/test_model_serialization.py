"""Save -> load round trips give identical embeddings; broken folders give clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from metaembed.model.config import MetaEmbedConfig
from metaembed.model.modeling import MetaEmbedModel
from metaembed.testing import tiny_model

TEXTS = ["a red bicycle", "two dogs on the grass", "quarterly revenue"]


@pytest.fixture(scope="module")
def trained_like_model():
    """A tiny model whose LoRA and meta tokens are perturbed, as after training."""
    model = tiny_model(
        "llama",
        seed=3,
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["1x1", "2x4"],
        projection_dim=16,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def test_round_trip_identical_embeddings(trained_like_model, tmp_path):
    folder = tmp_path / "model"
    trained_like_model.save_pretrained(folder)
    names = {path.name for path in folder.iterdir()}
    assert {
        "metaembed_config.json",
        "metaembed_weights.safetensors",
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
        "base_model",
    } <= names
    assert "| 2x4 |" in (folder / "README.md").read_text()
    assert json.loads((folder / "metaembed_config.json").read_text())["base_model"] == "base_model"
    loaded = MetaEmbedModel.from_pretrained(folder)
    assert loaded.config == trained_like_model.config.replace(base_model="base_model")
    for role in ("query", "candidate"):
        before = trained_like_model.encode(TEXTS, role, show_progress=False)
        after = loaded.encode(TEXTS, role, show_progress=False)
        assert before.shape[-1] == 16
        assert torch.allclose(before, after, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_trainable_load_and_resave_keeps_other_files(trained_like_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    trained_like_model.save_pretrained(folder)
    loaded = MetaEmbedModel.from_pretrained(folder, trainable=True)
    trainable = [name for name, p in loaded.named_parameters() if p.requires_grad]
    assert any("lora_" in name for name in trainable) and "meta_tokens.weight" in trainable
    loaded.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    loaded.save_pretrained(tmp_path / "elsewhere")  # the embedded base travels along
    again = MetaEmbedModel.from_pretrained(tmp_path / "elsewhere")
    assert torch.allclose(
        again.encode_queries(TEXTS, show_progress=False),
        trained_like_model.encode_queries(TEXTS, show_progress=False),
        atol=1e-6,
    )


def test_missing_files_are_named(trained_like_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MetaEmbedModel.from_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="metaembed_config.json"):
        MetaEmbedModel.from_pretrained(empty)
    folder = tmp_path / "model"
    trained_like_model.save_pretrained(folder)
    (folder / "metaembed_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="metaembed_weights.safetensors"):
        MetaEmbedModel.from_pretrained(folder)


def test_config_json_round_trip_and_validation():
    config = MetaEmbedConfig(
        family="llama", layout="paper", projection_dim=8, groups=["1x1", "16x64"]
    )
    assert MetaEmbedConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="pooling"):
        MetaEmbedConfig(pooling="max")
    with pytest.raises(ValueError, match="use r_c <= 8"):
        MetaEmbedConfig(num_candidate_tokens=8)  # the paper groups need 64
    with pytest.raises(ValueError, match="unknown MetaEmbedConfig fields"):
        MetaEmbedConfig.from_dict({"familly": "llama"})


def test_hub_ids_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="could not download 'no-such-owner/no-such-model'"):
        MetaEmbedModel.from_pretrained("no-such-owner/no-such-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MetaEmbedModel.from_pretrained("a/b/c")
