"""Nested multi-vector indexes with budgeted search.

The contract and result type load eagerly; backends and kernels load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from metaembed.index.base import EMPTY_ID, EMPTY_SCORE, MultiVectorIndexBase, SearchResult

_LAZY_EXPORTS = {
    "MultiVectorIndex": "metaembed.index.multivector",
    "QdrantIndex": "metaembed.index.qdrant",
    "CascadeSearcher": "metaembed.index.cascade",
    "score_tiers": "metaembed.index.kernels",
    "CorruptIndexError": "metaembed.index.storage",
}

__all__ = ["EMPTY_ID", "EMPTY_SCORE", "MultiVectorIndexBase", "SearchResult", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'metaembed.index' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
