"""Persistence: checksums catch damage on open, writer lock, orphan clean-up, concurrent readers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from metaembed.index.multivector import MultiVectorIndex
from metaembed.index.storage import CorruptIndexError, Layout, Manifest, read_manifest, tier_bounds


def make_index(tmp_path, corpus, dtype="float16"):
    candidates, _ = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, num_vectors=16, dtype=dtype)
    index.add(np.arange(40), candidates[:, :16])
    index.close()
    return tmp_path / "idx"


def tier_file(folder, tier):
    return next(p for p in sorted(folder.iterdir()) if p.name.endswith(f".t{tier}"))


def test_truncated_tier_file_is_reported(tmp_path, corpus):
    folder = make_index(tmp_path, corpus)
    path = tier_file(folder, 2)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        CorruptIndexError, match=rf"{path.name} has \d+ bytes but the manifest records \d+"
    ):
        MultiVectorIndex.open(folder, verify=False)


def test_flipped_byte_fails_checksum(tmp_path, corpus):
    folder = make_index(tmp_path, corpus)
    path = tier_file(folder, 3)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    MultiVectorIndex.open(folder, verify=False)  # sizes only: not detected
    with pytest.raises(CorruptIndexError, match=rf"{path.name} fails its CRC-32"):
        MultiVectorIndex.open(folder)


def test_missing_file_and_damaged_manifest(tmp_path, corpus):
    folder = make_index(tmp_path, corpus)
    manifest = folder / "manifest.json"
    original = manifest.read_text()
    manifest.write_text(original[: len(original) // 2])
    with pytest.raises(CorruptIndexError, match="not a valid index manifest"):
        MultiVectorIndex.open(folder)
    document = json.loads(original)
    document["body"]["generation"] += 1
    manifest.write_text(json.dumps(document))
    with pytest.raises(CorruptIndexError, match="fails its checksum"):
        MultiVectorIndex.open(folder)
    manifest.write_text(original)
    tier_file(folder, 0).unlink()
    with pytest.raises(CorruptIndexError, match="is missing"):
        MultiVectorIndex.open(folder)
    with pytest.raises(FileNotFoundError, match="no index at"):
        MultiVectorIndex.open(tmp_path / "nowhere")


def test_manifest_round_trip():
    layout = Layout(dim=4, num_vectors=12, dtype="int8", tiers=tier_bounds(12))
    folder_manifest = Manifest.from_json(Manifest(layout=layout).to_json(), source=Path("x"))
    assert folder_manifest.layout.tiers == ((0, 1), (1, 4), (4, 8), (8, 12))
    assert folder_manifest.layout.dtype == "int8" and folder_manifest.segments == ()


def test_one_writer_at_a_time(tmp_path, corpus):
    candidates, _ = corpus
    folder = make_index(tmp_path, corpus)
    writer = MultiVectorIndex.open(folder)
    writer.add([100], candidates[:1, :16])
    other = MultiVectorIndex.open(folder)
    with pytest.raises(RuntimeError, match="another writer holds"):
        other.delete([1])
    assert len(other) == 41  # reading needs no lock
    writer.close()
    assert other.delete([1]) == 1


def test_crash_leftovers_are_removed_by_next_writer(tmp_path, corpus):
    candidates, _ = corpus
    folder = make_index(tmp_path, corpus)
    (folder / "seg-00000099.t0").write_bytes(b"half written")
    (folder / ".manifest.json.tmp-123").write_bytes(b"{")
    index = MultiVectorIndex.open(folder)
    assert len(index) == 40
    index.add([500], candidates[:1, :16])
    names = {p.name for p in folder.iterdir()}
    assert "seg-00000099.t0" not in names and ".manifest.json.tmp-123" not in names
    assert read_manifest(folder).num_live == 41


def test_reader_keeps_working_while_writer_appends(tmp_path, corpus):
    candidates, queries = corpus
    folder = make_index(tmp_path, corpus, "int8")
    reader = MultiVectorIndex.open(folder)
    errors, sizes, stop = [], [], threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                result = reader.search(queries[:2], k=5, budget="4x16")
                assert ((result.ids >= 0) & (result.ids < 10_000)).all()
                sizes.append(len(reader))
            except Exception as error:  # noqa: BLE001 - collected and re-raised below
                errors.append(error)
                return

    thread = threading.Thread(target=read_loop)
    thread.start()
    writer = MultiVectorIndex.open(folder)
    rng = np.random.default_rng(0)
    for step in range(15):
        ids = np.arange(1000 + step * 4, 1004 + step * 4)
        writer.add(ids, candidates[rng.integers(0, 40, 4), :16])
        if step % 5 == 4:
            writer.delete(ids[:1])
    stop.set()
    thread.join()
    assert not errors, errors[0]
    assert len(sizes) > 1  # the reader searched while the writer committed
    reader.refresh()
    assert len(reader) == 40 + 60 - 3
