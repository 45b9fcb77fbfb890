"""Training the demo model: a minimal MMR loop on the openclipart train split.

This is the small, self-contained loop the shipped demo adapter was trained
with (``metaembed demo --train``): single-task batches with in-batch
negatives (:func:`metaembed.data.clipart_training.task_batches`),
:class:`metaembed.losses.MMRLoss` over the nested groups, AdamW with linear
warm-up then a constant rate (so every checkpoint is
the end of a shorter run with the same seed), gradient clipping, and a checkpoint every
``checkpoint_every`` steps (so a run stopped early still leaves a usable
model). It runs on one CPU thread in tens of minutes; the general trainer
(``metaembed train``) covers GradCache, DDP, resume and the rest.

The same config and seed give the same model (CPU, one thread).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DemoTrainingConfig", "DemoTrainingResult", "train_demo_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Everything that defines the demo model and its training (see the YAML config)."""

    base_model: str = "efficientnet-lite0+smollm2-135m-instruct;layers=6;grid=3;prompt=plain"
    output_dir: str = "models/demo"
    num_query_tokens: int = 8
    num_candidate_tokens: int = 16
    groups: tuple[str, ...] = ("1x1", "2x4", "4x8", "8x16")
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_length: int = 48
    temperature: float = 0.03
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    batch_size: int = 32
    min_batch_size: int = 8
    max_steps: int = 200
    checkpoint_every: int = 25
    seed: int = 0
    heldout_size: int = 500
    split_seed: int = 0
    max_title_share: int = 5
    max_train_images: int | None = 1200
    fit_projector: bool = False
    task_fractions: Mapping[str, float] = field(default_factory=lambda: {"classification": 0.3})
    openclipart_root: str = "/usr/share/openclipart"
    data_cache: str = "cache/openclipart"

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> DemoTrainingConfig:
        """Read a YAML file (keys are field names; unknown keys raise ``ValueError``)."""
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        data.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown demo training keys {unknown}; known: {sorted(known)}"
            )
        if "groups" in data:
            data["groups"] = tuple(str(group) for group in data["groups"])
        return cls(**data)


@dataclass
class DemoTrainingResult:
    """What a run did: steps, wall time, the loss history and where the model is."""

    output_dir: Path
    steps: int
    seconds: float
    history: list[dict[str, float]]


TRAINING_CONFIG_FILENAME = "demo_training.json"
"""The training config saved next to the model (the demo reads its split settings from it)."""


def _save_config(config: DemoTrainingConfig, steps: int) -> None:
    import json

    from metaembed.model.config import write_text_atomic

    data = dataclasses.asdict(config)
    data["task_fractions"] = dict(config.task_fractions)
    data["steps_done"] = steps
    target = Path(config.output_dir) / TRAINING_CONFIG_FILENAME
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _build_model(config: DemoTrainingConfig) -> Any:
    from metaembed.model.modeling import MetaEmbedModel

    return MetaEmbedModel.from_base_model(
        config.base_model,
        family="composite",
        seed=config.seed,
        num_query_tokens=config.num_query_tokens,
        num_candidate_tokens=config.num_candidate_tokens,
        groups=tuple(config.groups),
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        max_length=config.max_length,
    )


def _learning_rate_factor(step: int, config: DemoTrainingConfig) -> float:
    """Linear warm-up, then constant: a checkpoint at step k equals a run with ``max_steps=k``."""
    return min(1.0, (step + 1) / max(1, config.warmup_steps))


def warm_start_projector(model: Any, images: Any) -> None:
    """Fit the composite's linear projector on (image, title + keywords) train pairs."""
    from metaembed.backbones.composite import fit_projector
    from metaembed.data.clipart_tasks import keyword_text
    from metaembed.demo.runner import image_features

    features = image_features(model, [image.png_path for image in images])  # (N, G, C)
    tokenizer = model.adapter.tokenizer
    texts = [f"{image.title} {keyword_text(image)}".strip() for image in images]
    token_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    fit_projector(model.adapter.composite_model(), features, token_ids)
    logger.info("projector warm-started on %d images", len(images))


