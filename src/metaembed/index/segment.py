"""One immutable segment of an index: write it, map it, mark rows deleted, merge.

A segment is what one ``add`` call commits: ``rows`` candidates with their ids,
one raw file per storage tier (see :mod:`metaembed.index.storage`), int8 scales,
optional metadata, and a tombstone file of deleted row numbers. Loading maps
the tier files read-only (``numpy.memmap``), so opening an index reads no
vectors and several processes share the page cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed.index.codecs import encode, raw_dtype
from metaembed.index.storage import (
    FileEntry,
    Layout,
    SegmentInfo,
    array_chunks,
    check_file,
    with_deleted,
    write_file_atomic,
)

__all__ = [
    "SegmentData",
    "encode_tiers",
    "write_segment",
    "load_segment",
    "write_tombstones",
    "merge_segments",
]


@dataclass(frozen=True)
class SegmentData:
    """A loaded (memory-mapped) segment.

    Attributes
    ----------
    info : SegmentInfo
        The manifest entry.
    ids : numpy.ndarray of int64, shape (rows,)
    tiers : tuple of numpy.ndarray, each (rows, tier_size, dim)
        Raw stored values per tier (see :mod:`metaembed.index.codecs`).
    scales : tuple of numpy.ndarray of float32, each (rows, tier_size), or None
        Per-vector int8 scales.
    deleted_rows : numpy.ndarray of int64, shape (num_deleted,)
        Sorted row numbers that are deleted.
    directory : Path
        Folder of the files (for lazy metadata).
    """

    info: SegmentInfo
    ids: np.ndarray
    tiers: tuple[np.ndarray, ...]
    scales: tuple[np.ndarray, ...] | None
    deleted_rows: np.ndarray
    directory: Path

    @property
    def live_mask(self) -> np.ndarray:
        """Boolean mask of the rows that are not deleted, shape (rows,)."""
        mask = np.ones(self.info.rows, dtype=bool)
        mask[self.deleted_rows] = False
        return mask

    def to_device(
        self, device: torch.device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Copy the tiers (bfloat16 bits as int16) and scales to torch tensors on ``device``."""
        tiers = [
            torch.from_numpy(np.array(t.view(np.int16) if t.dtype == np.uint16 else t)).to(device)
            for t in self.tiers
        ]
        scales = None
        if self.scales is not None:
            scales = [torch.from_numpy(np.array(s)).to(device) for s in self.scales]
        return tiers, scales

    def metadata(self, rows: np.ndarray) -> list[dict[str, Any] | None]:
        """Metadata dicts of the given rows (``None`` where none was stored)."""
        if not self.info.has_metadata:
            return [None] * len(rows)
        name = f"{self.info.prefix}.meta.json"
        values = json.loads((self.directory / name).read_text(encoding="utf-8"))
        return [values[int(row)] for row in rows]


