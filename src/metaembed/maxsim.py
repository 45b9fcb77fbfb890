"""The reference late-interaction (MaxSim) scorer.

``maxsim`` is the single reference implementation of the paper's eq. 3-4::

    s(q, c) = sum_{i <= r_q} max_{j <= r_c} <E_q[i], E_c[j]>

Every faster path in the project (the index kernels, the cascade, the Qdrant
backend, the loss) is tested against it. Design choices:

* inputs may be numpy arrays or torch tensors in float32, float16 or bfloat16;
  the arithmetic always runs in float32 (half-precision matmul on CPUs without
  AVX-512 runs at a fraction of a GFLOP/s), converting one chunk at a time;
* candidates are processed in chunks so memory stays bounded for millions of
  candidates;
* optional boolean masks support ragged inputs (padding slots never win a max
  and never add to a sum).

>>> import torch
>>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # (1 query, 2 vectors, dim 2)
>>> c = torch.tensor([[[1.0, 0.0], [0.6, 0.8]],             # (2 candidates, 2 vectors, dim 2)
...                   [[0.0, 1.0], [0.0, -1.0]]])
>>> maxsim(q, c)
tensor([[1.8000, 1.0000]])
>>> maxsim(q, c, budget=Budget(1, 1))
tensor([[1., 0.]])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from metaembed.budget import Budget

__all__ = ["maxsim", "as_float_tensor", "check_embeddings"]

_SIMILARITY_CHUNK_ELEMENTS = 16 * 1024 * 1024  # float32 elements of one (query, candidate) block


def as_float_tensor(values: Any, name: str) -> torch.Tensor:
    """Return ``values`` as a torch tensor without copying when possible.

    Accepts torch tensors and numpy arrays of float32, float16 or bfloat16 (torch)
    values; anything else raises a ``ValueError`` that names the argument.
    """
    if isinstance(values, np.ndarray):
        if values.dtype not in (np.float32, np.float16, np.float64):
            raise ValueError(f"{name} must hold floats, got numpy dtype {values.dtype}")
        values = torch.from_numpy(np.ascontiguousarray(values))
    elif not isinstance(values, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}"
        )
    if not values.is_floating_point():
        raise ValueError(f"{name} must hold floats, got {values.dtype}")
    return values


def check_embeddings(
    embeddings: torch.Tensor, name: str, dim: int | None = None, check_finite: bool = True
) -> None:
    """Validate a ``(N, R, D)`` block of multi-vector embeddings.

    Raises a ``ValueError`` naming the problem: wrong rank, empty batch, zero
    vectors per item, a dimension mismatch, or NaN/inf values.
    """
    if embeddings.ndim != 3:
        raise ValueError(
            f"{name} must have shape (num_items, num_vectors, dim), got {tuple(embeddings.shape)}; "
            "add a batch axis with [None] for a single item"
        )
    num_items, num_vectors, emb_dim = embeddings.shape
    if num_items == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(embeddings.shape)})")
    if num_vectors == 0 or emb_dim == 0:
        raise ValueError(f"{name} has no vectors or zero dim (shape {tuple(embeddings.shape)})")
    if dim is not None and emb_dim != dim:
        raise ValueError(f"{name} has dim {emb_dim} but {dim} was expected; dims must match")
    if check_finite and not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{name} contains NaN or inf values; re-encode or drop those items")


def _check_mask(mask: Any, shape: tuple[int, int], name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    mask_tensor = torch.as_tensor(mask)
    if mask_tensor.dtype != torch.bool:
        mask_tensor = mask_tensor != 0
    if tuple(mask_tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask_tensor.shape)}")
    return mask_tensor


def _raise_non_finite(block: torch.Tensor, start: int) -> None:
    bad_rows = (~torch.isfinite(block)).flatten(1).any(dim=1).nonzero().flatten()
    if len(bad_rows) == 0:
        raise ValueError("candidate_embeddings values are too large: their sum overflows float32")
    raise ValueError(
        f"candidate_embeddings contains NaN or inf values (candidate {start + int(bad_rows[0])}); "
        "re-encode or drop those items"
    )


def maxsim(
    query_embeddings: Any,
    candidate_embeddings: Any,
    budget: Budget | str | None = None,
    *,
    query_mask: Any = None,
    candidate_mask: Any = None,
    chunk_elements: int = _SIMILARITY_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Late-interaction scores of every query against every candidate.

    Parameters
    ----------
    query_embeddings : torch.Tensor or numpy.ndarray, shape (Nq, Rq, D)
        Query multi-vector embeddings (float32, float16 or bfloat16).
    candidate_embeddings : torch.Tensor or numpy.ndarray, shape (Nc, Rc, D)
        Candidate multi-vector embeddings.
    budget : Budget or str, optional
        Use only the first ``r_q`` query and ``r_c`` candidate vectors. ``None``
        uses all of them. A budget larger than the vectors given raises ``ValueError``.
    query_mask : array-like of bool, shape (Nq, Rq), optional
        ``True`` for real query vectors; masked vectors add nothing to the sum.
    candidate_mask : array-like of bool, shape (Nc, Rc), optional
        ``True`` for real candidate vectors; masked vectors never win the max.
        A candidate with no real vector inside the budget scores ``-inf``.
    chunk_elements : int
        Upper bound on the float32 elements of one similarity block (memory bound).

    Returns
    -------
    torch.Tensor, shape (Nq, Nc), float32
        ``scores[i, j] = sum_{a < r_q} max_{b < r_c} <q_i[a], c_j[b]>``, on the
        candidates' device.
    """
    query_embeddings = as_float_tensor(query_embeddings, "query_embeddings")
    candidate_embeddings = as_float_tensor(candidate_embeddings, "candidate_embeddings")
    check_embeddings(query_embeddings, "query_embeddings")
    # Candidates are checked for NaN/inf chunk by chunk below, only inside the budget.
    check_embeddings(
        candidate_embeddings,
        "candidate_embeddings",
        dim=query_embeddings.shape[2],
        check_finite=False,
    )
    num_queries, num_query_vectors, dim = query_embeddings.shape
    num_candidates, num_candidate_vectors, _ = candidate_embeddings.shape
    query_mask = _check_mask(query_mask, (num_queries, num_query_vectors), "query_mask")
    candidate_mask = _check_mask(
        candidate_mask, (num_candidates, num_candidate_vectors), "candidate_mask"
    )

    if budget is None:
        budget = Budget(num_query_vectors, num_candidate_vectors)
    budget = Budget.parse(budget)
    budget.check_fits(num_query_vectors, num_candidate_vectors)
    r_q, r_c = budget.r_q, budget.r_c

    device = candidate_embeddings.device
    queries = query_embeddings[:, :r_q].to(device=device, dtype=torch.float32)  # (Nq, r_q, D)
    flat_queries = queries.reshape(num_queries * r_q, dim)  # (Nq*r_q, D)
    query_weights = None
    if query_mask is not None:
        query_weights = query_mask[:, :r_q].to(device=device, dtype=torch.float32)  # (Nq, r_q)

    rows = max(1, num_queries * r_q * r_c)
    chunk = max(1, min(num_candidates, chunk_elements // rows))
    scores = torch.empty(num_queries, num_candidates, dtype=torch.float32, device=device)
    for start in range(0, num_candidates, chunk):
        stop = min(start + chunk, num_candidates)
        block = candidate_embeddings[start:stop, :r_c].to(torch.float32)  # (n, r_c, D)
        if not bool(torch.isfinite(block.sum())):  # one cheap pass; any NaN/inf poisons the sum
            _raise_non_finite(block, start)
        similarity = flat_queries @ block.reshape(-1, dim).T  # (Nq*r_q, n*r_c)
        similarity = similarity.view(num_queries, r_q, stop - start, r_c)  # (Nq, r_q, n, r_c)
        if candidate_mask is not None:
            valid = candidate_mask[start:stop, :r_c].to(device)  # (n, r_c)
            similarity = similarity.masked_fill(~valid[None, None], -math.inf)
        best = similarity.amax(dim=3)  # (Nq, r_q, n)
        if query_weights is not None:
            best = torch.where(query_weights[:, :, None] > 0, best, torch.zeros_like(best))
        scores[:, start:stop] = best.sum(dim=1)  # (Nq, n)
    return scores
