"""Mllama adapter: cross-attention mask of meta positions, mixed batches, congruence, gradients."""

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
    return tiny_model("mllama", num_query_tokens=3, num_candidate_tokens=5, groups=["1x1", "3x5"])


def _items():
    red = Image.new("RGB", (84, 56), (220, 20, 20))
    blue = Image.new("RGB", (56, 112), (20, 20, 220))
    return [
        Item(text="a red rectangle", image=red),
        "only text here, longer than the others",
        blue,
        Item(text="blue", image=blue, instruction="Represent the image."),
    ]


def test_meta_positions_copy_the_last_prompt_tokens_cross_attention_row(model):
    inputs = model.prepare(_items(), "candidate")
    mask = inputs["cross_attention_mask"]  # (batch, seq, images, tiles)
    assert mask.shape[1] == inputs["input_ids"].shape[1]
    assert torch.equal(mask[:, -5:], mask[:, -6:-5].expand(-1, 5, -1, -1))
    sees_image = mask[:, -5:].flatten(1).any(dim=1)  # (batch,)
    assert sees_image.tolist() == [True, False, True, True]
    first = model.adapter.tokenizer.decode(inputs["input_ids"][0])
    assert first.endswith(
        "<|image|>a red rectangle<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\n" + "<pad>" * 5
    )


