"""Mllama (Llama-3.2-Vision): images enter the language model through gated cross-attention layers.

Design choices
--------------
- The headless ``MllamaModel`` is loaded; hidden states are ``last_hidden_state``.
  The prompt holds one ``<|image|>`` token per image; the image tiles are not
  tokens but cross-attention states, and ``cross_attention_mask``
  ``(batch, seq, images, tiles)`` says which text positions see which tiles
  (every position from the ``<|image|>`` token on).
- **Meta tokens and the cross-attention mask.** The meta positions copy the
  mask row of the last prompt token, so in an image item they see the image
  tiles exactly as the answer's first token would, and in a text item nothing.
  (Without the extension the mask would be too short; with zero rows the meta
  tokens would be blind to the image.)
- **Text items in mixed batches.** Hugging Face zeroes a masked-out row's
  cross-attention MLP but not its attention branch, so a text item batched with
  image items attends to padding tiles and gets other hidden states than when
  encoded alone (where cross-attention layers are skipped). The adapter runs
  such batches as two forwards, image rows and text rows, so every item's
  embedding is what it would be on its own (tested).
- Position ids count from each row's first real token; prompts go through the
  chat template (``<|image|>`` prepended when there is none), and the processor
  adds ``<|begin_of_text|>`` itself, so no other special tokens are added.
- LoRA covers the language model's self- and cross-attention and MLP
  projections and, with ``include_vision``, the local and global vision
  encoders' attention + MLP and the multimodal projector.
- The tiny model sets every tanh gate to 0.5: freshly initialised Mllama gates
  are 0, which would silence the cross-attention (and its LoRA gradients).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role, positions_from_mask

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["MllamaAdapter", "MLLAMA_CHAT_TEMPLATE"]

logger = logging.getLogger(__name__)

LANGUAGE_LORA_TARGETS = (
    r".*language_model\.layers\.\d+\.((self_attn|cross_attn)\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))"
)
VISION_LORA_TARGETS = (
    r".*(vision_model\.(transformer|global_transformer)\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(fc1|fc2))"
    r"|multi_modal_projector)"
)
IMAGE_KEYS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")
"""Model inputs that exist only for items with an image (batch first)."""

MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
"""Llama-3 style chat prompt with ``<|image|>``, for tiny models."""

TINY_GATE_NAMES = frozenset(
    {"gate", "gate_attn", "gate_ffn", "cross_attn_attn_gate", "cross_attn_mlp_gate"}
)


def _select_rows(inputs: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value[rows] for key, value in inputs.items()}


class MllamaAdapter(BackboneAdapter):
    """Adapter for Llama-3.2-Vision (``MllamaModel``)."""

    family = "mllama"
    model_types = ("mllama",)
    supports_images = True
    model_class = "MllamaModel"

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> MllamaAdapter:
        """Build a 3-layer text model (cross-attention in layer 1), 56 px tiles, up to 2 tiles."""
        from transformers import MllamaConfig, MllamaModel, MllamaProcessor
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

        from metaembed.testing.tiny_config import tiny_text_config
        from metaembed.testing.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(chat_template=MLLAMA_CHAT_TEMPLATE)
        extra = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]
        tokenizer.add_special_tokens(
            {"bos_token": "<|begin_of_text|>", "additional_special_tokens": extra},
            replace_extra_special_tokens=False,
        )
        image_processor = MllamaImageProcessorPil(
            size={"height": 56, "width": 56}, max_image_tiles=2
        )
        processor = MllamaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=MLLAMA_CHAT_TEMPLATE
        )
        text_config = tiny_text_config(
            tokenizer,
            num_hidden_layers=3,
            cross_attention_layers=[1],
            bos_token_id=tokenizer.bos_token_id,
        )
        text_config.update(overrides.pop("text_config", {}))
        vision_config = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_global_layers=1,
            attention_heads=2,
            image_size=56,
            patch_size=14,
            max_num_tiles=2,
            intermediate_layers_indices=[0],
            vision_output_dim=64,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
        )
        vision_config.update(overrides.pop("vision_config", {}))
        config = MllamaConfig(
            text_config=text_config,
            vision_config=vision_config,
            image_token_index=processor.image_token_id,
            **overrides,
        )
        torch.manual_seed(seed)
        model = MllamaModel(config).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.rsplit(".", 1)[-1] in TINY_GATE_NAMES:
                    parameter.fill_(0.5)  # open the tanh gates (0 when freshly initialised)
        return cls(model, processor)

    # ------------------------------------------------------------------ inputs
    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Chat-template prompts with one ``<|image|>`` per image item, left padded.

        Returns ``input_ids``/``attention_mask`` ``(batch, seq)`` and, when any item
        has an image, ``pixel_values`` ``(batch, 1, tiles, 3, H, W)``,
        ``aspect_ratio_ids`` ``(batch, 1)``, ``aspect_ratio_mask`` ``(batch, 1, tiles)``
        and ``cross_attention_mask`` ``(batch, seq, 1, tiles)``; text items get zeros.
        """
        check_role(role)
        prompts = [self.render_prompt_with_image_token(item, role) for item in items]
        has_images = any(item.image is not None for item in items)
        images = [[item.image] if item.image is not None else [] for item in items]
        truncate = self.max_length is not None and not has_images  # keep <|image|> whole
        processed = self.processor(
            text=prompts,
            images=images if has_images else None,
            padding=True,
            padding_side="left",
            add_special_tokens=False,
            truncation=truncate,
            max_length=self.max_length if truncate else None,
            return_tensors="pt",
        )
        keys = ("input_ids", "attention_mask") + IMAGE_KEYS
        return {key: processed[key] for key in keys if key in processed}

    def extend_per_token_inputs(
        self, inputs: dict[str, torch.Tensor], num_meta: int
    ) -> dict[str, torch.Tensor]:
        """Give the meta positions the cross-attention mask row of the last prompt token."""
        extended = super().extend_per_token_inputs(inputs, num_meta)
        mask = inputs.get("cross_attention_mask")  # (batch, seq, images, tiles)
        if mask is not None:
            last_rows = mask[:, -1:].expand(-1, num_meta, -1, -1)  # (batch, R, images, tiles)
            extended["cross_attention_mask"] = torch.cat([mask, last_rows], dim=1)
        return extended

    # ----------------------------------------------------------------- forward
    def forward_with_meta(
        self, inputs: dict[str, torch.Tensor], meta_embeddings: torch.Tensor | None
    ) -> torch.Tensor:
        """Run image rows and text rows of a mixed batch separately; ``(batch, seq, hidden)``."""
        mask = inputs.get("cross_attention_mask")  # (batch, seq, images, tiles)
        if mask is None:
            return super().forward_with_meta(inputs, meta_embeddings)
        has_image = mask.flatten(2).any(dim=2).any(dim=1)  # (batch,)
        text_inputs = {key: value for key, value in inputs.items() if key not in IMAGE_KEYS}
        if bool(has_image.all()):
            return super().forward_with_meta(inputs, meta_embeddings)
        if not bool(has_image.any()):
            return super().forward_with_meta(text_inputs, meta_embeddings)
        image_rows = has_image.nonzero().flatten()  # (n_image,)
        text_rows = (~has_image).nonzero().flatten()  # (n_text,)
        hidden_parts = []
        for rows, part in ((image_rows, inputs), (text_rows, text_inputs)):
            meta_rows = meta_embeddings
            if meta_rows is not None and meta_rows.dim() == 3:
                meta_rows = meta_rows[rows]  # (n_rows, R, hidden)
            hidden_parts.append(super().forward_with_meta(_select_rows(part, rows), meta_rows))
        order = torch.cat([image_rows, text_rows]).argsort()  # (batch,)
        return torch.cat(hidden_parts, dim=0)[order]  # (batch, seq, hidden)

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward with positions counted from each row's first real token."""
        position_ids = positions_from_mask(inputs["attention_mask"])  # (batch, seq)
        outputs = self.model(**inputs, position_ids=position_ids, use_cache=False, return_dict=True)
        return outputs.last_hidden_state

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Self-/cross-attention and MLP projections, plus both vision encoders when asked."""
        if include_vision:
            return f"(?:{LANGUAGE_LORA_TARGETS})|(?:{VISION_LORA_TARGETS})"
        return LANGUAGE_LORA_TARGETS