def train_demo_model(
    config: DemoTrainingConfig,
    batches: Any,
    on_step: Callable[[dict[str, float]], None] | None = None,
    warm_start_images: Any = None,
) -> DemoTrainingResult:
    """Train from ``batches`` (an iterable of lists of :class:`TrainingPair`) and save the model.

    Parameters
    ----------
    config : DemoTrainingConfig
        Model and optimisation settings; the model is saved to ``config.output_dir``.
    batches : iterable of list of TrainingPair
        Single-task batches, e.g. from :func:`metaembed.data.clipart_training.task_batches`;
        training stops after ``config.max_steps`` batches or when they run out.
    on_step : callable, optional
        Called with each step's record (``step``, ``loss``, ``loss_<group>``, ``seconds``).
    """
    from metaembed.losses.mmr import MMRLoss

    torch.manual_seed(config.seed)
    model = _build_model(config).train()
    if warm_start_images is not None:
        warm_start_projector(model, warm_start_images)
    loss_function = MMRLoss(groups=config.groups, temperature=config.temperature)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, config)
    )
    logger.info(
        "training %d tensors (%d values)", len(parameters), sum(p.numel() for p in parameters)
    )
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    for batch in batches:
        if step >= config.max_steps:
            break
        query_batch = model.prepare([pair.query for pair in batch], "query")
        positive_batch = model.prepare([pair.positive for pair in batch], "candidate")
        query_embeddings = model.embed(query_batch, "query")  # (B, R_q, D)
        positive_embeddings = model.embed(positive_batch, "candidate")  # (B, R_c, D)
        output = loss_function(query_embeddings, positive_embeddings)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        record = {
            "batch_size": float(len(batch)),
            "step": float(step),
            "loss": output.loss.item(),
            "seconds": time.perf_counter() - start,
        }
        record.update(
            {f"loss_{group}": value.item() for group, value in output.group_losses.items()}
        )
        history.append(record)
        if on_step is not None:
            on_step(record)
        if step % config.checkpoint_every == 0:
            model.save_pretrained(config.output_dir, save_base_model=config.fit_projector)
            _save_config(config, step)
    if step == 0:
        raise ValueError(
            "no training batch: the data gave no batch of at least min_batch_size pairs; "
            "lower min_batch_size or use more training images"
        )
    model.save_pretrained(config.output_dir, save_base_model=config.fit_projector)
    _save_config(config, step)
    return DemoTrainingResult(Path(config.output_dir), step, time.perf_counter() - start, history)


def train_from_config(
    config: DemoTrainingConfig,
    on_step: Callable[[dict[str, float]], None] | None = None,
    show_progress: bool = False,
) -> DemoTrainingResult:
    """Prepare the split (:func:`~metaembed.demo.dataset.prepare_demo_data`) and train on it."""
    from metaembed.data.clipart_training import task_batches, training_pairs

    train_images = _train_images(config, show_progress)
    pairs = training_pairs(train_images)
    epochs = 1 + config.max_steps * config.batch_size // max(1, len(pairs))
    batches = task_batches(
        pairs,
        config.batch_size,
        seed=config.seed,
        epochs=epochs,
        task_fractions=dict(config.task_fractions),
        min_batch_size=config.min_batch_size,
    )
    warm_start = train_images if config.fit_projector else None
    return train_demo_model(config, batches, on_step=on_step, warm_start_images=warm_start)


def _train_images(config: DemoTrainingConfig, show_progress: bool = False) -> list[Any]:
    """Return the train images of ``config``: its split, then a seeded subset."""
    from metaembed.demo.dataset import prepare_demo_data

    data = prepare_demo_data(
        config.openclipart_root,
        config.data_cache,
        heldout_size=config.heldout_size,
        split_seed=config.split_seed,
        max_title_share=config.max_title_share,
        show_progress=show_progress,
    )
    train_images = list(data.train)
    if config.max_train_images is not None and len(train_images) > config.max_train_images:
        train_images = random.Random(config.seed).sample(train_images, config.max_train_images)
    return train_images


def export_training_data(config: DemoTrainingConfig, path: str | os.PathLike[str]) -> Path:
    """Write the training pairs of ``config`` as MMEB-train JSONL (for ``metaembed train``)."""
    from metaembed.data.clipart_training import training_pairs, write_mmeb_jsonl

    train_images = _train_images(config)
    return write_mmeb_jsonl(training_pairs(train_images), path)


def fit_demo_baseline(config: DemoTrainingConfig, show_progress: bool = False) -> Path:
    """Fit the baseline's linear image map on the same train images and save it next to the model.

    Uses every (image, text) pair of the train subset (titles, keywords,
    descriptions, category names), MiniLM text vectors and the frozen encoder's
    grid-mean features (cached by the training run).
    """
    from metaembed.data.clipart_training import training_pairs
    from metaembed.demo.baselines import MiniLMEncoder, fit_linear_map, save_linear_map
    from metaembed.demo.runner import image_features
    from metaembed.model.modeling import MetaEmbedModel

    train_images = _train_images(config)
    pairs = [
        (pair.positive.image, pair.query.text)
        if pair.positive.image is not None
        else (pair.query.image, pair.positive.text)
        for pair in training_pairs(train_images)
    ]
    model = MetaEmbedModel.from_pretrained(config.output_dir)
    paths = list(dict.fromkeys(path for path, _ in pairs))
    features = image_features(model, paths, show_progress=show_progress).mean(
        dim=1
    )  # (N_images, C)
    row_of = {path: row for row, path in enumerate(paths)}
    texts = list(dict.fromkeys(text for _, text in pairs))
    distinct = MiniLMEncoder().encode(texts, show_progress=show_progress)  # (N_texts, 384)
    text_row = {text: row for row, text in enumerate(texts)}
    text_vectors = distinct[[text_row[text] for _, text in pairs]]  # (N_pairs, 384)
    pair_features = features[[row_of[path] for path, _ in pairs]]  # (N_pairs, C)
    image_map = fit_linear_map(pair_features, text_vectors, seed=config.seed)
    return save_linear_map(image_map, config.output_dir)
