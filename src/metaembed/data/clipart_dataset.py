"""Openclipart parsed, split by image, flattened on white, held-out tasks built.

One function, :func:`prepare_clipart_data`, used by both the demo runner and
the training source (:func:`metaembed.data.clipart_training.training_examples`),
so both see exactly the same split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from metaembed.data.clipart_tasks import RetrievalTask, all_categories, build_tasks, split_images
from metaembed.data.openclipart import ClipartImage, load_openclipart, materialise_rgb

__all__ = ["ClipartData", "prepare_clipart_data"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipartData:
    """Train and held-out images (flattened copies) and the held-out tasks.

    Attributes
    ----------
    train, heldout : tuple of ClipartImage
        ``png_path`` points at the RGB copies the models see.
    categories : tuple of str
        Classification labels (every category folder but ``unsorted``).
    tasks : dict of str to RetrievalTask
        Held-out tasks (see :mod:`metaembed.data.clipart_tasks`).
    """

    train: tuple[ClipartImage, ...]
    heldout: tuple[ClipartImage, ...]
    categories: tuple[str, ...]
    tasks: dict[str, RetrievalTask]


def prepare_clipart_data(
    root: str | Path = "/usr/share/openclipart",
    cache: str | Path = "cache/openclipart",
    heldout_size: int = 500,
    split_seed: int = 0,
    max_title_share: int = 5,
    include_train: bool = True,
    show_progress: bool = False,
) -> ClipartData:
    """Parse (cached), split, flatten and build the held-out tasks.

    ``include_train=False`` skips flattening the train images (the demo run needs only held-out).
    """
    cache = Path(cache)
    records = load_openclipart(
        root, cache_path=cache / "metadata.json", show_progress=show_progress
    )
    split = split_images(
        records, heldout_size=heldout_size, seed=split_seed, max_title_share=max_title_share
    )
    heldout = tuple(materialise_rgb(split.heldout, cache, show_progress=show_progress))
    train = (
        tuple(materialise_rgb(split.train, cache, show_progress=show_progress))
        if include_train
        else ()
    )
    categories = all_categories(records)
    tasks = build_tasks(heldout, categories=categories)
    logger.info("openclipart split: %d train, %d held-out images", len(split.train), len(heldout))
    return ClipartData(train=train, heldout=heldout, categories=categories, tasks=tasks)
