"""Qwen2-VL: the paper's main backbone family (MetaEmbed-3B/7B use Qwen2.5-VL, see qwen2_5_vl.py).

Design choices
--------------
- The headless ``Qwen2VLModel`` is loaded; hidden states are ``last_hidden_state``.
- Position ids are computed explicitly with the model's own ``get_rope_index``
  on the inputs *with* the meta placeholders (``mm_token_type_ids`` = 0, text),
  so the meta tokens get the next sequential positions on all three M-RoPE
  axes after the prompt, for image and text-only batches alike. (Left to
  itself, the model would give text-only left-padded batches plain ``arange``
  positions that ignore the padding.)
- The processor needs no torchvision: images go through the PIL image
  processor, and the processor is built with ``video_processor=None`` when the
  checkpoint's video processor cannot load (see :func:`image_only_processor_class`).
- LoRA covers the language model's attention + MLP projections and, with
  ``include_vision``, the vision blocks' ``qkv``/``proj``/MLP and the merger MLP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["Qwen2VLAdapter", "image_only_processor_class"]

logger = logging.getLogger(__name__)

LANGUAGE_LORA_TARGETS = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))"
)
VISION_LORA_TARGETS = (
    r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|gate_proj|up_proj|down_proj))"
    r"|merger\.mlp\.(0|2))"
)
TINY_IMAGE_PIXELS = (56 * 56, 112 * 112)
"""min/max pixels of the tiny models' image processor: 4 to 16 patches of 14 px."""


def image_only_processor_class(base_class: type) -> type:
    """Subclass a Qwen-VL processor class so that it accepts ``video_processor=None``."""

    class ImageOnlyProcessor(base_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = f"ImageOnly{base_class.__name__}"
    return ImageOnlyProcessor


def _qwen2_vl_processor_class() -> type:
    from transformers import Qwen2VLProcessor

    return image_only_processor_class(Qwen2VLProcessor)


class Qwen2VLAdapter(BackboneAdapter):
    """Adapter for Qwen2-VL (``Qwen2VLModel``)."""

    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    supports_images = True

    # ------------------------------------------------------------ family hooks
    @classmethod
    def _model_class(cls) -> type:
        from transformers import Qwen2VLModel

        return Qwen2VLModel

    @classmethod
    def _config_class(cls) -> type:
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig

    @classmethod
    def _processor_class(cls) -> type:
        return _qwen2_vl_processor_class()

    @classmethod
    def _tiny_vision_config(cls) -> dict[str, Any]:
        return dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )

    # ----------------------------------------------------------------- loading
    @classmethod
    def _load_processor(cls, name_or_path: str) -> Any:
        from transformers import AutoProcessor, AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        try:
            return AutoProcessor.from_pretrained(name_or_path)
        except (ImportError, ValueError, OSError, AttributeError, TypeError) as error:
            logger.info("AutoProcessor failed (%s); building an image-only processor", error)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path)
        return cls._processor_class()(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=getattr(tokenizer, "chat_template", None),
        )

    def save_processor(self, directory: str) -> None:
        """Save tokenizer (with chat template) and image processor; no video processor."""
        self.tokenizer.chat_template = self.tokenizer.chat_template or self.processor.chat_template
        self.tokenizer.save_pretrained(directory)
        self.processor.image_processor.save_pretrained(directory)

    @classmethod
    def load_processor(cls, name_or_path: str, **kwargs: Any) -> Any:
        """Load the processor, image-only (no video processor) if need be."""
        return cls._load_processor(name_or_path)

    @classmethod
    def load_model(cls, name_or_path: str, *, dtype: torch.dtype, **kwargs: Any) -> Any:
        """Load the headless model class of this Qwen-VL generation."""
        return cls._model_class().from_pretrained(name_or_path, dtype=dtype, **kwargs)

    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> Qwen2VLAdapter:
        """Build a 2-layer, hidden-32 model with a 2-block vision tower; images of 56-112 px."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        from metaembed.testing.tiny_config import tiny_text_config
        from metaembed.testing.tokenizer import build_tokenizer

        tokenizer = build_tokenizer()
        token = tokenizer.convert_tokens_to_ids
        text_config = tiny_text_config(
            tokenizer, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}
        )
        text_config.update(overrides.pop("text_config", {}))
        vision_config = cls._tiny_vision_config()
        vision_config.update(overrides.pop("vision_config", {}))
        config = cls._config_class()(
            text_config=text_config,
            vision_config=vision_config,
            image_token_id=token("<|image_pad|>"),
            video_token_id=token("<|video_pad|>"),
            vision_start_token_id=token("<|vision_start|>"),
            vision_end_token_id=token("<|vision_end|>"),
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **overrides,
        )
        torch.manual_seed(seed)
        model = cls._model_class()(config).eval()
        min_pixels, max_pixels = TINY_IMAGE_PIXELS
        image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        processor = cls._processor_class()(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=tokenizer.chat_template,
        )
        return cls(model, processor)

    # ------------------------------------------------------------------ inputs
    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Chat-template prompts with one image placeholder per image item, left padded."""
        check_role(role)
        prompts = [self.render_prompt(item, role) for item in items]
        images = [item.image for item in items if item.image is not None]
        processed = self.processor(
            text=prompts,
            images=images or None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        inputs = {key: value for key, value in processed.items() if isinstance(value, torch.Tensor)}
        if self.max_length is not None and inputs["input_ids"].shape[1] > self.max_length:
            logger.warning(
                "prompt of %d tokens exceeds max_length=%d; Qwen2-VL prompts "
                "are not truncated (image tokens must stay whole)",
                inputs["input_ids"].shape[1],
                self.max_length,
            )
        return inputs

    def _hf_model(self) -> Any:
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def rope_positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """3-D M-RoPE position ids ``(3, batch, seq)`` from the model's own ``get_rope_index``."""
        input_ids = inputs["input_ids"]  # (batch, seq)
        token_types = inputs.get("mm_token_type_ids")
        if token_types is None:
            token_types = torch.zeros_like(input_ids)  # (batch, seq) all text
        position_ids, _ = self._hf_model().get_rope_index(
            input_ids=input_ids,
            mm_token_type_ids=token_types,
            image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=inputs.get("attention_mask"),
        )
        return position_ids  # (3, batch, seq)

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward with explicit M-RoPE positions; returns ``(batch, seq, hidden)``."""
        position_ids = self.rope_positions(inputs)  # (3, batch, seq)
        outputs = self.model(**inputs, position_ids=position_ids, use_cache=False, return_dict=True)
        return outputs.last_hidden_state

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Language model projections, plus the vision blocks and merger when asked."""
        if include_vision:
            return f"(?:{LANGUAGE_LORA_TARGETS})|(?:{VISION_LORA_TARGETS})"
        return LANGUAGE_LORA_TARGETS
