"""Crash safety: a writer process is killed (SIGKILL) at random points during add and delete.

After every kill the index is re-opened with full checksum verification. The
writer records an operation as committed (in a separate fsync'd progress file)
only after ``add``/``delete`` returned, so the index must hold exactly the state
after the last recorded operation, or after the one in flight when it was killed
(which may or may not have reached its manifest commit). Stored vectors of
every live id must equal what was added.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest

from metaembed.index.codecs import decode, encode
from metaembed.index.multivector import MultiVectorIndex
from metaembed.index.storage import read_manifest, referenced_files

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork"
)

DIM, NUM_VECTORS, DTYPE = 8, 8, "float16"


def operations(count: int, seed: int = 7) -> list[tuple[str, np.ndarray, int]]:
    """Deterministic add (upsert) and delete operations over ids 0..59."""
    rng = np.random.default_rng(seed)
    ops = []
    for step in range(count):
        kind = "delete" if step % 4 == 3 else "add"
        ids = rng.choice(60, size=int(rng.integers(1, 6)), replace=False)
        ops.append((kind, ids, step))
    return ops


def embeddings(step: int, count: int) -> np.ndarray:
    values = (
        np.random.default_rng(1000 + step)
        .standard_normal((count, NUM_VECTORS, DIM))
        .astype(np.float32)
    )
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def state_after(ops, last: int) -> dict[int, np.ndarray]:
    """Expected {id: stored vectors} after operations 0..last."""
    state: dict[int, np.ndarray] = {}
    for kind, ids, step in ops[: last + 1]:
        if kind == "delete":
            for candidate_id in ids:
                state.pop(int(candidate_id), None)
        else:
            values = embeddings(step, len(ids))
            stored = decode(encode(values, DTYPE)[0], None, DTYPE)
            state.update({int(i): v for i, v in zip(ids, stored, strict=True)})
    return state


def run_writer(folder, progress, ops, first: int) -> None:
    """Child process: apply operations from ``first`` on, recording each after it returns."""
    index = MultiVectorIndex.open(folder, verify=False)
    for position in range(first, len(ops)):
        kind, ids, step = ops[position]
        if kind == "add":
            index.add(ids, embeddings(step, len(ids)), upsert=True)
        else:
            index.delete(ids)
        with open(progress, "a") as handle:
            handle.write(f"{position}\n")
            handle.flush()
            os.fsync(handle.fileno())


def last_recorded(progress) -> int:
    if not progress.exists():
        return -1
    lines = progress.read_text().split()
    return int(lines[-1]) if lines else -1


def check_state(folder, ops, last: int) -> int:
    """Verify the re-opened index equals the state after ``last`` or ``last + 1``; return which."""
    index = MultiVectorIndex.open(folder, verify=True)
    live = set(int(i) for i in index._snapshot.sorted_ids)
    ids = np.array(sorted(live), dtype=np.int64)
    stored = index.reconstruct(ids) if live else None
    for candidate in (last, last + 1):  # an upsert may keep the id set but change vectors
        expected = state_after(ops, candidate)
        if set(expected) != live:
            continue
        if live and not np.array_equal(stored, np.stack([expected[int(i)] for i in ids])):
            continue
        if live:
            result = index.search(stored[:1], k=1, budget="8x8")
            assert result.ids[0, 0] == ids[0]
        return candidate
    raise AssertionError(
        f"index state (ids {sorted(live)}) matches neither operation {last} nor {last + 1}"
    )


@pytest.mark.slow
def test_writer_killed_at_random_points_leaves_a_committed_state(tmp_path):
    folder, progress = tmp_path / "idx", tmp_path / "progress"
    MultiVectorIndex.create(folder, dim=DIM, num_vectors=NUM_VECTORS, dtype=DTYPE).close()
    ops = operations(2000)
    rng = np.random.default_rng(0)
    kills, states = 0, set()
    for _ in range(40):
        first = last_recorded(progress) + 1
        pid = os.fork()
        if pid == 0:  # child: the writer
            try:
                run_writer(folder, progress, ops, first)
            finally:
                os._exit(0)
        time.sleep(float(rng.uniform(0.0, 0.25)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        reached = check_state(folder, ops, last_recorded(progress))
        states.add(reached)
        if reached > last_recorded(progress):  # the in-flight operation committed: record it
            with open(progress, "a") as handle:
                handle.write(f"{reached}\n")
    assert kills == 40
    assert len(states) > 20, "kills should land at many different points"
    # a later writer removes whatever the killed writers left half-written
    writer = MultiVectorIndex.open(folder)
    writer.delete([10_000])
    writer.add([10_001], embeddings(0, 1))
    leftovers = {p.name for p in folder.iterdir()} - referenced_files(read_manifest(folder))
    assert not leftovers, leftovers
