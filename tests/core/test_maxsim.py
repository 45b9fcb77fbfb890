"""The reference MaxSim against a plain float64 double loop, and its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metaembed import Budget, maxsim


def loop_maxsim(queries: np.ndarray, candidates: np.ndarray, r_q: int, r_c: int) -> np.ndarray:
    queries = queries.astype(np.float64)
    candidates = candidates.astype(np.float64)
    scores = np.zeros((queries.shape[0], candidates.shape[0]))
    for i in range(queries.shape[0]):
        for j in range(candidates.shape[0]):
            total = 0.0
            for a in range(r_q):
                total += max(float(queries[i, a] @ candidates[j, b]) for b in range(r_c))
            scores[i, j] = total
    return scores


@settings(max_examples=40, deadline=None)
@given(
    num_queries=st.integers(1, 4),
    num_candidates=st.integers(1, 7),
    num_query_vectors=st.integers(1, 5),
    num_candidate_vectors=st.integers(1, 6),
    dim=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_matches_double_loop(
    num_queries, num_candidates, num_query_vectors, num_candidate_vectors, dim, seed, data
) -> None:
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((num_queries, num_query_vectors, dim)).astype(np.float32)
    candidates = rng.standard_normal((num_candidates, num_candidate_vectors, dim)).astype(
        np.float32
    )
    r_q = data.draw(st.integers(1, num_query_vectors))
    r_c = data.draw(st.integers(1, num_candidate_vectors))
    chunk = data.draw(st.sampled_from([1, 7, 10**9]))
    got = maxsim(queries, candidates, Budget(r_q, r_c), chunk_elements=chunk)
    assert got.dtype == torch.float32 and got.shape == (num_queries, num_candidates)
    np.testing.assert_allclose(
        got.numpy(), loop_maxsim(queries, candidates, r_q, r_c), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_inputs_computed_in_float32(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 4, 16, generator=generator).to(dtype)
    candidates = torch.randn(5, 8, 16, generator=generator).to(dtype)
    got = maxsim(queries, candidates, "2x4")
    expected = loop_maxsim(queries.float().numpy(), candidates.float().numpy(), 2, 4)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_numpy_float16_and_torch_agree() -> None:
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((2, 3, 8)).astype(np.float16)
    candidates = rng.standard_normal((4, 5, 8)).astype(np.float16)
    torch.testing.assert_close(
        maxsim(queries, candidates), maxsim(torch.from_numpy(queries), torch.from_numpy(candidates))
    )


def test_none_budget_uses_all_vectors() -> None:
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((2, 3, 4)).astype(np.float32)
    candidates = rng.standard_normal((3, 5, 4)).astype(np.float32)
    torch.testing.assert_close(maxsim(queries, candidates), maxsim(queries, candidates, "3x5"))


def test_masks_ignore_padding_even_when_similarities_are_negative() -> None:
    # Candidate 0 has one real vector (negatively aligned) and zero padding; padding must not win.
    queries = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    candidates = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]]])
    candidate_mask = torch.tensor([[True, False]])
    query_mask = torch.tensor([[True, False]])
    scores = maxsim(queries, candidates, query_mask=query_mask, candidate_mask=candidate_mask)
    assert scores.item() == pytest.approx(-1.0)
    unmasked = maxsim(queries, candidates)
    assert unmasked.item() == pytest.approx(0.0)  # what an unmasked scorer gets wrong


def test_masks_match_truncated_inputs() -> None:
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((2, 4, 6)).astype(np.float32)
    candidates = rng.standard_normal((3, 5, 6)).astype(np.float32)
    lengths = [5, 2, 3]
    mask = np.array([[j < n for j in range(5)] for n in lengths])
    got = maxsim(queries, candidates, candidate_mask=mask)
    for j, n in enumerate(lengths):
        expected = loop_maxsim(queries, candidates[j : j + 1, :n], 4, n)[:, 0]
        np.testing.assert_allclose(got[:, j].numpy(), expected, rtol=1e-5, atol=1e-5)
    fully_masked = maxsim(queries, candidates, candidate_mask=np.zeros((3, 5), dtype=bool))
    assert torch.isinf(fully_masked).all() and (fully_masked < 0).all()


def test_chunking_bounds_memory_and_keeps_results() -> None:
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((2, 16, 32)).astype(np.float32)
    candidates = rng.standard_normal((300, 64, 32)).astype(np.float16)
    torch.testing.assert_close(
        maxsim(queries, candidates, chunk_elements=2048),
        maxsim(queries, candidates),
        rtol=1e-5,
        atol=1e-4,
    )


# ---- bad input: every case raises a ValueError naming the problem -----------------------------

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))


@settings(max_examples=30, deadline=None)
@given(shapes, shapes)
def test_mismatched_dims(query_shape, candidate_shape) -> None:
    if query_shape[2] == candidate_shape[2]:
        candidate_shape = (*candidate_shape[:2], candidate_shape[2] + 1)
    with pytest.raises(ValueError, match="dim"):
        maxsim(torch.ones(query_shape), torch.ones(candidate_shape))


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(1, 8), st.integers(1, 8))
def test_budget_larger_than_vectors(shape, extra_q, extra_c) -> None:
    queries, candidates = torch.ones(shape), torch.ones(shape)
    with pytest.raises(ValueError, match="r_q"):
        maxsim(queries, candidates, Budget(shape[1] + extra_q, 1))
    with pytest.raises(ValueError, match="r_c"):
        maxsim(queries, candidates, Budget(1, shape[1] + extra_c))


@settings(max_examples=30, deadline=None)
@given(shapes, st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans(), st.data())
def test_non_finite_values(shape, bad_value, on_query_side, data) -> None:
    queries, candidates = torch.ones(shape), torch.ones(shape)
    target = queries if on_query_side else candidates
    index = tuple(data.draw(st.integers(0, s - 1)) for s in shape)
    target[index] = bad_value
    with pytest.raises(ValueError, match="NaN or inf"):
        maxsim(queries, candidates)


@pytest.mark.parametrize(
    ("query_shape", "candidate_shape", "message"),
    [
        ((0, 2, 4), (3, 2, 4), "empty batch"),
        ((2, 2, 4), (0, 2, 4), "empty batch"),
        ((2, 4), (3, 2, 4), "shape"),
        ((2, 2, 4), (3, 2, 4, 1), "shape"),
        ((2, 0, 4), (3, 2, 4), "no vectors"),
    ],
)
def test_bad_shapes(query_shape, candidate_shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        maxsim(torch.ones(query_shape), torch.ones(candidate_shape))


def test_non_float_and_wrong_type() -> None:
    with pytest.raises(ValueError, match="floats"):
        maxsim(torch.ones(1, 1, 2, dtype=torch.int64), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="torch.Tensor or numpy"):
        maxsim([[[1.0]]], torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match="mask"):
        maxsim(torch.ones(1, 2, 2), torch.ones(1, 2, 2), candidate_mask=torch.ones(2, 2))


def test_against_independent_library_einsum() -> None:
    # numpy's einsum is an independent route to the same definition.
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((3, 16, 24)).astype(np.float32)
    candidates = rng.standard_normal((40, 64, 24)).astype(np.float32)
    for budget in (Budget(1, 1), Budget(4, 8), Budget(16, 64)):
        token = np.einsum("qad,cbd->qcab", queries[:, : budget.r_q], candidates[:, : budget.r_c])
        expected = token.max(axis=3).sum(axis=2)
        np.testing.assert_allclose(
            maxsim(queries, candidates, budget).numpy(), expected, rtol=1e-4, atol=1e-4
        )
