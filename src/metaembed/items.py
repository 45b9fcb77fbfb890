"""Items: what a query or a candidate is (text, an image, or both, plus an instruction).

``encode_queries`` and ``encode_candidates`` accept lists mixing ``str`` (text),
``pathlib.Path`` (an image file), ``PIL.Image.Image`` and :class:`Item`.
:func:`as_item` normalises one element; :func:`load_item_images` opens image
files (RGB, huge images shrunk) with errors that name the item's index.

>>> as_item("a red bicycle")
Item(text='a red bicycle', image=None, instruction=None)
>>> Item(text="cat", instruction="Find an image that matches the caption.").has_text
True
>>> Item(text="  ").is_empty
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["Item", "ItemLike", "as_item", "as_items", "load_image", "load_item_images"]

DEFAULT_MAX_IMAGE_SIDE = 2048
"""Longest image side kept when loading; larger images are shrunk (aspect kept).

Processors resize further (Qwen2-VL to its ``max_pixels``); this cap only keeps
memory bounded for huge scans before the processor sees them.
"""

ItemLike = Any
"""A ``str``, ``pathlib.Path``, ``PIL.Image.Image`` or :class:`Item`."""


@dataclass(frozen=True)
class Item:
    """One query or candidate.

    Parameters
    ----------
    text : str, optional
        Text content (a query, a caption, a document passage).
    image : PIL.Image.Image or str or pathlib.Path, optional
        An image, or the path of an image file (opened when encoding).
    instruction : str, optional
        Task instruction put before the text, e.g. ``"Find a document that answers:"``.
    """

    text: str | None = None
    image: Any = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        for name in ("text", "instruction"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Item.{name} must be a str or None, got {type(value).__name__}")

    @property
    def has_text(self) -> bool:
        """Whether the item carries non-blank text."""
        return bool(self.text and self.text.strip())

    @property
    def has_image(self) -> bool:
        """Whether the item carries an image (or an image path)."""
        return self.image is not None

    @property
    def is_empty(self) -> bool:
        """True when the item has neither text nor an image."""
        return not (self.has_text or self.has_image)


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        return False
    return isinstance(value, Image.Image)


def as_item(value: ItemLike, index: int | None = None) -> Item:
    """Turn a ``str``, ``Path``, PIL image or :class:`Item` into an :class:`Item`.

    A ``str`` is always text (wrap a path string in ``pathlib.Path`` or
    ``Item(image=...)`` to mean an image file).

    >>> as_item(Path("cat.png")).has_image
    True
    """
    where = "" if index is None else f" {index}"
    if isinstance(value, Item):
        item = value
    elif isinstance(value, str):
        item = Item(text=value)
    elif isinstance(value, os.PathLike):
        item = Item(image=Path(value))
    elif _is_pil_image(value):
        item = Item(image=value)
    else:
        raise TypeError(
            f"cannot encode a {type(value).__name__} (item{where}): pass a str (text), "
            "a pathlib.Path "
            "or PIL.Image.Image (image), or metaembed.Item(text=..., image=..., instruction=...)"
        )
    if item.is_empty:
        raise ValueError(
            f"item{where} has neither text nor an image; give it text or an image, "
            "or drop it from the list"
        )
    return item


def as_items(values: Sequence[ItemLike]) -> list[Item]:
    """Apply :func:`as_item` to a list, naming the index of a bad element."""
    if isinstance(values, (str, Item)) or _is_pil_image(values):
        raise TypeError("pass a list of items, e.g. [item], not a single item")
    return [as_item(value, index=i) for i, value in enumerate(values)]


def _to_rgb(picture: Any) -> Any:
    """Convert to RGB, compositing transparent pixels onto white.

    A plain ``convert("RGB")`` drops the alpha channel, which turns transparent
    drawings (most clipart and icons) black on black.
    """
    from PIL import Image

    if picture.mode == "RGB":
        return picture
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )
    if not has_alpha:
        return picture.convert("RGB")
    rgba = picture.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def load_image(image: Any, index: int | None = None, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> Any:
    """Return ``image`` (PIL image or path) as an RGB PIL image, longest side <= ``max_side``.

    Raises
    ------
    FileNotFoundError
        If a path does not exist (the message names the item index).
    ValueError
        If the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    where = "" if index is None else f"item {index}: "
    if _is_pil_image(image):
        picture = image
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(
                f"{where}image file {str(path)!r} does not exist; fix the path or drop the item"
            )
        try:
            with Image.open(path) as opened:
                opened.draft("RGB", (max_side, max_side))  # fast JPEG downscale on decode
                opened.load()
                picture = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(
                f"{where}cannot read image file {str(path)!r} ({error}); the file is corrupt "
                "or not an image: re-export it as PNG/JPEG or drop the item"
            ) from error
        except Image.DecompressionBombError as error:
            raise ValueError(
                f"{where}image {str(path)!r} is too large to decode safely ({error}); "
                "shrink it below 89 megapixels first"
            ) from error
    picture = _to_rgb(picture)
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return picture


def load_item_images(
    items: Sequence[Item],
    max_side: int = DEFAULT_MAX_IMAGE_SIDE,
    indices: Sequence[int] | None = None,
) -> list[Item]:
    """Return the items with every image opened as an RGB PIL image (see :func:`load_image`).

    ``indices`` are the items' positions in the caller's list, used in error messages
    (defaults to ``0..len(items)-1``).
    """
    positions = range(len(items)) if indices is None else indices
    return [
        item if item.image is None else replace(item, image=load_image(item.image, i, max_side))
        for i, item in zip(positions, items, strict=True)
    ]
