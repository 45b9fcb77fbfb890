"""Encoding congruence on the tiny Llama: budgets are prefixes; batching and padding are neutral."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaembed.budget import Budget
from metaembed.items import Item
from metaembed.testing import tiny_model


@pytest.fixture(scope="module")
def tiny_llama():
    """Tiny Llama MetaEmbed model with small R_q/R_c (fast)."""
    return tiny_model(
        "llama", num_query_tokens=4, num_candidate_tokens=8, groups=["1x1", "2x4", "4x8"]
    )


TEXTS = [
    "a red bicycle",
    "two dogs play with a ball on the green grass while children watch",
    "revenue growth",
    "What is the capital of France?",
    "x",
]


def test_shapes_dtype_and_norm(tiny_llama):
    queries = tiny_llama.encode_queries(TEXTS, show_progress=False)
    candidates = tiny_llama.encode_candidates(TEXTS, show_progress=False)
    assert queries.shape == (5, 4, 32) and candidates.shape == (5, 8, 32)
    assert queries.dtype == torch.float32 and queries.device.type == "cpu"
    assert torch.allclose(queries.norm(dim=-1), torch.ones(5, 4), atol=1e-5)
    # query and candidate meta tokens differ, so the embeddings do too
    assert not torch.allclose(queries[:, 0], candidates[:, 0])


def test_budget_is_prefix_of_full_encoding(tiny_llama):
    full = tiny_llama.encode_candidates(TEXTS, show_progress=False)
    for budget in (Budget(1, 1), "2x4", (4, 8), 3):
        part = tiny_llama.encode_candidates(TEXTS, budget=budget, show_progress=False)
        count = part.shape[1]
        assert torch.allclose(part, full[:, :count], atol=1e-6)


def test_batch_size_and_padding_do_not_change_results(tiny_llama):
    one_by_one = tiny_llama.encode_queries(TEXTS, batch_size=1, show_progress=False)
    batched = tiny_llama.encode_queries(TEXTS, batch_size=5, show_progress=False)
    pairs = tiny_llama.encode_queries(TEXTS, batch_size=2, show_progress=False)
    assert torch.allclose(one_by_one, batched, atol=1e-5)
    assert torch.allclose(one_by_one, pairs, atol=1e-5)


def test_order_is_preserved(tiny_llama):
    forward = tiny_llama.encode_queries(TEXTS, show_progress=False)
    backward = tiny_llama.encode_queries(TEXTS[::-1], show_progress=False)
    assert torch.allclose(forward, backward.flip(0), atol=1e-5)


def test_instruction_changes_embedding(tiny_llama):
    plain = tiny_llama.encode_queries([Item(text="cat")], show_progress=False)
    instructed = tiny_llama.encode_queries(
        [Item(text="cat", instruction="Find an image that matches the caption.")],
        show_progress=False,
    )
    assert not torch.allclose(plain, instructed)


def test_empty_list_gives_empty_tensor(tiny_llama):
    assert tiny_llama.encode_queries([], show_progress=False).shape == (0, 4, 32)


@pytest.mark.parametrize(
    ("role", "budget"), [("query", "5x8"), ("candidate", "4x9"), ("candidate", 9)]
)
def test_budget_above_model_raises(tiny_llama, role, budget):
    with pytest.raises(ValueError, match="use r_"):
        tiny_llama.encode(TEXTS, role, budget=budget, show_progress=False)


def test_bad_items_name_the_index(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="item 1 has neither text nor an image"):
        tiny_llama.encode_queries(["ok", Item()], show_progress=False)
    with pytest.raises(TypeError, match="item 0"):
        tiny_llama.encode_queries([3.5], show_progress=False)
    with pytest.raises(ValueError, match="item 0 has an image but family 'llama' is text-only"):
        tiny_llama.encode_queries([Item(text="x", image=_png(tmp_path))], show_progress=False)


def _png(tmp_path):
    from PIL import Image

    path = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(path)
    return path


def test_prefetch_gives_the_same_result_and_errors(tiny_llama):
    from metaembed.items import as_items
    from metaembed.model.encoding import encode_in_batches

    items = as_items(TEXTS)
    plain = encode_in_batches(tiny_llama, items, "query", 4, batch_size=2, prefetch=False)
    prefetched = encode_in_batches(tiny_llama, items, "query", 4, batch_size=2, prefetch=True)
    assert torch.equal(plain, prefetched)
    bad = as_items(["fine", "also fine", Item(text="x", image=Path("/no/such.png"))])
    with pytest.raises(ValueError, match="item 2 has an image"):
        encode_in_batches(tiny_llama, bad, "query", 4, batch_size=1, prefetch=True)
