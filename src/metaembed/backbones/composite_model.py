"""The composite model: frozen image encoder -> projector -> causal LM (LLaVA-style).

:class:`CompositeSpec` names the parts; :class:`CompositeModel` is the ``nn.Module``
the composite adapter (:mod:`metaembed.backbones.composite`) drives, with a
pixel-hash feature cache for the frozen encoder; :func:`fit_projector` warm-starts
the projector in closed form; :func:`letterbox` prepares images. The design notes
are in the adapter module's docstring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from metaembed.backbones.base import positions_from_mask
from metaembed.backbones.composite_parts import (
    VisionEncoder,
    load_language_model,
    load_vision_encoder,
)

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "CompositeModel",
    "CompositeSpec",
    "SPEC_FILENAME",
    "PROJECTOR_FILENAME",
    "build_composite",
    "fit_projector",
    "letterbox",
]

logger = logging.getLogger(__name__)

SPEC_FILENAME = "composite_config.json"
"""The spec of a composite base model saved as a folder."""

PROJECTOR_FILENAME = "projector.safetensors"
"""Fitted projector base weights (only when :func:`fit_projector` warm-started them)."""

_LM_TARGETS = (
    r"language_model\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
_PROJECTOR_TARGETS = r"projector\.(0|2)"
_IMAGE_MARKER = "\u2983image\u2984"
_MAX_CACHED_IMAGES = 50_000


@dataclass(frozen=True)
class CompositeSpec:
    """What the composite backbone is made of.

    Parameters
    ----------
    vision : str
        Image encoder name (``"efficientnet-lite0"``, ``"tiny-cnn"``).
    language_model : str
        LM name (``"smollm2-135m-instruct"``, ``"tiny-llama"``) or HF folder / Hub id.
    layers : int, optional
        Keep only the first ``layers`` decoder layers (``None``: all).
    grid : int, optional
        Average-pool the encoder's feature grid to ``grid x grid`` tokens (``None``: native).
    prompt : {"chat", "plain"}
        ``chat`` renders the user turn with the tokenizer's chat template;
        ``plain`` is the instruction, a newline and the text (shorter, cheaper on CPU).
    seed : int
        Seeds the projector's starting weights and the tiny test parts.
    projector : {"mlp", "linear"}
        Linear-GELU-Linear (LLaVA-1.5) or one linear layer (LLaVA-1; what
        :func:`fit_projector` warm-starts).

    >>> spec = CompositeSpec.parse("tiny-cnn+tiny-llama;layers=1;grid=2")
    >>> spec.layers, spec.grid, spec.prompt
    (1, 2, 'chat')
    >>> CompositeSpec.parse(str(spec)) == spec
    True
    """

    vision: str
    language_model: str
    layers: int | None = None
    grid: int | None = None
    prompt: str = "chat"
    seed: int = 0
    projector: str = "mlp"

    def __post_init__(self) -> None:
        if self.prompt not in ("chat", "plain"):
            raise ValueError(f"prompt must be 'chat' or 'plain', got {self.prompt!r}")
        if self.projector not in ("mlp", "linear"):
            raise ValueError(f"projector must be 'mlp' or 'linear', got {self.projector!r}")
        for name in ("layers", "grid"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")

    def __str__(self) -> str:
        options = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)[2:]
            if getattr(self, f.name) != f.default
        ]
        return ";".join([f"{self.vision}+{self.language_model}", *options])

    @classmethod
    def parse(cls, text: str) -> CompositeSpec:
        """Parse ``"VISION+LM[;key=value...]"``; raise ``ValueError`` naming the expected form."""
        head, *options = [part.strip() for part in str(text).split(";")]
        if "+" not in head:
            raise ValueError(
                f"composite spec {text!r} must look like "
                "'efficientnet-lite0+smollm2-135m-instruct;layers=6;grid=3' "
                "(or be a folder holding composite_config.json)"
            )
        vision, language_model = head.split("+", 1)
        values: dict[str, Any] = {"vision": vision, "language_model": language_model}
        known = {f.name for f in fields(cls)}
        for option in options:
            key, _, value = option.partition("=")
            if key not in known or key in ("vision", "language_model") or not value:
                raise ValueError(
                    f"bad option {option!r} in composite spec {text!r}; "
                    "options: layers, grid, prompt, seed, projector"
                )
            if key in ("prompt", "projector"):
                values[key] = value
            else:
                values[key] = None if value == "None" else int(value)
        return cls(**values)

    @classmethod
    def resolve(cls, name_or_path: str | os.PathLike[str]) -> CompositeSpec:
        """Read a spec string, or a folder (or JSON file) written by ``save_pretrained``."""
        path = Path(name_or_path)
        if path.is_dir():
            path = path / SPEC_FILENAME
        if path.suffix == ".json" and path.is_file():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        return cls.parse(str(name_or_path))


class CompositeModel(nn.Module):
    """Frozen image encoder + projector + causal LM; returns ``last_hidden_state``.

    Parameters
    ----------
    spec : CompositeSpec
        What it is made of (kept for saving).
    vision : VisionEncoder
        The frozen image encoder.
    language_model : torch.nn.Module
        A headless causal LM (``AutoModel``) with Llama-style module names.
    """

    def __init__(
        self, spec: CompositeSpec, vision: VisionEncoder, language_model: nn.Module
    ) -> None:
        super().__init__()
        self.spec = spec
        self.vision_info = vision
        self.vision = vision.module
        self.language_model = language_model
        self.config = language_model.config
        hidden_size = self.get_input_embeddings().weight.shape[1]
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(spec.seed)
        layers: list[nn.Module] = [nn.Linear(vision.feature_dim, hidden_size)]
        if spec.projector == "mlp":
            layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        self.projector = nn.Sequential(*layers)
        torch.random.set_rng_state(generator_state)
        self.projector_fitted = False  # True once fit_projector() replaced the seeded weights
        self.projector.requires_grad_(False)
        embedding_rms = self.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt()
        self.register_buffer("embedding_rms", embedding_rms, persistent=False)
        self._feature_cache: dict[str, torch.Tensor] = {}
        folder = os.environ.get("METAEMBED_FEATURE_CACHE_DIR")
        self.feature_cache_dir = (
            Path(folder) / f"{spec.vision}-grid{spec.grid}-seed{spec.seed}" if folder else None
        )

    def train(self, mode: bool = True) -> CompositeModel:
        """Set train/eval mode; the frozen image encoder always stays in eval mode (batch norm)."""
        super().train(mode)
        self.vision.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        """Return the LM's token embedding (the module the meta-token hook edits)."""
        return self.language_model.get_input_embeddings()

    @property
    def tokens_per_image(self) -> int:
        """Image tokens per image: ``grid**2`` (or the encoder's native grid squared)."""
        return self._grid_side() ** 2

    def _grid_side(self) -> int:
        if self.spec.grid is not None:
            return self.spec.grid
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.vision_info.image_size, self.vision_info.image_size)
            return int(self.vision(probe).shape[-1])

    @torch.no_grad()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled frozen features ``(N, g*g, C)`` for pixels ``(N, 3, S, S)``, cached by content."""
        keys = [
            hashlib.blake2b(image.numpy().tobytes(), digest_size=16).hexdigest()
            for image in pixel_values.cpu()
        ]
        missing = [
            i
            for i, key in enumerate(keys)
            if key not in self._feature_cache and not self._load_cached(key)
        ]
        if missing:
            grid = self.vision(pixel_values[missing])  # (M, C, h, w)
            if self.spec.grid is not None:
                grid = F.adaptive_avg_pool2d(grid, self.spec.grid)  # (M, C, g, g)
            tokens = grid.flatten(2).transpose(1, 2).float()  # (M, g*g, C)
            if len(self._feature_cache) + len(missing) > _MAX_CACHED_IMAGES:
                self._feature_cache.clear()
            for index, features in zip(missing, tokens, strict=False):
                self._feature_cache[keys[index]] = features.cpu()
                self._store_cached(keys[index], features.cpu())
        return torch.stack([self._feature_cache[key] for key in keys]).to(pixel_values.device)

    def _load_cached(self, key: str) -> bool:
        if self.feature_cache_dir is None:
            return False
        path = self.feature_cache_dir / f"{key}.pt"
        if not path.is_file():
            return False
        try:
            self._feature_cache[key] = torch.load(path, map_location="cpu")
        except (OSError, RuntimeError, EOFError):
            return False
        return True

    def _store_cached(self, key: str, features: torch.Tensor) -> None:
        if self.feature_cache_dir is None:
            return
        self.feature_cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.feature_cache_dir / f".{key}.{os.getpid()}.tmp"
        torch.save(features.clone(), temporary)
        os.replace(temporary, self.feature_cache_dir / f"{key}.pt")

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image tokens ``(N, g*g, hidden)`` at the scale of the LM's token embeddings."""
        features = self.image_features(pixel_values)  # (N, g*g, C)
        features = F.layer_norm(features, features.shape[-1:])  # (N, g*g, C)
        projected = self.projector(features)  # (N, g*g, hidden)
        rms = projected.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()  # (N, g*g, 1)
        return projected / rms * self.embedding_rms  # (N, g*g, hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Embed tokens, write image tokens at ``image_mask``, run the LM; return its output."""
        embeddings = self.get_input_embeddings()(input_ids)  # (batch, seq, hidden)
        if pixel_values is not None and pixel_values.shape[0] > 0:
            image_tokens = self.image_tokens(pixel_values).to(embeddings.dtype)  # (N, g*g, hidden)
            if (
                image_mask is None
                or int(image_mask.sum()) != image_tokens.shape[0] * image_tokens.shape[1]
            ):
                raise ValueError(
                    "image_mask must mark exactly g*g positions per image given in pixel_values"
                )
            embeddings = embeddings.masked_scatter(
                image_mask.unsqueeze(-1), image_tokens
            )  # (batch, seq, hidden)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)  # (batch, seq)
        return self.language_model(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            return_dict=True,
        )

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Checkpoint the LM's layers (the frozen encoder needs no activations kept)."""
        self.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )

    def save_pretrained(
        self, directory: str | os.PathLike[str], state_dict: Any = None, **kwargs: Any
    ) -> None:
        """Write ``composite_config.json`` (+ the projector's base weights once fitted).

        Every other frozen weight is rebuilt from the spec.
        """
        from safetensors.torch import save_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_FILENAME).write_text(
            json.dumps(asdict(self.spec), indent=2) + "\n", encoding="utf-8"
        )
        if self.projector_fitted:
            weights = {
                name.replace(".base_layer.", "."): tensor.detach().float().contiguous()
                for name, tensor in self.projector.state_dict(prefix="projector.").items()
                if "lora_" not in name
            }
            save_file(weights, str(folder / PROJECTOR_FILENAME))

    def load_projector(self, path: str | os.PathLike[str]) -> None:
        """Load fitted projector base weights written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        stored = {k.removeprefix("projector."): v for k, v in load_file(str(path)).items()}
        self.projector.load_state_dict(stored)
        self.projector_fitted = True


def build_composite(
    spec: CompositeSpec, folder: str | os.PathLike[str] | None = None
) -> tuple[CompositeModel, Any]:
    """Load the parts named by ``spec`` (+ fitted projector weights in ``folder``); eval mode."""
    vision = load_vision_encoder(spec.vision, seed=spec.seed)
    language_model, tokenizer = load_language_model(
        spec.language_model, spec.layers, seed=spec.seed
    )
    model = CompositeModel(spec, vision, language_model).eval()
    if folder is not None and (Path(folder) / PROJECTOR_FILENAME).is_file():
        model.load_projector(Path(folder) / PROJECTOR_FILENAME)
    return model, tokenizer


@torch.no_grad()
def fit_projector(
    model: CompositeModel,
    image_features: torch.Tensor,
    text_token_ids: Sequence[Sequence[int]],
    ridge: float = 1e-2,
) -> None:
    """Warm-start a linear projector so image tokens point where their texts' word embeddings are.

    A cheap, closed-form analogue of LLaVA's stage-1 projector alignment: ridge
    regression from every (layer-normed) grid token of an image to the mean
    input embedding of its text's tokens. Marks the projector as fitted, so
    :meth:`CompositeModel.save_pretrained` saves it.

    Parameters
    ----------
    model : CompositeModel
        With ``spec.projector == "linear"`` (possibly wrapped by LoRA already).
    image_features : torch.Tensor
        ``(N, g*g, C)`` frozen features (:meth:`CompositeModel.image_features`).
    text_token_ids : sequence of sequence of int
        The token ids of each image's text (e.g. title and keywords).
    ridge : float
        Ridge strength, relative to the mean diagonal of ``X^T X``.
    """
    if model.spec.projector != "linear":
        raise ValueError(
            "fit_projector needs a linear projector: add ';projector=linear' to the spec"
        )
    if image_features.shape[0] != len(text_token_ids):
        raise ValueError(f"{image_features.shape[0]} images but {len(text_token_ids)} texts")
    embedding = model.get_input_embeddings().weight.detach().float()  # (vocab, hidden)
    targets = torch.stack(
        [embedding[torch.tensor(list(ids) or [0])].mean(dim=0) for ids in text_token_ids]
    )  # (N, hidden)
    features = image_features.float()
    features = F.layer_norm(features, features.shape[-1:])  # (N, G, C)
    tokens_per_image = features.shape[1]
    inputs = features.reshape(-1, features.shape[-1])  # (N*G, C)
    inputs = torch.cat([inputs, torch.ones(inputs.shape[0], 1)], dim=1)  # (N*G, C+1)
    outputs = targets.repeat_interleave(tokens_per_image, dim=0)  # (N*G, hidden)
    gram = inputs.T @ inputs  # (C+1, C+1)
    strength = ridge * gram.diagonal().mean()
    solution = torch.linalg.solve(gram + strength * torch.eye(gram.shape[0]), inputs.T @ outputs)
    linear = model.projector[0]
    linear = getattr(linear, "base_layer", linear)  # under LoRA, the frozen base weights
    linear.weight.copy_(solution[:-1].T)  # (hidden, C)
    linear.bias.copy_(solution[-1])  # (hidden,)
    model.projector_fitted = True


def letterbox(image: Any, size: int) -> torch.Tensor:
    """RGB PIL image -> ``(3, size, size)`` floats in [0, 1], aspect kept, padded with white."""
    import numpy as np
    from PIL import Image

    scale = size / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - width) // 2, (size - height) // 2))
    pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)  # (size, size, 3)
    return pixels.permute(2, 0, 1).contiguous()  # (3, size, size)
