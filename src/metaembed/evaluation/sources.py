"""Where benchmark rows come from: a Hugging Face Hub dataset or a local parquet folder.

Both benchmarks ship on the Hub as parquet files, one folder per config (an
MMEB task, or ViDoRe's ``corpus`` / ``queries`` / ``qrels``). A local copy with
the same layout is read with pyarrow alone; a Hub id goes through
``datasets.load_dataset`` (the optional ``hub`` extra, imported lazily).

Images in parquet are stored the way ``datasets`` stores its ``Image``
feature, a struct ``{"bytes": ..., "path": ...}``; :func:`decode_image` turns
that, a PIL image or a relative path into an RGB PIL image.

>>> is_local("/definitely/not/here"), is_local(".")
(False, True)
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "is_local",
    "parquet_files",
    "read_parquet_rows",
    "local_revision",
    "load_hub_rows",
    "hub_revision",
    "decode_image",
    "materialise_image",
    "list_local_configs",
]

logger = logging.getLogger(__name__)


def is_local(data: str | Path) -> bool:
    """Whether ``data`` names an existing local folder (otherwise it is a Hub id)."""
    return Path(data).expanduser().is_dir()


def parquet_files(folder: str | Path) -> list[Path]:
    """Parquet files of one config folder, sorted (``test-00000-of-00002.parquet`` ...)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        files = sorted(folder.glob("*/*.parquet"))  # e.g. <config>/test/*.parquet
    return files


def list_local_configs(folder: str | Path) -> list[str]:
    """Names of the sub-folders of ``folder`` that hold parquet files."""
    folder = Path(folder)
    return sorted(
        child.name for child in folder.iterdir() if child.is_dir() and parquet_files(child)
    )


def read_parquet_rows(folder: str | Path) -> list[dict[str, Any]]:
    """All rows of the parquet files of ``folder`` as dicts (image structs left encoded)."""
    import pyarrow.parquet as pq

    files = parquet_files(folder)
    if not files:
        raise ValueError(
            f"no .parquet files in {str(folder)!r}; expected <data>/<config>/*.parquet"
        )
    rows: list[dict[str, Any]] = []
    for path in files:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def local_revision(folder: str | Path) -> str:
    """Fingerprint of a local copy: names, sizes and modification times of its parquet files."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.parquet")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "local-" + digest.hexdigest()[:12]


def load_hub_rows(
    name: str, config: str | None, split: str = "test", revision: str | None = None
) -> list[dict[str, Any]]:
    """Rows of ``name``/``config`` from the Hugging Face Hub (needs the ``datasets`` package)."""
    try:
        import datasets
    except ImportError as error:
        raise ValueError(
            f"loading {name!r} from the Hugging Face Hub needs the 'datasets' package: "
            "pip install 'metaembed[hub]', or pass a local folder with the parquet files"
        ) from error
    logger.info("loading %s (%s, split %s) from the Hub", name, config, split)
    dataset = datasets.load_dataset(name, config, split=split, revision=revision)
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):  # keep {"bytes", "path"}: decode one page at a time
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return [dict(row) for row in dataset]


def hub_revision(name: str, revision: str | None) -> str:
    """Cache key part for a Hub dataset: the requested revision, or ``"main"``."""
    return f"hub-{revision or 'main'}"


def decode_image(value: Any, roots: Sequence[Path] = (), where: str = "") -> Any:
    """Return an RGB PIL image from a PIL image, an ``{"bytes", "path"}`` struct or a path.

    Raises a ``ValueError`` naming ``where`` when the value holds no image or the
    file cannot be found under ``roots``.
    """
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
        value = value.get("path")
    if isinstance(value, (str, Path)) and str(value):
        path = Path(value)
        for candidate in [path] if path.is_absolute() else [root / path for root in roots]:
            if candidate.is_file():
                with Image.open(candidate) as opened:
                    return opened.convert("RGB")
        raise ValueError(f"{where}: image {str(value)!r} not found under {[str(r) for r in roots]}")
    raise ValueError(f"{where}: no image (got {type(value).__name__}); fix or drop the row")


def materialise_image(value: Any, roots: Sequence[Path], image_dir: Path, where: str) -> Path:
    """Return a file path for an image given as bytes struct, PIL image or relative path.

    Encoded bytes (parquet ``Image`` structs) are written once to
    ``image_dir/<sha256>.<ext>`` so that a large corpus is never held decoded in
    memory and cache keys stay stable; paths are resolved against ``roots``.
    Raises ``ValueError`` naming ``where`` when there is no image or it is missing.
    """
    from PIL import Image

    if isinstance(value, dict) and value.get("bytes"):
        data = value["bytes"]
        suffix = Path(str(value.get("path") or "")).suffix.lower() or ".png"
        target = Path(image_dir) / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
        if not target.is_file():
            from metaembed.evaluation.io import write_bytes_atomic

            write_bytes_atomic(target, data)
        return target
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return materialise_image(
            {"bytes": buffer.getvalue(), "path": "page.png"}, roots, image_dir, where
        )
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, (str, Path)) and str(value).strip():
        path = Path(value)
        for candidate in [path] if path.is_absolute() else [root / path for root in roots]:
            if candidate.is_file():
                return candidate
        raise ValueError(f"{where}: image {str(value)!r} not found under {[str(r) for r in roots]}")
    raise ValueError(f"{where}: no image (got {type(value).__name__}); fix or drop the row")
