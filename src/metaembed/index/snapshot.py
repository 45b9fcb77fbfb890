"""A consistent read view of an index folder, and the single-writer lock.

A :class:`Snapshot` is one committed manifest with its segments memory-mapped
and an id -> (segment, row) lookup table of the live rows. It never changes;
a reader replaces it with a newer one when the manifest file changes
(:meth:`Snapshot.is_current` compares the file's inode, size and mtime).

Loading retries when a writer replaces the manifest and removes superseded
files between the manifest read and the file mapping; damage that persists
across retries is reported as :class:`~metaembed.index.storage.CorruptIndexError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaembed.index.codecs import raw_dtype
from metaembed.index.segment import SegmentData, load_segment
from metaembed.index.storage import (
    LOCK_NAME,
    MANIFEST_NAME,
    CorruptIndexError,
    Manifest,
    read_manifest,
)

__all__ = ["Snapshot", "WriterLock"]

logger = logging.getLogger(__name__)

_LOAD_ATTEMPTS = 20


def _signature(path: Path) -> tuple[int, int, int]:
    status = (path / MANIFEST_NAME).stat()
    return (status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    """One committed state: manifest, mapped segments, live-id lookup."""

    path: Path
    manifest: Manifest
    segments: tuple[SegmentData, ...]
    signature: tuple[int, int, int]
    sorted_ids: np.ndarray  # (live,) int64, ascending
    locations: np.ndarray  # (live, 2) int64: segment index, row

    @classmethod
    def load(cls, path: Path, verify_checksums: bool) -> Snapshot:
        """Read the manifest and map its segments, retrying while a writer moves files."""
        path = Path(path)
        for attempt in range(_LOAD_ATTEMPTS):
            signature = _signature(path) if (path / MANIFEST_NAME).exists() else (0, 0, 0)
            try:
                manifest = read_manifest(path)
                layout = manifest.layout
                segments = tuple(
                    load_segment(path, layout, info, verify_checksums) for info in manifest.segments
                )
            except (CorruptIndexError, FileNotFoundError):
                if (
                    attempt + 1 < _LOAD_ATTEMPTS
                    and (path / MANIFEST_NAME).exists()
                    and _signature(path) != signature
                ):
                    continue  # a writer committed meanwhile: read the new manifest
                if attempt + 1 < _LOAD_ATTEMPTS and attempt < 2:
                    time.sleep(0.01)  # the manifest may be mid-replacement on some file systems
                    continue
                raise
            sorted_ids, locations = _build_lookup(segments)
            return cls(path, manifest, segments, signature, sorted_ids, locations)
        raise CorruptIndexError(f"could not read a consistent state of {path}")  # pragma: no cover

    def is_current(self) -> bool:
        """Whether the manifest on disk is still the one this snapshot read."""
        try:
            return _signature(self.path) == self.signature
        except FileNotFoundError:
            return True

    def locate(self, ids: np.ndarray) -> dict[int, tuple[int, int]]:
        """``{id: (segment index, row)}`` for the given ids that are live."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.sorted_ids.size == 0 or ids.size == 0:
            return {}
        positions = np.searchsorted(self.sorted_ids, ids)  # (n,)
        positions = np.minimum(positions, self.sorted_ids.size - 1)
        found = self.sorted_ids[positions] == ids  # (n,)
        return {
            int(candidate_id): (int(self.locations[p, 0]), int(self.locations[p, 1]))
            for candidate_id, p in zip(ids[found], positions[found], strict=False)
        }

    def gather(
        self, ids: np.ndarray, num_tiers: int
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Raw rows of the first ``num_tiers`` tiers for ``ids`` (KeyError for unknown ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        found = self.sorted_ids.size > 0
        last = max(self.sorted_ids.size - 1, 0)
        positions = np.minimum(np.searchsorted(self.sorted_ids, ids), last)  # (n,)
        if not found or not np.array_equal(self.sorted_ids[positions], ids):
            missing = ids if not found else ids[self.sorted_ids[positions] != ids]
            raise KeyError(f"ids not in the index: {missing[:5].tolist()}")
        segment_of = self.locations[positions, 0]  # (n,)
        row_of = self.locations[positions, 1]  # (n,)
        layout = self.manifest.layout
        tiers = [
            np.empty((len(ids), stop - start, layout.dim), dtype=self._raw_dtype())
            for start, stop in layout.tiers[:num_tiers]
        ]  # each (n, tier_size, D)
        scales = None
        if layout.dtype == "int8":
            scales = [
                np.empty((len(ids), stop - start), np.float32)
                for start, stop in layout.tiers[:num_tiers]
            ]
        for segment_index in np.unique(segment_of):
            positions = np.flatnonzero(segment_of == segment_index)  # (m,) places in the output
            rows = row_of[positions]  # (m,) rows in the segment
            segment = self.segments[int(segment_index)]
            for tier in range(num_tiers):
                tiers[tier][positions] = segment.tiers[tier][rows]
                if scales is not None:
                    scales[tier][positions] = segment.scales[tier][rows]
        return tiers, scales

    def _raw_dtype(self) -> np.dtype:
        return raw_dtype(self.manifest.layout.dtype)


def _build_lookup(segments: tuple[SegmentData, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids_parts, location_parts = [], []
    for segment_index, segment in enumerate(segments):
        rows = np.flatnonzero(segment.live_mask)  # (live,)
        ids_parts.append(np.asarray(segment.ids)[rows])
        location_parts.append(np.stack([np.full(rows.size, segment_index), rows], axis=1))
    if not ids_parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
    ids = np.concatenate(ids_parts).astype(np.int64)  # (live,)
    locations = np.concatenate(location_parts).astype(np.int64)  # (live, 2)
    order = np.argsort(ids, kind="stable")
    return ids[order], locations[order]


class WriterLock:
    """Exclusive, non-blocking ``flock`` on ``writer.lock``: one writer per index at a time.

    The operating system releases the lock when the process dies, so a crashed
    writer never leaves the index locked.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path) / LOCK_NAME
        self._handle: Any = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock or raise ``RuntimeError`` naming the folder if another writer holds it."""
        if self._handle is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no inter-process locking
            logger.warning(
                "fcntl unavailable: concurrent writers to %s are not prevented", self.path.parent
            )
            self._handle = open(self.path, "a+b")  # noqa: SIM115
            return
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            raise RuntimeError(
                f"another writer holds {self.path}; one process at a time may add or delete "
                "(readers need no lock: open the index and search)"
            ) from error
        self._handle = handle

    def release(self) -> None:
        """Release the lock (no-op when not held)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