def _cross_attention_inputs(hf, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive cross-attention mask (b, 1, seq, keys) and full-row mask (b, 1, seq, 1), by hand."""
    patches = hf.vision_model.num_patches
    allowed = mask.repeat_interleave(patches, dim=3).flatten(2).bool()  # (b, seq, keys)
    row_sees_any = allowed.any(dim=-1)  # (b, seq)
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    additive = additive * row_sees_any[..., None]  # rows that see nothing: no mask
    return additive[:, None], row_sees_any[:, None, :, None].float()


def test_embed_equals_hand_built_hf_forward_per_item(model):
    """Meta embeddings == language-model states with hand-built cross-attention inputs.

    Image rows get cross-attention states and masks; text rows run without any,
    as when each item is encoded on its own.
    """
    inputs = model.prepare(_items(), "query")
    hf = model.backbone.get_base_model()
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(inputs["input_ids"])  # (batch, seq, hidden)
        embeds[:, -3:] = model.meta_tokens.weight[:3]
        mask = inputs["attention_mask"]  # (batch, seq)
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)  # (batch, seq)
        vision = hf.vision_model(
            inputs["pixel_values"], inputs["aspect_ratio_ids"], inputs["aspect_ratio_mask"]
        ).last_hidden_state
        states = hf.multi_modal_projector(vision)  # (batch, images, tiles, patches, hidden)
        states = states.reshape(states.shape[0], -1, states.shape[-1])  # (batch, keys, hidden)
        cross_mask, full_rows = _cross_attention_inputs(hf, inputs["cross_attention_mask"])
        expected = []
        for row in range(4):
            keep = slice(row, row + 1)
            kwargs = dict(
                inputs_embeds=embeds[keep], attention_mask=mask[keep], position_ids=positions[keep]
            )
            if row != 1:  # the text-only item
                kwargs.update(
                    cross_attention_states=states[keep],
                    cross_attention_mask=cross_mask[keep],
                    full_text_row_masked_out_mask=full_rows[keep],
                )
            hidden = hf.language_model(**kwargs).last_hidden_state  # (1, seq, hidden)
            expected.append(F.normalize(hidden[:, -3:], dim=-1))
        got = model.embed(inputs, "query")
    assert torch.allclose(got, torch.cat(expected), atol=1e-5)


def test_batch_size_padding_images_and_budgets(model):
    items = _items()
    full = model.encode_candidates(items, batch_size=4, show_progress=False)
    single = model.encode_candidates(items, batch_size=1, show_progress=False)
    assert full.shape == (4, 5, 32) and full.dtype == torch.float32
    assert torch.allclose(full.norm(dim=-1), torch.ones(4, 5), atol=1e-5)
    assert torch.allclose(full, single, atol=1e-6)
    assert torch.allclose(
        model.encode_candidates(items, budget="1x1", show_progress=False), full[:, :1], atol=1e-6
    )
    green = Item(text="a red rectangle", image=Image.new("RGB", (84, 56), (20, 220, 20)))
    other = model.encode_candidates([green], show_progress=False)
    assert not torch.allclose(other[0], full[0], atol=1e-3)  # the meta tokens see the image
    assert model.encode_queries(["text only", "more text"], show_progress=False).shape == (2, 3, 32)


def test_paper_layout_reads_first_rq_and_last_rc():
    model = tiny_model(
        "mllama", num_query_tokens=2, num_candidate_tokens=3, groups=["2x3"], layout="paper"
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


def test_checkpointed_backward_reaches_every_lora_tensor_and_the_meta_tokens():
    model = tiny_model("mllama", num_query_tokens=2, num_candidate_tokens=4, groups=["2x4"])
    with torch.no_grad():  # LoRA B starts at zero, which would zero every lora_A gradient
        for name, parameter in lora_parameters(model).items():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    model.gradient_checkpointing_enable()
    model.train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.modules())
    image = Image.new("RGB", (64, 56), (200, 30, 30))
    queries = model.embed(model.prepare(["find a red object", "dogs"], "query"), "query")
    candidate_inputs = model.prepare(
        [Item(text="red", image=image), "a text candidate"], "candidate"
    )
    candidates = model.embed(candidate_inputs, "candidate")
    scores = torch.einsum("qid,cjd->qcij", queries, candidates).amax(-1).sum(-1)  # (2, 2) MaxSim
    F.cross_entropy(scores / 0.03, torch.arange(2)).backward()
    loras = lora_parameters(model)
    for part in (
        "vision_model.transformer",
        "global_transformer",
        "multi_modal_projector",
        "cross_attn",
    ):
        assert any(part in name for name in loras), f"no LoRA on {part}"
    missing = [n for n, p in loras.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"LoRA tensors without gradient: {missing}"
    meta_grad = model.meta_tokens.weight.grad
    assert bool(meta_grad[:2].abs().sum() > 0) and bool(meta_grad[2:].abs().sum() > 0)


def test_image_placeholder_without_a_chat_template(model):
    processor = model.adapter.processor
    templates = processor.chat_template, processor.tokenizer.chat_template
    processor.chat_template = processor.tokenizer.chat_template = None
    try:
        inputs = model.prepare(
            [Item(text="red", image=Image.new("RGB", (56, 56))), "text"], "query"
        )
    finally:
        processor.chat_template, processor.tokenizer.chat_template = templates
    image_id = model.adapter.tokenizer.convert_tokens_to_ids("<|image|>")
    assert (inputs["input_ids"] == image_id).any(dim=1).tolist() == [True, False]
    assert model.adapter.tokenizer.decode(inputs["input_ids"][1]).endswith("text" + "<pad>" * 3)


def test_save_load_round_trip(model, tmp_path):
    from metaembed.model.modeling import MetaEmbedModel

    items = _items()
    model.save_pretrained(tmp_path / "saved")
    loaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    assert loaded.adapter.family == "mllama"
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
    assert inputs["pixel_values"].shape == (1, 1, 2, 3, 56, 56)
    assert model.encode_candidates([huge], show_progress=False).shape == (1, 5, 32)


def test_loads_a_hub_style_checkpoint_headless(tmp_path):
    """Hub checkpoints hold ``ForConditionalGeneration``; ``load`` keeps the headless model."""
    from transformers import MllamaForConditionalGeneration

    from metaembed.backbones.mllama import MllamaAdapter
    from metaembed.items import as_items
    from metaembed.testing import tiny_adapter

    tiny = tiny_adapter("mllama")
    full = MllamaForConditionalGeneration(tiny.model.config)
    full.model.load_state_dict(tiny.model.state_dict())
    full.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = MllamaAdapter.load(str(tmp_path))
    assert type(loaded.model).__name__ == "MllamaModel"
    items = as_items(_items())
    expected_inputs, inputs = tiny.build_inputs(items, "query"), loaded.build_inputs(items, "query")
    assert all(torch.equal(expected_inputs[key], inputs[key]) for key in expected_inputs)
    with torch.no_grad():
        expected = tiny.forward_with_meta(expected_inputs, None)  # (batch, seq, hidden)
        assert torch.equal(loaded.forward_with_meta(inputs, None), expected)
