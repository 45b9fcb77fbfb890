"""Meta-token initialisation and layouts; pooling baselines against plain loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metaembed.model.meta_tokens import MetaTokens
from metaembed.model.pooling import pool_last, pool_mean, segment_weights


def test_embedding_stats_init_matches_the_vocabulary_scale():
    vocabulary = torch.randn(5000, 8) * torch.linspace(0.5, 3.0, 8) + 2.0  # (vocab, hidden)
    tokens = MetaTokens(num_query_tokens=200, num_candidate_tokens=800, hidden_size=8)
    tokens.initialize(vocabulary, "embedding_stats", seed=0)
    rows = tokens.weight.detach()
    assert torch.allclose(rows.mean(0), vocabulary.mean(0), atol=0.25)
    assert torch.allclose(rows.std(0), vocabulary.std(0), rtol=0.1)
    again = MetaTokens(200, 800, 8)
    again.initialize(vocabulary, "embedding_stats", seed=0)
    assert torch.equal(again.weight, tokens.weight)


def test_token_embeddings_init_copies_vocabulary_rows():
    vocabulary = torch.randn(50, 4)
    tokens = MetaTokens(2, 3, 4)
    tokens.initialize(vocabulary, "token_embeddings", seed=1)
    for row in tokens.weight.detach():
        assert (vocabulary == row).all(dim=1).any()
    with pytest.raises(ValueError, match="meta_init"):
        tokens.initialize(vocabulary, "zeros")


def test_layouts_select_rows_and_positions():
    tokens = MetaTokens(2, 3, 4)
    assert torch.equal(tokens.rows("query", "role"), tokens.weight[:2])
    assert torch.equal(tokens.rows("candidate", "role"), tokens.weight[2:])
    assert tokens.read_slice("candidate", "role") == slice(0, 3)
    assert tokens.read_slice("query", "paper") == slice(0, 2)
    with pytest.raises(ValueError, match="role"):
        tokens.rows("doc")


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
    segments=st.integers(min_value=1, max_value=8),
)
def test_split_segments_cover_real_tokens_evenly(lengths, segments):
    width = max(lengths)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])  # left padding
    weights = segment_weights(mask, segments)  # (batch, R, seq)
    assert torch.allclose(weights.sum(-1), torch.ones(len(lengths), segments))
    assert bool((weights[mask.unsqueeze(1).expand_as(weights) == 0] == 0).all())
    for row, n in enumerate(lengths):
        used = (weights[row] > 0).sum(-1)  # tokens per segment
        if n >= segments:  # a partition: every token once, sizes differ by at most one
            assert int((weights[row] > 0).sum()) == n
            assert int(used.max() - used.min()) <= 1
        else:
            assert bool((used == 1).all())


def test_last_and_mean_pooling_against_loops():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    last = pool_last(hidden, mask)[:, 0]
    mean = pool_mean(hidden, mask)[:, 0]
    for row in range(3):
        real = hidden[row][mask[row].bool()]
        assert torch.allclose(last[row], real[-1])
        assert torch.allclose(mean[row], real.mean(0), atol=1e-6)
