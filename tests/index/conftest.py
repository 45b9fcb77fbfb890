"""Fixtures of the index tests: random L2-normalised nested multi-vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def normalized(rng: np.random.Generator, *shape: int) -> np.ndarray:
    values = rng.standard_normal(shape).astype(np.float32)
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def corpus(rng):
    """(candidate embeddings (40, 64, 16), query embeddings (5, 16, 16)) as torch tensors."""
    candidates = torch.from_numpy(normalized(rng, 40, 64, 16))
    queries = torch.from_numpy(normalized(rng, 5, 16, 16))
    return candidates, queries
