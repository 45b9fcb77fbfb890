"""Learnable meta tokens: the R_q + R_c input rows whose last hidden states are the embeddings.

Rows ``0 .. R_q-1`` are the query tokens M_q and rows ``R_q .. R_q+R_c-1`` the
candidate tokens M_c (paper eq. 1). Which rows an input receives, and which of
the resulting hidden states are read, depends on the layout:

========  ===========================  ==========================================
layout    rows appended                hidden states read (of the appended block)
========  ===========================  ==========================================
role      query: M_q; candidate: M_c   all of them
paper     M_q then M_c, for both       query: first R_q; candidate: last R_c
========  ===========================  ==========================================

>>> tokens = MetaTokens(num_query_tokens=2, num_candidate_tokens=3, hidden_size=4)
>>> tokens.rows("query", "role").shape, tokens.read_slice("query", "role")
(torch.Size([2, 4]), slice(0, 2, None))
>>> tokens.rows("candidate", "paper").shape, tokens.read_slice("candidate", "paper")
(torch.Size([5, 4]), slice(2, 5, None))
"""

from __future__ import annotations

import torch
from torch import nn

from metaembed.backbones.base import check_role

__all__ = ["MetaTokens"]


class MetaTokens(nn.Module):
    """The learnable meta-token matrix, ``(R_q + R_c, hidden)``.

    Parameters
    ----------
    num_query_tokens, num_candidate_tokens : int
        R_q and R_c.
    hidden_size : int
        Width of the backbone's input embeddings.
    """

    def __init__(self, num_query_tokens: int, num_candidate_tokens: int, hidden_size: int) -> None:
        super().__init__()
        self.num_query_tokens = num_query_tokens
        self.num_candidate_tokens = num_candidate_tokens
        total = num_query_tokens + num_candidate_tokens
        self.weight = nn.Parameter(torch.zeros(total, hidden_size))  # (R_q + R_c, hidden)

    @torch.no_grad()
    def initialize(
        self, embedding_matrix: torch.Tensor, method: str = "embedding_stats", seed: int = 0
    ) -> None:
        """Initialise the rows from the backbone's input embedding matrix.

        ``embedding_stats`` draws each row from a normal distribution with the
        per-dimension mean and standard deviation of ``embedding_matrix``
        ``(vocab, hidden)``, so meta tokens start at the scale of real tokens
        without copying any one of them. ``token_embeddings`` copies randomly
        chosen vocabulary rows. Both use a private generator seeded by ``seed``.
        """
        generator = torch.Generator().manual_seed(seed)
        embedding_matrix = embedding_matrix.detach().float().cpu()  # (vocab, hidden)
        total = self.weight.shape[0]
        if method == "embedding_stats":
            mean = embedding_matrix.mean(dim=0)  # (hidden,)
            std = embedding_matrix.std(dim=0)  # (hidden,)
            noise = torch.randn(total, embedding_matrix.shape[1], generator=generator)
            rows = mean + noise * std  # (R_q + R_c, hidden)
        elif method == "token_embeddings":
            chosen = torch.randint(0, embedding_matrix.shape[0], (total,), generator=generator)
            rows = embedding_matrix[chosen]  # (R_q + R_c, hidden)
        else:
            raise ValueError(
                f"unknown meta_init {method!r}; use 'embedding_stats' or 'token_embeddings'"
            )
        self.weight.copy_(rows.to(self.weight.dtype))

    def rows(self, role: str, layout: str = "role") -> torch.Tensor:
        """Rows appended to an input of ``role``: ``(R, hidden)``."""
        check_role(role)
        if layout == "paper":
            return self.weight  # (R_q + R_c, hidden)
        if role == "query":
            return self.weight[: self.num_query_tokens]  # (R_q, hidden)
        return self.weight[self.num_query_tokens :]  # (R_c, hidden)

    def read_slice(self, role: str, layout: str = "role") -> slice:
        """Which of the appended positions hold the embeddings of ``role``."""
        check_role(role)
        if layout == "paper" and role == "candidate":
            start = self.num_query_tokens
            return slice(start, start + self.num_candidate_tokens)
        count = self.num_query_tokens if role == "query" else self.num_candidate_tokens
        return slice(0, count)

    def extra_repr(self) -> str:
        """Summary shown by ``repr``."""
        hidden = self.weight.shape[1]
        return f"R_q={self.num_query_tokens}, R_c={self.num_candidate_tokens}, hidden={hidden}"
