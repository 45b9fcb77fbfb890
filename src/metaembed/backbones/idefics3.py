"""Idefics3 and SmolVLM: SigLIP patches, pixel-shuffled, become ``<image>`` tokens of the LM.

Design choices
--------------
- The headless model is loaded with ``AutoModel`` (``Idefics3Model`` or
  ``SmolVLMModel``, which share module names); hidden states are
  ``last_hidden_state``.
- Images go through the processor's own splitting: each image becomes up to
  ``rows x cols`` tiles plus a global view, each tile ``image_seq_len``
  ``<image>`` tokens wrapped in ``<fake_token_around_image>`` and a row/col or
  ``<global-img>`` tag. Text-only items in a mixed batch get no image (the
  processor pads ``pixel_values`` with all-zero images, which the model drops).
- Position ids count from each row's first real token
  (:func:`~metaembed.backbones.base.positions_from_mask`), so left padding
  never shifts them; the meta tokens continue the numbering after the prompt.
- Meta tokens are ordinary text positions after the prompt (pad token id as
  placeholder): no per-token inputs to extend.
- LoRA covers the language model's attention + MLP projections and, with
  ``include_vision``, the SigLIP encoder's attention + MLP and the connector's
  projection.
- Prompts go through the chat template; without one, ``<image>`` is put before
  the text of image items.
- When ``AutoProcessor`` cannot load (e.g. SmolVLM's video processor without
  torchvision), an image-only ``Idefics3Processor`` is built from the tokenizer
  and the PIL image processor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role, positions_from_mask

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["Idefics3Adapter", "IDEFICS3_CHAT_TEMPLATE"]

logger = logging.getLogger(__name__)

LANGUAGE_LORA_TARGETS = (
    r".*text_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))"
)
VISION_LORA_TARGETS = (
    r".*(vision_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    r"|connector\.modality_projection\.proj)"
)
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")

IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""SmolVLM-style prompt (``User:<image> text<end_of_utterance>\\nAssistant:``), tiny models."""

TINY_EXTRA_TOKENS = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)) + (
    "<end_of_utterance>",
)
"""Idefics3 tokens the shared test tokenizer lacks (tile tags, end of turn)."""


class Idefics3Adapter(BackboneAdapter):
    """Adapter for Idefics3 / SmolVLM (``Idefics3Model``, ``SmolVLMModel``)."""

    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    supports_images = True

    # ----------------------------------------------------------------- loading
    @classmethod
    def _load_processor(cls, name_or_path: str) -> Any:
        from transformers import AutoConfig, AutoProcessor, AutoTokenizer, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        try:
            return AutoProcessor.from_pretrained(name_or_path)
        except (ImportError, ValueError, OSError, AttributeError, TypeError) as error:
            logger.info("AutoProcessor failed (%s); building an Idefics3Processor", error)
        config = AutoConfig.from_pretrained(name_or_path)
        vision = config.vision_config
        image_seq_len = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        return Idefics3Processor(
            image_processor=Idefics3ImageProcessorPil.from_pretrained(name_or_path),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=getattr(tokenizer, "chat_template", None),
        )

    @classmethod
    def load_processor(cls, name_or_path: str, **kwargs: Any) -> Any:
        """Load the processor (image-only Idefics3 processor for SmolVLM folders)."""
        return cls._load_processor(name_or_path)

    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> Idefics3Adapter:
        """Build a 2-layer, hidden-32 model; 56 px tiles of 4 image tokens, images <= 112 px."""
        from transformers import Idefics3Config, Idefics3Model, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        from metaembed.testing.tiny_config import tiny_text_config
        from metaembed.testing.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(chat_template=IDEFICS3_CHAT_TEMPLATE)
        extra_tokens = {"additional_special_tokens": list(TINY_EXTRA_TOKENS)}
        tokenizer.add_special_tokens(extra_tokens, replace_extra_special_tokens=False)
        image_processor = Idefics3ImageProcessorPil(
            size={"longest_edge": 112}, max_image_size={"longest_edge": 56}
        )
        processor = Idefics3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=4,
            chat_template=IDEFICS3_CHAT_TEMPLATE,
        )
        text_config = tiny_text_config(tokenizer, model_type="llama")
        text_config.update(overrides.pop("text_config", {}))
        vision_config = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        )
        vision_config.update(overrides.pop("vision_config", {}))
        config = Idefics3Config(
            text_config=text_config,
            vision_config=vision_config,
            scale_factor=2,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            pad_token_id=tokenizer.pad_token_id,
            **overrides,
        )
        torch.manual_seed(seed)
        model = Idefics3Model(config).eval()
        return cls(model, processor)

    # ------------------------------------------------------------------ inputs
    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Chat-template prompts, images split into tiles by the processor, left padded.

        Returns ``input_ids``/``attention_mask`` ``(batch, seq)`` and, when any item
        has an image, ``pixel_values`` ``(batch, max_tiles, 3, H, W)`` and
        ``pixel_attention_mask`` ``(batch, max_tiles, H, W)``.
        """
        check_role(role)
        prompts = [self.render_prompt_with_image_token(item, role) for item in items]
        images = [item.image for item in items if item.image is not None]
        truncate = self.max_length is not None and not images  # image tokens must stay whole
        templated = any(self._has_chat_template(o) for o in (self.processor, self.tokenizer))
        processed = self.processor(
            text=prompts,
            images=images or None,
            padding=True,
            padding_side="left",
            add_special_tokens=not templated,  # a chat template writes any BOS itself
            truncation=truncate,
            max_length=self.max_length if truncate else None,
            return_tensors="pt",
        )
        inputs = {key: processed[key] for key in MODEL_INPUT_KEYS if key in processed}
        length = inputs["input_ids"].shape[1]
        if images and self.max_length is not None and length > self.max_length:
            logger.warning(
                "prompt of %d tokens exceeds max_length=%d; prompts with images are "
                "not truncated (image tokens must stay whole)",
                length,
                self.max_length,
            )
        return inputs

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward with positions counted from each row's first token; ``(batch, seq, hidden)``."""
        position_ids = positions_from_mask(inputs["attention_mask"])  # (batch, seq)
        outputs = self.model(**inputs, position_ids=position_ids, use_cache=False, return_dict=True)
        return outputs.last_hidden_state

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Language model projections, plus the SigLIP encoder and connector when asked."""
        if include_vision:
            return f"(?:{LANGUAGE_LORA_TARGETS})|(?:{VISION_LORA_TARGETS})"
        return LANGUAGE_LORA_TARGETS
