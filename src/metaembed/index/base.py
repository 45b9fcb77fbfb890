"""The small contract every index backend implements, and its search result.

Backends (the embedded :class:`~metaembed.index.multivector.MultiVectorIndex`,
the scale-out :class:`~metaembed.index.qdrant.QdrantIndex`) share this API:

``create``, ``open``, ``add``, ``delete``, ``search(queries, k, budget)``,
``__len__`` and ``stats``. Backends may accept extra keyword options (for
example ``upsert=`` on ``add``; ``verify``, ``backend`` or ``device`` on
``open``), but the positional signatures and the result type are shared.
Congruence tests run the same data through every
backend and compare with the reference :func:`metaembed.maxsim`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaembed.budget import Budget

__all__ = ["EMPTY_ID", "EMPTY_SCORE", "SearchResult", "MultiVectorIndexBase"]

EMPTY_ID = -1
"""Id reported in a result slot when fewer than ``k`` candidates exist."""

EMPTY_SCORE = float("-inf")
"""Score reported in a result slot when fewer than ``k`` candidates exist."""


@dataclass(frozen=True)
class SearchResult:
    """Top-k hits for a batch of queries.

    Attributes
    ----------
    ids : numpy.ndarray of int64, shape (num_queries, k)
        Candidate ids, best first; :data:`EMPTY_ID` (-1) marks an empty slot.
    scores : numpy.ndarray of float32, shape (num_queries, k)
        MaxSim scores under ``budget``; :data:`EMPTY_SCORE` (-inf) marks an empty slot.
    budget : Budget
        The budget the scores were computed with.
    """

    ids: np.ndarray
    scores: np.ndarray
    budget: Budget

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def hits(self, query_index: int) -> list[tuple[int, float]]:
        """Non-empty ``(id, score)`` pairs of one query, best first."""
        ids, scores = self.ids[query_index], self.scores[query_index]
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i != EMPTY_ID]


class MultiVectorIndexBase(abc.ABC):
    """Abstract nested multi-vector index (see the module docstring for the contract)."""

    @classmethod
    @abc.abstractmethod
    def create(
        cls, path: Any, dim: int, num_vectors: int = 64, **options: Any
    ) -> MultiVectorIndexBase:
        """Create a new, empty index."""

    @classmethod
    @abc.abstractmethod
    def open(cls, path: Any, **options: Any) -> MultiVectorIndexBase:
        """Open an existing index."""

    @abc.abstractmethod
    def add(
        self,
        ids: Sequence[int] | np.ndarray,
        candidate_embeddings: Any,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Add candidates: ``candidate_embeddings`` has shape (N, R, D) with R >= num_vectors."""

    @abc.abstractmethod
    def delete(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete candidates by id; return how many were removed."""

    @abc.abstractmethod
    def search(
        self, query_embeddings: Any, k: int = 10, budget: Budget | str | None = None
    ) -> SearchResult:
        """Top-``k`` candidates for each query of shape (Nq, Rq, D) under ``budget``."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Return the number of live candidates."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Sizes: candidates, dims, dtype and bytes per budget."""

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release what the backend holds (locks, clients); a no-op by default."""

    def __enter__(self) -> MultiVectorIndexBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
