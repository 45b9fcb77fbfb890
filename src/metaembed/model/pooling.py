"""Reading vectors out of last-layer hidden states: meta tokens and the appendix-B baselines.

All functions take hidden states ``(batch, seq, hidden)`` and an attention mask
``(batch, seq)`` (1 = real token) and return ``(batch, R, hidden)``; L2
normalisation happens afterwards in the model.

>>> import torch
>>> hidden = torch.arange(6.0).reshape(1, 6, 1)  # six tokens with values 0..5
>>> mask = torch.tensor([[0, 1, 1, 1, 1, 1]])     # left padding: token 0 is padding
>>> pool_last(hidden, mask).flatten().tolist()
[5.0]
>>> pool_mean(hidden, mask).flatten().tolist()
[3.0]
>>> pool_split(hidden, mask, num_segments=2).flatten().tolist()  # [1, 2, 3] and [4, 5]
[2.0, 4.5]
"""

from __future__ import annotations

import torch

__all__ = ["pool_meta", "pool_last", "pool_mean", "pool_split", "segment_weights"]


def pool_meta(hidden_states: torch.Tensor, num_meta: int, read: slice) -> torch.Tensor:
    """Hidden states of the meta tokens: the last ``num_meta`` positions, then ``read`` of them.

    >>> import torch
    >>> pool_meta(torch.arange(5.0).reshape(1, 5, 1), 3, slice(1, 3)).flatten().tolist()
    [3.0, 4.0]
    """
    meta_hidden = hidden_states[:, hidden_states.shape[1] - num_meta :]  # (batch, num_meta, hidden)
    return meta_hidden[:, read]  # (batch, R, hidden)


def pool_last(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last real token of each row (works for left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (seq,)
    last_index = (positions * attention_mask.long()).argmax(dim=1)  # (batch,)
    rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)  # (batch,)
    return hidden_states[rows, last_index].unsqueeze(1)  # (batch, 1, hidden)


def pool_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states of the real tokens of each row."""
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (batch, seq, 1)
    total = (hidden_states * weights).sum(dim=1, keepdim=True)  # (batch, 1, hidden)
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)  # (batch, 1, 1)
    return total / count  # (batch, 1, hidden)


def segment_weights(attention_mask: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Averaging weights that cut each row's real tokens into ``num_segments`` even segments.

    Token of rank ``j`` among ``n`` real tokens goes to segment ``floor(j * R / n)``.
    When ``n < R`` a segment would be empty; it takes token ``floor(k * n / R)`` instead.

    Returns
    -------
    torch.Tensor
        ``(batch, R, seq)``; each row over ``seq`` sums to 1.

    >>> import torch
    >>> segment_weights(torch.tensor([[1, 1]]), 3)[0].tolist()  # 2 tokens, 3 segments
    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    mask = attention_mask.long()  # (batch, seq)
    rank = mask.cumsum(dim=1) - 1  # (batch, seq) rank of each real token
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)  # (batch, 1)
    segment_of_token = torch.div(rank * num_segments, count, rounding_mode="floor")  # (batch, seq)
    segments = torch.arange(num_segments, device=mask.device).view(1, -1, 1)  # (1, R, 1)
    valid = mask.bool().unsqueeze(1)  # (batch, 1, seq)
    weights = (segment_of_token.unsqueeze(1) == segments) & valid  # (batch, R, seq)
    empty = weights.sum(dim=2, keepdim=True) == 0  # (batch, R, 1)
    fallback_rank = torch.div(segments * count.unsqueeze(1), num_segments, rounding_mode="floor")
    fallback = (rank.unsqueeze(1) == fallback_rank) & valid  # (batch, R, seq)
    weights = torch.where(empty, fallback, weights).float()  # (batch, R, seq)
    return weights / weights.sum(dim=2, keepdim=True).clamp_min(1.0)


def pool_split(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, num_segments: int
) -> torch.Tensor:
    """Mean of each of ``num_segments`` even segments of the real tokens (split baseline)."""
    weights = segment_weights(attention_mask, num_segments).to(
        hidden_states.dtype
    )  # (batch, R, seq)
    return torch.bmm(weights, hidden_states)  # (batch, R, hidden)
