"""Cascade search: a cheap first stage, then budgeted MaxSim rerank of its top ``K'``.

Two first stages over a :class:`~metaembed.index.multivector.MultiVectorIndex`:

``"exhaustive"``
    Exhaustive search at a small budget (default ``(1, 1)``) on the contiguous
    first tiers: exact for that budget, cost proportional to its prefix bytes.
``"hnsw"``
    An HNSW graph (hnswlib, optional, imported lazily) over each candidate's
    first vector, queried with the sum of the first ``r_q`` query vectors
    (``sum_i <q_i, c_1> = <sum_i q_i, c_1>``, the ``(r_q, 1)`` score). Fast, but
    its recall is capped by how well the first vector predicts the full score.

The rerank gathers the ``K'`` candidates' first ``r_c`` stored vectors and
scores them with :func:`~metaembed.index.kernels.score_tiers`, so its scores
equal exhaustive search's scores for the same candidates.

>>> import tempfile, torch
>>> from metaembed.index.multivector import MultiVectorIndex
>>> folder = tempfile.mkdtemp()
>>> index = MultiVectorIndex.create(folder + "/idx", dim=8, num_vectors=4, dtype="float32")
>>> index.add(range(50), torch.nn.functional.normalize(torch.randn(50, 4, 8), dim=-1))
>>> queries = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
>>> cascade = CascadeSearcher(index, first_stage="exhaustive", rerank_depth=50)
>>> reranked = cascade.search(queries, k=3, budget="4x4").ids
>>> bool((reranked == index.search(queries, k=3, budget="4x4").ids).all())
True
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from metaembed.budget import Budget
from metaembed.index.base import EMPTY_ID, EMPTY_SCORE, SearchResult
from metaembed.index.kernels import score_tiers
from metaembed.index.multivector import MultiVectorIndex
from metaembed.index.validation import check_k, check_query

__all__ = ["CascadeSearcher", "FIRST_STAGES"]

logger = logging.getLogger(__name__)

FIRST_STAGES = ("exhaustive", "hnsw")
_DEFAULT_FIRST_BUDGET = Budget(1, 1)


class CascadeSearcher:
    """Two-stage search over a :class:`MultiVectorIndex` (see the module docstring).

    Parameters
    ----------
    index : MultiVectorIndex
        The index whose tiers are reranked.
    first_stage : str
        ``"exhaustive"`` or ``"hnsw"``.
    rerank_depth : int
        ``K'``: candidates the first stage passes to the rerank.
    first_budget : Budget or str
        Budget of the first stage; ``"hnsw"`` needs ``r_c == 1``.
    hnsw_m, hnsw_ef_construction, hnsw_ef_search : int
        HNSW graph degree, build and search beam widths (``ef_search`` is raised to ``K'``).
    """

    def __init__(
        self,
        index: MultiVectorIndex,
        first_stage: str = "exhaustive",
        rerank_depth: int = 100,
        first_budget: Budget | str = _DEFAULT_FIRST_BUDGET,
        *,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 64,
    ) -> None:
        if first_stage not in FIRST_STAGES:
            raise ValueError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}")
        self.index = index
        self.first_stage = first_stage
        self.rerank_depth = check_k(rerank_depth)
        self.first_budget = Budget.parse(first_budget)
        if first_stage == "hnsw" and self.first_budget.r_c != 1:
            raise ValueError(
                "the hnsw first stage indexes the first vector only: "
                f"use r_c=1, got {self.first_budget}"
            )
        self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef_search = (
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef_search,
        )
        self._graph: Any = None
        self._graph_generation = -1

    def build(self) -> None:
        """Build (or rebuild) the HNSW graph over the live candidates' first vectors."""
        try:
            import hnswlib
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the hnsw first stage needs hnswlib: pip install 'metaembed[index]'"
            ) from error
        self.index.refresh()
        snapshot = self.index._snapshot
        ids = snapshot.sorted_ids  # (N,) live ids
        graph = hnswlib.Index(space="ip", dim=self.index.dim)
        graph.init_index(
            max_elements=max(1, ids.size), ef_construction=self.hnsw_ef_construction, M=self.hnsw_m
        )
        if ids.size:
            first_vectors = (
                self.index.reconstruct(ids)[:, 0] if ids.size < 65536 else self._first_vectors(ids)
            )
            graph.add_items(
                first_vectors, ids.astype(np.uint64), num_threads=torch.get_num_threads()
            )
        self._graph, self._graph_generation = graph, snapshot.manifest.generation

    def _first_vectors(self, ids: np.ndarray) -> np.ndarray:
        """First stored vector of each id, decoded, in blocks (bounded memory)."""
        blocks = [
            self.index.reconstruct(ids[s : s + 65536])[:, 0] for s in range(0, ids.size, 65536)
        ]
        return np.concatenate(blocks)  # (N, D)

    def _first_stage(self, queries: torch.Tensor) -> np.ndarray:
        """Candidate ids (Nq, K'), ``EMPTY_ID`` where fewer exist."""
        depth = self.rerank_depth
        if self.first_stage == "exhaustive":
            return self.index.search(queries, k=depth, budget=self.first_budget).ids
        if (
            self._graph is None
            or self._graph_generation != self.index._snapshot.manifest.generation
        ):
            self.build()
        count = self._graph.get_current_count()
        result = np.full((queries.shape[0], depth), EMPTY_ID, dtype=np.int64)
        if count == 0:
            return result
        self._graph.set_ef(max(self.hnsw_ef_search, depth))
        summed = queries[:, : self.first_budget.r_q].sum(dim=1).numpy()  # (Nq, D)
        labels, _ = self._graph.knn_query(summed, k=min(depth, count))
        result[:, : labels.shape[1]] = labels.astype(np.int64)
        return result

    def search(
        self, query_embeddings: Any, k: int = 10, budget: Budget | str | None = None
    ) -> SearchResult:
        """Top-``k`` after reranking the first stage's ``K'`` candidates under ``budget``."""
        queries, budget, k = check_query(
            query_embeddings, k, budget, self.index.dim, self.index.num_vectors
        )
        self.index.refresh()
        candidate_ids = self._first_stage(queries)  # (Nq, K')
        scores = np.full((queries.shape[0], k), EMPTY_SCORE, dtype=np.float32)
        ids = np.full((queries.shape[0], k), EMPTY_ID, dtype=np.int64)
        for query_index in range(queries.shape[0]):
            row_ids = candidate_ids[query_index]
            row_ids = row_ids[row_ids != EMPTY_ID]  # (n,)
            if row_ids.size == 0:
                continue
            tiers, scales = self.index.gather_tiers(row_ids, budget.r_c)
            rerank = score_tiers(
                queries[query_index : query_index + 1], tiers, budget.r_c, self.index.dtype, scales
            )[0]  # (n,)
            top_scores, order = torch.topk(rerank, min(k, row_ids.size))
            scores[query_index, : order.numel()] = top_scores.numpy()
            ids[query_index, : order.numel()] = row_ids[order.numpy()]
        return SearchResult(ids=ids, scores=scores, budget=budget)
