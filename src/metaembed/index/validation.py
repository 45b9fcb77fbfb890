"""Input checks at the index's door: ids, candidate embeddings, metadata, k.

Each check raises a ``ValueError`` that names the offending value and the
limit, so a caller can fix the input without reading the index code.

>>> import numpy as np
>>> check_ids([3, 1, 2]).tolist()
[3, 1, 2]
>>> check_ids([1, 1])
Traceback (most recent call last):
...
ValueError: ids contain duplicates (1); every id may appear once per call
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metaembed.budget import Budget
from metaembed.maxsim import as_float_tensor, check_embeddings

__all__ = ["check_ids", "check_candidates", "check_metadata", "check_k", "check_query"]


def check_ids(ids: Sequence[int] | np.ndarray, unique: bool = True) -> np.ndarray:
    """Ids as a 1-d int64 array of non-negative values (``-1`` marks empty result slots)."""
    id_array = np.asarray(ids)
    if id_array.ndim != 1:
        raise ValueError(f"ids must be a 1-d sequence of integers, got shape {id_array.shape}")
    if id_array.size and not np.issubdtype(id_array.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {id_array.dtype}")
    id_array = id_array.astype(np.int64)
    if id_array.size and id_array.min() < 0:
        raise ValueError(
            f"ids must be >= 0 (-1 marks empty result slots), got {int(id_array.min())}"
        )
    if unique:
        values, counts = np.unique(id_array, return_counts=True)
        if (counts > 1).any():
            repeated = ", ".join(str(v) for v in values[counts > 1][:5])
            raise ValueError(
                f"ids contain duplicates ({repeated}); every id may appear once per call"
            )
    return id_array


def check_candidates(
    candidate_embeddings: Any, num_ids: int, dim: int, num_vectors: int
) -> np.ndarray:
    """Validate candidates and return their first ``num_vectors`` vectors as float32 numpy.

    Rejects a wrong shape or dim, fewer than ``num_vectors`` vectors, NaN/inf
    values and all-zero vectors (a zero meta embedding means a broken encoder).
    """
    embeddings = as_float_tensor(candidate_embeddings, "candidate_embeddings")
    check_embeddings(embeddings, "candidate_embeddings", dim=dim, check_finite=False)
    if embeddings.shape[0] != num_ids:
        raise ValueError(
            f"got {num_ids} ids but {embeddings.shape[0]} candidate embeddings; "
            "give one id per candidate"
        )
    if embeddings.shape[1] < num_vectors:
        raise ValueError(
            f"candidate_embeddings have {embeddings.shape[1]} vectors per candidate "
            "but the index stores "
            f"{num_vectors}; encode with r_c >= {num_vectors} or create the index with num_vectors="
            f"{embeddings.shape[1]}"
        )
    values = embeddings[:, :num_vectors].detach().to(device="cpu", dtype=torch.float32)  # (N, R, D)
    finite = torch.isfinite(values).all(dim=2)  # (N, R)
    if not bool(finite.all()):
        item, vector = (int(v) for v in torch.nonzero(~finite)[0])
        raise ValueError(
            f"candidate {item} vector {vector} contains NaN or inf; re-encode or drop that item"
        )
    nonzero = (values != 0).any(dim=2)  # (N, R)
    if not bool(nonzero.all()):
        item, vector = (int(v) for v in torch.nonzero(~nonzero)[0])
        raise ValueError(
            f"candidate {item} vector {vector} is all zeros; a meta embedding must not be zero"
        )
    return np.ascontiguousarray(values.numpy())


def check_metadata(
    metadata: Sequence[dict[str, Any] | None] | None, num_ids: int
) -> list[Any] | None:
    """Metadata as a list of JSON-serialisable dicts (or ``None`` entries), one per id."""
    if metadata is None:
        return None
    entries = list(metadata)
    if len(entries) != num_ids:
        raise ValueError(
            f"got {len(entries)} metadata entries for {num_ids} ids; give one per id (or None)"
        )
    for position, entry in enumerate(entries):
        if entry is not None and not isinstance(entry, dict):
            raise ValueError(
                f"metadata[{position}] must be a dict or None, got {type(entry).__name__}"
            )
    try:
        json.dumps(entries)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from error
    return entries


def check_k(k: int) -> int:
    """``k`` as a positive int.

    >>> check_k(10)
    10
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_query(
    query_embeddings: Any, k: int, budget: Budget | str | None, dim: int, num_vectors: int
) -> tuple[torch.Tensor, Budget, int]:
    """Validate a search; return the queries cut to ``r_q`` (float32, CPU), the budget and ``k``.

    The budget defaults to ``(Rq, num_vectors)``; one above the query's ``Rq`` or
    the stored ``num_vectors`` raises ``ValueError`` naming the limit.
    """
    queries = as_float_tensor(query_embeddings, "query_embeddings")
    check_embeddings(queries, "query_embeddings", dim=dim)
    k = check_k(k)
    num_query_vectors = int(queries.shape[1])
    budget = Budget(num_query_vectors, num_vectors) if budget is None else Budget.parse(budget)
    budget.check_fits(num_query_vectors, num_vectors)
    queries = (
        queries[:, : budget.r_q].detach().to(device="cpu", dtype=torch.float32)
    )  # (Nq, r_q, D)
    return queries.contiguous(), budget, k
