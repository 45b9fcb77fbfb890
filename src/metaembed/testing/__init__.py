"""Offline test helpers: tiny random MetaEmbed models for every backbone family.

>>> from metaembed.testing import tiny_model
>>> model = tiny_model("llama", num_query_tokens=2, num_candidate_tokens=4,
...                    groups=["1x1", "2x4"])
>>> tuple(model.encode_queries(["a red bicycle"], show_progress=False).shape)
(1, 2, 32)
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["tiny_adapter", "tiny_model"]


def _config_field_names() -> frozenset[str]:
    from metaembed.model.config import MetaEmbedConfig

    return frozenset(field.name for field in dataclasses.fields(MetaEmbedConfig))


def tiny_adapter(family: str, seed: int = 0, **backbone_overrides: Any) -> Any:
    """Build a tiny random backbone adapter of ``family`` (offline, deterministic for a seed)."""
    from metaembed.backbones.registry import get_adapter_class

    return get_adapter_class(family).build_tiny(seed=seed, **backbone_overrides)


def tiny_model(family: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """Build a tiny random :class:`~metaembed.MetaEmbedModel` offline.

    Parameters
    ----------
    family : str
        Backbone family (``"llama"``, ``"qwen2_vl"``, ``"qwen2_5_vl"``, ...).
    seed : int
        Seeds the backbone weights, the meta tokens and the projection.
    **overrides
        ``MetaEmbedConfig`` fields (``num_query_tokens=4``, ``pooling="last"``,
        ``lora_r=0``...); any other keyword goes to the backbone's HF config
        (``hidden_size=64``...).

    Returns
    -------
    MetaEmbedModel
        In eval mode, LoRA attached unless ``lora_r=0``, ``config.base_model`` None
        (``save_pretrained`` then stores the tiny backbone inside the folder).
    """
    from metaembed.model.config import MetaEmbedConfig
    from metaembed.model.modeling import MetaEmbedModel

    names = _config_field_names()
    config_fields = {k: v for k, v in overrides.items() if k in names}
    backbone_overrides = {k: v for k, v in overrides.items() if k not in names}
    adapter = tiny_adapter(family, seed=seed, **backbone_overrides)
    config_fields.setdefault("family", adapter.family)
    config = MetaEmbedConfig(**config_fields)
    return MetaEmbedModel.from_adapter(adapter, config, seed=seed).eval()
