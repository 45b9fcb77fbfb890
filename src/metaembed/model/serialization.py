"""Saving and loading MetaEmbed models.

A saved model folder holds::

    metaembed_config.json           MetaEmbedConfig (family, R_q, R_c, groups, base model...)
    metaembed_weights.safetensors   meta tokens (+ projection), float32
    adapter_config.json             LoRA in peft's format (absent when lora_r = 0)
    adapter_model.safetensors
    README.md                       model card listing the trained budgets
    base_model/                     only for backbones that exist nowhere else (tiny models)

Files are written into a temporary sibling folder first and then moved in one
by one with ``os.replace``, so a crash never leaves a half-written file and
other files already in the folder are kept.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metaembed.model.card import render_model_card
from metaembed.model.config import CONFIG_FILENAME, MetaEmbedConfig
from metaembed.model.lora import (
    ADAPTER_CONFIG_FILENAME,
    base_model_state_dict,
    is_peft_model,
    load_lora,
)

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.model.modeling import MetaEmbedModel

__all__ = [
    "save_model",
    "load_model",
    "resolve_model_folder",
    "WEIGHTS_FILENAME",
    "BASE_MODEL_DIRNAME",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = "metaembed_weights.safetensors"
BASE_MODEL_DIRNAME = "base_model"


def _own_weights(model: MetaEmbedModel) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    if model.meta_tokens is not None:
        weights["meta_tokens.weight"] = model.meta_tokens.weight
    if model.projection is not None:
        weights["projection.weight"] = model.projection.weight
        weights["projection.bias"] = model.projection.bias
    return {name: t.detach().float().cpu().contiguous() for name, t in weights.items()}


def _write_folder(model: MetaEmbedModel, folder: Path, save_base_model: bool) -> None:
    from safetensors.torch import save_file

    config = model.config
    if save_base_model:
        base_folder = folder / BASE_MODEL_DIRNAME
        backbone = model.backbone
        bare = backbone.get_base_model() if is_peft_model(backbone) else backbone
        bare.save_pretrained(base_folder, state_dict=base_model_state_dict(backbone))
        model.adapter.save_processor(str(base_folder))
        config = config.replace(base_model=BASE_MODEL_DIRNAME)
    if is_peft_model(model.backbone):
        model.backbone.save_pretrained(
            str(folder)
        )  # adapter_config.json + adapter_model.safetensors
    save_file(_own_weights(model), str(folder / WEIGHTS_FILENAME), metadata={"format": "pt"})
    config.save(folder)
    (folder / "README.md").write_text(render_model_card(config), encoding="utf-8")


def save_model(
    model: MetaEmbedModel, directory: str | os.PathLike[str], save_base_model: bool | None = None
) -> Path:
    """Save ``model`` to ``directory`` (see the module docstring); return the folder path."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder; choose another path")
    if save_base_model is None:  # in memory, loaded from base_model/, or with changed base weights
        save_base_model = (
            model.config.base_model in (None, BASE_MODEL_DIRNAME)
            or model.adapter.base_weights_changed
        )
    if not save_base_model and model.config.base_model is None:
        raise ValueError(
            "this model's backbone was built in memory (config.base_model is None); "
            "save it with save_base_model=True"
        )
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.saving-"))
    try:
        _write_folder(model, staging, save_base_model)
        for entry in sorted(staging.iterdir()):
            destination = target / entry.name
            if entry.is_dir() and destination.exists():
                shutil.rmtree(destination)
            os.replace(entry, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved MetaEmbed model to %s", target)
    return target


def resolve_model_folder(path_or_id: str | os.PathLike[str]) -> Path:
    """Return a local folder for ``path_or_id``: the folder itself, or a Hub snapshot."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    text = str(path_or_id)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is None:
        raise FileNotFoundError(
            f"model folder {text!r} does not exist; pass a folder written by save_pretrained "
            "or a Hub id such as 'owner/name'"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text))
    except Exception as error:  # noqa: BLE001 - network, auth and missing repos all land here
        raise FileNotFoundError(
            f"could not download {text!r} from the Hugging Face Hub ({error}); "
            "check the id and your connection, or pass a local folder"
        ) from error


def _resolve_base(folder: Path, config: MetaEmbedConfig, override: str | None) -> str:
    base = override or config.base_model
    if base is None:
        raise ValueError(
            f"{folder / CONFIG_FILENAME} names no base_model; "
            "pass base_model=... to from_pretrained"
        )
    local = folder / base
    return str(local) if local.exists() else base


def _load_own_weights(model: MetaEmbedModel, folder: Path) -> None:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the folder has a config but no meta-token weights; "
            "save the model again with save_pretrained"
        )
    stored = load_file(str(path))
    expected = _own_weights(model)
    if set(stored) != set(expected):
        raise ValueError(
            f"{path} holds {sorted(stored)} but the config expects {sorted(expected)}; "
            "the config and the weights come from different models"
        )
    with torch.no_grad():
        if model.meta_tokens is not None:
            model.meta_tokens.weight.copy_(stored["meta_tokens.weight"])
        if model.projection is not None:
            model.projection.weight.copy_(stored["projection.weight"])
            model.projection.bias.copy_(stored["projection.bias"])


def load_model(
    model_class: type[MetaEmbedModel],
    path_or_id: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trainable: bool = False,
    base_model: str | None = None,
) -> Any:
    """Rebuild a saved model: backbone, LoRA adapter, meta tokens, projection, config."""
    from metaembed.backbones.registry import get_adapter_class

    folder = resolve_model_folder(path_or_id)
    config = MetaEmbedConfig.load(folder)
    base = _resolve_base(folder, config, base_model)
    adapter = get_adapter_class(config.family).load(base, dtype=dtype, device=device)
    for parameter in adapter.model.parameters():
        parameter.requires_grad_(False)
    if (folder / ADAPTER_CONFIG_FILENAME).is_file():
        adapter.model = load_lora(adapter.model, folder, trainable=trainable)
    elif config.lora_r > 0:
        logger.warning(
            "%s has lora_r=%d but no adapter files; using the bare backbone", folder, config.lora_r
        )
    model = model_class(adapter, config)
    _load_own_weights(model, folder)
    for parameter in list(model.meta_tokens.parameters() if model.meta_tokens else []) + list(
        model.projection.parameters() if model.projection else []
    ):
        parameter.requires_grad_(trainable)
    model.to(adapter.input_embeddings().weight.device)
    return model.train(trainable)
