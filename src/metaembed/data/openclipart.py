"""Openclipart from Debian: real, public-domain images with titles, keywords and descriptions.

Debian's ``openclipart-png`` and ``openclipart-svg`` packages install the same
8,121 drawings twice under ``/usr/share/openclipart/{png,svg}/<category>/...``.
The PNG is what a model sees; its SVG twin (same relative path, ``.svg``)
carries the Dublin Core metadata the artist typed in:

* ``<dc:title>`` of the ``<cc:Work>`` (not the ``dc:title`` of the creator's
  or publisher's ``<cc:Agent>``, which holds a person's name);
* ``<dc:subject><rdf:Bag><rdf:li>`` keywords;
* ``<dc:description>``.

The category is the top-level folder (``animals``, ``food`` ...), the
subcategory the next one when there is one. Files under
``unsorted/duplicates`` are skipped (they repeat other files).

Design choices
--------------
- The metadata is read with regular expressions on the ``<cc:Work>`` block
  rather than a full XML parse: the block sits at the top of the files, some
  SVGs are megabytes of path data, and a few are not well-formed XML.
- Keywords equal to a category name or to ``unsorted`` are dropped (they are
  folder names the uploader was asked for, not a description of the picture).
- Almost every PNG is transparent (RGBA, LA or palette with a transparent
  colour); dropping the alpha channel turns many drawings into black on
  black. :func:`materialise_rgb` writes each image once as an RGB PNG
  composited on white (and shrunk to a bounded side), which is what the
  models see.
- :func:`load_openclipart` caches the parsed records as JSON (atomic write) so
  a second run skips the 180 MB of SVG.

>>> text = ('<cc:Work><dc:title>Red apple</dc:title><dc:description>A shiny apple'
...         '</dc:description><dc:subject><rdf:Bag><rdf:li>fruit</rdf:li><rdf:li>apple</rdf:li>'
...         '</rdf:Bag></dc:subject><dc:creator><cc:Agent><dc:title>Ann</dc:title>'
...         '</cc:Agent></dc:creator></cc:Work>')
>>> parse_svg_metadata(text)
('Red apple', ('fruit', 'apple'), 'A shiny apple')
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ClipartImage",
    "ClipartNotInstalledError",
    "DEFAULT_ROOT",
    "INSTALL_COMMAND",
    "check_installed",
    "load_openclipart",
    "materialise_rgb",
    "parse_svg_metadata",
]

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/openclipart")
"""Where Debian installs the two packages."""

INSTALL_COMMAND = "sudo apt-get install -y openclipart-png openclipart-svg"
"""The one command that installs the data (Debian / Ubuntu)."""

_IGNORED_KEYWORDS = frozenset(
    {"unsorted", "clip art", "clipart", "image", "media", "public domain"}
)
_SKIPPED_FOLDERS = ("unsorted/duplicates",)
MAX_SOURCE_PIXELS = 16_000_000
"""Larger PNGs are skipped (decoding one takes seconds and gigabytes for a 224-px copy)."""
_METADATA_BYTES = 65_536
"""How much of an SVG is read first; the metadata block is almost always in it."""

_WORK = re.compile(r"<(?:\w+:)?Work\b[^>]*>(.*?)</(?:\w+:)?Work>", re.S)
_AGENT = re.compile(r"<(?:\w+:)?Agent\b.*?</(?:\w+:)?Agent>", re.S)
_TITLE = re.compile(r"<dc:title\b[^>]*>(.*?)</dc:title>", re.S)
_DESCRIPTION = re.compile(r"<dc:description\b[^>]*>(.*?)</dc:description>", re.S)
_SUBJECT = re.compile(r"<dc:subject\b[^>]*>(.*?)</dc:subject>", re.S)
_LIST_ITEM = re.compile(r"<rdf:li\b[^>]*>(.*?)</rdf:li>", re.S)
_TAG = re.compile(r"<[^>]+>")


class ClipartNotInstalledError(FileNotFoundError):
    """The openclipart PNG/SVG packages are not installed where expected."""


@dataclass(frozen=True)
class ClipartImage:
    """One openclipart drawing and its metadata.

    Parameters
    ----------
    image_id : str
        Relative path without extension, e.g. ``"food/fruit/apple_01"`` (unique).
    png_path : str
        Absolute path of the PNG.
    title, description : str
        From the SVG twin; ``""`` when absent.
    keywords : tuple of str
        From the SVG twin, in the artist's order, without folder names.
    category : str
        Top-level folder (``"animals"``).
    subcategory : str
        Second-level folder, ``""`` for images directly in the category folder.
    """

    image_id: str
    png_path: str
    title: str
    keywords: tuple[str, ...]
    description: str
    category: str
    subcategory: str


def _clean(fragment: str) -> str:
    """Strip tags, unescape entities (twice-escaped ones too), repair UTF-8 read as Latin-1.

    >>> _clean("L&amp;Atilde;&amp;copy;zard <b>vert</b>")
    'Lézard vert'
    """
    text = html.unescape(html.unescape(_TAG.sub(" ", fragment)))
    if "Ã" in text or "Â" in text:
        try:
            text = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return " ".join(text.split())


def parse_svg_metadata(svg_text: str) -> tuple[str, tuple[str, ...], str]:
    """Return ``(title, keywords, description)`` of the ``<cc:Work>`` block of an SVG.

    Missing fields are ``""`` / ``()``. Agent titles (people's names) are ignored.
    """
    work = _WORK.search(svg_text)
    if work is None:
        return "", (), ""
    block = _AGENT.sub("", work.group(1))
    title_match = _TITLE.search(block)
    description_match = _DESCRIPTION.search(block)
    subject_match = _SUBJECT.search(block)
    keywords: list[str] = []
    if subject_match is not None:
        for raw in _LIST_ITEM.findall(subject_match.group(1)):
            keyword = _clean(raw)
            if keyword and keyword not in keywords:
                keywords.append(keyword)
    title = _clean(title_match.group(1)) if title_match else ""
    description = _clean(description_match.group(1)) if description_match else ""
    return title, tuple(keywords), description


def check_installed(root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """Return ``root`` if ``png/`` and ``svg/`` are there, else raise naming the install command."""
    root = Path(root)
    missing = [name for name in ("png", "svg") if not (root / name).is_dir()]
    if missing:
        raise ClipartNotInstalledError(
            f"openclipart not found under {root} (missing {', '.join(missing)}/); install it with: "
            f"{INSTALL_COMMAND}"
        )
    return root


def _read_metadata(svg_path: Path) -> tuple[str, tuple[str, ...], str]:
    if not svg_path.is_file():
        return "", (), ""
    with open(svg_path, "rb") as handle:
        head = handle.read(_METADATA_BYTES).decode("utf-8", errors="replace")
        if "Work>" not in head and "<svg" in head:
            head += handle.read().decode("utf-8", errors="replace")
    return parse_svg_metadata(head)


def _record(root: Path, png_path: Path, category_names: frozenset[str]) -> ClipartImage:
    relative = png_path.relative_to(root / "png").with_suffix("")
    parts = relative.parts
    title, keywords, description = _read_metadata((root / "svg" / relative).with_suffix(".svg"))
    kept = tuple(k for k in keywords if k.lower() not in _IGNORED_KEYWORDS | category_names)
    return ClipartImage(
        image_id=relative.as_posix(),
        png_path=str(png_path),
        title=title,
        keywords=kept,
        description=description,
        category=parts[0],
        subcategory=parts[1] if len(parts) > 2 else "",
    )


def scan_openclipart(
    root: str | os.PathLike[str] = DEFAULT_ROOT, show_progress: bool = False
) -> list[ClipartImage]:
    """Parse every PNG and its SVG twin under ``root``, sorted by ``image_id``."""
    from tqdm.auto import tqdm

    root = check_installed(root)
    png_root = root / "png"
    png_paths = sorted(
        path
        for path in png_root.rglob("*.png")
        if not any(
            path.relative_to(png_root).as_posix().startswith(skip + "/")
            for skip in _SKIPPED_FOLDERS
        )
    )
    if not png_paths:
        raise ClipartNotInstalledError(
            f"no PNG under {png_root}; reinstall with: {INSTALL_COMMAND}"
        )
    category_names = frozenset(path.name.lower() for path in png_root.iterdir() if path.is_dir())
    progress = tqdm(
        png_paths, desc="reading openclipart metadata", unit="image", disable=not show_progress
    )
    return [_record(root, path, category_names) for path in progress]


def load_openclipart(
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    cache_path: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> list[ClipartImage]:
    """Load all records, through a JSON cache at ``cache_path`` when given.

    The cache is rebuilt when it is missing, unreadable or was made for another ``root``.
    """
    root = check_installed(root)
    if cache_path is not None:
        cached = _read_cache(Path(cache_path), root)
        if cached is not None:
            return cached
    records = scan_openclipart(root, show_progress=show_progress)
    logger.info(
        "openclipart: %d images, %d titled, %d with keywords, %d with descriptions",
        len(records),
        sum(bool(r.title) for r in records),
        sum(bool(r.keywords) for r in records),
        sum(bool(r.description) for r in records),
    )
    if cache_path is not None:
        _write_cache(Path(cache_path), root, records)
    return records


def _read_cache(path: Path, root: Path) -> list[ClipartImage] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("root") != str(root):
            return None
        return [
            ClipartImage(**{**row, "keywords": tuple(row["keywords"])}) for row in data["images"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, root: Path, records: Sequence[ClipartImage]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"root": str(root), "images": [asdict(r) for r in records]})
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def flatten_on_white(image, max_side: int | None = None):  # noqa: ANN001, ANN201 - PIL types
    """Composite a PIL image of any mode on white; return RGB, longest side <= ``max_side``.

    >>> from PIL import Image
    >>> transparent = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    >>> flatten_on_white(transparent).getpixel((0, 0))
    (255, 255, 255)
    """
    from PIL import Image

    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flattened = Image.alpha_composite(canvas, rgba).convert("RGB")
    if max_side is not None and max(flattened.size) > max_side:
        flattened.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return flattened


def materialise_rgb(
    records: Sequence[ClipartImage],
    folder: str | os.PathLike[str],
    max_side: int = 224,
    show_progress: bool = False,
) -> list[ClipartImage]:
    """Write each image flattened on white (RGB PNG, side <= ``max_side``) under ``folder``.

    Returns the records with ``png_path`` pointing at the flattened copies;
    images that cannot be read or have more than ``MAX_SOURCE_PIXELS`` (a few
    openclipart PNGs have hundreds of megapixels) are left out with a warning.
    Existing copies are reused; each file is written atomically.
    """
    from dataclasses import replace

    from PIL import Image
    from tqdm.auto import tqdm

    root = Path(folder) / f"rgb{max_side}"
    result = []
    skipped = []
    for record in tqdm(
        records, desc="flattening images on white", unit="image", disable=not show_progress
    ):
        target = root / f"{record.image_id}.png"
        if not target.is_file():
            try:
                with Image.open(record.png_path) as opened:
                    if opened.width * opened.height > MAX_SOURCE_PIXELS:
                        raise ValueError("too many pixels")
                    flattened = flatten_on_white(opened, max_side)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                skipped.append(f"{record.image_id} ({type(error).__name__})")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            flattened.save(temporary, format="PNG")
            os.replace(temporary, target)
        result.append(replace(record, png_path=str(target)))
    if skipped:
        logger.warning(
            "skipped %d unreadable or oversized image(s): %s", len(skipped), ", ".join(skipped)
        )
    return result
