"""PaliGemma adapter: prefix-LM attention, meta tokens in the suffix, congruence, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaembed.items import Item
from metaembed.model.lora import lora_parameters
from metaembed.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(
        "paligemma", num_query_tokens=3, num_candidate_tokens=5, groups=["1x1", "3x5"]
    )


def _items():
    red = Image.new("RGB", (84, 56), (220, 20, 20))
    blue = Image.new("RGB", (56, 112), (20, 20, 220))
    return [
        Item(text="a red rectangle", image=red),
        "only text here, longer than the others",
        blue,
        Item(text="blue", image=blue, instruction="Represent the image."),
    ]


def test_prompt_layout_and_token_types(model):
    inputs = model.prepare(_items(), "candidate")
    tokenizer = model.adapter.tokenizer
    image_id = model.adapter.processor.image_token_id
    assert (inputs["input_ids"] == image_id).sum(dim=1).tolist() == [16, 0, 16, 16]
    last = tokenizer.decode(inputs["input_ids"][3])
    assert last.endswith("<image>" * 16 + "<bos>Represent the image.\nblue\n" + "<pad>" * 5)
    text_only = tokenizer.decode(inputs["input_ids"][1])
    assert text_only.endswith("<bos>only text here, longer than the others\n" + "<pad>" * 5)
    token_types = inputs["token_type_ids"]  # (batch, seq)
    assert token_types[:, :-5].eq(0).all() and token_types[:, -5:].eq(1).all()
    assert inputs["pixel_values"].shape == (3, 3, 56, 56)


def _prefix_lm_mask(attention_mask: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
    """Boolean mask (batch, 1, seq, seq): causal, plus full attention within the prefix."""
    seq = attention_mask.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()  # (seq, seq)
    prefix = token_types == 0  # (batch, seq)
    both_prefix = prefix[:, :, None] & prefix[:, None, :]  # (batch, seq, seq)
    allowed = (causal | both_prefix) & attention_mask.bool()[:, None, :]  # (batch, seq, seq)
    return allowed[:, None]


def test_embed_equals_hand_built_hf_forward(model):
    """Meta embeddings == Gemma hidden states on hand-merged inputs and a hand-built mask."""
    inputs = model.prepare(_items(), "query")
    hf = model.backbone.get_base_model()
    scale = hf.config.text_config.hidden_size**0.5
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(inputs["input_ids"])  # (batch, seq, hidden), scaled
        features = hf.get_image_features(inputs["pixel_values"]).pooler_output  # (3, 16, hidden)
        image_mask = inputs["input_ids"] == hf.config.image_token_id  # (batch, seq)
        embeds[image_mask] = features.reshape(-1, features.shape[-1])
        embeds[:, -3:] = model.meta_tokens.weight[:3] * scale
        mask = inputs["attention_mask"]  # (batch, seq)
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0) + 1  # (batch, seq), 1-based
        hidden = hf.language_model(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=_prefix_lm_mask(mask, inputs["token_type_ids"]),
        ).last_hidden_state  # (batch, seq, hidden)
        expected = F.normalize(hidden[:, -3:], dim=-1)
        got = model.embed(inputs, "query")
    assert torch.allclose(got, expected, atol=1e-5)


def test_meta_tokens_are_a_causal_suffix_over_a_bidirectional_prefix(model):
    adapter = model.adapter
    inputs = model.prepare(["a red bicycle leans against a wall"], "candidate")
    rows = model.meta_tokens.rows("candidate")  # (5, hidden)
    changed = rows.clone()
    changed[-1] += 1.0
    with torch.no_grad():
        hidden = adapter.forward_with_meta(inputs, rows)  # (1, seq, hidden)
        hidden_changed = adapter.forward_with_meta(inputs, changed)
        perturbed = dict(inputs, input_ids=inputs["input_ids"].clone())
        perturbed["input_ids"][0, -7] = adapter.tokenizer.convert_tokens_to_ids("<|im_start|>")
        hidden_perturbed = adapter.forward_with_meta(perturbed, rows)
    # the prompt never sees the meta tokens, and meta token i never sees meta tokens after it
    assert torch.equal(hidden[:, :-1], hidden_changed[:, :-1])
    assert not torch.allclose(hidden[:, -1], hidden_changed[:, -1])
    # the prefix is bidirectional: its first token sees a later prompt token
    assert not torch.allclose(hidden[0, 0], hidden_perturbed[0, 0], atol=1e-4)


def test_batch_size_padding_and_budgets(model):
    items = _items()
    full = model.encode_candidates(items, batch_size=4, show_progress=False)
    single = model.encode_candidates(items, batch_size=1, show_progress=False)
    assert full.shape == (4, 5, 32) and full.dtype == torch.float32
    assert torch.allclose(full.norm(dim=-1), torch.ones(4, 5), atol=1e-5)
    assert torch.allclose(full, single, atol=1e-6)
    assert torch.allclose(
        model.encode_candidates(items, budget="1x1", show_progress=False), full[:, :1], atol=1e-6
    )
    queries = model.encode_queries(["only text", "two texts, no image"], show_progress=False)
    assert queries.shape == (2, 3, 32)


def test_paper_layout_reads_first_rq_and_last_rc():
    model = tiny_model(
        "paligemma", num_query_tokens=2, num_candidate_tokens=3, groups=["2x3"], layout="paper"
    )
    items = [Item(text="red", image=Image.new("RGB", (56, 56), (200, 0, 0))), "text only"]
    inputs = model.prepare(items, "query")
    assert inputs["input_ids"].shape == model.prepare(items, "candidate")["input_ids"].shape
    with torch.no_grad():
        hidden = model.adapter.forward_with_meta(inputs, model.meta_tokens.weight)  # (2, seq, h)
        query = model.embed(inputs, "query")
        candidate = model.embed(inputs, "candidate")
    assert torch.allclose(query, F.normalize(hidden[:, -5:-3], dim=-1), atol=1e-6)
    assert torch.allclose(candidate, F.normalize(hidden[:, -3:], dim=-1), atol=1e-6)


def test_paligemma2_with_gemma2_sliding_window():
    model = tiny_model(
        "paligemma",
        num_query_tokens=2,
        num_candidate_tokens=3,
        groups=["2x3"],
        text_config={"model_type": "gemma2", "sliding_window": 8},
    )
    assert type(model.backbone.get_base_model().language_model).__name__ == "Gemma2Model"
    items = _items()
    full = model.encode_candidates(items, batch_size=4, show_progress=False)
    assert torch.allclose(
        full, model.encode_candidates(items, batch_size=1, show_progress=False), atol=1e-6
    )
    inputs = model.prepare(["a red bicycle leans against a wall"], "candidate")
    rows = model.meta_tokens.rows("candidate")  # (3, hidden)
    with torch.no_grad():
        hidden = model.adapter.forward_with_meta(inputs, rows)  # (1, seq, hidden)
        hidden_changed = model.adapter.forward_with_meta(inputs, rows + 1.0)
    assert torch.equal(hidden[:, :-3], hidden_changed[:, :-3])  # the prefix never sees them


def test_checkpointed_backward_reaches_every_lora_tensor_and_the_meta_tokens():
    model = tiny_model("paligemma", num_query_tokens=2, num_candidate_tokens=4, groups=["2x4"])
    with torch.no_grad():  # LoRA B starts at zero, which would zero every lora_A gradient
        for name, parameter in lora_parameters(model).items():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    model.gradient_checkpointing_enable()
    model.train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.modules())
    image = Image.new("RGB", (64, 56), (200, 30, 30))
    queries = model.embed(model.prepare(["find a red object", "dogs"], "query"), "query")
    candidate_inputs = model.prepare([Item(text="red", image=image), image], "candidate")
    candidates = model.embed(candidate_inputs, "candidate")
    scores = torch.einsum("qid,cjd->qcij", queries, candidates).amax(-1).sum(-1)  # (2, 2) MaxSim
    F.cross_entropy(scores / 0.03, torch.arange(2)).backward()
    loras = lora_parameters(model)
    assert any("vision_tower" in name for name in loras)
    assert any("multi_modal_projector" in name for name in loras)
    missing = [n for n, p in loras.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"LoRA tensors without gradient: {missing}"
    meta_grad = model.meta_tokens.weight.grad
    assert bool(meta_grad[:2].abs().sum() > 0) and bool(meta_grad[2:].abs().sum() > 0)


def test_save_load_round_trip(model, tmp_path):
    from metaembed.model.modeling import MetaEmbedModel

    items = _items()
    model.save_pretrained(tmp_path / "saved")
    loaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    assert loaded.adapter.family == "paligemma"
    assert torch.allclose(
        model.encode_candidates(items, show_progress=False),
        loaded.encode_candidates(items, show_progress=False),
        atol=1e-6,
    )


def test_text_prompts_are_truncated_to_max_length_and_huge_images_resized(model, tmp_path):
    adapter = model.adapter
    adapter.max_length = 4
    try:
        inputs = model.prepare(["a long text that has many more than four tokens"], "query")
    finally:
        adapter.max_length = model.config.max_length
    assert inputs["input_ids"].shape == (1, 4 + 3)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000), (1, 2, 3)).save(huge)
    inputs = model.prepare([huge], "candidate")
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)
    assert model.encode_candidates([huge], show_progress=False).shape == (1, 5, 32)


def test_loads_a_hub_style_checkpoint_headless(tmp_path):
    """Hub checkpoints hold ``ForConditionalGeneration``; ``load`` keeps the headless model."""
    from transformers import PaliGemmaForConditionalGeneration

    from metaembed.backbones.paligemma import PaliGemmaAdapter
    from metaembed.items import as_items
    from metaembed.testing import tiny_adapter

    tiny = tiny_adapter("paligemma")
    full = PaliGemmaForConditionalGeneration(tiny.model.config)
    full.model.load_state_dict(tiny.model.state_dict())
    full.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = PaliGemmaAdapter.load(str(tmp_path))
    assert type(loaded.model).__name__ == "PaliGemmaModel"
    items = as_items(_items())
    expected_inputs, inputs = tiny.build_inputs(items, "query"), loaded.build_inputs(items, "query")
    assert all(torch.equal(expected_inputs[key], inputs[key]) for key in expected_inputs)
    with torch.no_grad():
        expected = tiny.forward_with_meta(expected_inputs, None)  # (batch, seq, hidden)
        assert torch.equal(loaded.forward_with_meta(inputs, None), expected)
