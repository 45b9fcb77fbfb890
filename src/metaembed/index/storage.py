"""Tiered, crash-safe on-disk storage for nested multi-vector embeddings.

An index folder holds immutable **segments** (one per ``add``) and one
``manifest.json`` that says which segments exist. Inside a segment the stored
vectors are split into **tiers** following the trained nested groups (vector 1;
2-4; 5-8; 9-16; 17-64 for the paper's groups), one memory-mapped file per tier,
so a budget ``(r_q, r_c)`` reads only the first tiers, each contiguously.

Design choices (crash safety without a write-ahead log):

* every file is written once under a fresh name (temporary file, ``fsync``,
  ``rename``, directory ``fsync``) and never modified afterwards;
* a change becomes visible only when a new manifest atomically replaces the old
  one (``os.replace``), so a writer killed at any instant leaves either the old
  or the new state; files of an unfinished change are unreferenced and removed
  by the next writer;
* the manifest records each file's size and CRC-32 and carries a checksum of its
  own body: a truncated or corrupted file is reported on open, naming the file;
* deletions are per-segment files of deleted row numbers (tombstones), rewritten
  under a new generation name on each delete;
* readers never lock: they read one manifest and map the files it names; one
  writer at a time holds an exclusive ``flock`` on ``writer.lock``.

File names: ``seg-00000007.ids`` (int64 ids), ``seg-00000007.t2`` (tier 2 raw
values, shape (rows, tier size, dim)), ``seg-00000007.t2.scales`` (int8 only),
``seg-00000007.meta.json`` (optional metadata), ``seg-00000007.del-000012``
(deleted row numbers as of generation 12).

>>> tier_bounds(64)
((0, 1), (1, 4), (4, 8), (8, 16), (16, 64))
>>> tier_bounds(12)
((0, 1), (1, 4), (4, 8), (8, 12))
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from metaembed.budget import PAPER_GROUPS, Budget
from metaembed.index.codecs import check_storage_dtype, raw_dtype

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "FileEntry",
    "Layout",
    "Manifest",
    "SegmentInfo",
    "tier_bounds",
    "write_file_atomic",
    "read_manifest",
    "write_manifest",
    "CorruptIndexError",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "writer.lock"
_WRITE_CHUNK_BYTES = 8 * 1024 * 1024


class CorruptIndexError(ValueError):
    """An index file is missing, truncated or fails its checksum."""


def tier_bounds(
    num_vectors: int, groups: Sequence[Budget] = PAPER_GROUPS
) -> tuple[tuple[int, int], ...]:
    """Ranges ``[start, stop)`` of the tiers: the groups' ``r_c``, cut at ``num_vectors``."""
    if num_vectors < 1:
        raise ValueError(f"num_vectors must be >= 1, got {num_vectors}")
    edges = sorted(
        {Budget.parse(g).r_c for g in groups if Budget.parse(g).r_c < num_vectors} | {num_vectors}
    )
    starts = [0, *edges[:-1]]
    return tuple(zip(starts, edges, strict=False))


@dataclass(frozen=True)
class FileEntry:
    """One immutable file of the index: its name, size in bytes and CRC-32."""

    name: str
    size: int
    crc32: int


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as recorded in the manifest."""

    segment_id: int
    rows: int
    files: tuple[FileEntry, ...]
    deleted: FileEntry | None = None
    num_deleted: int = 0
    has_metadata: bool = False

    @property
    def prefix(self) -> str:
        """Common file-name prefix of this segment's files."""
        return f"seg-{self.segment_id:08d}"

    @property
    def live_rows(self) -> int:
        """Rows not deleted."""
        return self.rows - self.num_deleted


