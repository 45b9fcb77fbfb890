"""What QdrantIndex sends to a Qdrant server, and randomized congruence in local mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaembed.budget import Budget
from metaembed.index.base import EMPTY_ID
from metaembed.index.qdrant_layout import QdrantLayout
from metaembed.maxsim import maxsim

pytest.importorskip("qdrant_client")


from metaembed.index.qdrant import QdrantIndex, _connect  # noqa: E402


class _ServerClient:
    """Stands in for a remote QdrantClient: only what QdrantIndex reads before a call."""

    init_options = {"location": None, "url": "http://qdrant:6333", "path": None}


@pytest.fixture()
def server_index() -> QdrantIndex:
    layout = QdrantLayout(dim=4, prefix_sizes=(1, 4, 16))
    return QdrantIndex(_ServerClient(), "pages", layout, prefetch_limit=300)


def test_server_request_prefetches_on_the_first_vector_then_reranks(server_index):
    query = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)  # (r_q, D)
    request = server_index._request(query, Budget(8, 16), k=10, exact=False, limit=300)
    assert request.using == "p16" and request.limit == 10
    np.testing.assert_array_equal(request.query, query)
    assert request.prefetch.using == "first" and request.prefetch.limit == 300
    np.testing.assert_array_equal(request.prefetch.query, query[0])
    assert request.prefetch.params.hnsw_ef == 300 and not request.prefetch.params.exact
    assert request.params is None


def test_server_exact_request_scans_without_prefetch_or_quantization(server_index):
    query = np.ones((4, 4), dtype=np.float32)
    request = server_index._request(query, Budget(4, 4), k=5, exact=True, limit=300)
    assert request.prefetch is None and request.using == "p4"
    assert request.params.exact and request.params.quantization.ignore


def test_server_request_for_r_c_1_is_one_dense_query_with_summed_vectors(server_index):
    query = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]], dtype=np.float32)
    request = server_index._request(query, Budget(2, 1), k=3, exact=False, limit=300)
    assert request.using == "first" and request.prefetch is None
    np.testing.assert_array_equal(request.query, [1.0, 2.0, 0.0, 0.0])


def test_an_http_location_builds_a_remote_client_without_connecting():
    options = {"timeout": 5, "check_compatibility": False}
    client = _connect("http://qdrant.example:6333", None, None, None, options)
    assert client.init_options["url"] == "http://qdrant.example:6333"
    assert client.init_options["timeout"] == 5
    with pytest.raises(ValueError, match="give a location"):
        _connect(None, None, None, None, None)


def test_empty_collection_returns_only_empty_slots():
    empty = QdrantIndex.create(":memory:", dim=4, num_vectors=4)
    result = empty.search(torch.ones(2, 1, 4), k=3, budget="1x4", exact=True)
    assert (result.ids == EMPTY_ID).all() and len(empty) == 0
    assert empty.delete([1, 2]) == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    num_candidates=st.integers(1, 30),
    prefix_sizes=st.sampled_from([(1,), (1, 2), (1, 3, 7), (1, 4, 8, 16)]),
    data=st.data(),
)
def test_exact_search_matches_maxsim_for_random_layouts(seed, num_candidates, prefix_sizes, data):
    num_vectors, dim = prefix_sizes[-1], 6
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.nn.functional.normalize(
        torch.randn(num_candidates, num_vectors, dim, generator=generator), dim=-1
    )
    queries = torch.nn.functional.normalize(torch.randn(2, 5, dim, generator=generator), dim=-1)
    budget = Budget(data.draw(st.integers(1, 5)), data.draw(st.sampled_from(prefix_sizes)))
    k = data.draw(st.integers(1, 8))
    index = QdrantIndex.create(
        ":memory:", dim=dim, num_vectors=num_vectors, prefix_sizes=prefix_sizes
    )
    ids = np.arange(num_candidates) * 3 + 1
    index.add(ids, candidates)
    result = index.search(queries, k=k, budget=budget, exact=True)
    scores = maxsim(queries, candidates, budget)  # (2, N)
    hits = min(k, num_candidates)
    top = scores.topk(hits, dim=1)
    np.testing.assert_allclose(result.scores[:, :hits], top.values.numpy(), atol=1e-4)
    for row in range(2):  # ties may swap ids, so compare the scores of the returned ids
        returned = (result.ids[row, :hits] - 1) // 3
        np.testing.assert_allclose(
            scores[row, returned].numpy(), top.values[row].numpy(), atol=1e-4
        )
    assert (result.ids[:, hits:] == EMPTY_ID).all()
