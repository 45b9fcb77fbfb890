"""Training checkpoints: trainable weights, optimizer, scheduler and loop state, written atomically.

A checkpoint folder ``checkpoint-000200`` holds ``training_state.pt`` (the
trainable parameters -- LoRA, meta tokens, projection -- the optimizer and
scheduler states) and ``trainer_state.json`` (step, best evaluation loss,
patience, history). It is written under a temporary name and renamed, so a
run killed while saving never leaves a half-written checkpoint that resume
would pick up. The batch order is a pure function of ``(seed, step)`` and
dropout is re-seeded every step, so loading these states is all a resumed
run needs to continue exactly like an unbroken one.

Under FSDP2 the states are gathered to full tensors with
``torch.distributed.checkpoint.state_dict`` (every rank takes part; rank 0
writes), and loaded back by every rank.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "STATE_FILE",
    "TRAINER_STATE_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "rotate_checkpoints",
    "trainable_state_dict",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def trainable_state_dict(model: torch.nn.Module, sharded: bool = False) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable parameters (collective when ``sharded``)."""
    names = _trainable_names(model)
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
        return {name: tensor for name, tensor in state.items() if name in names}
    return {
        name: parameter.detach().cpu().clone()
        for name, parameter in model.named_parameters()
        if name in names
    }


def _optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool
) -> Any:
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    *,
    is_main: bool = True,
    sharded: bool = False,
) -> Path:
    """Write a checkpoint folder atomically (only ``is_main`` writes; all ranks call it)."""
    weights = trainable_state_dict(model, sharded)
    optimizer_state = _optimizer_state(model, optimizer, sharded)
    if not is_main:
        return directory
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    payload = {"model": weights, "optimizer": optimizer_state, "scheduler": scheduler.state_dict()}
    with (temporary / STATE_FILE).open("wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    with (temporary / TRAINER_STATE_FILE).open("w", encoding="utf-8") as handle:
        json.dump(trainer_state, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(temporary, directory)
    logger.info("saved checkpoint %s", directory)
    return directory


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore weights, optimizer and scheduler from ``directory``; return the trainer state."""
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    expected = _trainable_names(model)
    missing = sorted(expected - set(payload["model"]))
    if missing:
        raise ValueError(
            f"checkpoint {directory} lacks trainable parameters {missing[:5]}; it was written by a "
            "run with another model config (start a new output_dir or set resume: false)"
        )
    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, payload["model"], options=options)
        set_optimizer_state_dict(model, optimizer, payload["optimizer"], options=options)
    else:
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in payload["model"].items():
                parameters[name].copy_(tensor.to(parameters[name].device))
        optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return json.loads((directory / TRAINER_STATE_FILE).read_text(encoding="utf-8"))


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = _CHECKPOINT_NAME.match(path.name)
            if match and (path / TRAINER_STATE_FILE).is_file() and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """Return the complete checkpoint with the highest step under ``output_dir``, if any."""
    found = _checkpoints(output_dir)
    return found[-1][1] if found else None


def rotate_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None`` keeps all)."""
    if keep is None:
        return
    for _, path in _checkpoints(output_dir)[: -keep or None]:
        shutil.rmtree(path, ignore_errors=True)
