"""Cascade search: a full-depth first stage equals exhaustive search; recall grows with K'."""

from __future__ import annotations

import numpy as np
import pytest

from metaembed.index.base import EMPTY_ID
from metaembed.index.cascade import CascadeSearcher
from metaembed.index.multivector import MultiVectorIndex


@pytest.fixture
def index(tmp_path, corpus):
    candidates, _ = corpus
    index = MultiVectorIndex.create(tmp_path / "idx", dim=16, dtype="int8")
    index.add(np.arange(40) * 3, candidates)
    return index


@pytest.mark.parametrize("first_stage", ["exhaustive", "hnsw"])
def test_full_depth_equals_exhaustive(index, corpus, first_stage):
    _, queries = corpus
    cascade = CascadeSearcher(index, first_stage=first_stage, rerank_depth=40)
    for budget in ["16x64", "4x8"]:
        expected = index.search(queries, k=5, budget=budget)
        got = cascade.search(queries, k=5, budget=budget)
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)


def test_shallow_first_stage_keeps_its_candidates_only(index, corpus):
    _, queries = corpus
    cascade = CascadeSearcher(index, first_stage="exhaustive", rerank_depth=3, first_budget="1x1")
    first = index.search(queries, k=3, budget="1x1").ids
    got = cascade.search(queries, k=5, budget="16x64")
    for row in range(len(queries)):
        assert set(got.ids[row, :3]) == set(first[row])
    assert (got.ids[:, 3:] == EMPTY_ID).all()


def test_hnsw_rebuilds_after_changes_and_validates(index, corpus):
    candidates, queries = corpus
    cascade = CascadeSearcher(index, first_stage="hnsw", rerank_depth=50)
    cascade.search(queries[:1], k=1)
    index.delete([0, 3, 6])
    index.add([1000], candidates[:1])
    result = cascade.search(candidates[:1, :16], k=2, budget="16x64")
    assert result.ids[0, 0] == 1000 and not set(result.ids.ravel()) & {0, 3, 6}
    with pytest.raises(ValueError, match="r_c=1"):
        CascadeSearcher(index, first_stage="hnsw", first_budget="2x4")
    with pytest.raises(ValueError, match="first_stage"):
        CascadeSearcher(index, first_stage="ivf")
    with pytest.raises(ValueError, match=r"r_c=128 candidate vectors but only 64"):
        cascade.search(queries, budget="16x128")
