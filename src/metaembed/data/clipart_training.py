"""Training pairs from the openclipart train split: the generated source ``openclipart``.

Every train image gives up to five (query, positive) pairs, one per task of
:mod:`metaembed.data.clipart_tasks`, with the same instructions as at test
time, as :class:`~metaembed.training.data.TrainingExample` with the task as
``subset`` and the normalised title (the category for classification) as
``positive_id``. With ``batch_sampler: subset`` the trainer then builds
single-task batches (as MMEB-style training does) that never hold two pairs
whose positives are equal or interchangeable, so the in-batch negatives of
InfoNCE are true negatives. ``metaembed train`` reads them through
``train_data: [{source: openclipart, ...}]`` (:func:`training_examples`).

:func:`write_mmeb_jsonl` writes the same pairs in MMEB-train's schema
(``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``) for trainers
that read it.

>>> from metaembed.data.openclipart import ClipartImage
>>> image = ClipartImage("food/apple", "/x/apple.png", "Red apple", ("fruit",), "", "food", "")
>>> [pair.subset for pair in training_pairs([image])]
['t2i-title', 't2i-keywords', 'i2t-title', 'classification']
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from metaembed.data.clipart_tasks import INSTRUCTIONS, category_label, keyword_text, normalise_title
from metaembed.data.openclipart import ClipartImage
from metaembed.items import Item
from metaembed.training.data import TrainingExample

__all__ = ["training_examples", "training_pairs", "write_mmeb_jsonl"]

MMEB_IMAGE_TOKEN = "<|image_1|>"
"""MMEB-train's image placeholder in ``qry`` / ``pos_text``."""


def _pair(task: str, query: Item, positive: Item, positive_id: str) -> TrainingExample:
    return TrainingExample(
        query, positive, subset=task, source="openclipart", positive_id=positive_id
    )


def training_pairs(images: Sequence[ClipartImage]) -> list[TrainingExample]:
    """All (query, positive) pairs of ``images`` (the train split), in image then task order.

    ``subset`` is the task; ``positive_id`` is the normalised title (the category for
    classification), so that images sharing a title never meet in one batch.
    """
    pairs: list[TrainingExample] = []
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
                query = Item(text=text, instruction=INSTRUCTIONS[task])
                pairs.append(_pair(task, query, picture, title_key))
        if image.title.strip():
            query = Item(image=image.png_path, instruction=INSTRUCTIONS["i2t-title"])
            pairs.append(_pair("i2t-title", query, Item(text=image.title.strip()), title_key))
        if image.category != "unsorted":
            query = Item(image=image.png_path, instruction=INSTRUCTIONS["classification"])
            positive = Item(text=category_label(image.category))
            pairs.append(_pair("classification", query, positive, image.category))
    return pairs


def training_examples(
    root: str = "/usr/share/openclipart",
    cache: str = "cache/openclipart",
    heldout_size: int = 500,
    split_seed: int = 0,
    max_title_share: int = 5,
    max_train_images: int | None = None,
    sample_seed: int = 0,
    show_progress: bool = False,
) -> list[TrainingExample]:
    """Build the generated training source ``{source: openclipart, ...}`` of ``metaembed train``.

    Builds the split of :func:`~metaembed.data.clipart_dataset.prepare_clipart_data`
    (the demo rebuilds the same one from the model's saved training config),
    keeps a ``sample_seed``-ed subset of ``max_train_images`` train images
    (CPU time) and returns :func:`training_pairs` of them.
    """
    from metaembed.data.clipart_dataset import prepare_clipart_data

    data = prepare_clipart_data(
        root,
        cache,
        heldout_size=heldout_size,
        split_seed=split_seed,
        max_title_share=max_title_share,
        show_progress=show_progress,
    )
    images = list(data.train)
    if max_train_images is not None and len(images) > max_train_images:
        images = random.Random(sample_seed).sample(images, max_train_images)
    return training_pairs(images)


def _mmeb_text(item: Item) -> str:
    text = "\n".join(part for part in (item.instruction, item.text) if part)
    return f"{MMEB_IMAGE_TOKEN}\n{text}" if item.image is not None else text


def _absolute(image: object) -> str:
    return str(Path(str(image)).resolve()) if image else ""


def write_mmeb_jsonl(pairs: Sequence[TrainingExample], path: str | os.PathLike[str]) -> Path:
    """Write ``pairs`` as MMEB-train rows (image paths absolute), atomically; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for pair in pairs:
            row = {
                "task": pair.subset,
                "qry": _mmeb_text(pair.query),
                "qry_image_path": _absolute(pair.query.image),
                "pos_text": _mmeb_text(pair.positive),
                "pos_image_path": _absolute(pair.positive.image),
            }
            handle.write(json.dumps(row) + "\n")
    os.replace(temporary, target)
    return target
