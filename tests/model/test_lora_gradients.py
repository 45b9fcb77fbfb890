"""A backward pass with gradient checkpointing ON reaches every LoRA tensor and the meta tokens.

The reference implementation silently trained no vision LoRA in this setting
(reentrant checkpointing with frozen inputs); this test guards against that.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metaembed.items import Item
from metaembed.model.lora import lora_parameters
from metaembed.testing import tiny_model

FAMILIES = ["llama", "qwen2_vl", "qwen2_5_vl"]


def _items(family: str) -> list:
    if family == "llama":
        return ["a red bicycle", "two dogs play on the grass"]
    image = Image.new("RGB", (64, 56), (200, 30, 30))
    return [Item(text="a red square", image=image), Item(image=image)]


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointed_backward_reaches_all_lora_and_meta_tokens(family):
    model = tiny_model(family, num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"])
    with torch.no_grad():  # LoRA B starts at zero, which would zero every lora_A gradient
        for name, parameter in lora_parameters(model).items():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    model.gradient_checkpointing_enable()
    model.train()
    base = model.backbone.get_base_model()
    checkpointed = [m for m in base.modules() if getattr(m, "gradient_checkpointing", False)]
    assert checkpointed
    for module in checkpointed:  # non-reentrant, so frozen inputs cannot cut LoRA off
        function = getattr(module, "_gradient_checkpointing_func", None)
        if function is not None:
            assert function.keywords.get("use_reentrant") is False
    queries = model.embed(model.prepare(["find a red object", "dogs"], "query"), "query")
    candidates = model.embed(model.prepare(_items(family), "candidate"), "candidate")
    scores = torch.einsum("qid,cjd->qcij", queries, candidates).amax(-1).sum(-1)  # MaxSim
    torch.nn.functional.cross_entropy(scores / 0.03, torch.arange(2)).backward()
    loras = lora_parameters(model)
    if family != "llama":
        assert any("visual" in name for name in loras), "vision tower has no LoRA"
    missing = [n for n, p in loras.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"LoRA tensors without gradient: {missing}"
    meta_grad = model.meta_tokens.weight.grad
    assert meta_grad is not None
    assert bool(meta_grad[:2].abs().sum() > 0) and bool(meta_grad[2:].abs().sum() > 0)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n for n in frozen)
