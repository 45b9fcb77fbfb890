"""Training MetaEmbed models: data, GradCache, data parallelism, checkpoints and the loop.

The one entry point is :func:`train`::

    from metaembed.training import load_config, train

    result = train(load_config("configs/tiny-llama.yaml", ["--max_steps", "20"]))
    result.best_checkpoint, result.final_checkpoint, result.history

Sub-modules: ``arguments`` (the config), ``data`` (rows -> examples),
``collator`` (examples -> item batches), ``gradcache`` (the loss step),
``distributed`` (gather, gradient averaging), ``checkpoint``, ``setup``
(model, optimizer, FSDP2) and ``trainer`` (the loop).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["TrainingConfig", "load_config", "train", "TrainResult", "Trainer", "TrainingExample"]

_LAZY = {
    "TrainingConfig": "metaembed.training.arguments",
    "load_config": "metaembed.training.arguments",
    "train": "metaembed.training.trainer",
    "TrainResult": "metaembed.training.result",
    "Trainer": "metaembed.training.trainer",
    "TrainingExample": "metaembed.training.data",
}

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.training.arguments import TrainingConfig, load_config
    from metaembed.training.data import TrainingExample
    from metaembed.training.trainer import Trainer, TrainResult, train


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metaembed.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
