r"""Training examples (query, positive, hard negatives) read from JSONL, Parquet or the Hub.

Three row schemas are understood (``format: auto`` picks one from the columns):

* ``mmeb`` -- MMEB-train (``TIGER-Lab/MMEB-train``): ``qry``, ``qry_image_path``,
  ``pos_text``, ``pos_image_path`` and, in hard-negative versions, ``neg_text``,
  ``neg_image_path``. Image paths are relative to ``images_root`` (default: the
  data file's folder). Texts carry Phi-3-V's ``<|image_1|>``; it is removed and
  the image is attached to the :class:`~metaembed.items.Item`, so each backbone
  inserts its own image tokens where its processor wants them.
* ``vidore`` -- ViDoRe-train (``vidore/colpali_train_set``): ``query`` and the
  page ``image`` (a PIL image, ``{"bytes": ...}`` in Parquet, or a path);
  optional ``neg_image`` for a hard negative; ``source`` names the subset.
* ``generic`` -- ``query_text``, ``query_image``, ``query_instruction``,
  ``positive_*`` and ``negative_*`` (negatives may be lists).

Bad rows (a missing field, an image that is missing or unreadable, an
``<|image_1|>`` without an image) raise :class:`DataError` naming the source
and row number, or with ``on_invalid="skip"`` are dropped, counted and listed
in a warning -- never a crash deep inside torch.

A source can also be *generated* by a registered function instead of read
from files: ``{source: openclipart, heldout_size: 500, ...}`` calls the
function :data:`SOURCES` names with the other keys (the openclipart demo's
training pairs, built from the Debian package's images and metadata).

For backbones whose vision tower must run on every rank (FSDP), text-only
items can get a small white placeholder image (appendix A,
:func:`add_placeholder_images`).

>>> example = parse_row({"qry": "<|image_1|>\nWhat is shown?", "qry_image_path": "",
...                      "pos_text": "a cat", "pos_image_path": ""}, "mmeb", Path("."))
Traceback (most recent call last):
...
metaembed.training.data.DataError: query: text contains <|image_1|> but the image path is empty
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metaembed.items import Item

__all__ = [
    "DataError",
    "TrainingExample",
    "TrainingData",
    "parse_row",
    "detect_format",
    "subset_counts",
    "read_rows",
    "load_source",
    "load_training_data",
    "split_held_out",
    "add_placeholder_images",
    "SOURCES",
]

SOURCES = {"openclipart": "metaembed.data.clipart_training:training_examples"}
"""Generated sources: name -> ``module:function`` returning a list of :class:`TrainingExample`."""

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<|image_1|>"
FORMATS = ("auto", "mmeb", "vidore", "generic")


class DataError(ValueError):
    """A training row that cannot be used; the message names source and row."""


@dataclass(frozen=True)
class TrainingExample:
    """One query with its positive and hard negatives.

    ``subset`` names the part of the data it came from (used for the per-subset
    held-out split and by ``batch_sampler: subset``); ``source`` and ``row``
    locate it in the input files. ``positive_id`` says which positives are
    interchangeable (examples sharing it never meet in a ``subset`` batch);
    by default the positive's text and image.
    """

    query: Item
    positive: Item
    negatives: tuple[Item, ...] = ()
    subset: str = "default"
    source: str = ""
    row: int = -1
    positive_id: str | None = None


@dataclass
class TrainingData:
    """Examples loaded from every source, plus the rows skipped (``(source, row, reason)``)."""

    examples: list[TrainingExample]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)


# ------------------------------------------------------------------- rows
def _strip_placeholder(text: Any) -> tuple[str | None, bool]:
    if not isinstance(text, str):
        return None, False
    if IMAGE_PLACEHOLDER not in text:
        return text.strip() or None, False
    parts = text.split(IMAGE_PLACEHOLDER)
    cleaned = parts[0] + "".join(part.lstrip() for part in parts[1:])
    return cleaned.strip() or None, True


def _image(value: Any, images_root: Path, check: bool) -> Any:
    """Return a PIL image (lazily decoded) or a checked path; raise ``DataError``."""
    if isinstance(value, dict):  # Parquet / datasets image struct
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        from PIL import Image

        try:
            return Image.open(io.BytesIO(value))
        except Exception as error:  # noqa: BLE001 - PIL raises many kinds
            raise DataError(f"image bytes are unreadable ({error})") from None
    if isinstance(value, (str, Path)):
        path = Path(value) if Path(value).is_absolute() else images_root / value
        if not path.is_file():
            raise DataError(f"image {str(value)!r} not found under {images_root}")
        if check:
            from PIL import Image

            try:
                with Image.open(path) as handle:
                    handle.verify()
            except Exception as error:  # noqa: BLE001
                raise DataError(f"image {path} is unreadable ({error})") from None
        return path
    return value  # already a PIL image


def _item(
    text: Any, image: Any, instruction: Any, images_root: Path, check: bool, role: str
) -> Item:
    clean_text, had_placeholder = _strip_placeholder(text)
    clean_instruction, _ = _strip_placeholder(instruction)
    has_image = image is not None and not (isinstance(image, str) and not image.strip())
    if had_placeholder and not has_image:
        raise DataError(f"{role}: text contains {IMAGE_PLACEHOLDER} but the image path is empty")
    try:
        loaded = _image(image, images_root, check) if has_image else None
    except DataError as error:
        raise DataError(f"{role}: {error}") from None
    item = Item(text=clean_text, image=loaded, instruction=clean_instruction)
    if item.is_empty:
        raise DataError(f"{role}: neither text nor image")
    return item


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _negatives(
    texts: Any, images: Any, instructions: Any, root: Path, check: bool
) -> tuple[Item, ...]:
    texts, images = _as_list(texts), _as_list(images)
    count = max(len(texts), len(images))
    texts += [None] * (count - len(texts))
    images += [None] * (count - len(images))
    return tuple(
        _item(t, i, instructions, root, check, f"negative {j}")
        for j, (t, i) in enumerate(zip(texts, images, strict=True))
        if not (t in (None, "") and i in (None, ""))
    )


def detect_format(row: dict[str, Any]) -> str:
    """Guess the schema of a row from its columns."""
    if "qry" in row:
        return "mmeb"
    if "query_text" in row or "query_image" in row:
        return "generic"
    if "query" in row:
        return "vidore"
    raise DataError(
        f"cannot tell the schema from columns {sorted(row)}; expected MMEB-train "
        "(qry, pos_text, ...), "
        "ViDoRe-train (query, image) or generic (query_text, positive_text, ...); set 'format'"
    )


def parse_row(
    row: dict[str, Any],
    format: str,
    images_root: Path,
    check_images: bool = True,
    subset: str = "default",
) -> TrainingExample:
    """Turn one raw row into a :class:`TrainingExample`; raises :class:`DataError`."""
    fmt = detect_format(row) if format == "auto" else format
    root, check = images_root, check_images
    if fmt == "mmeb":
        _require(row, ("qry", "pos_text"))
        query = _item(row.get("qry"), row.get("qry_image_path"), None, root, check, "query")
        positive = _item(
            row.get("pos_text"), row.get("pos_image_path"), None, root, check, "positive"
        )
        negatives = _negatives(row.get("neg_text"), row.get("neg_image_path"), None, root, check)
    elif fmt == "vidore":
        _require(row, ("query", "image"))
        query = _item(row.get("query"), None, None, root, check, "query")
        positive = _item(None, row.get("image"), None, root, check, "positive")
        negatives = _negatives(None, row.get("neg_image"), None, root, check)
        subset = str(row.get("source") or subset)
    elif fmt == "generic":
        query = _item(
            row.get("query_text"),
            row.get("query_image"),
            row.get("query_instruction"),
            root,
            check,
            "query",
        )
        positive = _item(
            row.get("positive_text"),
            row.get("positive_image"),
            row.get("positive_instruction"),
            root,
            check,
            "positive",
        )
        negatives = _negatives(
            row.get("negative_text"),
            row.get("negative_image"),
            row.get("negative_instruction"),
            root,
            check,
        )
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return TrainingExample(query=query, positive=positive, negatives=negatives, subset=subset)


def _require(row: dict[str, Any], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in row or row[name] is None]
    if missing:
        raise DataError(f"missing field(s) {missing}")


# ---------------------------------------------------------------- readers
def read_rows(
    path: str, config: str | None = None, split: str = "train"
) -> Iterator[tuple[int, Any]]:
    """Yield ``(row_number, row)`` from a ``.jsonl``/``.parquet`` file or ``hf:NAME`` dataset.

    A JSONL line that is not a JSON object is yielded as a :class:`DataError`
    instead of a row, so the caller reports it with its row number.
    """
    if path.startswith("hf:"):
        try:
            from datasets import load_dataset  # lazy: an optional dependency
        except ImportError:
            raise ValueError(
                f"{path} needs the Hugging Face datasets library: `pip install datasets`, or "
                "download the data and point train_data at its .parquet/.jsonl files"
            ) from None
        dataset = load_dataset(path[3:], config, split=split)
        yield from enumerate(dataset)
        return
    file = Path(path)
    if file.suffix == ".jsonl":
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    row = DataError(f"invalid JSON ({error.msg})")
                yield (
                    number,
                    row if isinstance(row, (dict, DataError)) else DataError("not an object"),
                )
    elif file.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield number, row
                number += 1
    else:
        raise ValueError(
            f"training data {path} must be .jsonl, .parquet, a folder of them, or hf:NAME"
        )


def _expand(spec: dict[str, Any]) -> list[dict[str, Any]]:
    path = str(spec["path"])
    folder = Path(path)
    if path.startswith("hf:") or not folder.is_dir():
        if not path.startswith("hf:") and not folder.is_file():
            raise FileNotFoundError(f"training data {path} not found")
        return [spec]
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jsonl", ".parquet"))
    if not files:
        raise FileNotFoundError(f"no .jsonl or .parquet files under {folder}")
    expanded = []
    for file in files:
        subset = file.parent.name if file.parent != folder else file.stem
        expanded.append(
            {
                **spec,
                "path": str(file),
                "subset": spec.get("subset") or subset,
                "images_root": spec.get("images_root") or str(folder),
            }
        )
    return expanded


def load_source(
    spec: str | dict[str, Any], on_invalid: str = "error", check_images: bool = True
) -> TrainingData:
    """Load every row of one source (``path`` or ``{path, format, subset, images_root, ...}``)."""
    spec = {"path": spec} if isinstance(spec, str) else dict(spec)
    if "source" in spec:
        return TrainingData(_generate(spec), [])
    examples, skipped = [], []
    for part in _expand(spec):
        path = str(part["path"])
        hub_name = part.get("config") or path[3:]  # MMEB-train: one Hub config per subset
        subset = part.get("subset") or (hub_name if path.startswith("hf:") else Path(path).stem)
        root = Path(
            part.get("images_root") or (Path(path).parent if not path.startswith("hf:") else ".")
        )
        rows = read_rows(path, part.get("config"), part.get("split", "train"))
        fmt = part.get("format", "auto")
        for number, row in rows:
            try:
                if isinstance(row, DataError):
                    raise row
                fmt = detect_format(row) if fmt == "auto" else fmt  # the first row decides
                example = parse_row(row, fmt, root, check_images, str(subset))
            except DataError as error:
                message = f"{path} row {number}: {error}"
                if on_invalid == "error":
                    raise DataError(message + " (fix the row, or set on_invalid: skip)") from None
                skipped.append((path, number, str(error)))
                continue
            examples.append(replace(example, source=path, row=number))
    return TrainingData(examples, skipped)


def _generate(spec: dict[str, Any]) -> list[TrainingExample]:
    import importlib

    options = dict(spec)
    name = str(options.pop("source"))
    if name not in SOURCES:
        raise ValueError(f"unknown training source {name!r}; known sources: {sorted(SOURCES)}")
    module, function = SOURCES[name].split(":")
    try:
        examples = getattr(importlib.import_module(module), function)(**options)
    except TypeError as error:
        raise ValueError(f"training source {name!r}: {error}") from None
    return list(examples)


def load_training_data(
    sources: Sequence[str | dict[str, Any]], on_invalid: str = "error", check_images: bool = True
) -> TrainingData:
    """Load all sources; with ``on_invalid="skip"`` log the skipped rows with their numbers."""
    if not sources:
        raise ValueError(
            "train_data is empty: list at least one .jsonl/.parquet file, folder or hf:NAME"
        )
    examples, skipped = [], []
    for spec in sources:
        data = load_source(spec, on_invalid, check_images)
        examples += data.examples
        skipped += data.skipped
    if skipped:
        listed = "; ".join(f"{s} row {r}: {why}" for s, r, why in skipped[:10])
        logger.warning("skipped %d bad training rows (first: %s)", len(skipped), listed)
    if not examples:
        raise DataError("no usable training rows")
    return TrainingData(examples, skipped)


# ------------------------------------------------------ split and images
def split_held_out(
    examples: Sequence[TrainingExample], fraction: float, seed: int, max_examples: int | None = None
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out ``fraction`` of every subset (at least one row of a subset of >= 2 rows).

    Deterministic for a seed; order within each part follows the input order.

    >>> rows = [TrainingExample(Item(text=str(i)), Item(text="p"), subset="ab"[i % 2])
    ...         for i in range(10)]
    >>> train, held = split_held_out(rows, 0.01, seed=0)
    >>> len(train), sorted(e.subset for e in held)
    (8, ['a', 'b'])
    """
    if fraction <= 0:
        return list(examples), []
    by_subset: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_subset.setdefault(example.subset, []).append(index)
    held: set[int] = set()
    for subset in sorted(by_subset):
        indices = by_subset[subset]
        if len(indices) < 2:
            continue
        count = max(1, round(fraction * len(indices)))
        held.update(random.Random(f"{seed}:{subset}").sample(indices, count))
    held_indices = sorted(held)[:max_examples] if max_examples is not None else sorted(held)
    held = set(held_indices)
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, [examples[i] for i in held_indices]


def add_placeholder_images(example: TrainingExample, size: int = 56) -> TrainingExample:
    """Give every text-only item of ``example`` a white ``size x size`` image (appendix A)."""
    from PIL import Image

    def fill(item: Item) -> Item:
        return (
            item if item.has_image else replace(item, image=Image.new("RGB", (size, size), "white"))
        )

    return replace(
        example,
        query=fill(example.query),
        positive=fill(example.positive),
        negatives=tuple(fill(n) for n in example.negatives),
    )


def subset_counts(examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Count the examples of each subset."""
    return dict(Counter(e.subset for e in examples))