@dataclass(frozen=True)
class Layout:
    """What every segment stores: dim, vectors per candidate, storage dtype, tiers and groups."""

    dim: int
    num_vectors: int
    dtype: str
    tiers: tuple[tuple[int, int], ...]
    groups: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        check_storage_dtype(self.dtype)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if not self.tiers or self.tiers[0][0] != 0 or self.tiers[-1][1] != self.num_vectors:
            raise ValueError(f"tiers {self.tiers} must cover vectors 0..{self.num_vectors}")

    def tiers_for(self, r_c: int) -> int:
        """Count the tiers a budget with ``r_c`` candidate vectors reads (the last maybe partly)."""
        return sum(1 for start, _ in self.tiers if start < r_c)

    def bytes_per_candidate(self, r_c: int | None = None) -> int:
        """Return stored bytes per candidate for its first ``r_c`` vectors (all when ``None``)."""
        count = self.num_vectors if r_c is None else min(r_c, self.num_vectors)
        scale_bytes = 4 if self.dtype == "int8" else 0
        return count * (self.dim * raw_dtype(self.dtype).itemsize + scale_bytes) + 8


@dataclass(frozen=True)
class Manifest:
    """The committed state of an index: layout, generation counter and live segments."""

    layout: Layout
    generation: int = 0
    next_segment_id: int = 0
    segments: tuple[SegmentInfo, ...] = field(default_factory=tuple)

    @property
    def num_rows(self) -> int:
        """Rows stored, deleted ones included."""
        return sum(s.rows for s in self.segments)

    @property
    def num_live(self) -> int:
        """Candidates not deleted."""
        return sum(s.live_rows for s in self.segments)

    def stats(self) -> dict[str, Any]:
        """Return counts, layout, and bytes per candidate / per search for each trained group."""
        layout, rows = self.layout, self.num_rows
        budgets = [Budget(r_q, min(r_c, layout.num_vectors)) for r_q, r_c in layout.groups]
        return {
            "num_candidates": self.num_live,
            "num_deleted": rows - self.num_live,
            "num_segments": len(self.segments),
            "dim": layout.dim,
            "num_vectors": layout.num_vectors,
            "dtype": layout.dtype,
            "tiers": [list(t) for t in layout.tiers],
            "bytes_per_candidate": {str(b): layout.bytes_per_candidate(b.r_c) for b in budgets},
            "bytes_per_budget": {str(b): rows * layout.bytes_per_candidate(b.r_c) for b in budgets},
        }

    def to_json(self) -> str:
        """Serialise, with a CRC-32 of the body under ``"checksum"``."""
        body = {
            "format_version": FORMAT_VERSION,
            "layout": {
                **self.layout.__dict__,
                "tiers": [list(t) for t in self.layout.tiers],
                "groups": [list(g) for g in self.layout.groups],
            },
            "generation": self.generation,
            "next_segment_id": self.next_segment_id,
            "segments": [_segment_to_dict(s) for s in self.segments],
        }
        text = json.dumps(body, sort_keys=True)
        return json.dumps(
            {"body": body, "checksum": zlib.crc32(text.encode())}, sort_keys=True, indent=1
        )

    @classmethod
    def from_json(cls, text: str, source: Path) -> Manifest:
        """Parse and verify a manifest; raise :class:`CorruptIndexError` naming ``source``."""
        try:
            document = json.loads(text)
            body = document["body"]
            expected = int(document["checksum"])
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptIndexError(
                f"{source} is not a valid index manifest ({error}); the file is damaged"
            ) from error
        if zlib.crc32(json.dumps(body, sort_keys=True).encode()) != expected:
            raise CorruptIndexError(f"{source} fails its checksum: the manifest is corrupted")
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{source} has format version {body.get('format_version')}, "
                f"this library reads {FORMAT_VERSION}"
            )
        layout = dict(body["layout"])
        layout["tiers"] = tuple(tuple(t) for t in layout["tiers"])
        layout["groups"] = tuple(tuple(g) for g in layout.get("groups", ()))
        return cls(
            layout=Layout(**layout),
            generation=int(body["generation"]),
            next_segment_id=int(body["next_segment_id"]),
            segments=tuple(_segment_from_dict(s) for s in body["segments"]),
        )


def _segment_to_dict(info: SegmentInfo) -> dict[str, Any]:
    return {
        "segment_id": info.segment_id,
        "rows": info.rows,
        "files": [f.__dict__ for f in info.files],
        "deleted": None if info.deleted is None else info.deleted.__dict__,
        "num_deleted": info.num_deleted,
        "has_metadata": info.has_metadata,
    }


