"""On-disk cache of embeddings, keyed by model, dataset, revision and item.

Benchmarks repeat items: MMEB classification rows share the same ~1,000 label
candidates, and a budget sweep scores the same embeddings five times. The
runners therefore encode every *distinct* item once, at the model's full
number of vectors, and slice prefixes for each budget (the embeddings are
nested, so ``(r_q, r_c)`` only needs the first vectors).

Layout::

    <root>/<model_key>/<dataset_key>/<revision>/<role>.npz

Each ``.npz`` holds ``keys`` (one string per item, see :func:`item_key`) and
``embeddings`` (float32 or float16, shape ``(N, R, D)``). A lookup loads the
file, encodes only the missing items and rewrites the file atomically
(temporary file, fsync, ``os.replace``), so an interrupted run keeps what it
had and a second run encodes nothing.

>>> from metaembed.items import Item
>>> item_key(Item(text="a red cube")) == item_key(Item(text="a red cube"))
True
>>> item_key(Item(text="a red cube")) == item_key(Item(text="a red cube", instruction="Find:"))
False
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from metaembed.evaluation.io import write_bytes_atomic
from metaembed.items import Item

__all__ = [
    "Encoder",
    "EmbeddingCache",
    "item_key",
    "model_fingerprint",
    "encode_distinct",
    "encode_items",
]

logger = logging.getLogger(__name__)

ROLES = ("query", "candidate")


class Encoder(Protocol):
    """What the runners need from a model (``MetaEmbedModel`` satisfies it)."""

    def encode_queries(self, items: Sequence[Any], **kwargs: Any) -> torch.Tensor:
        """Return ``(N, R_q, D)`` query embeddings."""

    def encode_candidates(self, items: Sequence[Any], **kwargs: Any) -> torch.Tensor:
        """Return ``(N, R_c, D)`` candidate embeddings."""


def _image_identity(image: Any) -> str:
    if image is None:
        return ""
    if isinstance(image, (str, Path)):
        return "path:" + str(image)
    tobytes = getattr(image, "tobytes", None)
    if tobytes is None:
        raise ValueError(
            f"cannot key an image of type {type(image).__name__}; pass a path or a PIL image"
        )
    digest = hashlib.sha256(tobytes()).hexdigest()
    return f"pixels:{getattr(image, 'mode', '')}:{getattr(image, 'size', '')}:{digest}"


def item_key(item: Item) -> str:
    """Stable string key of an item: SHA-256 of its text, image identity and instruction.

    Image paths key by path (the dataset revision pins the files); in-memory
    images key by a hash of their pixels.
    """
    payload = json.dumps(
        [item.text, _image_identity(item.image), item.instruction], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def model_fingerprint(model: Any) -> str:
    """Short hash identifying a model's configuration and weights.

    Hashes the model's config (``config.to_dict()`` when available) and, for each
    parameter, its name, shape, sum and first values, so two models with the same
    config but different weights get different keys.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    digest.update(
        json.dumps(to_dict() if to_dict else repr(config), sort_keys=True, default=str).encode()
    )
    named_parameters = getattr(model, "named_parameters", None)
    if named_parameters is not None:
        with torch.no_grad():
            for name, parameter in named_parameters():
                flat = parameter.detach().reshape(-1)
                head = flat[:64].to(torch.float32).cpu().numpy().tobytes()
                total = float(flat.to(torch.float32).sum())
                digest.update(f"{name}:{tuple(parameter.shape)}:{total:.6e}".encode() + head)
    return digest.hexdigest()[:16]


def _safe(component: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._@-]+", "_", component).strip("._") or "default"
    if cleaned != component:
        cleaned += "-" + hashlib.sha256(component.encode()).hexdigest()[:8]
    return cleaned


def _encode(
    encoder: Encoder, items: Sequence[Item], role: str, batch_size: int, show_progress: bool
) -> torch.Tensor:
    method = encoder.encode_queries if role == "query" else encoder.encode_candidates
    embeddings = method(
        list(items), batch_size=batch_size, show_progress=show_progress
    )  # (N, R, D)
    embeddings = torch.as_tensor(embeddings).detach().cpu()
    if embeddings.ndim != 3 or embeddings.shape[0] != len(items):
        raise ValueError(
            f"encode_{'queries' if role == 'query' else 'candidates'} returned shape "
            f"{tuple(embeddings.shape)} "
            f"for {len(items)} items; expected (num_items, num_vectors, dim)"
        )
    return embeddings


