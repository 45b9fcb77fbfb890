"""Retrieval tasks on openclipart in MMEB's spirit, and a fixed train / held-out split by image.

Tasks (queries -> candidates; an instruction says what is asked, as in MMEB):

==================  ======================  =================================  ==============
task                query                   candidates                         relevant
==================  ======================  =================================  ==============
``t2i-title``       the title               held-out images                    same-title images
``t2i-keywords``    the keywords            held-out images                    that image
``t2i-description`` the description         held-out images                    that image
``i2t-title``       an image                distinct held-out titles           its title
``classification``  an image                the category names                 its category
==================  ======================  =================================  ==============

Design choices
--------------
- Only images with a *distinctive* title take part: the normalised title
  (lower case, ``_``/``-`` as spaces, trailing numbers and ``.svg`` dropped)
  is shared by at most ``max_title_share`` images. Openclipart has whole
  collections titled alike ("Lemon SVG theme", 431 images), which no model
  could tell apart from the title. Images sharing a title are all relevant.
- The split is by image: ``heldout_size`` eligible images drawn with
  ``random.Random(seed)`` from the list sorted by ``image_id``; the rest
  train. Train and held-out never share an image.
- Classification skips the ``unsorted`` folder (not a category) and uses
  readable names ("signs and symbols").

>>> normalise_title("Aircraft_3.svg")
'aircraft'
>>> category_label("signs_and_symbols")
'signs and symbols'
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from metaembed.data.openclipart import ClipartImage
from metaembed.items import Item

__all__ = [
    "ClipartSplit",
    "INSTRUCTIONS",
    "RetrievalTask",
    "TASK_NAMES",
    "build_tasks",
    "category_label",
    "eligible_images",
    "normalise_title",
    "split_images",
]

logger = logging.getLogger(__name__)

TASK_NAMES = ("t2i-title", "t2i-keywords", "t2i-description", "i2t-title", "classification")
"""All tasks, in table order."""

INSTRUCTIONS: dict[str, str] = {
    "t2i-title": "Find the clipart image with this title.",
    "t2i-keywords": "Find the clipart image tagged with these keywords.",
    "t2i-description": "Find the clipart image that matches this description.",
    "i2t-title": "Find the title of this clipart image.",
    "classification": "Which category does this clipart image belong to?",
}
"""Query instructions; candidates carry no instruction (shared across tasks)."""

MAX_KEYWORDS = 8
"""Keywords kept in a keyword query (the artist's first ones)."""


def normalise_title(title: str) -> str:
    """Lower case, ``_``/``-`` as spaces, trailing ``.svg``/``.png`` and numbers removed."""
    text = re.sub(r"\.(svg|png)$", "", title.strip().lower())
    text = re.sub(r"[_\-]+", " ", text)
    text = re.sub(r"[\s\d]+$", "", text)
    return " ".join(text.split())


def category_label(category: str) -> str:
    """Readable category name: folder name with ``_`` as spaces."""
    return category.replace("_", " ")


class EmptyTaskError(ValueError):
    """A task has no queries or no candidates."""


@dataclass(frozen=True)
class RetrievalTask:
    """One task: queries, candidates and graded relevance (trec_eval ``qrels``).

    Parameters
    ----------
    name : str
        One of :data:`TASK_NAMES`.
    query_ids, candidate_ids : tuple of str
        Ids, parallel to ``queries`` / ``candidates``.
    queries, candidates : tuple of Item
        What is encoded (images as file paths).
    qrels : dict
        ``{query_id: {candidate_id: 1}}``.
    """

    name: str
    query_ids: tuple[str, ...]
    queries: tuple[Item, ...]
    candidate_ids: tuple[str, ...]
    candidates: tuple[Item, ...]
    qrels: dict[str, dict[str, int]] = field(hash=False)

    def __post_init__(self) -> None:
        if len(self.query_ids) != len(self.queries) or len(self.candidate_ids) != len(
            self.candidates
        ):
            raise ValueError(f"task {self.name!r}: ids and items have different lengths")
        if not self.queries or not self.candidates:
            raise EmptyTaskError(
                f"task {self.name!r} has no queries or no candidates; use more held-out images"
            )


@dataclass(frozen=True)
class ClipartSplit:
    """Disjoint train and held-out images."""

    train: tuple[ClipartImage, ...]
    heldout: tuple[ClipartImage, ...]
    seed: int


def eligible_images(
    records: Sequence[ClipartImage], max_title_share: int = 5
) -> list[ClipartImage]:
    """Keep images whose normalised title has >= 3 characters and <= ``max_title_share`` users."""
    counts = Counter(normalise_title(r.title) for r in records)
    return [
        r
        for r in records
        if len(normalise_title(r.title)) >= 3
        and counts[normalise_title(r.title)] <= max_title_share
    ]


def split_images(
    records: Sequence[ClipartImage],
    heldout_size: int = 500,
    seed: int = 0,
    max_title_share: int = 5,
) -> ClipartSplit:
    """Split the eligible images by image, fixed by ``seed`` (see the module docstring).

    Raises ``ValueError`` when fewer than ``heldout_size + 1`` images are eligible.
    """
    eligible = sorted(eligible_images(records, max_title_share), key=lambda r: r.image_id)
    if heldout_size < 1 or heldout_size >= len(eligible):
        raise ValueError(
            f"heldout_size must be in [1, {len(eligible) - 1}] for {len(eligible)} eligible "
            "images, "
            f"got {heldout_size}"
        )
    order = list(range(len(eligible)))
    random.Random(seed).shuffle(order)
    heldout = sorted((eligible[i] for i in order[:heldout_size]), key=lambda r: r.image_id)
    train = sorted((eligible[i] for i in order[heldout_size:]), key=lambda r: r.image_id)
    return ClipartSplit(train=tuple(train), heldout=tuple(heldout), seed=seed)


def image_item(image: ClipartImage) -> Item:
    """Return the candidate / query item of an image (its PNG path, no text)."""
    return Item(image=image.png_path)


def keyword_text(image: ClipartImage) -> str:
    """Comma-separated first keywords (``""`` when there are none)."""
    return ", ".join(image.keywords[:MAX_KEYWORDS])


def _text_to_image(name: str, images: Sequence[ClipartImage], text_of) -> RetrievalTask:  # noqa: ANN001
    by_title: dict[str, list[str]] = {}
    for image in images:
        by_title.setdefault(normalise_title(image.title), []).append(image.image_id)
    query_ids, queries, qrels = [], [], {}
    for image in images:
        text = text_of(image)
        if not text:
            continue
        relevant = (
            by_title[normalise_title(image.title)] if name == "t2i-title" else [image.image_id]
        )
        if name == "t2i-title" and image.image_id != relevant[0]:
            continue  # one query per distinct title
        query_ids.append(image.image_id)
        queries.append(Item(text=text, instruction=INSTRUCTIONS[name]))
        qrels[image.image_id] = {candidate: 1 for candidate in relevant}
    candidate_ids = tuple(image.image_id for image in images)
    return RetrievalTask(
        name,
        tuple(query_ids),
        tuple(queries),
        candidate_ids,
        tuple(image_item(i) for i in images),
        qrels,
    )


def _image_to_title(images: Sequence[ClipartImage]) -> RetrievalTask:
    titles: dict[str, str] = {}  # normalised title -> the first spelling seen
    for image in images:
        titles.setdefault(normalise_title(image.title), image.title.strip())
    candidate_ids = tuple(f"title:{key}" for key in titles)
    candidates = tuple(Item(text=text) for text in titles.values())
    qrels = {image.image_id: {f"title:{normalise_title(image.title)}": 1} for image in images}
    queries = tuple(
        Item(image=image.png_path, instruction=INSTRUCTIONS["i2t-title"]) for image in images
    )
    return RetrievalTask("i2t-title", tuple(qrels), queries, candidate_ids, candidates, qrels)


def _classification(images: Sequence[ClipartImage], categories: Sequence[str]) -> RetrievalTask:
    kept = [image for image in images if image.category in categories]
    candidate_ids = tuple(f"category:{c}" for c in categories)
    candidates = tuple(Item(text=category_label(c)) for c in categories)
    qrels = {image.image_id: {f"category:{image.category}": 1} for image in kept}
    queries = tuple(
        Item(image=image.png_path, instruction=INSTRUCTIONS["classification"]) for image in kept
    )
    return RetrievalTask("classification", tuple(qrels), queries, candidate_ids, candidates, qrels)


def all_categories(records: Sequence[ClipartImage]) -> tuple[str, ...]:
    """Sorted category folders, without ``unsorted``."""
    return tuple(sorted({r.category for r in records} - {"unsorted"}))


def build_tasks(
    images: Sequence[ClipartImage],
    names: Sequence[str] = TASK_NAMES,
    categories: Sequence[str] | None = None,
) -> dict[str, RetrievalTask]:
    """Build the named tasks over ``images`` (usually the held-out split).

    ``categories`` are the classification candidates (default: those of ``images``).
    A task left without queries (e.g. no held-out image has a description) is
    skipped with a warning.
    """
    unknown = sorted(set(names) - set(TASK_NAMES))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {TASK_NAMES}")
    categories = tuple(categories) if categories is not None else all_categories(images)
    text_of = {
        "t2i-title": lambda image: image.title.strip(),
        "t2i-keywords": keyword_text,
        "t2i-description": lambda image: image.description.strip(),
    }
    tasks: dict[str, RetrievalTask] = {}
    for name in names:
        try:
            if name in text_of:
                tasks[name] = _text_to_image(name, images, text_of[name])
            elif name == "i2t-title":
                tasks[name] = _image_to_title(images)
            else:
                tasks[name] = _classification(images, categories)
        except EmptyTaskError as error:
            logger.warning("skipping task %s: %s", name, error)
    return tasks