def _segment_from_dict(values: dict[str, Any]) -> SegmentInfo:
    deleted = values.get("deleted")
    return SegmentInfo(
        segment_id=int(values["segment_id"]),
        rows=int(values["rows"]),
        files=tuple(FileEntry(**f) for f in values["files"]),
        deleted=None if deleted is None else FileEntry(**deleted),
        num_deleted=int(values.get("num_deleted", 0)),
        has_metadata=bool(values.get("has_metadata", False)),
    )


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk; a no-op where unsupported."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(descriptor)


def write_file_atomic(
    directory: Path, name: str, chunks: Iterable[bytes | memoryview]
) -> FileEntry:
    """Write ``chunks`` to ``directory/name`` atomically (temp file, fsync, rename, dir fsync)."""
    directory = Path(directory)
    temporary = directory / f".{name}.tmp-{os.getpid()}"
    checksum, size = 0, 0
    with open(temporary, "wb") as handle:
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            checksum = zlib.crc32(view, checksum)
            size += view.nbytes
            handle.write(view)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / name)
    fsync_directory(directory)
    return FileEntry(name=name, size=size, crc32=checksum)


def array_chunks(values: np.ndarray) -> Iterable[memoryview]:
    """Split a C-contiguous array's bytes into write-sized memoryviews."""
    flat = memoryview(np.ascontiguousarray(values)).cast("B")
    for start in range(0, flat.nbytes, _WRITE_CHUNK_BYTES):
        yield flat[start : start + _WRITE_CHUNK_BYTES]


def read_manifest(directory: Path) -> Manifest:
    """Read and verify ``directory/manifest.json``."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        if not Path(directory).exists():
            raise FileNotFoundError(
                f"no index at {directory}: create one with MultiVectorIndex.create"
            )
        raise FileNotFoundError(
            f"{directory} has no {MANIFEST_NAME}: "
            "it is not a metaembed index (or was never committed)"
        )
    return Manifest.from_json(path.read_text(encoding="utf-8"), path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Commit ``manifest``: the single atomic step that makes a change visible."""
    write_file_atomic(Path(directory), MANIFEST_NAME, [manifest.to_json().encode("utf-8")])


def check_file(directory: Path, entry: FileEntry, verify_checksum: bool) -> None:
    """Raise :class:`CorruptIndexError` if a file is missing, has the wrong size or checksum."""
    path = Path(directory) / entry.name
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise CorruptIndexError(f"index file {path} is missing; the index is damaged") from error
    if size != entry.size:
        raise CorruptIndexError(
            f"index file {path} has {size} bytes but the manifest records {entry.size}: "
            "it was truncated or overwritten"
        )
    if verify_checksum and entry.size:
        checksum = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(_WRITE_CHUNK_BYTES):
                checksum = zlib.crc32(chunk, checksum)
        if checksum != entry.crc32:
            raise CorruptIndexError(
                f"index file {path} fails its CRC-32 check: its content is corrupted"
            )


def referenced_files(manifest: Manifest) -> set[str]:
    """Names of every file the manifest refers to (the manifest itself included)."""
    names = {MANIFEST_NAME, LOCK_NAME}
    for info in manifest.segments:
        names.update(f.name for f in info.files)
        if info.deleted is not None:
            names.add(info.deleted.name)
    return names


def remove_unreferenced(directory: Path, manifest: Manifest) -> int:
    """Delete files the manifest does not name (crash leftovers, superseded); return the count."""
    keep = referenced_files(manifest)
    removed = 0
    for path in Path(directory).iterdir():
        if path.name not in keep and (path.name.startswith("seg-") or ".tmp-" in path.name):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                pass
    return removed


def with_deleted(info: SegmentInfo, entry: FileEntry | None, count: int) -> SegmentInfo:
    """Return a copy of ``info`` with a new tombstone file."""
    return replace(info, deleted=entry, num_deleted=count)