def encode_distinct(
    encoder: Encoder,
    items: Sequence[Item],
    role: str,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Encode each distinct item once.

    Returns
    -------
    embeddings : torch.Tensor, shape (num_distinct, R, D)
    positions : list of int
        ``positions[i]`` is the row of ``embeddings`` holding ``items[i]``.
    """
    keys = [item_key(item) for item in items]
    first: dict[str, int] = {}
    distinct: list[Item] = []
    for key, item in zip(keys, items, strict=True):
        if key not in first:
            first[key] = len(distinct)
            distinct.append(item)
    embeddings = _encode(encoder, distinct, role, batch_size, show_progress)  # (num_distinct, R, D)
    return embeddings, [first[key] for key in keys]


class EmbeddingCache:
    """Embeddings on disk for one model (see the module docstring for the layout).

    Parameters
    ----------
    root : str or Path
        Cache folder.
    model_key : str
        Identifies the model (e.g. :func:`model_fingerprint`).
    store_dtype : {"float32", "float16"}
        Precision on disk; lookups always return float32.
    """

    def __init__(self, root: str | Path, model_key: str, store_dtype: str = "float32") -> None:
        if store_dtype not in ("float32", "float16"):
            raise ValueError(f"store_dtype must be 'float32' or 'float16', got {store_dtype!r}")
        self.root = Path(root)
        self.model_key = model_key
        self.store_dtype = store_dtype

    def path(self, dataset_key: str, revision: str, role: str) -> Path:
        """File holding the ``role`` embeddings of one dataset revision."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return (
            self.root
            / _safe(self.model_key)
            / _safe(dataset_key)
            / _safe(revision or "default")
            / f"{role}.npz"
        )

    def _load(self, path: Path) -> tuple[list[str], np.ndarray | None]:
        if not path.is_file():
            return [], None
        try:
            with np.load(path, allow_pickle=False) as stored:
                keys, embeddings = [str(k) for k in stored["keys"]], stored["embeddings"]
        except (OSError, ValueError, KeyError) as error:
            logger.warning("ignoring unreadable embedding cache %s (%s)", path, error)
            return [], None
        if embeddings.ndim != 3 or len(keys) != embeddings.shape[0]:
            logger.warning("ignoring inconsistent embedding cache %s", path)
            return [], None
        return keys, embeddings

    def encode(
        self,
        encoder: Encoder,
        items: Sequence[Item],
        role: str,
        dataset_key: str,
        revision: str = "default",
        *,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> tuple[torch.Tensor, list[int]]:
        """Embeddings of the distinct ``items``, encoding only those not cached yet.

        Returns
        -------
        embeddings : torch.Tensor, float32, shape (num_distinct, R, D)
        positions : list of int
            ``positions[i]`` is the row of ``embeddings`` holding ``items[i]``.
        """
        if not items:
            raise ValueError(f"no {role} items to encode; check that the dataset has rows")
        path = self.path(dataset_key, revision, role)
        cached_keys, cached = self._load(path)
        index_of = {key: row for row, key in enumerate(cached_keys)}
        keys = [item_key(item) for item in items]
        missing: dict[str, Item] = {}
        for key, item in zip(keys, items, strict=True):
            if key not in index_of and key not in missing:
                missing[key] = item
        if missing:
            logger.info("encoding %d new %s items (%d cached)", len(missing), role, len(index_of))
            fresh = _encode(encoder, list(missing.values()), role, batch_size, show_progress)
            fresh_array = fresh.to(torch.float32).numpy().astype(self.store_dtype)  # (M, R, D)
            if cached is not None and cached.shape[1:] != fresh_array.shape[1:]:
                raise ValueError(
                    f"cached {role} embeddings in {path} have shape {cached.shape[1:]} per item "
                    f"but the model now gives {fresh_array.shape[1:]}; delete the cache folder "
                    "or use another model key"
                )
            cached = fresh_array if cached is None else np.concatenate([cached, fresh_array])
            for key in missing:
                index_of[key] = len(index_of)
            cached_keys = list(index_of)
            self._save(path, cached_keys, cached)
        assert cached is not None
        rows = sorted({index_of[key] for key in keys})
        row_of = {row: position for position, row in enumerate(rows)}
        embeddings = torch.from_numpy(cached[rows].astype(np.float32))  # (num_distinct, R, D)
        return embeddings, [row_of[index_of[key]] for key in keys]

    def _save(self, path: Path, keys: list[str], embeddings: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(keys, dtype=str), embeddings=embeddings)
        write_bytes_atomic(path, buffer.getvalue())


def encode_items(
    encoder: Encoder,
    items: Sequence[Item],
    role: str,
    cache: EmbeddingCache | None = None,
    dataset_key: str = "dataset",
    revision: str = "default",
    *,
    batch_size: int = 16,
    show_progress: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Encode distinct items through ``cache`` when given, else directly.

    See :func:`encode_distinct` for the return values.
    """
    if not items:
        raise ValueError(f"no {role} items to encode; check that the dataset has rows")
    if cache is None:
        return encode_distinct(
            encoder, items, role, batch_size=batch_size, show_progress=show_progress
        )
    return cache.encode(
        encoder,
        items,
        role,
        dataset_key,
        revision,
        batch_size=batch_size,
        show_progress=show_progress,
    )
