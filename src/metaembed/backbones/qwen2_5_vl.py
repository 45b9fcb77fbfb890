"""Qwen2.5-VL (the backbone of MetaEmbed-3B and -7B): Qwen2-VL with a windowed, SwiGLU vision tower.

Everything but the classes and the vision tower's MLP names is shared with
:mod:`metaembed.backbones.qwen2_vl` (same processor, same 3-D M-RoPE through the
model's own ``get_rope_index``, meta tokens numbered as text after the prompt).
"""

from __future__ import annotations

from typing import Any

from metaembed.backbones.qwen2_vl import Qwen2VLAdapter, image_only_processor_class

__all__ = ["Qwen2_5_VLAdapter"]


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 - follows transformers' class naming
    """Adapter for Qwen2.5-VL (``Qwen2_5_VLModel``)."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    @classmethod
    def _model_class(cls) -> type:
        from transformers import Qwen2_5_VLModel

        return Qwen2_5_VLModel

    @classmethod
    def _config_class(cls) -> type:
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig

    @classmethod
    def _processor_class(cls) -> type:
        from transformers import Qwen2_5_VLProcessor

        return image_only_processor_class(Qwen2_5_VLProcessor)

    @classmethod
    def _tiny_vision_config(cls) -> dict[str, Any]:
        return dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        )
