"""Training pairs from the openclipart train split: the five tasks, batched one task at a time.

Every train image gives up to five (query, positive) pairs, one per task of
:mod:`metaembed.data.clipart_tasks`, with the same instructions as at test
time. Batches hold pairs of a single task (as MMEB-style training does), and
never two pairs whose positives would be equal or interchangeable: distinct
normalised titles within a batch, and distinct categories in classification
batches (so the in-batch negatives of InfoNCE are true negatives).

:func:`write_mmeb_jsonl` writes the same pairs in MMEB-train's schema
(``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``) for trainers
that read it.

>>> from metaembed.data.openclipart import ClipartImage
>>> image = ClipartImage("food/apple", "/x/apple.png", "Red apple", ("fruit",), "", "food", "")
>>> [pair.task for pair in training_pairs([image])]
['t2i-title', 't2i-keywords', 'i2t-title', 'classification']
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from metaembed.data.clipart_tasks import INSTRUCTIONS, category_label, keyword_text, normalise_title
from metaembed.data.openclipart import ClipartImage
from metaembed.items import Item

__all__ = ["TrainingPair", "training_pairs", "task_batches", "write_mmeb_jsonl"]

MMEB_IMAGE_TOKEN = "<|image_1|>"
"""MMEB-train's image placeholder in ``qry`` / ``pos_text``."""


@dataclass(frozen=True)
class TrainingPair:
    """One (query, positive) pair; ``key`` identifies what the positive is (for de-duplication)."""

    task: str
    query: Item
    positive: Item
    key: str


def training_pairs(images: Sequence[ClipartImage]) -> list[TrainingPair]:
    """All pairs of ``images`` (the train split), in image order then task order."""
    pairs: list[TrainingPair] = []
    for image in images:
        title_key = normalise_title(image.title)
        picture = Item(image=image.png_path)
        texts = {
            "t2i-title": image.title.strip(),
            "t2i-keywords": keyword_text(image),
            "t2i-description": image.description.strip(),
        }
        for task, text in texts.items():
            if text:
                pairs.append(
                    TrainingPair(
                        task, Item(text=text, instruction=INSTRUCTIONS[task]), picture, title_key
                    )
                )
        if image.title.strip():
            query = Item(image=image.png_path, instruction=INSTRUCTIONS["i2t-title"])
            pairs.append(
                TrainingPair("i2t-title", query, Item(text=image.title.strip()), title_key)
            )
        if image.category != "unsorted":
            query = Item(image=image.png_path, instruction=INSTRUCTIONS["classification"])
            positive = Item(text=category_label(image.category))
            pairs.append(TrainingPair("classification", query, positive, image.category))
    return pairs


def _fill_batches(
    pairs: list[TrainingPair], batch_size: int, min_size: int
) -> list[list[TrainingPair]]:
    """Greedy: put each pair in the first open batch that has no pair with the same key.

    Left-over batches smaller than ``min_size`` are dropped (few in-batch negatives, and
    a step costs about as much as a full one).
    """
    batches: list[list[TrainingPair]] = []
    keys: list[set[str]] = []
    for pair in pairs:
        for batch, taken in zip(batches, keys, strict=False):
            if len(batch) < batch_size and pair.key not in taken:
                batch.append(pair)
                taken.add(pair.key)
                break
        else:
            batches.append([pair])
            keys.append({pair.key})
    return [batch for batch in batches if len(batch) >= min_size]


def task_batches(
    pairs: Sequence[TrainingPair],
    batch_size: int,
    seed: int = 0,
    epochs: int = 1,
    task_fractions: Mapping[str, float] | None = None,
    min_batch_size: int = 2,
) -> Iterator[list[TrainingPair]]:
    """Yield single-task batches with distinct keys, shuffled with ``seed``, for ``epochs`` passes.

    Classification batches are capped at the number of categories (distinct keys).
    ``task_fractions`` keeps a random fraction of a task's pairs in each epoch
    (e.g. ``{"classification": 0.3}``: its small batches would otherwise be
    half of all steps). Batches smaller than ``min_batch_size`` are dropped.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
    rng = random.Random(seed)
    by_task: dict[str, list[TrainingPair]] = {}
    for pair in pairs:
        by_task.setdefault(pair.task, []).append(pair)
    for _ in range(epochs):
        batches: list[list[TrainingPair]] = []
        for task in sorted(by_task):
            shuffled = list(by_task[task])
            rng.shuffle(shuffled)
            fraction = (task_fractions or {}).get(task, 1.0)
            shuffled = shuffled[: max(2, round(fraction * len(shuffled)))]
            batches.extend(_fill_batches(shuffled, batch_size, max(2, min_batch_size)))
        rng.shuffle(batches)
        yield from batches


def _mmeb_text(item: Item) -> str:
    text = "\n".join(part for part in (item.instruction, item.text) if part)
    return f"{MMEB_IMAGE_TOKEN}\n{text}" if item.image is not None else text


def _absolute(image: object) -> str:
    return str(Path(str(image)).resolve()) if image else ""


def write_mmeb_jsonl(pairs: Sequence[TrainingPair], path: str | os.PathLike[str]) -> Path:
    """Write ``pairs`` as MMEB-train rows (image paths absolute), atomically; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for pair in pairs:
            row = {
                "task": pair.task,
                "qry": _mmeb_text(pair.query),
                "qry_image_path": _absolute(pair.query.image),
                "pos_text": _mmeb_text(pair.positive),
                "pos_image_path": _absolute(pair.positive.image),
            }
            handle.write(json.dumps(row) + "\n")
    os.replace(temporary, target)
    return target