def encode_tiers(
    layout: Layout, candidate_embeddings: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Split float32 embeddings (rows, num_vectors, dim) into encoded tiers (+ int8 scales)."""
    raw_tiers, tier_scales = [], []
    for start, stop in layout.tiers:
        raw, scales = encode(candidate_embeddings[:, start:stop], layout.dtype)  # (rows, size, dim)
        raw_tiers.append(raw)
        tier_scales.append(scales)
    return raw_tiers, (tier_scales if layout.dtype == "int8" else None)


def write_segment(
    directory: Path,
    layout: Layout,
    segment_id: int,
    ids: np.ndarray,
    raw_tiers: Sequence[np.ndarray],
    tier_scales: Sequence[np.ndarray] | None,
    metadata: Sequence[dict[str, Any] | None] | None,
) -> SegmentInfo:
    """Write the files of a new segment (not yet visible: the caller commits the manifest)."""
    prefix = f"seg-{segment_id:08d}"
    files = [
        write_file_atomic(directory, f"{prefix}.ids", array_chunks(np.asarray(ids, dtype=np.int64)))
    ]
    for tier, raw in enumerate(raw_tiers):
        files.append(write_file_atomic(directory, f"{prefix}.t{tier}", array_chunks(raw)))
        if tier_scales is not None:
            scales = np.asarray(tier_scales[tier], dtype=np.float32)
            files.append(
                write_file_atomic(directory, f"{prefix}.t{tier}.scales", array_chunks(scales))
            )
    has_metadata = metadata is not None and any(m is not None for m in metadata)
    if has_metadata:
        text = json.dumps(list(metadata), separators=(",", ":"))
        files.append(write_file_atomic(directory, f"{prefix}.meta.json", [text.encode("utf-8")]))
    return SegmentInfo(
        segment_id=segment_id, rows=len(ids), files=tuple(files), has_metadata=has_metadata
    )


def _map(directory: Path, entry: FileEntry, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if entry.size != expected:
        raise ValueError(
            f"{entry.name} records {entry.size} bytes but shape {shape} needs {expected}"
        )
    return np.memmap(directory / entry.name, dtype=dtype, mode="r", shape=shape)


def load_segment(
    directory: Path, layout: Layout, info: SegmentInfo, verify_checksums: bool
) -> SegmentData:
    """Check and memory-map a segment's files; raise ``CorruptIndexError`` on damage."""
    directory = Path(directory)
    entries = {entry.name: entry for entry in info.files}
    for entry in info.files:
        check_file(directory, entry, verify_checksums)
    if info.deleted is not None:
        check_file(directory, info.deleted, verify_checksums)
    prefix, rows = info.prefix, info.rows
    ids = _map(directory, entries[f"{prefix}.ids"], np.dtype(np.int64), (rows,))
    tiers, scales = [], []
    for tier, (start, stop) in enumerate(layout.tiers):
        shape = (rows, stop - start, layout.dim)
        tiers.append(_map(directory, entries[f"{prefix}.t{tier}"], raw_dtype(layout.dtype), shape))
        if layout.dtype == "int8":
            scales.append(
                _map(
                    directory, entries[f"{prefix}.t{tier}.scales"], np.dtype(np.float32), shape[:2]
                )
            )
    deleted_rows = np.zeros(0, dtype=np.int64)
    if info.deleted is not None:
        deleted_rows = np.fromfile(directory / info.deleted.name, dtype=np.int64)
    return SegmentData(
        info=info,
        ids=np.array(ids),  # in memory: 8 bytes per candidate, writable for torch
        tiers=tuple(tiers),
        scales=tuple(scales) if layout.dtype == "int8" else None,
        deleted_rows=deleted_rows,
        directory=directory,
    )


def write_tombstones(
    directory: Path, segment: SegmentData, new_rows: np.ndarray, generation: int
) -> SegmentInfo:
    """Write a tombstone file: the segment's deleted rows plus ``new_rows``; return the new info."""
    deleted = np.union1d(segment.deleted_rows, np.asarray(new_rows, dtype=np.int64)).astype(
        np.int64
    )
    name = f"{segment.info.prefix}.del-{generation:08d}"
    entry = write_file_atomic(Path(directory), name, array_chunks(deleted))
    return with_deleted(segment.info, entry, int(deleted.size))


def merge_segments(
    directory: Path, layout: Layout, segments: Sequence[SegmentData], segment_id: int
) -> SegmentInfo | None:
    """Copy the live rows of ``segments`` (raw values, no re-encoding) into one new segment."""
    masks = [segment.live_mask for segment in segments]
    if not any(mask.any() for mask in masks):
        return None
    ids = np.concatenate(
        [segment.ids[mask] for segment, mask in zip(segments, masks, strict=False)]
    )  # (rows,)
    raw_tiers = [
        np.concatenate(
            [segment.tiers[tier][mask] for segment, mask in zip(segments, masks, strict=False)]
        )
        for tier in range(len(layout.tiers))
    ]  # each (rows, tier_size, dim)
    tier_scales = None
    if layout.dtype == "int8":
        tier_scales = [
            np.concatenate(
                [segment.scales[tier][mask] for segment, mask in zip(segments, masks, strict=False)]
            )
            for tier in range(len(layout.tiers))
        ]
    metadata = None
    if any(segment.info.has_metadata for segment in segments):
        metadata = []
        for segment, mask in zip(segments, masks, strict=False):
            metadata.extend(segment.metadata(np.flatnonzero(mask)))
    return write_segment(directory, layout, segment_id, ids, raw_tiers, tier_scales, metadata)
