"""The embedded nested multi-vector index: tiered storage plus exhaustive budgeted search.

:class:`MultiVectorIndex` stores up to ``num_vectors`` meta embeddings per
candidate in tiers that follow the trained nested groups, so any budget
``(r_q, r_c)`` is searched without re-indexing and reads only its prefix.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> index = MultiVectorIndex.create(folder + "/idx", dim=4, num_vectors=2, dtype="float32")
>>> candidates = torch.nn.functional.normalize(torch.randn(3, 2, 4), dim=-1)  # (N, R, D)
>>> index.add([10, 11, 12], candidates)
>>> result = index.search(candidates[:1], k=2, budget="2x2")
>>> int(result.ids[0, 0]), len(index), index.delete([11]), len(index)
(10, 3, 1, 2)
>>> MultiVectorIndex.open(folder + "/idx").search(candidates[1:2], k=5).ids.tolist()[0][2:]
[-1, -1, -1]

Design choices:

* every ``add`` writes a new immutable segment and commits a new manifest
  (:mod:`metaembed.index.storage`); small trailing segments are merged so the
  number of segments stays logarithmic in the number of adds;
* ``delete`` and upserts write tombstones; :meth:`MultiVectorIndex.compact`
  rewrites everything into one segment without them;
* a reader works on the snapshot it loaded and picks up new commits at its next
  search (``auto_refresh``), so readers keep working while one writer appends;
* search scores candidates in bounded chunks and keeps a running top-k, so
  memory does not grow with the index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed.budget import PAPER_GROUPS, Budget, validate_groups
from metaembed.index.base import EMPTY_ID, EMPTY_SCORE, MultiVectorIndexBase, SearchResult
from metaembed.index.codecs import decode
from metaembed.index.kernels import merge_top_k, score_tiers
from metaembed.index.segment import (
    SegmentData,
    encode_tiers,
    merge_segments,
    write_segment,
    write_tombstones,
)
from metaembed.index.snapshot import Snapshot, WriterLock
from metaembed.index.storage import (
    MANIFEST_NAME,
    Layout,
    Manifest,
    remove_unreferenced,
    tier_bounds,
    write_manifest,
)
from metaembed.index.validation import check_candidates, check_ids, check_metadata, check_query

__all__ = ["MultiVectorIndex"]

logger = logging.getLogger(__name__)

_SEARCH_CHUNK_ROWS = 131072  # candidates scored per kernel call (bounds the score matrix)
_MERGE_RATIO = 2  # merge the last two segments while older.rows <= ratio * newer.rows


class MultiVectorIndex(MultiVectorIndexBase):
    """Embedded, memory-mapped nested multi-vector index (see the module docstring).

    Use :meth:`create` or :meth:`open`, not the constructor.
    """

    def __init__(
        self, path: Path, verify: bool, backend: str, auto_refresh: bool, device: Any = None
    ) -> None:
        self.path = Path(path)
        self.backend = backend
        self.device = None if device is None else torch.device(device)
        self._resident: dict[int, Any] = {}  # segment id -> tiers on ``device``
        self.auto_refresh = auto_refresh
        self._verify = verify
        self._lock = WriterLock(self.path)
        self._snapshot = Snapshot.load(self.path, verify_checksums=verify)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Any,
        dim: int,
        num_vectors: int = 64,
        *,
        dtype: str = "float16",
        groups: Sequence[Budget | str] = PAPER_GROUPS,
        backend: str = "auto",
        auto_refresh: bool = True,
    ) -> MultiVectorIndex:
        """Create an empty index folder at ``path`` (which must not hold an index yet).

        Parameters
        ----------
        path : str or Path
            Folder to create.
        dim : int
            Embedding dimension.
        num_vectors : int
            Vectors stored per candidate (the largest ``r_c`` searchable later).
        dtype : str
            Storage dtype: ``"float16"`` (default), ``"float32"``, ``"bfloat16"`` or ``"int8"``.
        groups : sequence of Budget
            Trained nested groups; their ``r_c`` values delimit the storage tiers.
        backend : str
            Scoring backend, ``"auto"``, ``"native"``, ``"numba"`` or ``"torch"``.
        auto_refresh : bool
            Pick up commits by other processes at each search.
        """
        path = Path(path)
        if (path / MANIFEST_NAME).exists():
            raise FileExistsError(
                f"{path} already holds an index; open it with MultiVectorIndex.open"
            )
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if isinstance(num_vectors, bool) or not isinstance(num_vectors, int) or num_vectors < 1:
            raise ValueError(f"num_vectors must be a positive int, got {num_vectors!r}")
        groups = validate_groups(groups)
        layout = Layout(
            dim=dim,
            num_vectors=num_vectors,
            dtype=dtype,
            tiers=tier_bounds(num_vectors, groups),
            groups=tuple(g.as_tuple() for g in groups),
        )
        path.mkdir(parents=True, exist_ok=True)
        write_manifest(path, Manifest(layout=layout))
        return cls(path, verify=False, backend=backend, auto_refresh=auto_refresh)

    @classmethod
    def open(
        cls,
        path: Any,
        *,
        verify: bool = True,
        backend: str = "auto",
        auto_refresh: bool = True,
        device: Any = None,
    ) -> MultiVectorIndex:
        """Open an existing index.

        ``verify=True`` checks every file's CRC-32 (reads the whole index once);
        ``False`` checks sizes only. Damage raises ``CorruptIndexError`` (a ``ValueError``).
        ``device=`` keeps the stored tiers resident on that torch device (loaded per
        segment at first search): ``"cpu"`` holds them in RAM instead of memory-mapping
        them (no page faults, and nothing for the OS to evict under memory pressure) and
        scores with ``backend``; ``"cuda"`` scores on the GPU with the torch backend.
        """
        return cls(Path(path), verify, backend, auto_refresh, device)

    # -- properties --------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        """Dim, vectors per candidate, storage dtype and tiers."""
        return self._snapshot.manifest.layout

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.layout.dim

    @property
    def num_vectors(self) -> int:
        """Vectors stored per candidate."""
        return self.layout.num_vectors

    @property
    def dtype(self) -> str:
        """Storage dtype name."""
        return self.layout.dtype

    def __len__(self) -> int:
        self._maybe_refresh()
        return self._snapshot.manifest.num_live

    def __repr__(self) -> str:
        return (
            f"MultiVectorIndex({str(self.path)!r}, candidates={len(self)}, dim={self.dim}, "
            f"num_vectors={self.num_vectors}, dtype={self.dtype!r})"
        )

    def refresh(self) -> bool:
        """Reload the committed state if another process changed it; return whether it did."""
        if self._snapshot.is_current():
            return False
        self._snapshot = Snapshot.load(self.path, verify_checksums=False)
        live = {segment.info.segment_id for segment in self._snapshot.segments}
        self._resident = {key: value for key, value in self._resident.items() if key in live}
        return True

    def _maybe_refresh(self) -> None:
        if self.auto_refresh and not self._lock.held:
            self.refresh()

    # -- writes ------------------------------------------------------------------------
    def _begin_write(self) -> Manifest:
        """Hold the writer lock and return the latest committed manifest."""
        if not self._lock.held:
            self._lock.acquire()
            self.refresh()
            remove_unreferenced(self.path, self._snapshot.manifest)
        return self._snapshot.manifest

    def _commit(self, manifest: Manifest) -> None:
        write_manifest(self.path, manifest)
        self._snapshot = Snapshot.load(self.path, verify_checksums=False)
        remove_unreferenced(self.path, manifest)

    def add(
        self,
        ids: Sequence[int] | np.ndarray,
        candidate_embeddings: Any,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        upsert: bool = False,
    ) -> None:
        """Add candidates, committed atomically when the call returns.

        Parameters
        ----------
        ids : sequence of int, shape (N,)
            Distinct non-negative ids.
        candidate_embeddings : torch.Tensor or numpy.ndarray, shape (N, R, dim)
            ``R >= num_vectors``; only the first ``num_vectors`` are stored.
        metadata : sequence of dict or None, optional
            JSON-serialisable metadata per candidate (see :meth:`get_metadata`).
        upsert : bool
            Replace candidates whose id already exists; by default existing ids
            raise ``ValueError``.
        """
        id_array = check_ids(ids)
        if id_array.size == 0:
            return
        values = check_candidates(
            candidate_embeddings, id_array.size, self.dim, self.num_vectors
        )  # (N, R, D)
        entries = check_metadata(metadata, id_array.size)
        manifest = self._begin_write()
        existing = self._snapshot.locate(id_array)
        if existing and not upsert:
            shown = ", ".join(str(int(i)) for i in sorted(existing)[:5])
            raise ValueError(
                f"{len(existing)} ids already exist in the index ({shown}); "
                "pass upsert=True to replace them"
            )
        raw_tiers, tier_scales = encode_tiers(manifest.layout, values)
        info = write_segment(
            self.path,
            manifest.layout,
            manifest.next_segment_id,
            id_array,
            raw_tiers,
            tier_scales,
            entries,
        )
        generation = manifest.generation + 1
        segments = list(self._tombstoned(existing, generation))
        manifest = replace(
            manifest,
            generation=generation,
            next_segment_id=manifest.next_segment_id + 1,
            segments=(*segments, info),
        )
        self._commit(manifest)
        self._merge_trailing()

    def delete(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete candidates by id (unknown ids are ignored); return how many were removed."""
        id_array = check_ids(ids, unique=False)
        manifest = self._begin_write()
        existing = self._snapshot.locate(np.unique(id_array))
        if not existing:
            return 0
        generation = manifest.generation + 1
        segments = tuple(self._tombstoned(existing, generation))
        self._commit(replace(manifest, generation=generation, segments=segments))
        return len(existing)

    def _tombstoned(self, locations: dict[int, tuple[int, int]], generation: int):
        """Return the snapshot's segments with ``locations`` deleted (empty ones dropped)."""
        rows_by_segment: dict[int, list[int]] = {}
        for segment_index, row in locations.values():
            rows_by_segment.setdefault(segment_index, []).append(row)
        for segment_index, segment in enumerate(self._snapshot.segments):
            rows = rows_by_segment.get(segment_index)
            info = segment.info
            if rows:
                if segment.deleted_rows.size + len(rows) >= info.rows:
                    continue  # every row deleted: drop the segment
                info = write_tombstones(self.path, segment, np.asarray(rows), generation)
            yield info

    def _merge_trailing(self) -> None:
        """Merge the last segments while the older one is not much larger (few segments)."""
        while True:
            manifest = self._snapshot.manifest
            segments = manifest.segments
            if len(segments) < 2 or segments[-2].live_rows > _MERGE_RATIO * segments[-1].live_rows:
                return
            self.compact(last=2)

    def compact(self, last: int | None = None) -> None:
        """Rewrite the last ``last`` segments (all when ``None``) into one, without deleted rows."""
        manifest = self._begin_write()
        count = len(manifest.segments) if last is None else min(last, len(manifest.segments))
        if count == 0 or (count == 1 and manifest.segments[-1].num_deleted == 0):
            return
        kept, merged = manifest.segments[:-count], self._snapshot.segments[-count:]
        info = merge_segments(self.path, manifest.layout, merged, manifest.next_segment_id)
        segments = kept if info is None else (*kept, info)
        self._commit(
            replace(
                manifest,
                generation=manifest.generation + 1,
                next_segment_id=manifest.next_segment_id + 1,
                segments=segments,
            )
        )

    def close(self) -> None:
        """Release the writer lock (if held). The index stays readable."""
        self._lock.release()

    # -- reads -------------------------------------------------------------------------
    def search(
        self, query_embeddings: Any, k: int = 10, budget: Budget | str | None = None
    ) -> SearchResult:
        """Exhaustive top-``k`` search under a budget.

        Parameters
        ----------
        query_embeddings : torch.Tensor or numpy.ndarray, shape (Nq, Rq, dim)
            Query meta embeddings.
        k : int
            Hits per query; missing hits are ``EMPTY_ID`` (-1) with score ``-inf``.
        budget : Budget or str, optional
            ``(r_q, r_c)``; defaults to ``(Rq, num_vectors)``. A budget above the
            query's vectors or the stored ``num_vectors`` raises ``ValueError``.

        Returns
        -------
        SearchResult
            ``ids`` (Nq, k) int64 and ``scores`` (Nq, k) float32, best first.
        """
        queries, budget, k = check_query(query_embeddings, k, budget, self.dim, self.num_vectors)
        self._maybe_refresh()
        num_queries = queries.shape[0]
        best_scores = torch.full((num_queries, k), EMPTY_SCORE, dtype=torch.float32)  # (Nq, k)
        best_ids = torch.full((num_queries, k), EMPTY_ID, dtype=torch.int64)  # (Nq, k)
        for segment in self._snapshot.segments:
            live = segment.live_mask if segment.info.num_deleted else None
            for start in range(0, segment.info.rows, _SEARCH_CHUNK_ROWS):
                stop = min(start + _SEARCH_CHUNK_ROWS, segment.info.rows)
                scores = self._score_chunk(queries, segment, start, stop, budget.r_c)  # (Nq, n)
                if live is not None:  # in numpy: a torch mask write would wake its OpenMP pool
                    scores.numpy()[:, ~live[start:stop]] = EMPTY_SCORE
                chunk_ids = torch.from_numpy(np.asarray(segment.ids[start:stop]))  # (n,)
                best_scores, best_ids = merge_top_k(best_scores, best_ids, scores, chunk_ids, k)
        best_ids[torch.isneginf(best_scores)] = EMPTY_ID
        return SearchResult(ids=best_ids.numpy(), scores=best_scores.numpy(), budget=budget)

    def _score_chunk(
        self, queries: torch.Tensor, segment: SegmentData, start: int, stop: int, r_c: int
    ) -> torch.Tensor:
        count = self.layout.tiers_for(r_c)
        all_tiers, all_scales = segment.tiers, segment.scales
        if self.device is not None:
            if segment.info.segment_id not in self._resident:
                self._resident[segment.info.segment_id] = segment.to_device(self.device)
            all_tiers, all_scales = self._resident[segment.info.segment_id]
        tiers = [tier[start:stop] for tier in all_tiers[:count]]
        scales = None if all_scales is None else [s[start:stop] for s in all_scales[:count]]
        on_accelerator = self.device is not None and self.device.type != "cpu"
        backend = "torch" if on_accelerator else self.backend
        scores = score_tiers(queries, tiers, r_c, self.dtype, scales, backend=backend)
        return scores.cpu()

    def get_metadata(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any] | None]:
        """Metadata stored with each id (``None`` for ids without metadata or not in the index)."""
        self._maybe_refresh()
        id_array = check_ids(ids, unique=False)
        locations = self._snapshot.locate(id_array)
        result: list[dict[str, Any] | None] = []
        for candidate_id in id_array:
            location = locations.get(int(candidate_id))
            if location is None:
                result.append(None)
                continue
            segment = self._snapshot.segments[location[0]]
            result.append(segment.metadata(np.array([location[1]]))[0])
        return result

    def reconstruct(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return stored embeddings of ``ids``, decoded to float32, shape (n, num_vectors, dim).

        These are the exact values search scores (after float16/bfloat16/int8
        rounding). An id not in the index raises ``KeyError``.
        """
        tiers, scales = self.gather_tiers(ids)
        decoded = [
            decode(raw, None if scales is None else scales[t], self.dtype)
            for t, raw in enumerate(tiers)
        ]  # each (n, tier_size, D)
        return np.concatenate(decoded, axis=1)

    def gather_tiers(
        self, ids: Sequence[int] | np.ndarray, r_c: int | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Raw stored tiers (and int8 scales) of the given ids, for reranking with ``score_tiers``.

        Returns the tiers holding the first ``r_c`` vectors (all when ``None``),
        each of shape (n, tier_size, dim). An id not in the index raises ``KeyError``.
        """
        self._maybe_refresh()
        id_array = check_ids(ids, unique=False)
        num_tiers = self.layout.tiers_for(self.num_vectors if r_c is None else r_c)
        return self._snapshot.gather(id_array, num_tiers)

    def __contains__(self, candidate_id: object) -> bool:
        if not isinstance(candidate_id, (int, np.integer)):
            return False
        self._maybe_refresh()
        return bool(self._snapshot.locate(np.array([candidate_id], dtype=np.int64)))

    def stats(self) -> dict[str, Any]:
        """Sizes: candidates, segments, dtype, bytes on disk and bytes read per budget."""
        self._maybe_refresh()
        return {
            **self._snapshot.manifest.stats(),
            "bytes_on_disk": sum(f.stat().st_size for f in self.path.iterdir() if f.is_file()),
        }
