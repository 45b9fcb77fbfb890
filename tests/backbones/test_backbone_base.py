"""Tests of the adapter base: placeholder appending, the meta-token hook and the registry."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from metaembed.backbones.base import BackboneAdapter, check_role
from metaembed.backbones.registry import (
    available_families,
    family_for_model_type,
    get_adapter_class,
)


class _ToyModel(nn.Module):
    """Embedding + mean-free identity 'transformer': hidden states are the input embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids, attention_mask, use_cache=False, return_dict=True, **kwargs):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids) * 2.0)


class _ToyAdapter(BackboneAdapter):
    family = "toy"

    @classmethod
    def load(cls, name_or_path, *, dtype=None, device=None, **kwargs):
        raise NotImplementedError

    def build_inputs(self, items, role):
        raise NotImplementedError

    def lora_target_modules(self, include_vision=True):
        return r".*embed"


def _adapter() -> _ToyAdapter:
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1, padding_side="right")
    return _ToyAdapter(_ToyModel(), tokenizer)


def test_append_meta_placeholders_puts_meta_last():
    adapter = _adapter()
    inputs = {
        "input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]),
        "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "mm_token_type_ids": torch.tensor([[0, 1, 0], [0, 0, 0]]),
    }
    extended = adapter.append_meta_placeholders(inputs, num_meta=2)
    assert extended["input_ids"].tolist() == [[0, 5, 6, 0, 0], [7, 8, 9, 0, 0]]
    assert extended["attention_mask"][:, -2:].all()
    assert extended["mm_token_type_ids"].shape == (2, 5)
    assert adapter.tokenizer.padding_side == "left"


def test_right_padding_is_refused():
    adapter = _adapter()
    inputs = {"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    with pytest.raises(ValueError, match="left"):
        adapter.append_meta_placeholders(inputs, num_meta=2)


def test_hook_replaces_last_rows_and_carries_gradient():
    adapter = _adapter()
    inputs = adapter.append_meta_placeholders(
        {"input_ids": torch.tensor([[5, 6], [7, 8]]), "attention_mask": torch.ones(2, 2)}, 3
    )
    meta = torch.randn(3, 4, requires_grad=True)
    hidden = adapter.forward_with_meta(inputs, meta)
    assert torch.allclose(hidden[:, -3:], 2.0 * meta.expand(2, -1, -1))
    assert torch.allclose(hidden[:, :2], 2.0 * adapter.model.embed(inputs["input_ids"][:, :2]))
    hidden.sum().backward()
    assert meta.grad is not None and bool((meta.grad != 0).all())
    # the hook is removed afterwards: a bare forward sees the placeholder embeddings
    bare = adapter.forward_with_meta(inputs, None)
    assert torch.allclose(bare[:, -1], 2.0 * adapter.model.embed.weight[0].expand(2, -1))


def test_check_role():
    with pytest.raises(ValueError, match="query"):
        check_role("document")


def test_registry():
    assert {"llama", "qwen2_vl", "qwen2_5_vl"} <= set(available_families())
    assert family_for_model_type("qwen2_vl") == "qwen2_vl"
    with pytest.raises(ValueError, match="known families"):
        get_adapter_class("no_such_family")
    with pytest.raises(ValueError, match="model_type"):
        family_for_model_type("bert")
