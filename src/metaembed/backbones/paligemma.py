"""PaliGemma (1 and 2): SigLIP image tokens, then a Gemma prefix-LM.

Design choices
--------------
- Prompt format (PaliGemma has no chat template): ``<image>`` x
  ``image_seq_length`` (image items only), ``<bos>``, the instruction and the
  text joined by a newline, then a newline -- the layout ``PaliGemmaProcessor``
  writes. Inputs are built here from the tokenizer and the image processor
  because the processor refuses text-only items and misplaces ``<bos>`` in
  mixed batches.
- **Meta tokens sit in the suffix, not the prefix.** PaliGemma attends fully
  within the prefix (``token_type_ids == 0``: image + prompt) and causally in
  the suffix (``token_type_ids == 1``: what it generates). The meta tokens get
  ``token_type_ids = 1``: each one sees the whole prefix and the meta tokens
  before it, exactly as in the causal families, while the prefix never sees the
  meta tokens. Putting them in the prefix would let every image and prompt
  token attend to the meta tokens, so the encoding of the input itself would
  change with the role (query or candidate tokens) and the layout, and the
  ``r``-th vector would depend on meta tokens after it, unlike every other
  family. (Tested: prompt hidden states do not depend on the meta tokens;
  the prefix is bidirectional.)
- Gemma scales token embeddings by ``sqrt(hidden)`` inside the embedding
  module; the meta rows are scaled the same way before they are written, so
  they live on the scale of vocabulary rows (their initialisation assumes so).
- Position ids count from 1 at each row's first real token (PaliGemma's own
  numbering is 1-based), so left padding never shifts them.
- LoRA covers Gemma's attention + MLP projections and, with ``include_vision``,
  the SigLIP encoder's attention + MLP and the multimodal projector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role, positions_from_mask

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["PaliGemmaAdapter"]

logger = logging.getLogger(__name__)

LANGUAGE_LORA_TARGETS = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))"
)
VISION_LORA_TARGETS = (
    r".*(vision_tower\.(vision_model\.)?encoder\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    r"|multi_modal_projector\.linear)"
)
SUFFIX_TOKEN_TYPE = 1
"""``token_type_ids`` value of the meta positions: the causal suffix."""


class PaliGemmaAdapter(BackboneAdapter):
    """Adapter for PaliGemma and PaliGemma 2 (``PaliGemmaModel``)."""

    family = "paligemma"
    model_types = ("paligemma",)
    supports_images = True
    model_class = "PaliGemmaModel"

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> PaliGemmaAdapter:
        """Build a 2-layer, hidden-32 Gemma with a 56 px SigLIP tower (16 image tokens)."""
        from transformers import PaliGemmaConfig, PaliGemmaModel, PaliGemmaProcessor
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        from metaembed.testing.tiny_config import tiny_text_config
        from metaembed.testing.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(chat_template=None)
        tokenizer.add_special_tokens({"bos_token": "<bos>"})
        image_processor = SiglipImageProcessorPil(size={"height": 56, "width": 56})
        image_processor.image_seq_length = 16  # (56 / 14) ** 2 patches
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
        text_config = tiny_text_config(  # len(tokenizer) counts the processor's <loc>/<seg>
            tokenizer, model_type="gemma", head_dim=8, bos_token_id=tokenizer.bos_token_id
        )
        text_config.update(overrides.pop("text_config", {}))
        vision_config = dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
            vision_use_head=False,
        )
        vision_config.update(overrides.pop("vision_config", {}))
        config = PaliGemmaConfig(
            text_config=text_config,
            vision_config=vision_config,
            image_token_index=processor.image_token_id,
            vocab_size=len(tokenizer),
            projection_dim=text_config["hidden_size"],
            hidden_size=text_config["hidden_size"],
            **overrides,
        )
        torch.manual_seed(seed)
        model = PaliGemmaModel(config).eval()
        return cls(model, processor)

    # ------------------------------------------------------------------ inputs
    def _prompt_ids(self, item: Item) -> list[int]:
        """``<image>`` x N (image items), then ``<bos>`` + instruction/text + newline, as ids."""
        tokenizer = self.tokenizer
        text = "\n".join(part for part in (item.instruction, item.text) if part)
        truncate = self.max_length is not None
        text_ids = tokenizer(
            f"{tokenizer.bos_token}{text}\n",
            add_special_tokens=False,
            truncation=truncate,
            max_length=self.max_length,
        )["input_ids"]
        if item.image is None:
            return list(text_ids)
        image_ids = [self.processor.image_token_id] * self.processor.image_seq_length
        return image_ids + list(text_ids)

    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Image tokens + ``<bos>`` + prompt, left padded, all in the prefix.

        Returns ``input_ids``, ``attention_mask`` and ``token_type_ids`` (zeros:
        prefix) of shape ``(batch, seq)``, plus ``pixel_values``
        ``(num_images, 3, H, W)`` in item order when any item has an image.
        """
        check_role(role)
        rows = [{"input_ids": self._prompt_ids(item)} for item in items]
        padded = self.tokenizer.pad(rows, padding=True, padding_side="left", return_tensors="pt")
        input_ids = padded["input_ids"]  # (batch, seq)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": padded["attention_mask"],  # (batch, seq)
            "token_type_ids": torch.zeros_like(input_ids),  # (batch, seq) prefix
        }
        images = [item.image for item in items if item.image is not None]
        if images:
            processed = self.processor.image_processor(images, return_tensors="pt")
            inputs["pixel_values"] = processed["pixel_values"]  # (num_images, 3, H, W)
        return inputs

    def extend_per_token_inputs(
        self, inputs: dict[str, torch.Tensor], num_meta: int
    ) -> dict[str, torch.Tensor]:
        """Mark the meta positions as suffix (``token_type_ids = 1``, causal attention)."""
        extended = dict(inputs)
        token_types = inputs["token_type_ids"]  # (batch, seq)
        suffix = token_types.new_full((token_types.shape[0], num_meta), SUFFIX_TOKEN_TYPE)
        extended["token_type_ids"] = torch.cat([token_types, suffix], dim=1)  # (batch, seq + R)
        return extended

    # ----------------------------------------------------------------- forward
    def embedding_scale(self) -> float:
        """Factor Gemma's embedding module applies to vocabulary rows (``sqrt(hidden)``)."""
        return float(getattr(self.input_embeddings(), "scalar_embed_scale", 1.0))

    def forward_with_meta(
        self, inputs: dict[str, torch.Tensor], meta_embeddings: torch.Tensor | None
    ) -> torch.Tensor:
        """Scale the meta rows like vocabulary rows, then run the shared forward."""
        if meta_embeddings is not None:
            meta_embeddings = meta_embeddings * self.embedding_scale()  # (R, hidden)
        return super().forward_with_meta(inputs, meta_embeddings)

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward with 1-based positions from each row's first real token."""
        position_ids = positions_from_mask(inputs["attention_mask"]) + 1  # (batch, seq)
        outputs = self.model(**inputs, position_ids=position_ids, use_cache=False, return_dict=True)
        return outputs.last_hidden_state

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Gemma projections, plus the SigLIP encoder and the projector when asked."""
        if include_vision:
            return f"(?:{LANGUAGE_LORA_TARGETS})|(?:{VISION_LORA_TARGETS})"
        return LANGUAGE_LORA_TARGETS
