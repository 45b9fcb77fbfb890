"""Decoder-only LM adapter: congruence with a direct Hugging Face forward, pooling baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaembed.items import Item
from metaembed.testing import tiny_model

TEXTS = ["a red bicycle", "two dogs play with a ball on the green grass", "x"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"])


def test_meta_embeddings_equal_direct_hf_forward(model):
    """Hand-build each prompt (chat template, no padding) + meta rows; run LlamaModel directly."""
    tokenizer = model.adapter.tokenizer
    hf = model.backbone.get_base_model()
    with torch.no_grad():
        got = model.embed(model.prepare(TEXTS, "candidate"), "candidate")  # (3, 4, 32)
        for row, text in enumerate(TEXTS):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            embeds = hf.get_input_embeddings()(ids)  # (1, n, hidden)
            embeds = torch.cat([embeds, model.meta_tokens.weight[2:].unsqueeze(0)], dim=1)
            hidden = hf(inputs_embeds=embeds).last_hidden_state  # (1, n + 4, hidden)
            expected = F.normalize(hidden[0, -4:], dim=-1)
            assert torch.allclose(got[row], expected, atol=1e-5), row


def test_padding_does_not_change_results_exactly(model):
    alone = model.encode_queries(TEXTS[2:], show_progress=False)
    padded = model.encode_queries(TEXTS, batch_size=3, show_progress=False)[2:]
    assert torch.allclose(alone, padded, atol=1e-6)


@pytest.mark.parametrize(
    ("pooling", "query_vectors", "candidate_vectors"),
    [("last", 1, 1), ("mean", 1, 1), ("split", 2, 4)],
)
def test_pooling_baselines(pooling, query_vectors, candidate_vectors):
    baseline = tiny_model(
        "llama",
        pooling=pooling,
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["1x1"] if pooling != "split" else ["1x1", "2x4"],
    )
    assert baseline.meta_tokens is None
    inputs = baseline.prepare(TEXTS, "query")
    assert (
        inputs["input_ids"].shape[1]
        == baseline.adapter.build_inputs([Item(text=t) for t in TEXTS], "query")["input_ids"].shape[
            1
        ]
    )
    queries = baseline.encode_queries(TEXTS, show_progress=False)
    candidates = baseline.encode_candidates(TEXTS, show_progress=False)
    assert queries.shape == (3, query_vectors, 32) and candidates.shape == (
        3,
        candidate_vectors,
        32,
    )
    assert torch.allclose(queries.norm(dim=-1), torch.ones(3, query_vectors), atol=1e-5)
    with pytest.raises(ValueError, match="use r_q <= 1" if pooling != "split" else "use r_q <= 2"):
        baseline.encode_queries(TEXTS, budget="4x8", show_progress=False)


def test_max_length_truncates_prompts():
    short = tiny_model(
        "llama", num_query_tokens=2, num_candidate_tokens=4, groups=["2x4"], max_length=5
    )
    inputs = short.prepare(["a long text " * 20], "query")
    assert inputs["input_ids"].shape[1] == 5 + 2
