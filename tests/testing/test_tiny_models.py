"""tiny_model: every implemented family builds offline, deterministically, and runs fast."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

from metaembed.backbones.registry import available_families
from metaembed.items import Item
from metaembed.testing import tiny_model
from metaembed.testing.tokenizer import build_tokenizer

FAMILIES = ["llama", "qwen2_vl", "qwen2_5_vl"]
ALL_FAMILIES = available_families()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_deterministic_for_a_seed_and_different_across_seeds(family):
    small = dict(num_query_tokens=2, num_candidate_tokens=4, groups=["2x4"])
    first = tiny_model(family, seed=1, **small).encode_queries(["hello"], show_progress=False)
    again = tiny_model(family, seed=1, **small).encode_queries(["hello"], show_progress=False)
    other = tiny_model(family, seed=2, **small).encode_queries(["hello"], show_progress=False)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_takes_tens_of_milliseconds(family):
    model = tiny_model(family)
    image = Image.new("RGB", (56, 56), (10, 200, 10))
    items = ["a query"] if family == "llama" else [Item(text="a green square", image=image)]
    model.encode_candidates(items, show_progress=False)  # warm-up
    start = time.perf_counter()
    embeddings = model.encode_candidates(items * 4, show_progress=False)
    elapsed = time.perf_counter() - start
    assert embeddings.shape == (4, 64, 32)
    assert elapsed < 2.0, f"{family}: {elapsed:.2f} s for 4 items"


def test_backbone_overrides_and_config_overrides_are_routed():
    model = tiny_model(
        "llama",
        hidden_size=48,
        num_attention_heads=4,
        projection_dim=8,
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["2x4"],
    )
    assert model.adapter.hidden_size == 48 and model.config.projection_dim == 8
    assert model.encode_queries(["x"], show_progress=False).shape == (1, 2, 8)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown backbone family 'bert'"):
        tiny_model("bert")


def test_tokenizer_is_offline_and_has_the_special_tokens():
    tokenizer = build_tokenizer()
    for token in ("<|image_pad|>", "<|im_start|>", "<pad>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.padding_side == "left"
    assert tokenizer.decode(tokenizer("naïve café 123")["input_ids"]) == "naïve café 123"
