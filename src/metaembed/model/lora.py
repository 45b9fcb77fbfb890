"""LoRA through peft: wrap a backbone, list LoRA tensors, recover the bare base weights.

The paper trains LoRA with r = alpha = 32 on the VLM (section 4.1). The target
modules come from the backbone adapter (language model attention + MLP, and
the vision tower where the family allows). The adapter is saved in peft's own
format (``adapter_config.json`` + ``adapter_model.safetensors``) so other tools
can read it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["apply_lora", "load_lora", "lora_parameters", "base_model_state_dict", "is_peft_model"]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_FILENAME = "adapter_config.json"


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers by reading a property transformers 5 deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*"
        )
        yield


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is wrapped by peft."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def apply_lora(
    model: nn.Module,
    target_modules: str,
    r: int = 32,
    alpha: int = 32,
    dropout: float = 0.05,
) -> nn.Module:
    """Wrap ``model`` with fresh, trainable LoRA layers (the base stays frozen).

    Parameters
    ----------
    model : torch.nn.Module
        The Hugging Face backbone.
    target_modules : str
        Regex of module names (peft matches it against the full name).
    r, alpha, dropout : int, int, float
        LoRA rank, scaling numerator and dropout.

    Returns
    -------
    peft.PeftModel
        The wrapped model; LoRA ``B`` matrices start at zero so outputs are unchanged.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none"
    )
    with _quiet_peft():
        wrapped = get_peft_model(model, config)
    count = sum(1 for name, _ in wrapped.named_parameters() if "lora_A" in name)
    if count == 0:
        raise ValueError(
            f"LoRA target regex {target_modules!r} matched no module of {type(model).__name__}; "
            "fix lora_target_modules() of the backbone adapter"
        )
    logger.info("LoRA r=%d alpha=%d on %d modules", r, alpha, count)
    return wrapped


def load_lora(model: nn.Module, directory: str | os.PathLike[str], trainable: bool = False) -> Any:
    """Load a saved peft adapter from ``directory`` onto ``model``."""
    from peft import PeftModel

    with _quiet_peft():
        return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """All LoRA tensors of ``model`` by name (``lora_A`` / ``lora_B`` weights)."""
    return {name: p for name, p in model.named_parameters() if "lora_" in name}


def base_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the bare base model, without LoRA tensors or peft name wrapping.

    Used to save a backbone that exists only in memory (tiny test models) next to
    its adapter, so that loading rebuilds base + LoRA exactly.
    """
    base = model.get_base_model() if is_peft_model(model) else model
    state: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    return state
