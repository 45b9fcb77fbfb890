"""The pieces of a run built from a :class:`TrainingConfig`: data, model, optimizer, FSDP2, export.

* :func:`prepare_data` loads every source, checks the hard-negative count
  per row, adds placeholder images when asked, and holds out
  ``eval_fraction`` of each subset;
* :func:`build_model` makes the model: a tiny random one (``tiny_family``),
  a saved MetaEmbed model to continue (``init_from``), or a Hugging Face
  backbone with fresh meta tokens and LoRA (``base_model``), with the
  baseline's pooling and groups;
* :func:`shard_model` applies FSDP2 (``fully_shard`` on every decoder
  layer, then on the whole model);
* :func:`make_optimizer` is AdamW with linear warm-up and a constant,
  linear or cosine decay;
* :func:`export_model` writes a ``save_pretrained`` folder atomically.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metaembed.training.arguments import TrainingConfig
from metaembed.training.data import (
    DataError,
    TrainingExample,
    add_placeholder_images,
    load_training_data,
    split_held_out,
    subset_counts,
)
from metaembed.training.distributed import DistributedContext, barrier

__all__ = [
    "RunData",
    "prepare_data",
    "build_model",
    "shard_model",
    "make_optimizer",
    "export_model",
]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RunData:
    """Training and held-out examples of a run."""

    train: list[TrainingExample]
    held_out: list[TrainingExample]
    needs_images: bool


def _check_negatives(
    examples: list[TrainingExample], config: TrainingConfig
) -> list[TrainingExample]:
    wanted = config.num_hard_negatives
    short = [e for e in examples if len(e.negatives) < wanted]
    if not short:
        return examples
    first = short[0]
    message = (
        f"{len(short)} rows have fewer than num_hard_negatives={wanted} hard negatives (first: "
        f"{first.source} row {first.row})"
    )
    if config.on_invalid == "error":
        raise DataError(
            message + "; add negatives, lower num_hard_negatives, or set on_invalid: skip"
        )
    logger.warning("%s; skipped", message)
    return [e for e in examples if len(e.negatives) >= wanted]


def prepare_data(config: TrainingConfig, context: DistributedContext) -> RunData:
    """Load, check and split the training data (every rank does the same, deterministically)."""
    data = load_training_data(config.train_data, config.on_invalid, config.check_images)
    examples = _check_negatives(data.examples, config)
    if config.placeholder_image:
        examples = [add_placeholder_images(e, config.placeholder_image_size) for e in examples]
    train, held_out = split_held_out(
        examples, config.eval_fraction, config.seed, config.max_eval_examples
    )
    if context.is_main:
        logger.info(
            "training data: %d examples (%d held out) in subsets %s",
            len(examples),
            len(held_out),
            subset_counts(examples),
        )
    needs_images = any(
        item.has_image for e in examples for item in (e.query, e.positive, *e.negatives)
    )
    return RunData(train, held_out, needs_images)


def build_model(
    config: TrainingConfig, context: DistributedContext, needs_images: bool = False
) -> Any:
    """Make the model to train (identical on every rank: weights depend on the seed only)."""
    from metaembed.model.modeling import MetaEmbedModel

    fields = config.model_fields()
    if config.init_from is not None:
        model = MetaEmbedModel.from_pretrained(
            config.init_from, device=context.device, trainable=True
        )
        logger.info("continuing %s; model fields of the config are ignored", config.init_from)
    elif config.tiny_family is not None:
        from metaembed.testing import tiny_model

        model = tiny_model(config.tiny_family, seed=config.seed, **fields).to(context.device)
    else:
        model = MetaEmbedModel.from_base_model(
            config.base_model,
            config.family,
            dtype=_DTYPES[config.dtype],
            device=context.device,
            seed=config.seed,
            **fields,
        )
    if needs_images and not model.adapter.supports_images:
        raise ValueError(
            f"the training data has images but family {model.config.family!r} is text-only; "
            "train a vision-language family (qwen2_vl, qwen2_5_vl, idefics3) or use text-only data"
        )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Return the transformer blocks to shard one by one (the longest ``ModuleList``)."""
    lists = [m for m in model.backbone.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def shard_model(model: torch.nn.Module, context: DistributedContext) -> None:
    """FSDP2: ``fully_shard`` every decoder layer, then the whole model (in place)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(context.device.type, (context.world_size,))
    for layer in _decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def make_optimizer(
    parameters: list[torch.nn.Parameter], config: TrainingConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a warm-up + decay schedule over ``total_steps``."""
    if not parameters:
        raise ValueError("the model has no trainable parameters (lora_r=0 and no meta tokens?)")
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    warmup, kind = config.warmup_steps, config.lr_scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def export_model(
    model: Any, directory: Path, context: DistributedContext, export_twin: Any = None
) -> Path:
    """``save_pretrained`` into ``directory`` through a temporary folder (rank 0 writes).

    Under FSDP2 pass ``export_twin``: a zero-argument callable returning an
    unsharded copy of the model on rank 0's CPU. Every rank gathers the full
    trainable weights (LoRA, meta tokens, projection); rank 0 copies them into
    the twin and saves it (the frozen backbone weights are the same in both).
    """
    from metaembed.training.checkpoint import trainable_state_dict

    to_save = model
    if export_twin is not None:
        weights = trainable_state_dict(model, sharded=True)  # collective
        if context.is_main:
            to_save = export_twin()
            parameters = dict(to_save.named_parameters())
            with torch.no_grad():
                for name, tensor in weights.items():
                    parameters[name].copy_(tensor)
    if context.is_main:
        temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        to_save.save_pretrained(temporary)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(temporary, directory)
    barrier()
    return directory
