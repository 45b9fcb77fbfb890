"""Qwen2-VL / Qwen2.5-VL adapters: M-RoPE positions of meta tokens, congruence with HF forwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaembed.items import Item
from metaembed.testing import tiny_model

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(
        request.param, num_query_tokens=3, num_candidate_tokens=5, groups=["1x1", "3x5"]
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


def test_meta_positions_follow_the_prompt_on_all_three_axes(model):
    inputs = model.prepare(_items(), "candidate")
    positions = model.adapter.rope_positions(inputs)  # (3, batch, seq)
    mask = inputs["attention_mask"].bool()
    for row in range(positions.shape[1]):
        prompt = positions[:, row, :-5][:, mask[row, :-5]]  # (3, prompt_len)
        meta = positions[:, row, -5:]  # (3, 5)
        start = int(prompt.max()) + 1
        expected = torch.arange(start, start + 5).expand(3, -1)
        assert torch.equal(meta, expected), (row, meta, start)
    has_image = inputs["mm_token_type_ids"].bool().any(dim=1)
    assert has_image.tolist() == [True, False, True, True]


def test_explicit_positions_match_the_models_own_forward(model):
    """Our forward (explicit get_rope_index) equals HF's forward computing positions itself."""
    inputs = model.prepare(_items(), "candidate")
    meta_rows = model.meta_tokens.rows("candidate")
    with torch.no_grad():
        ours = model.adapter.forward_with_meta(inputs, meta_rows)
        with model.adapter.meta_token_hook(meta_rows):
            native = model.backbone(**inputs, use_cache=False).last_hidden_state
    assert torch.allclose(ours, native, atol=1e-5)


def test_embed_equals_hand_built_hf_forward(model):
    """Meta embeddings == hidden states of a language-model forward on hand-built embeddings."""
    inputs = model.prepare(_items(), "query")
    hf = model.backbone.get_base_model()
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(inputs["input_ids"])  # (batch, seq, hidden)
        image_features = hf.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        image_features = torch.cat(image_features.pooler_output, dim=0)
        image_mask = (
            (inputs["input_ids"] == hf.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        )
        embeds = embeds.masked_scatter(image_mask, image_features)
        embeds[:, -3:] = model.meta_tokens.weight[:3]
        position_ids, _ = hf.get_rope_index(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        hidden = hf.language_model(
            inputs_embeds=embeds, position_ids=position_ids, attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        expected = F.normalize(hidden[:, -3:].float(), dim=-1)
        got = model.embed(inputs, "query")
    assert torch.allclose(got, expected, atol=1e-5)


def test_mixed_batches_budgets_and_batch_size(model):
    items = _items()
    full = model.encode_candidates(items, batch_size=4, show_progress=False)
    single = model.encode_candidates(items, batch_size=1, show_progress=False)
    assert full.shape == (4, 5, 32)
    assert torch.allclose(full, single, atol=1e-5)
    assert torch.allclose(
        model.encode_candidates(items, budget="1x1", show_progress=False), full[:, :1], atol=1e-6
    )
    queries = model.encode_queries(items, budget="3x5", show_progress=False)
    assert queries.shape == (4, 3, 32)


def test_paper_layout_reads_first_rq_and_last_rc():
    model = tiny_model(
        "qwen2_vl", num_query_tokens=2, num_candidate_tokens=3, groups=["2x3"], layout="paper"
    )
    inputs = model.prepare(["hello"], "query")
    assert (
        inputs["input_ids"].shape[1] == model.prepare(["hello"], "candidate")["input_ids"].shape[1]
    )
    with torch.no_grad():
        hidden = model.adapter.forward_with_meta(
            inputs, model.meta_tokens.weight
        )  # (1, seq, hidden)
        query = model.embed(inputs, "query")
        candidate = model.embed(inputs, "candidate")
    assert torch.allclose(query, F.normalize(hidden[:, -5:-3], dim=-1), atol=1e-6)
    assert torch.allclose(candidate, F.normalize(hidden[:, -3:], dim=-1), atol=1e-6)


def test_image_errors_and_huge_images(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="item 1: image file .* does not exist"):
        model.encode_candidates(["ok", tmp_path / "missing.png"], show_progress=False)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match="item 0: cannot read image file .*corrupt"):
        model.encode_candidates([corrupt], show_progress=False)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (5000, 3000), (1, 2, 3)).save(huge)
    inputs = model.prepare([huge], "candidate")
    max_pixels = model.adapter.processor.image_processor.size["longest_edge"]  # a pixel count
    assert int(inputs["image_grid_thw"].prod()) * 14 * 14 <= max_pixels
    assert model.encode_candidates([huge], show_progress=False).shape == (1, 5, 32)


def test_save_load_round_trip(model, tmp_path):
    from metaembed.model.modeling import MetaEmbedModel

    items = _items()
    model.save_pretrained(tmp_path / "saved")
    loaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    assert torch.allclose(
        model.encode_candidates(items, show_progress=False),
        loaded.encode_candidates(items, show_progress=False),
        atol=1e-6,
    )
