r"""MMEB: load tasks in the Hub schema and score Precision@1 over each row's own candidates.

MMEB (``TIGER-Lab/MMEB-eval``) has one config per task, split ``test``; each row
is one query (``qry_inst``, ``qry_text``, ``qry_img_path``) with its own list of
candidates (``tgt_inst``, ``tgt_text``, ``tgt_img_path``), the first being the
positive. Design choices:

* the Phi-3-V placeholder ``<|image_1|>`` is removed from the text and the
  row's image is attached to the :class:`~metaembed.items.Item` instead, so
  each backbone inserts its own image tokens; a placeholder with no image path
  is an error;
* image paths are resolved against an images root (explicit, or the data
  folder, ``eval_images/``, ``images/``, or the task folder);
* rows with a missing image or an empty candidate list raise a ``ValueError``
  naming task and row, unless ``on_invalid="skip"``: they are then dropped and
  counted in :attr:`MMEBTask.skipped`, never scored as hits or misses;
* a tie between the positive and a negative counts as a miss (a constant
  encoder scores 0, not 1).

Task groups follow the paper's table 1: four meta-tasks, and the 20
in-distribution tasks of MMEB-train (IND) against 16 out-of-distribution (OOD).

>>> split_placeholder("<|image_1|>\nRepresent the given image for classification")
('Represent the given image for classification', True)
>>> MMEB_TASKS["RefCOCO"], "RefCOCO" in IND_TASKS
('Grounding', False)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaembed.budget import Budget
from metaembed.items import Item

__all__ = [
    "MMEB_HUB_ID",
    "MMEB_TASKS",
    "META_TASKS",
    "IND_TASKS",
    "IMAGE_PLACEHOLDER",
    "MMEBRow",
    "MMEBTask",
    "split_placeholder",
    "rows_to_task",
    "load_mmeb",
    "precision_at_1",
]

logger = logging.getLogger(__name__)

MMEB_HUB_ID = "TIGER-Lab/MMEB-eval"
IMAGE_PLACEHOLDER = "<|image_1|>"
TASKS_FILE = "tasks.json"
"""Optional file of a local folder: ``{task: {"meta_task": ..., "split": "IND" | "OOD"}}``."""
META_TASKS = ("Classification", "VQA", "Retrieval", "Grounding")

_TASKS_BY_META = {
    "Classification": "ImageNet-1K N24News HatefulMemes VOC2007 SUN397 Place365 ImageNet-A "
    "ImageNet-R "
    "ObjectNet Country211",
    "VQA": "OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA Visual7W ScienceQA VizWiz GQA TextVQA",
    "Retrieval": "VisDial CIRR VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA "
    "FashionIQ "
    "Wiki-SS-NQ OVEN EDIS",
    "Grounding": "MSCOCO RefCOCO RefCOCO-Matching Visual7W-Pointing",
}
MMEB_TASKS: dict[str, str] = {
    task: meta for meta, names in _TASKS_BY_META.items() for task in names.split()
}
"""The 36 MMEB tasks (Hub config names) and their meta-task."""

IND_TASKS = frozenset(
    "ImageNet-1K N24News HatefulMemes VOC2007 SUN397 OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA "
    "Visual7W VisDial CIRR VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA "
    "MSCOCO".split()
)
"""The 20 tasks whose training splits form MMEB-train (in-distribution); the other 16 are OOD."""


def split_placeholder(text: str | None) -> tuple[str | None, bool]:
    """Remove ``<|image_1|>`` (and the whitespace after it); report whether it was there."""
    if text is None:
        return None, False
    if IMAGE_PLACEHOLDER not in text:
        return text, False
    parts = text.split(IMAGE_PLACEHOLDER)
    cleaned = parts[0] + "".join(part.lstrip() for part in parts[1:])
    return cleaned.strip() or None, True


@dataclass(frozen=True)
class MMEBRow:
    """One query with its own candidates (``candidates[0]`` is the positive)."""

    query: Item
    candidates: tuple[Item, ...]
    row_index: int


@dataclass(frozen=True)
class MMEBTask:
    """One MMEB task ready to encode.

    Attributes
    ----------
    name, meta_task : str
        Task name and its meta-task (``"Other"`` for tasks outside MMEB).
    split : str or None
        ``"IND"``, ``"OOD"`` or ``None`` when unknown.
    rows : tuple of MMEBRow
        The valid rows.
    skipped : dict[str, int]
        Rows dropped under ``on_invalid="skip"``, by reason.
    """

    name: str
    meta_task: str
    split: str | None
    rows: tuple[MMEBRow, ...]
    skipped: dict[str, int] = field(default_factory=dict)


class _InvalidRow(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _resolve_image(relative: str, roots: Sequence[Path], where: str) -> Path:
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(root) for root in roots) or "(no images root)"
    raise _InvalidRow(
        "missing_image",
        f"{where}: image {relative!r} not found under {searched}; extract the benchmark's images "
        "there or pass images_root, or use on_invalid='skip' to drop such rows",
    )


def _make_item(text: Any, image: Any, instruction: Any, roots: Sequence[Path], where: str) -> Item:
    clean_text, had_placeholder = split_placeholder(text if isinstance(text, str) else None)
    clean_instruction, inst_placeholder = split_placeholder(
        instruction if isinstance(instruction, str) else None
    )
    image = image.strip() if isinstance(image, str) else ""
    if (had_placeholder or inst_placeholder) and not image:
        raise _InvalidRow(
            "placeholder_without_image",
            f"{where}: text contains {IMAGE_PLACEHOLDER} but the image path is empty; fix the row",
        )
    item = Item(
        text=clean_text,
        image=_resolve_image(image, roots, where) if image else None,
        instruction=clean_instruction or None,
    )
    if item.is_empty:
        raise _InvalidRow("empty_item", f"{where}: neither text nor image; fix or drop the row")
    return item


def _parse_row(row: dict[str, Any], index: int, task: str, roots: Sequence[Path]) -> MMEBRow:
    where = f"task {task!r} row {index}"
    query = _make_item(
        row.get("qry_text"), row.get("qry_img_path"), row.get("qry_inst"), roots, where + " query"
    )
    texts = list(row.get("tgt_text") or [])
    images = row.get("tgt_img_path")
    images = [""] * len(texts) if images is None else list(images)
    if len(images) != len(texts):
        raise ValueError(
            f"{where}: tgt_text has {len(texts)} entries but tgt_img_path has {len(images)}; "
            "they must be parallel lists"
        )
    if not texts:
        raise _InvalidRow("empty_candidates", f"{where}: the candidate list (tgt_text) is empty")
    candidates = tuple(
        _make_item(text, image, row.get("tgt_inst"), roots, f"{where} candidate {j}")
        for j, (text, image) in enumerate(zip(texts, images, strict=True))
    )
    return MMEBRow(query=query, candidates=candidates, row_index=index)


def rows_to_task(
    name: str,
    rows: Sequence[dict[str, Any]],
    image_roots: Sequence[Path] = (),
    *,
    meta_task: str | None = None,
    split: str | None = None,
    on_invalid: str = "error",
) -> MMEBTask:
    """Turn raw MMEB rows (dicts in the Hub schema) into an :class:`MMEBTask`.

    ``meta_task`` and ``split`` default to the MMEB registry (``"Other"`` /
    ``None`` for unknown names). ``on_invalid`` is ``"error"`` or ``"skip"``.
    """
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    parsed: list[MMEBRow] = []
    skipped: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            parsed.append(_parse_row(row, index, name, image_roots))
        except _InvalidRow as error:
            if on_invalid == "error":
                raise ValueError(str(error)) from None
            skipped[error.reason] = skipped.get(error.reason, 0) + 1
    if skipped:
        logger.warning(
            "task %s: skipped %s invalid rows (%s)", name, sum(skipped.values()), skipped
        )
    if not parsed:
        raise ValueError(f"task {name!r} has no valid rows ({len(rows)} read, skipped {skipped})")
    if split is None and name in MMEB_TASKS:
        split = "IND" if name in IND_TASKS else "OOD"
    return MMEBTask(name, meta_task or MMEB_TASKS.get(name, "Other"), split, tuple(parsed), skipped)


def _read_task_metadata(folder: Path) -> dict[str, dict[str, str]]:
    from metaembed.evaluation.io import read_json

    path = folder / TASKS_FILE
    return read_json(path) if path.is_file() else {}


def load_mmeb(
    data: str | Path = MMEB_HUB_ID,
    tasks: Sequence[str] | None = None,
    *,
    images_root: str | Path | None = None,
    revision: str | None = None,
    on_invalid: str = "error",
) -> tuple[list[MMEBTask], str]:
    """Load MMEB tasks from the Hub or from a local folder in the Hub layout.

    Parameters
    ----------
    data : str or Path
        A Hub id (default ``TIGER-Lab/MMEB-eval``) or a folder with one
        sub-folder of parquet files per task. A local folder may hold a
        ``tasks.json`` mapping task names to ``{"meta_task": ..., "split": ...}``
        for tasks outside MMEB (the synthetic benchmark does).
    tasks : sequence of str, optional
        Task names; default every task of the folder, or the 36 MMEB tasks.
    images_root : str or Path, optional
        Folder the image paths are relative to (for a Hub id: where its
        ``images.zip`` was extracted). Local folders also try ``<data>``,
        ``<data>/eval_images``, ``<data>/images`` and ``<data>/<task>``.
    revision : str, optional
        Hub revision (branch, tag or commit).
    on_invalid : {"error", "skip"}
        What to do with rows that have missing images or no candidates.

    Returns
    -------
    tasks : list of MMEBTask
    revision : str
        Cache key of the data version (Hub revision, or a fingerprint of the local files).
    """
    from metaembed.evaluation import sources

    extra_roots = [Path(images_root).expanduser()] if images_root is not None else []
    if sources.is_local(data):
        folder = Path(data).expanduser()
        metadata = _read_task_metadata(folder)
        names = list(tasks) if tasks else sources.list_local_configs(folder)
        if not names:
            raise ValueError(f"no task folders with parquet files in {str(folder)!r}")
        loaded = []
        for name in names:
            if not (folder / name).is_dir():
                raise ValueError(
                    f"task {name!r} not found in {str(folder)!r}; "
                    f"present: {sources.list_local_configs(folder)}"
                )
            roots = [*extra_roots, folder, folder / "eval_images", folder / "images", folder / name]
            info = metadata.get(name, {})
            rows = sources.read_parquet_rows(folder / name)
            loaded.append(
                rows_to_task(
                    name,
                    rows,
                    roots,
                    meta_task=info.get("meta_task"),
                    split=info.get("split"),
                    on_invalid=on_invalid,
                )
            )
        return loaded, sources.local_revision(folder)
    if not extra_roots:
        raise ValueError(
            f"{data!r} is not a local folder, so it is read from the Hub; its images ship "
            "separately "
            "(images.zip): download and extract them, then pass images_root (--images DIR)"
        )
    names = list(tasks) if tasks else list(MMEB_TASKS)
    loaded = [
        rows_to_task(
            name,
            sources.load_hub_rows(str(data), name, "test", revision),
            extra_roots,
            on_invalid=on_invalid,
        )
        for name in names
    ]
    return loaded, sources.hub_revision(str(data), revision)


def precision_at_1(
    query_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    query_positions: Sequence[int],
    candidate_positions: Sequence[Sequence[int]],
    budget: Budget,
) -> float:
    """Fraction of rows whose positive (first candidate) strictly beats every other candidate.

    Parameters
    ----------
    query_embeddings : torch.Tensor, shape (Nq, Rq, D)
        Distinct query embeddings.
    candidate_embeddings : torch.Tensor, shape (Nc, Rc, D)
        Distinct candidate embeddings.
    query_positions : sequence of int
        Row of ``query_embeddings`` for each MMEB row.
    candidate_positions : sequence of sequence of int
        Rows of ``candidate_embeddings`` for each MMEB row's candidate list.
    budget : Budget
        Prefix of vectors used for scoring.

    >>> q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])            # 2 queries, 1 vector
    >>> c = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    >>> precision_at_1(q, c, [0, 1], [[0, 1], [0, 1]], Budget(1, 1))  # row 2's positive loses
    0.5
    >>> precision_at_1(q, c, [0], [[0, 2]], Budget(1, 1))          # a tie is a miss
    0.0
    """
    from metaembed.maxsim import maxsim

    hits = 0
    for query_row, candidate_rows in zip(query_positions, candidate_positions, strict=True):
        index = torch.as_tensor(list(candidate_rows), dtype=torch.long)
        scores = maxsim(
            query_embeddings[query_row : query_row + 1], candidate_embeddings[index], budget
        )[0]  # (n,)
        if scores.numel() == 1 or bool(scores[0] > scores[1:].max()):
            hits += 1
    return hits / len(query_positions)
