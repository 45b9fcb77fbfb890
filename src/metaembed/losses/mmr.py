"""Matryoshka Multi-Vector Retrieval (MMR) loss, the paper's eq. 5-7.

For every nested group ``g = (r_q, r_c)`` the group score between query ``u``
and candidate ``v`` is the late-interaction score of their first ``r_q`` and
``r_c`` vectors (eq. 4). Each group contributes an InfoNCE loss whose softmax,
for query ``u``, spans every positive in the (possibly cross-rank gathered)
batch plus ``u``'s own hard negative(s) -- never another query's negatives
(eq. 6). The total is the weighted sum over groups (eq. 7).

Design choices:

* one token-level similarity computation per call (query vectors against all
  positive and own-negative vectors); every group is a slice of it, so five
  groups cost about as much as one (see ``bench/loss.py``);
* ``score_normalization="mean"`` divides a group score by its ``r_q`` before
  the temperature, as the authors' code does (rankings are unchanged, the
  logit scale no longer grows with ``r_q``); ``"sum"`` keeps eq. 4 as written;
* the loss takes tensors and returns a scalar plus per-group values; GradCache
  and distributed gathering wrap it instead of patching it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metaembed.budget import PAPER_GROUPS, Budget, validate_groups

__all__ = ["MMRLoss", "MMRLossOutput", "group_scores"]

_NORMALIZATIONS = ("mean", "sum")


@dataclass
class MMRLossOutput:
    """Result of :class:`MMRLoss`.

    Attributes
    ----------
    loss : torch.Tensor
        Scalar ``sum_g w_g * L_g``.
    group_losses : dict[Budget, torch.Tensor]
        Unweighted InfoNCE loss ``L_g`` of each group (scalars).
    """

    loss: torch.Tensor
    group_losses: dict[Budget, torch.Tensor]


def group_scores(
    token_similarity: torch.Tensor, group: Budget, normalization: str = "sum"
) -> torch.Tensor:
    """Late-interaction scores of one group from a token-level similarity block.

    Parameters
    ----------
    token_similarity : torch.Tensor, shape (..., Rq, Nc, Rc)
        Dot products of query vectors (axis -3) with candidate vectors (axis -1).
    group : Budget
        Prefix sizes ``(r_q, r_c)``.
    normalization : {"sum", "mean"}
        ``"mean"`` divides by ``r_q``.

    Returns
    -------
    torch.Tensor, shape (..., Nc)

    >>> sim = torch.tensor([[[[0.1, 0.9]], [[0.5, 0.2]]]])  # (1 query, 2 vec, 1 cand, 2 vec)
    >>> group_scores(sim, Budget(1, 1))
    tensor([[0.1000]])
    >>> group_scores(sim, Budget(2, 2))
    tensor([[1.4000]])
    >>> group_scores(sim, Budget(2, 2), "mean")
    tensor([[0.7000]])
    """
    prefix = token_similarity[..., : group.r_q, :, : group.r_c]  # (..., r_q, Nc, r_c)
    scores = prefix.amax(dim=-1).sum(dim=-2)  # (..., Nc)
    if normalization == "mean":
        scores = scores / group.r_q
    return scores


class MMRLoss(nn.Module):
    """InfoNCE summed over nested multi-vector groups (paper eq. 7).

    Parameters
    ----------
    groups : sequence of Budget
        Nested ``(r_q, r_c)`` groups, smallest first (default: the paper's five).
    temperature : float
        Softmax temperature ``tau`` (paper: 0.03).
    weights : sequence of float, optional
        Per-group weights ``w_g`` (default 1 each, as in the paper).
    score_normalization : {"mean", "sum"}
        ``"mean"`` divides each group score by ``r_q`` before the temperature.
    """

    def __init__(
        self,
        groups: Sequence[Budget | str] = PAPER_GROUPS,
        temperature: float = 0.03,
        weights: Sequence[float] | None = None,
        score_normalization: str = "mean",
    ) -> None:
        super().__init__()
        self.groups = validate_groups([Budget.parse(g) for g in groups])
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if score_normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"score_normalization must be one of {_NORMALIZATIONS}, got {score_normalization!r}"
            )
        if weights is None:
            weights = [1.0] * len(self.groups)
        if len(weights) != len(self.groups):
            raise ValueError(f"got {len(weights)} weights for {len(self.groups)} groups")
        self.weights = tuple(float(w) for w in weights)
        self.temperature = float(temperature)
        self.score_normalization = score_normalization

    def forward(
        self,
        query_embeddings: torch.Tensor,
        positive_embeddings: torch.Tensor,
        hard_negative_embeddings: torch.Tensor | None = None,
        offset: int = 0,
    ) -> MMRLossOutput:
        """Compute the MMR loss.

        Parameters
        ----------
        query_embeddings : torch.Tensor, shape (B, Rq, D)
        positive_embeddings : torch.Tensor, shape (Bc, Rc, D)
            Positives of every query in the global batch (``Bc >= B``, e.g.
            gathered across ranks); query ``u``'s positive is row ``offset + u``.
        hard_negative_embeddings : torch.Tensor, shape (B, Rc, D) or (B, n, Rc, D), optional
            Each query's own hard negative(s).
        offset : int
            Row of query 0's positive in ``positive_embeddings``.

        Returns
        -------
        MMRLossOutput
        """
        negatives = self._check(
            query_embeddings, positive_embeddings, hard_negative_embeddings, offset
        )
        batch = query_embeddings.shape[0]
        # Half-precision inputs are scored in float32; float64 stays float64.
        compute_dtype = torch.promote_types(query_embeddings.dtype, torch.float32)
        queries = query_embeddings.to(compute_dtype)
        # One token-level similarity computation; every group slices it.
        positive_similarity = torch.einsum(
            "uid,vjd->uivj", queries, positive_embeddings.to(compute_dtype)
        )  # (B, Rq, Bc, Rc)
        negative_similarity = None
        if negatives is not None:
            negative_similarity = torch.einsum(
                "uid,unjd->uinj", queries, negatives.to(compute_dtype)
            )  # (B, Rq, n, Rc)
        targets = torch.arange(batch, device=queries.device) + offset  # (B,)

        group_losses: dict[Budget, torch.Tensor] = {}
        total = queries.new_zeros(())
        for group, weight in zip(self.groups, self.weights, strict=True):
            logits = group_scores(positive_similarity, group, self.score_normalization)  # (B, Bc)
            if negative_similarity is not None:
                own_negatives = group_scores(
                    negative_similarity, group, self.score_normalization
                )  # (B, n)
                logits = torch.cat([logits, own_negatives], dim=1)  # (B, Bc + n)
            group_loss = F.cross_entropy(logits / self.temperature, targets)
            group_losses[group] = group_loss
            total = total + weight * group_loss
        return MMRLossOutput(loss=total, group_losses=group_losses)

    def _check(
        self,
        query_embeddings: torch.Tensor,
        positive_embeddings: torch.Tensor,
        hard_negative_embeddings: torch.Tensor | None,
        offset: int,
    ) -> torch.Tensor | None:
        if query_embeddings.ndim != 3 or positive_embeddings.ndim != 3:
            raise ValueError(
                "query_embeddings must be (B, Rq, D) and positive_embeddings (Bc, Rc, D); got "
                f"{tuple(query_embeddings.shape)} and {tuple(positive_embeddings.shape)}"
            )
        batch, num_query_vectors, dim = query_embeddings.shape
        num_positives, num_candidate_vectors, positive_dim = positive_embeddings.shape
        if batch == 0:
            raise ValueError("query_embeddings is an empty batch")
        if positive_dim != dim:
            raise ValueError(f"query dim {dim} != positive dim {positive_dim}")
        if not 0 <= offset <= num_positives - batch:
            raise ValueError(
                f"offset {offset} with {batch} queries needs 0 <= offset <= Bc - B = "
                f"{num_positives - batch} (Bc = {num_positives} positives)"
            )
        largest = self.groups[-1]
        largest.check_fits(num_query_vectors, num_candidate_vectors)
        if hard_negative_embeddings is None:
            return None
        negatives = hard_negative_embeddings
        if negatives.ndim == 3:
            negatives = negatives[:, None]  # (B, 1, Rc, D)
        if negatives.ndim != 4 or negatives.shape[0] != batch or negatives.shape[3] != dim:
            raise ValueError(
                f"hard_negative_embeddings must be (B, Rc, D) or (B, n, Rc, D) with B={batch}, "
                f"D={dim}; got {tuple(hard_negative_embeddings.shape)}"
            )
        if negatives.shape[2] < largest.r_c:
            raise ValueError(
                f"hard negatives have {negatives.shape[2]} vectors but group {largest} needs "
                f"r_c={largest.r_c}"
            )
        return negatives
