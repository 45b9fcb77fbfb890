"""Embedding cache: distinct items encoded once, reuse across runs, atomic files, keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaembed.evaluation.cache import EmbeddingCache, encode_items, item_key, model_fingerprint
from metaembed.evaluation.mmeb import load_mmeb
from metaembed.evaluation.runner import run_mmeb
from metaembed.items import Item


def test_distinct_items_encoded_once_without_cache(encoder):
    items = [
        Item(text="red"),
        Item(text="blue"),
        Item(text="red"),
        Item(text="red", instruction="I:"),
    ]
    embeddings, positions = encode_items(encoder, items, "candidate")
    assert embeddings.shape == (3, 8, 16) and positions == [0, 1, 0, 2]
    assert encoder.calls == [("candidate", 3)]


def test_cache_reuses_and_extends(tmp_path, encoder):
    cache = EmbeddingCache(tmp_path, "model-a")
    first, pos = cache.encode(
        encoder,
        [Item(text="red"), Item(text="blue")],
        "query",
        "ds/task",
        "rev1",
        show_progress=False,
    )
    again, pos_again = cache.encode(
        encoder, [Item(text="blue"), Item(text="red")], "query", "ds/task", "rev1"
    )
    assert encoder.calls == [("query", 2)]  # second call encoded nothing
    assert torch.equal(again[pos_again[1]], first[pos[0]])
    cache.encode(encoder, [Item(text="green"), Item(text="red")], "query", "ds/task", "rev1")
    assert encoder.calls[-1] == ("query", 1)
    stored = np.load(cache.path("ds/task", "rev1", "query"))
    assert stored["embeddings"].shape == (3, 4, 16) and len(stored["keys"]) == 3
    # another revision or model is another file
    cache.encode(encoder, [Item(text="red")], "query", "ds/task", "rev2")
    assert encoder.calls[-1] == ("query", 1)
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_cache_file_is_ignored(tmp_path, encoder):
    cache = EmbeddingCache(tmp_path, "m")
    path = cache.path("d", "r", "candidate")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    embeddings, _ = cache.encode(encoder, [Item(text="red")], "candidate", "d", "r")
    assert embeddings.shape == (1, 8, 16)


def test_shape_change_is_reported(tmp_path, encoder, kit):
    cache = EmbeddingCache(tmp_path, "m")
    cache.encode(encoder, [Item(text="red")], "candidate", "d", "r")
    other = kit.StandInEncoder(dim=8)
    with pytest.raises(ValueError, match="delete the cache"):
        cache.encode(other, [Item(text="blue")], "candidate", "d", "r")


def test_keys_and_fingerprints(kit):
    from PIL import Image

    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert item_key(Item(image=red)) == item_key(Item(image=red.copy()))
    assert item_key(Item(image=red)) != item_key(Item(image=Image.new("RGB", (4, 4), (0, 0, 255))))
    assert item_key(Item(text="façade 红")) != item_key(Item(text="facade"))
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert model_fingerprint(a) != model_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with pytest.raises(ValueError, match="no query items"):
        encode_items(kit.StandInEncoder(), [], "query")


def test_runner_second_run_hits_cache(tmp_path, mmeb_folder, encoder):
    tasks, revision = load_mmeb(mmeb_folder)
    cache = EmbeddingCache(tmp_path / "cache", model_fingerprint(encoder))
    first = run_mmeb(encoder, tasks, "all", cache=cache, revision=revision, show_progress=False)
    calls = len(encoder.calls)
    second = run_mmeb(encoder, tasks, "all", cache=cache, revision=revision, show_progress=False)
    assert len(encoder.calls) == calls and first.scores == second.scores
