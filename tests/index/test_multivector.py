"""MultiVectorIndex: congruence with reference MaxSim, add/delete/upsert, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaembed import Budget, maxsim
from metaembed.index.base import EMPTY_ID
from metaembed.index.codecs import STORAGE_DTYPES
from metaembed.index.multivector import MultiVectorIndex

BUDGETS = ["1x1", "2x4", "4x8", "8x16", "16x64", "3x6", "16x17"]


def build(tmp_path, candidates, dtype, **options):
    index = MultiVectorIndex.create(
        tmp_path / f"idx-{dtype}", dim=candidates.shape[2], dtype=dtype, **options
    )
    index.add(np.arange(100, 100 + len(candidates)), candidates)
    return index


def brute_force(queries, candidates, budget):
    budget = Budget.parse(budget)
    q = queries[:, : budget.r_q].double().numpy()
    c = candidates[:, : budget.r_c].double().numpy()
    return np.einsum("qid,njd->qnij", q, c).max(axis=3).sum(axis=2)  # (Nq, Nc)


@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_congruent_with_reference_maxsim(tmp_path, corpus, dtype):
    candidates, queries = corpus
    index = build(tmp_path, candidates, dtype)
    stored = torch.from_numpy(index.reconstruct(np.arange(100, 140)))  # (40, 64, 16) decoded
    for budget in BUDGETS:
        result = index.search(queries, k=7, budget=budget)
        reference = maxsim(queries, stored, budget=budget)  # (5, 40)
        top_scores, top_rows = torch.topk(reference, 7, dim=1)
        np.testing.assert_array_equal(result.ids, top_rows.numpy() + 100)
        np.testing.assert_allclose(result.scores, top_scores.numpy(), atol=1e-4)
        assert result.budget == Budget.parse(budget)


@pytest.mark.parametrize(
    "dtype, tolerance", [("float32", 1e-5), ("float16", 2e-2), ("bfloat16", 0.1), ("int8", 0.1)]
)
def test_scores_close_to_unquantised_brute_force(tmp_path, corpus, dtype, tolerance):
    candidates, queries = corpus
    index = build(tmp_path, candidates, dtype)
    exact = brute_force(queries, candidates, "16x64")  # (5, 40) float64
    result = index.search(queries, k=40, budget="16x64")
    rows = result.ids - 100
    np.testing.assert_allclose(
        result.scores, np.take_along_axis(exact, rows, axis=1), atol=tolerance
    )
    assert (result.ids[:, 0] - 100 == exact.argmax(axis=1)).mean() >= 0.8


def test_fewer_hits_than_k_are_marked_empty(tmp_path, corpus):
    candidates, queries = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, num_vectors=8)
    assert index.search(queries, k=3, budget="2x4").ids.tolist() == [[EMPTY_ID] * 3] * 5
    index.add([7, 9], candidates[:2])
    result = index.search(queries[:1], k=4, budget="2x4")
    assert sorted(result.ids[0, :2].tolist()) == [7, 9]
    assert result.ids[0, 2:].tolist() == [EMPTY_ID, EMPTY_ID]
    assert np.isneginf(result.scores[0, 2:]).all() and np.isfinite(result.scores[0, :2]).all()
    assert result.hits(0)[0][0] in (7, 9) and len(result.hits(0)) == 2


def test_duplicates_rejected_unless_upsert(tmp_path, corpus):
    candidates, queries = corpus
    index = build(tmp_path, candidates[:10], "float32")
    with pytest.raises(ValueError, match=r"already exist.*\(100, 101\).*upsert=True"):
        index.add([100, 101], candidates[10:12])
    with pytest.raises(ValueError, match="duplicates"):
        index.add([5, 5], candidates[10:12])
    index.add([100, 101], candidates[10:12], upsert=True)
    assert len(index) == 10
    np.testing.assert_array_equal(index.reconstruct([100, 101]), candidates[10:12].numpy())
    result = index.search(candidates[10:11, :16], k=1, budget="16x64")
    assert result.ids[0, 0] == 100


def test_delete_and_reopen(tmp_path, corpus):
    candidates, queries = corpus
    index = build(tmp_path, candidates, "float16")
    assert index.delete([100, 105, 999]) == 2
    assert index.delete([100]) == 0
    assert len(index) == 38 and 100 not in index and 101 in index
    result = index.search(queries, k=40, budget="4x8")
    assert set(result.ids[0, :38].tolist()) == set(range(101, 140)) - {105}
    assert result.ids[0, 38:].tolist() == [EMPTY_ID, EMPTY_ID]
    index.close()
    reopened = MultiVectorIndex.open(tmp_path / "idx-float16")
    assert len(reopened) == 38
    np.testing.assert_array_equal(reopened.search(queries, k=5).ids, index.search(queries, k=5).ids)


def test_many_adds_merge_segments_and_compact(tmp_path, corpus):
    candidates, queries = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, dtype="int8", num_vectors=16)
    for start in range(0, 40, 3):
        index.add(np.arange(start, min(start + 3, 40)), candidates[start : start + 3])
    assert len(index) == 40
    assert index.stats()["num_segments"] <= 5  # logarithmic, not 14
    index.delete(np.arange(0, 40, 2))
    before = index.search(queries, k=5, budget="8x16")
    index.compact()
    stats = index.stats()
    assert (
        stats["num_segments"] == 1 and stats["num_deleted"] == 0 and stats["num_candidates"] == 20
    )
    after = index.search(queries, k=5, budget="8x16")
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-6)


def test_metadata_round_trip(tmp_path, corpus):
    candidates, _ = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16)
    index.add([1, 2, 3], candidates[:3], metadata=[{"title": "a"}, None, {"page": 3}])
    index.add([4], candidates[3:4])
    assert index.get_metadata([3, 2, 4, 1, 77]) == [{"page": 3}, None, None, {"title": "a"}, None]
    with pytest.raises(ValueError, match="JSON"):
        index.add([5], candidates[4:5], metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="1 metadata entries for 2 ids"):
        index.add([5, 6], candidates[4:6], metadata=[{}])


def test_tiers_follow_groups_and_stats(tmp_path, corpus):
    candidates, _ = corpus
    index = build(tmp_path, candidates, "float16")
    stats = index.stats()
    assert stats["tiers"] == [[0, 1], [1, 4], [4, 8], [8, 16], [16, 64]]
    per_candidate = stats["bytes_per_candidate"]
    assert per_candidate["1x1"] == 16 * 2 + 8 and per_candidate["16x64"] == 64 * 16 * 2 + 8
    assert stats["bytes_per_budget"]["4x8"] == 40 * (8 * 16 * 2 + 8)
    files = sorted(
        p.name for p in (tmp_path / "idx-float16").iterdir() if p.name.endswith((".t0", ".t4"))
    )
    sizes = [(tmp_path / "idx-float16" / name).stat().st_size for name in files]
    assert sizes == [40 * 1 * 16 * 2, 40 * 48 * 16 * 2]
    small = MultiVectorIndex.create(tmp_path / "small", dim=16, num_vectors=12)
    assert small.stats()["tiers"] == [[0, 1], [1, 4], [4, 8], [8, 12]]
    assert "16x12" in small.stats()["bytes_per_budget"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c.index_put_(
                (torch.tensor(2), torch.tensor(5)), torch.full((16,), float("nan"))
            ),
            "candidate 2 vector 5 contains NaN",
        ),
        (
            lambda c: c.index_put_(
                (torch.tensor(1), torch.tensor(0)), torch.full((16,), float("inf"))
            ),
            "candidate 1 vector 0 contains NaN or inf",
        ),
        (
            lambda c: c.index_put_((torch.tensor(3), torch.tensor(63)), torch.zeros(16)),
            "candidate 3 vector 63 is all zeros",
        ),
        (lambda c: c[:, :, :8], "dim 8 but 16 was expected"),
        (lambda c: c[:, :32], "32 vectors per candidate but the index stores 64"),
    ],
)
def test_bad_candidates_are_rejected(tmp_path, corpus, mutate, message):
    candidates, _ = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16)
    with pytest.raises(ValueError, match=message):
        index.add(np.arange(5), mutate(candidates[:5].clone()))
    assert len(index) == 0


def test_bad_queries_are_rejected(tmp_path, corpus):
    candidates, queries = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, num_vectors=16)
    index.add(np.arange(5), candidates[:5])
    with pytest.raises(ValueError, match=r"r_c=64 candidate vectors but only 16 are stored"):
        index.search(queries, budget="16x64")
    with pytest.raises(ValueError, match=r"r_q=16 query vectors but only 4 are available"):
        index.search(queries[:, :4], budget="16x16")
    with pytest.raises(ValueError, match="dim 8 but 16"):
        index.search(queries[:, :, :8])
    with pytest.raises(ValueError, match="NaN"):
        index.search(queries * float("nan"))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(queries, k=0)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        index.add([-1], candidates[:1])
    with pytest.raises(ValueError, match="unknown storage dtype 'float64'"):
        MultiVectorIndex.create(tmp_path / "other", dim=16, dtype="float64")
    with pytest.raises(FileExistsError, match="already holds an index"):
        MultiVectorIndex.create(tmp_path / "idx", dim=16)


def test_numpy_inputs_and_default_budget(tmp_path, corpus):
    candidates, queries = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, num_vectors=16, dtype="float32")
    index.add(np.arange(40), candidates.numpy()[:, :16].astype(np.float16))
    result = index.search(queries.numpy(), k=3)
    assert result.budget == Budget(16, 16)
    reference = maxsim(queries, candidates[:, :16].half().float())
    np.testing.assert_array_equal(result.ids, torch.topk(reference, 3).indices.numpy())


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_device_resident_tiers_match_mapped_search(tmp_path, corpus, dtype, backend):
    """``device=`` keeps tiers as torch tensors (in RAM on CPU, scored by ``backend``; the
    CUDA path runs the torch backend on the same tensors): same results as memory-mapped."""
    candidates, queries = corpus
    build(tmp_path, candidates, dtype).close()
    mapped = MultiVectorIndex.open(tmp_path / f"idx-{dtype}")
    resident = MultiVectorIndex.open(tmp_path / f"idx-{dtype}", device="cpu", backend=backend)
    for budget in ["1x1", "4x8", "16x64", "3x5"]:
        expected, got = (
            mapped.search(queries, k=6, budget=budget),
            resident.search(queries, k=6, budget=budget),
        )
        np.testing.assert_array_equal(got.ids, expected.ids)
        # the two may run different kernels (AMX's split bfloat16 products: within 2^-18)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5, rtol=1e-5)
