"""The MetaEmbed model: config, meta tokens, pooling, LoRA, encoding and serialization."""

from __future__ import annotations

__all__: list[str] = []
