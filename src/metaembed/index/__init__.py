"""Nested multi-vector indexes with budgeted search."""

from __future__ import annotations

from metaembed.index.base import EMPTY_ID, EMPTY_SCORE, MultiVectorIndexBase, SearchResult

__all__ = ["EMPTY_ID", "EMPTY_SCORE", "MultiVectorIndexBase", "SearchResult"]
