"""QdrantIndex in qdrant-client's in-process local mode, against the reference maxsim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaembed.budget import PAPER_GROUPS, Budget
from metaembed.index.base import EMPTY_ID, EMPTY_SCORE
from metaembed.index.qdrant_layout import QdrantLayout
from metaembed.maxsim import maxsim

pytest.importorskip("qdrant_client")

from metaembed.index.qdrant import QdrantIndex  # noqa: E402

NUM_CANDIDATES, NUM_QUERIES, NUM_VECTORS, DIM, K = 120, 4, 64, 16, 10


def _normalised(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "ids": torch.arange(NUM_CANDIDATES, dtype=torch.int64) * 7 + 3,  # not 0..N-1
        "candidates": _normalised(generator, NUM_CANDIDATES, NUM_VECTORS, DIM),
        "queries": _normalised(generator, NUM_QUERIES, 16, DIM),
    }


@pytest.fixture(scope="module")
def index(data: dict[str, torch.Tensor]) -> QdrantIndex:
    built = QdrantIndex.create(":memory:", dim=DIM, num_vectors=NUM_VECTORS, upsert_batch_size=50)
    built.add(data["ids"].numpy(), data["candidates"])
    return built


def _reference(
    data: dict[str, torch.Tensor], budget: Budget, k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    scores = maxsim(data["queries"], data["candidates"], budget)  # (Nq, N)
    top_scores, top_positions = scores.topk(k, dim=1)
    return data["ids"].numpy()[top_positions.numpy()], top_scores.numpy()


@pytest.mark.parametrize(
    "budget", [*PAPER_GROUPS, Budget(4, 1), Budget(16, 8), Budget(1, 64)], ids=str
)
def test_exact_search_matches_reference_maxsim(index, data, budget):
    result = index.search(data["queries"], k=K, budget=budget, exact=True)
    expected_ids, expected_scores = _reference(data, budget)
    assert result.budget == budget
    assert result.ids.dtype == np.int64 and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.ids, expected_ids)
    np.testing.assert_allclose(result.scores, expected_scores, atol=1e-4)


@pytest.mark.parametrize("budget", PAPER_GROUPS, ids=str)
def test_prefetch_covering_every_candidate_equals_exact(index, data, budget):
    result = index.search(data["queries"], k=K, budget=budget, prefetch_limit=NUM_CANDIDATES)
    expected_ids, _ = _reference(data, budget)
    np.testing.assert_array_equal(result.ids, expected_ids)


def test_prefetch_reranks_the_first_vector_shortlist_exactly(index, data):
    budget, shortlist_size = Budget(8, 16), 20
    result = index.search(data["queries"], k=K, budget=budget, prefetch_limit=shortlist_size)
    first_scores = maxsim(data["queries"], data["candidates"], Budget(1, 1))  # (Nq, N)
    full_scores = maxsim(data["queries"], data["candidates"], budget)  # (Nq, N)
    ids = data["ids"].numpy()
    for row in range(NUM_QUERIES):
        shortlist = first_scores[row].topk(shortlist_size).indices  # (K',)
        reranked = full_scores[row, shortlist].topk(K)
        np.testing.assert_array_equal(result.ids[row], ids[shortlist[reranked.indices].numpy()])
        np.testing.assert_allclose(result.scores[row], reranked.values.numpy(), atol=1e-4)


def test_numpy_and_half_precision_queries_are_accepted(index, data):
    budget = Budget(2, 4)
    as_float32 = index.search(data["queries"], k=K, budget=budget, exact=True)
    as_numpy = index.search(data["queries"].numpy(), k=K, budget=budget, exact=True)
    as_half = index.search(data["queries"].half(), k=K, budget=budget, exact=True)
    np.testing.assert_array_equal(as_numpy.ids, as_float32.ids)
    np.testing.assert_allclose(as_half.scores, as_float32.scores, atol=5e-3)


def test_fewer_candidates_than_k_pads_with_empty_slots():
    generator = torch.Generator().manual_seed(1)
    small = QdrantIndex.create(":memory:", dim=8, num_vectors=4)
    small.add([5, 6], _normalised(generator, 2, 4, 8))
    result = small.search(_normalised(generator, 1, 2, 8), k=5, budget="2x4", exact=True)
    assert set(result.ids[0, :2]) == {5, 6}
    assert (result.ids[0, 2:] == EMPTY_ID).all() and (result.scores[0, 2:] == EMPTY_SCORE).all()
    assert result.hits(0)[0][0] in (5, 6) and len(result.hits(0)) == 2


def test_unstored_prefix_raises_or_rounds_up(index, data):
    with pytest.raises(ValueError, match=r"r_c=6.*not a stored prefix.*r_c=4 or r_c=8"):
        index.search(data["queries"], budget=Budget(4, 6), exact=True)
    rounded = index.search(data["queries"], k=K, budget=Budget(4, 6), exact=True, round_up=True)
    assert rounded.budget == Budget(4, 8)
    np.testing.assert_array_equal(rounded.ids, _reference(data, Budget(4, 8))[0])


@pytest.mark.parametrize(
    ("budget", "message"),
    [(Budget(1, 128), r"r_c=128 .* only 64 are stored"), (Budget(32, 8), r"r_q=32 .* only 16")],
)
def test_budget_above_what_exists_is_rejected(index, data, budget, message):
    with pytest.raises(ValueError, match=message):
        index.search(data["queries"], budget=budget)


def test_bad_queries_are_rejected(index, data):
    with pytest.raises(ValueError, match="dim 8 but 16"):
        index.search(torch.randn(1, 4, 8))
    nan_query = data["queries"][:1].clone()
    nan_query[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(nan_query)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(data["queries"], k=0)


@pytest.fixture()
def empty_index() -> QdrantIndex:
    return QdrantIndex.create(":memory:", dim=8, num_vectors=4)


def test_bad_candidates_are_rejected(empty_index):
    good = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    with pytest.raises(ValueError, match="dim 6 but 8"):
        empty_index.add([1, 2], torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="3 vectors per candidate but the index stores 4"):
        empty_index.add([1, 2], good[:, :3])
    for bad_value in (float("nan"), float("inf")):
        broken = good.clone()
        broken[1, 2, 3] = bad_value
        with pytest.raises(ValueError, match="NaN or inf"):
            empty_index.add([1, 2], broken)
    zero = good.clone()
    zero[1, 3] = 0.0
    with pytest.raises(ValueError, match="candidate 1 vector 3 is all zeros"):
        empty_index.add([1, 2], zero)
    with pytest.raises(ValueError, match="must be >= 0"):
        empty_index.add([-1, 2], good)
    with pytest.raises(ValueError, match="duplicates"):
        empty_index.add([1, 1], good)
    with pytest.raises(ValueError, match="2 ids but 3"):
        empty_index.add([1, 2], torch.cat([good, good[:1]]))
    with pytest.raises(ValueError, match="1 metadata entries for 2 ids"):
        empty_index.add([1, 2], good, metadata=[{}])
    assert len(empty_index) == 0


def test_existing_ids_are_rejected_unless_upsert(empty_index):
    generator = torch.Generator().manual_seed(2)
    first, second = _normalised(generator, 2, 4, 8), _normalised(generator, 2, 4, 8)
    empty_index.add([1, 2], first)
    with pytest.raises(ValueError, match=r"already present, e.g. \[2\]; pass upsert=True"):
        empty_index.add([2, 3], second)
    empty_index.add([2, 3], second, upsert=True)
    assert len(empty_index) == 3
    result = empty_index.search(second[:1], k=1, budget="4x4", exact=True)  # the new vectors of 2
    assert result.ids[0, 0] == 2
    np.testing.assert_allclose(result.scores[0, 0], 4.0, atol=1e-4)


def test_delete_removes_candidates_from_results(data):
    deletable = QdrantIndex.create(":memory:", dim=DIM, num_vectors=NUM_VECTORS)
    deletable.add(
        data["ids"], data["candidates"], metadata=[{"row": i} for i in range(NUM_CANDIDATES)]
    )
    budget = Budget(4, 8)
    top_ids = deletable.search(data["queries"], k=K, budget=budget, exact=True).ids
    removed = np.unique(top_ids[:, :3])
    assert deletable.delete(np.concatenate([removed, [10**12]])) == len(removed)
    assert len(deletable) == NUM_CANDIDATES - len(removed)
    assert deletable.delete(removed) == 0
    after = deletable.search(data["queries"], k=K, budget=budget, exact=True)
    keep = ~np.isin(data["ids"].numpy(), removed)
    scores = maxsim(data["queries"], data["candidates"][keep], budget)  # (Nq, N - removed)
    np.testing.assert_array_equal(
        after.ids, data["ids"].numpy()[keep][scores.topk(K).indices.numpy()]
    )
    assert not np.isin(after.ids, removed).any()
    assert deletable.metadata([data["ids"][5].item(), int(removed[0])]) == [{"row": 5}, None]


@pytest.mark.parametrize("exact", [True, False])
def test_metadata_filter_restricts_prefetch_and_rerank(data, exact):
    from qdrant_client import models

    filtered = QdrantIndex.create(":memory:", dim=DIM, num_vectors=NUM_VECTORS, prefetch_limit=12)
    parity = [{"even": i % 2 == 0} for i in range(NUM_CANDIDATES)]
    filtered.add(data["ids"], data["candidates"], metadata=parity)
    only_even = models.Filter(
        must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))]
    )
    budget, even = Budget(4, 8), slice(0, NUM_CANDIDATES, 2)
    even_data = {**data, "ids": data["ids"][even], "candidates": data["candidates"][even]}
    result = filtered.search(
        data["queries"], k=K, budget=budget, exact=exact, query_filter=only_even
    )
    if exact:
        np.testing.assert_array_equal(result.ids, _reference(even_data, budget)[0])
    else:  # the top K'=12 even candidates by first vector, reranked
        first_scores = maxsim(data["queries"], even_data["candidates"], Budget(1, 1))  # (Nq, N/2)
        full_scores = maxsim(data["queries"], even_data["candidates"], budget)  # (Nq, N/2)
        for row in range(NUM_QUERIES):
            shortlist = first_scores[row].topk(12).indices  # (K',)
            best = shortlist[full_scores[row, shortlist].topk(K).indices]  # (K,)
            np.testing.assert_array_equal(result.ids[row], even_data["ids"][best].numpy())


def test_folder_collection_persists_and_reopens(tmp_path, data):
    location = tmp_path / "qdrant"
    subset = slice(0, 40)
    with QdrantIndex.create(location, dim=DIM, num_vectors=16, collection="docs") as created:
        created.add(data["ids"][subset], data["candidates"][subset, :16], metadata=[{"a": 1}] * 40)
        expected = created.search(data["queries"], k=5, budget="8x16", exact=True)
    with QdrantIndex.open(location, collection="docs") as reopened:
        assert (reopened.dim, reopened.num_vectors) == (DIM, 16)
        assert reopened.layout.prefix_sizes == (1, 4, 8, 16)
        result = reopened.search(data["queries"], k=5, budget="8x16", exact=True)
        np.testing.assert_array_equal(result.ids, expected.ids)
        assert len(reopened) == 40


def test_create_and_open_errors(tmp_path, index):
    with pytest.raises(ValueError, match="already exists"):
        QdrantIndex.create(client=index.client, dim=DIM)
    with pytest.raises(ValueError, match="does not exist"):
        QdrantIndex.open(client=index.client, collection="missing")
    with pytest.raises(ValueError, match="lives only inside its client"):
        QdrantIndex.open(":memory:")
    with pytest.raises(ValueError, match="must equal num_vectors=32"):
        QdrantIndex.create(dim=DIM, num_vectors=32, prefix_sizes=(1, 4, 16))
    plain = index.client
    plain.create_collection("plain", vectors_config={})
    with pytest.raises(ValueError, match="no metaembed layout"):
        QdrantIndex.open(client=plain, collection="plain")
    reopened = QdrantIndex.open(client=index.client)
    assert reopened.layout == index.layout


def test_open_reads_the_layout_off_the_vectors_when_metadata_is_missing(data):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")  # as on a server without collection metadata
    layout = QdrantLayout(dim=DIM, prefix_sizes=(1, 8, 64), datatype="float16")
    client.create_collection("old", vectors_config=layout.vectors_config(models))
    opened = QdrantIndex.open(client=client, collection="old")
    assert opened.layout == layout
    opened.add(data["ids"], data["candidates"])
    result = opened.search(data["queries"], k=K, budget="2x8", exact=True)
    np.testing.assert_array_equal(result.ids, _reference(data, Budget(2, 8))[0])


def test_stats_report_storage_per_budget(index):
    stats = index.stats()
    assert stats["num_candidates"] == NUM_CANDIDATES and stats["backend"] == "qdrant"
    assert stats["prefix_sizes"] == [1, 4, 8, 16, 64]
    assert stats["stored_vectors_per_candidate"] == 93
    assert stats["bytes_stored"] == NUM_CANDIDATES * 93 * DIM * 4
    assert stats["bytes_per_budget"]["16x64"] == NUM_CANDIDATES * 64 * DIM * 4
    assert stats["bytes_per_budget"]["1x1"] == NUM_CANDIDATES * DIM * 4


@pytest.fixture(scope="module")
def embedded_indexes(tmp_path_factory, data) -> dict:
    """The embedded MultiVectorIndex on the same data, once per scoring backend."""
    multivector = pytest.importorskip("metaembed.index.multivector")
    from metaembed.index.kernels import available_backends

    indexes = {}
    for backend in available_backends():
        embedded = multivector.MultiVectorIndex.create(
            tmp_path_factory.mktemp(backend) / "index",
            dim=DIM,
            num_vectors=NUM_VECTORS,
            dtype="float32",
            backend=backend,
        )
        embedded.add(data["ids"].numpy(), data["candidates"])
        indexes[backend] = embedded
    return indexes


@pytest.mark.parametrize("budget", PAPER_GROUPS, ids=str)
def test_same_results_as_the_embedded_index(embedded_indexes, index, data, budget):
    result = index.search(data["queries"], k=K, budget=budget, exact=True)
    for backend, embedded in embedded_indexes.items():
        expected = embedded.search(data["queries"], k=K, budget=budget)
        np.testing.assert_array_equal(result.ids, expected.ids, err_msg=backend)
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-4, err_msg=backend)
        assert len(embedded) == len(index)
