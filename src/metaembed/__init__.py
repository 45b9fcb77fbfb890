"""MetaEmbed: nested multi-vector multimodal retrieval with test-time budgets.

The package follows the data flow of the method::

    item -> processing -> model (backbone + meta tokens) -> nested multi-vectors
         -> index (tiered by budget) -> search with a budget -> metrics

Heavy sub-modules (the model, the index, training) are imported lazily on first
use, so ``import metaembed`` stays cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metaembed.budget import PAPER_GROUPS, Budget, parse_budgets
from metaembed.maxsim import maxsim

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "Item": "metaembed.items",
    "MetaEmbedConfig": "metaembed.model.config",
    "MetaEmbedModel": "metaembed.model.modeling",
    "MultiVectorIndex": "metaembed.index.multivector",
    "SearchResult": "metaembed.index.base",
    "QdrantIndex": "metaembed.index.qdrant",
    "train": "metaembed.training.trainer",
    "TrainingConfig": "metaembed.training.arguments",
    "TrainResult": "metaembed.training.result",
}

__all__ = ["Budget", "PAPER_GROUPS", "parse_budgets", "maxsim", "__version__", *_LAZY_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.index.base import SearchResult  # noqa: F401
    from metaembed.index.multivector import MultiVectorIndex  # noqa: F401
    from metaembed.index.qdrant import QdrantIndex  # noqa: F401
    from metaembed.items import Item  # noqa: F401
    from metaembed.model.config import MetaEmbedConfig  # noqa: F401
    from metaembed.model.modeling import MetaEmbedModel  # noqa: F401
    from metaembed.training.arguments import TrainingConfig  # noqa: F401
    from metaembed.training.result import TrainResult  # noqa: F401
    from metaembed.training.trainer import train  # noqa: F401


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'metaembed' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
