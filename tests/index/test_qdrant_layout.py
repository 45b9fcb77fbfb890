"""The named-vector layout of a Qdrant collection (no Qdrant needed except where marked)."""

from __future__ import annotations

import logging

import pytest

from metaembed.budget import Budget
from metaembed.index.qdrant_layout import FIRST_VECTOR, QdrantLayout, default_prefix_sizes


@pytest.mark.parametrize(
    ("num_vectors", "expected"),
    [
        (64, (1, 4, 8, 16, 64)),
        (16, (1, 4, 8, 16)),
        (1, (1,)),
        (5, (1, 4, 5)),
        (100, (1, 4, 8, 16, 64, 100)),
    ],
)
def test_default_prefix_sizes_follow_the_trained_groups(num_vectors, expected):
    assert default_prefix_sizes(num_vectors) == expected


@pytest.mark.parametrize("sizes", [(), (4, 8), (1, 8, 8), (1, 16, 8)])
def test_bad_prefix_sizes_are_rejected(sizes):
    with pytest.raises(ValueError, match="increase strictly and start with 1"):
        QdrantLayout(dim=8, prefix_sizes=sizes)


def test_bad_dim_and_datatype_are_rejected():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        QdrantLayout(dim=0, prefix_sizes=(1,))
    with pytest.raises(ValueError, match="datatype 'int4' is not supported"):
        QdrantLayout(dim=8, prefix_sizes=(1,), datatype="int4")


def test_resolve_checks_limits_and_rounds_up_with_a_warning(caplog):
    layout = QdrantLayout(dim=8, prefix_sizes=(1, 4, 16))
    assert layout.resolve(Budget(3, 4), num_query_vectors=3) == Budget(3, 4)
    with pytest.raises(ValueError, match=r"r_c=16 candidate vectors but only 16|r_q=4"):
        layout.resolve(Budget(4, 16), num_query_vectors=3)
    with pytest.raises(ValueError, match=r"r_c=32 .* only 16 are stored"):
        layout.resolve(Budget(1, 32), num_query_vectors=3)
    with pytest.raises(ValueError, match=r"use r_c=4 or r_c=16"):
        layout.resolve(Budget(1, 8), num_query_vectors=3)
    with caplog.at_level(logging.WARNING, logger="metaembed.index.qdrant_layout"):
        assert layout.resolve(Budget(1, 8), 3, round_up=True) == Budget(1, 16)
    assert "rounding r_c up" in caplog.text


def test_metadata_round_trip_and_foreign_metadata():
    layout = QdrantLayout(dim=32, prefix_sizes=(1, 8, 32), datatype="float16")
    assert QdrantLayout.from_metadata(layout.to_metadata(), "c") == layout
    for foreign in (None, {}, {"format": 99}):
        with pytest.raises(ValueError, match="no metaembed layout"):
            QdrantLayout.from_metadata(foreign, "c")


def test_storage_bytes_count_every_stored_prefix():
    layout = QdrantLayout(dim=10, prefix_sizes=(1, 4, 64), datatype="float16")
    storage = layout.storage_bytes(num_candidates=3)
    assert storage["bytes_stored"] == 3 * (1 + 4 + 64) * 10 * 2
    assert storage["storage_overhead"] == pytest.approx(69 / 64)
    assert storage["bytes_per_budget"] == {"1x1": 60, "2x4": 240, "16x64": 3840}


def test_vectors_config_disables_hnsw_on_multivectors_only():
    models = pytest.importorskip("qdrant_client.models")
    config = QdrantLayout(dim=8, prefix_sizes=(1, 4, 8)).vectors_config(models, on_disk=True)
    assert list(config) == [FIRST_VECTOR, "p4", "p8"]
    assert (
        config[FIRST_VECTOR].multivector_config is None and config[FIRST_VECTOR].hnsw_config is None
    )
    for name in ("p4", "p8"):
        assert config[name].hnsw_config.m == 0 and config[name].on_disk
        assert config[name].multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
        assert config[name].distance == models.Distance.DOT


def test_layout_is_read_back_from_the_named_vectors():
    models = pytest.importorskip("qdrant_client.models")
    layout = QdrantLayout(dim=8, prefix_sizes=(1, 4, 64), datatype="float16")
    assert QdrantLayout.from_vectors_config(layout.vectors_config(models), "c") == layout
    wrong_dim = {
        **layout.vectors_config(models),
        "p8": QdrantLayout(dim=4, prefix_sizes=(1, 8)).vectors_config(models)["p8"],
    }
    for foreign in ({}, {"dense": wrong_dim["first"]}, wrong_dim, None):
        with pytest.raises(ValueError, match="no metaembed layout"):
            QdrantLayout.from_vectors_config(foreign, "c")
