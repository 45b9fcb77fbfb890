"""Backbone families: thin adapters over Hugging Face models (see :mod:`.base`)."""

from __future__ import annotations

from metaembed.backbones.registry import available_families, get_adapter_class

__all__ = ["available_families", "get_adapter_class"]
