"""Composite backbone: bring your own image encoder and language model (LLaVA-style).

::

    image --letterbox on white--> frozen image encoder --> (C, 7, 7) feature grid
          --average pool to g x g--> g*g tokens --layer norm--> projector (Linear-GELU-Linear)
          --rescaled to the LM's embedding RMS--> written over g*g placeholder positions
    text  --tokenizer--> LM token embeddings
    [image tokens | instruction + text | meta tokens] --> causal LM (first N layers)
          --> last hidden states

Design choices
--------------
- The backbone is named by a *spec* string, e.g.
  ``"efficientnet-lite0+smollm2-135m-instruct;layers=6;grid=3;prompt=plain"``
  (see :class:`CompositeSpec`); parts are loaded by name from
  :mod:`metaembed.backbones.composite_parts`. Every frozen weight, the
  projector's starting weights included (seeded by ``seed``), is rebuilt from
  the spec, so a saved model stores only the spec plus its LoRA adapter and
  meta tokens: a few MB.
- The projector is a frozen, seeded random MLP that **LoRA adapts** like the
  LM's attention and MLP projections (``lora_target_modules``). With LoRA
  rank r the learned part of the projector is rank r (32 in the paper's
  setting), which is what lets the shared save/load code keep it inside the
  peft adapter. The image encoder is never adapted (a CNN, kept frozen).
- Feature grid pooling (``grid``) and LM truncation (``layers``) trade
  accuracy for CPU time; both are part of the spec, hence of the saved model.
- The frozen encoder's pooled features are cached in memory by a hash of the
  pixel tensor, so training epochs and repeated encodings skip the CNN; with
  ``$METAEMBED_FEATURE_CACHE_DIR`` set they are also kept on disk (one small
  ``.pt`` file per image, written atomically) and shared across runs.
- Images sit before the text (LLaVA order); positions count from each row's
  first real token (left padding safe).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metaembed.backbones.base import BackboneAdapter, check_role
from metaembed.backbones.composite_model import (  # noqa: F401 (re-exported)
    _IMAGE_MARKER,
    _LM_TARGETS,
    _PROJECTOR_TARGETS,
    SPEC_FILENAME,
    CompositeModel,
    CompositeSpec,
    build_composite,
    fit_projector,
    letterbox,
)

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = [
    "CompositeAdapter",
    "CompositeModel",
    "CompositeSpec",
    "SPEC_FILENAME",
    "fit_projector",
    "letterbox",
]

logger = logging.getLogger(__name__)


class CompositeAdapter(BackboneAdapter):
    """Adapter of the composite backbone (``processor`` is the LM's tokenizer)."""

    family = "composite"
    model_types = ("metaembed_composite",)
    supports_images = True

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> CompositeAdapter:
        """Build from a spec string or a folder holding ``composite_config.json``."""
        if kwargs:
            raise TypeError(
                f"the composite family takes no load options, got {sorted(kwargs)}; "
                "put them in the spec"
            )
        folder = Path(name_or_path) if Path(name_or_path).is_dir() else None
        model, tokenizer = build_composite(CompositeSpec.resolve(name_or_path), folder)
        if dtype is not None:
            model.to(dtype)
        if device is not None:
            model.to(device)
        return cls(model, tokenizer)

    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> CompositeAdapter:
        """Tiny random parts: an 8x8-patch CNN at 56 px and the 2-layer tiny Llama."""
        settings: dict[str, Any] = {
            "vision": "tiny-cnn",
            "language_model": "tiny-llama",
            "grid": 2,
            "seed": seed,
        }
        settings.update(overrides)
        model, tokenizer = build_composite(CompositeSpec(**settings))
        return cls(model, tokenizer)

    def save_processor(self, directory: str) -> None:
        """Nothing to write: the tokenizer comes with the language model named in the spec."""

    @property
    def spec(self) -> CompositeSpec:
        """The spec of the wrapped composite model (through a peft wrapper too)."""
        return self.composite_model().spec

    def composite_model(self) -> CompositeModel:
        """Return the wrapped :class:`CompositeModel` (under the peft wrapper when there is one)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prompt_pieces(self, item: Item) -> tuple[list[int], list[int]]:
        """Token ids before and after the image slot of one item."""
        text = "\n".join(part for part in (item.instruction, item.text) if part)
        marker = _IMAGE_MARKER if item.image is not None else ""
        if self.spec.prompt == "chat" and self._has_chat_template(self.tokenizer):
            messages = [{"role": "user", "content": marker + text}]
            rendered = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            rendered = marker + text
        before, _, after = rendered.partition(_IMAGE_MARKER) if marker else ("", "", rendered)
        before_ids, after_ids = self._token_ids(before), self._token_ids(after)
        if self.max_length is not None and len(before_ids) + len(after_ids) > self.max_length:
            after_ids = after_ids[: max(0, self.max_length - len(before_ids))]
        return before_ids, after_ids

    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Build left-padded ids with ``g*g`` image positions, ``image_mask``, ``pixel_values``."""
        check_role(role)
        composite = self.composite_model()
        image_length = composite.tokens_per_image
        pad_id = self.meta_placeholder_id
        rows: list[list[int]] = []
        image_rows: list[list[bool]] = []
        pixels: list[torch.Tensor] = []
        for item in items:
            before_ids, after_ids = self._prompt_pieces(item)
            slot = image_length if item.image is not None else 0
            rows.append(before_ids + [pad_id] * slot + after_ids)
            image_rows.append([False] * len(before_ids) + [True] * slot + [False] * len(after_ids))
            if item.image is not None:
                pixels.append(letterbox(item.image, composite.vision_info.image_size))
        width = max(1, max(len(row) for row in rows))
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (batch, seq)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (batch, seq)
        image_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # (batch, seq)
        for index, (row, marks) in enumerate(zip(rows, image_rows, strict=False)):
            if row:
                input_ids[index, width - len(row) :] = torch.tensor(row)
                attention_mask[index, width - len(row) :] = 1
                image_mask[index, width - len(row) :] = torch.tensor(marks)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image_mask": image_mask,
        }
        if pixels:
            info = composite.vision_info
            inputs["pixel_values"] = (
                torch.stack(pixels) - info.mean
            ) / info.std  # (images, 3, S, S)
        return inputs

    def extend_per_token_inputs(
        self, inputs: dict[str, torch.Tensor], num_meta: int
    ) -> dict[str, torch.Tensor]:
        """Meta positions are text: ``image_mask`` grows by ``num_meta`` False columns."""
        extended = super().extend_per_token_inputs(inputs, num_meta)
        mask = extended["image_mask"]  # (batch, seq)
        extended["image_mask"] = torch.cat([mask, mask.new_zeros((mask.shape[0], num_meta))], dim=1)
        return extended

    @torch.no_grad()
    def frozen_image_features(
        self, images: Sequence[Any], batch_size: int = 32, show_progress: bool = False
    ) -> torch.Tensor:
        """Return the frozen encoder's pooled grid ``(N, g*g, C)`` of images (paths or PIL)."""
        from tqdm.auto import tqdm

        from metaembed.items import load_image

        composite = self.composite_model()
        info = composite.vision_info
        batches = []
        for start in tqdm(
            range(0, len(images), batch_size), desc="image features", disable=not show_progress
        ):
            chunk = images[start : start + batch_size]
            pixels = torch.stack([letterbox(load_image(image), info.image_size) for image in chunk])
            batches.append(composite.image_features((pixels - info.mean) / info.std))  # (B, G, C)
        return torch.cat(batches)

    @property
    def base_weights_changed(self) -> bool:
        """True once :meth:`warm_start` fitted the projector (its weights are then saved)."""
        return bool(self.composite_model().projector_fitted)

    def warm_start(self, examples: Sequence[Any]) -> None:
        """Fit the linear projector on the (image, text) pairs of ``examples`` (ridge, closed form).

        Each image's target is the mean input embedding of all the texts it is
        paired with (as query or positive), see :func:`fit_projector`.
        """
        texts_of: dict[Any, list[str]] = {}  # image key -> its texts
        image_of: dict[Any, Any] = {}  # image key -> the path or image object
        for example in examples:
            for image_side, text_side in (
                (example.query, example.positive),
                (example.positive, example.query),
            ):
                image = image_side.image
                if image is not None and text_side.image is None and text_side.text:
                    key = str(image) if isinstance(image, (str, os.PathLike)) else id(image)
                    image_of[key] = image
                    texts_of.setdefault(key, []).append(text_side.text)
        if not texts_of:
            raise ValueError(
                "warm_start_projector needs (image, text) pairs in the training data; "
                "these examples have none"
            )
        keys = list(texts_of)
        features = self.frozen_image_features([image_of[key] for key in keys])  # (N, G, C)
        token_ids = [self._token_ids(" ".join(texts_of[key])) for key in keys]
        fit_projector(self.composite_model(), features, token_ids)
        logger.info("projector warm-started on %d images", len(keys))

    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Target the LM's attention + MLP projections and the projector (the CNN stays frozen)."""
        return rf".*({_LM_TARGETS}|{_PROJECTOR_TARGETS})"
