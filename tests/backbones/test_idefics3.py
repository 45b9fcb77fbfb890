"""Idefics3 (SmolVLM) adapter: prompt layout, congruence with a hand-built HF forward, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaembed.items import Item
from metaembed.model.lora import lora_parameters
from metaembed.testing import tiny_model

GROUPS = ["1x1", "3x5"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("idefics3", num_query_tokens=3, num_candidate_tokens=5, groups=GROUPS)


def _items():
    red = Image.new("RGB", (84, 56), (220, 20, 20))  # 2 x 2 tiles + global view
    blue = Image.new("RGB", (100, 20), (20, 20, 220))  # 1 x 2 tiles + global view
    return [
        Item(text="a red rectangle", image=red),
        "only text here, longer than the others",
        blue,
        Item(text="blue", image=blue, instruction="Represent the image."),
    ]


def test_prompt_has_tiles_then_generation_prompt_then_meta_positions(model):
    inputs = model.prepare(_items(), "candidate")
    tokenizer = model.adapter.tokenizer
    first = tokenizer.decode(inputs["input_ids"][0])
    assert "<row_2_col_2>" in first and "<global-img>" in first
    assert first.endswith("<end_of_utterance>\nAssistant:" + "<pad>" * 5)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    image_tokens = (inputs["input_ids"] == image_id).sum(dim=1)  # (batch,)
    assert image_tokens.tolist() == [20, 0, 12, 12]  # 4 tokens per tile
    assert inputs["pixel_values"].shape[:2] == (4, 5)  # padded to the most tiles
    assert bool(inputs["attention_mask"][:, -5:].all())


def test_embed_equals_hand_built_hf_forward(model):
    """Meta embeddings == text-model hidden states on hand-merged image features + meta rows."""
    inputs = model.prepare(_items(), "query")
    hf = model.backbone.get_base_model()
    with torch.no_grad():
        embeds = hf.text_model.embed_tokens(inputs["input_ids"])  # (batch, seq, hidden)
        features = hf.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"])
        features = torch.cat(features.pooler_output, dim=0)  # (image tokens, hidden)
        image_mask = inputs["input_ids"] == hf.config.image_token_id  # (batch, seq)
        embeds[image_mask] = features
        embeds[:, -3:] = model.meta_tokens.weight[:3]
        mask = inputs["attention_mask"]  # (batch, seq), left padded
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)  # (batch, seq)
        hidden = hf.text_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        hidden = hidden.last_hidden_state  # (batch, seq, hidden)
        expected = F.normalize(hidden[:, -3:], dim=-1)  # (batch, 3, hidden)
        got = model.embed(inputs, "query")
    assert torch.allclose(got, expected, atol=1e-5)


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
    queries = model.encode_queries(items, show_progress=False)
    assert queries.shape == (4, 3, 32)
    assert not torch.allclose(queries[0], queries[2], atol=1e-3)  # images matter


def test_huge_image_is_resized_within_the_processors_limits(model, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000), (1, 2, 3)).save(huge)
    inputs = model.prepare([huge], "candidate")
    assert inputs["pixel_values"].shape[-2:] == (56, 56)
    assert inputs["pixel_values"].shape[1] <= 5  # at most 2 x 2 tiles + the global view
    assert model.encode_candidates([huge], show_progress=False).shape == (1, 5, 32)


def test_checkpointed_backward_reaches_every_lora_tensor_and_the_meta_tokens():
    model = tiny_model("idefics3", num_query_tokens=2, num_candidate_tokens=4, groups=["2x4"])
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
    assert any("vision_model" in name for name in loras)
    assert any("connector" in name for name in loras)
    missing = [n for n, p in loras.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"LoRA tensors without gradient: {missing}"
    meta_grad = model.meta_tokens.weight.grad
    assert bool(meta_grad[:2].abs().sum() > 0) and bool(meta_grad[2:].abs().sum() > 0)


def test_tiny_model_is_deterministic_for_a_seed():
    items = ["a red bicycle", Image.new("RGB", (40, 40), (9, 9, 9))]
    settings = dict(num_query_tokens=2, num_candidate_tokens=2, groups=["2x2"], seed=3)
    first = tiny_model("idefics3", **settings)
    second = tiny_model("idefics3", **settings)
    assert torch.equal(
        first.encode_candidates(items, show_progress=False),
        second.encode_candidates(items, show_progress=False),
    )


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
    image_id = model.adapter.tokenizer.convert_tokens_to_ids("<image>")
    assert (inputs["input_ids"] == image_id).any(dim=1).tolist() == [True, False]
    assert model.adapter.tokenizer.decode(inputs["input_ids"][1]).endswith("text" + "<pad>" * 3)


def test_save_load_round_trip(model, tmp_path):
    from metaembed.model.modeling import MetaEmbedModel

    items = _items()
    model.save_pretrained(tmp_path / "saved")
    loaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    assert loaded.adapter.family == "idefics3"
    assert torch.allclose(
        model.encode_candidates(items, show_progress=False),
        loaded.encode_candidates(items, show_progress=False),
        atol=1e-6,
    )
    assert torch.allclose(
        model.encode_queries(items, show_progress=False),
        loaded.encode_queries(items, show_progress=False),
        atol=1e-6,
    )


def test_text_prompts_are_truncated_to_max_length(model):
    adapter = model.adapter
    adapter.max_length = 4
    try:
        inputs = model.prepare(["a long text that has many more than four tokens"], "query")
    finally:
        adapter.max_length = model.config.max_length
    assert inputs["input_ids"].shape == (1, 4 + 3)


def test_loads_a_smolvlm_checkpoint_through_the_image_only_processor(tmp_path):
    """SmolVLM's processor needs torchvision (video); ``load`` falls back to Idefics3's."""
    import json

    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from metaembed.backbones.idefics3 import Idefics3Adapter
    from metaembed.items import as_items
    from metaembed.testing import tiny_adapter

    tiny = tiny_adapter("idefics3")
    settings = tiny.model.config.to_dict()
    config = SmolVLMConfig(
        **{
            key: settings[key]
            for key in ("text_config", "vision_config", "scale_factor", "image_token_id")
        }
    )
    full = SmolVLMForConditionalGeneration(config)
    full.model.load_state_dict(tiny.model.state_dict())
    full.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    for name in ("processor_config.json", "tokenizer_config.json"):  # as a SmolVLM folder has it
        path = tmp_path / name
        text = path.read_text().replace("Idefics3Processor", "SmolVLMProcessor")
        path.write_text(text.replace("Idefics3ImageProcessor", "SmolVLMImageProcessor"))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "smolvlm"
    loaded = Idefics3Adapter.load(str(tmp_path))
    assert type(loaded.model).__name__ == "SmolVLMModel"
    items = as_items(_items())
    expected_inputs, inputs = tiny.build_inputs(items, "query"), loaded.build_inputs(items, "query")
    assert all(torch.equal(expected_inputs[key], inputs[key]) for key in expected_inputs)
    with torch.no_grad():
        expected = tiny.forward_with_meta(expected_inputs, None)  # (batch, seq, hidden)
        assert torch.equal(loaded.forward_with_meta(inputs, None), expected)
