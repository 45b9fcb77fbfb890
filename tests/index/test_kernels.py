"""Scoring kernels: every backend and storage dtype against the reference MaxSim (decoded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaembed import maxsim
from metaembed.index.codecs import STORAGE_DTYPES, decode, encode
from metaembed.index.kernels import available_backends, decode_block_torch, score_tiers
from metaembed.index.storage import tier_bounds


def normalized(rng: np.random.Generator, *shape: int) -> np.ndarray:
    values = rng.standard_normal(shape).astype(np.float32)
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def tiered(candidates: np.ndarray, dtype: str):
    """Encode (N, R, D) float32 into tiers; return raw tiers, scales and the decoded (N, R, D)."""
    raw_tiers, scale_tiers, decoded = [], [], []
    for start, stop in tier_bounds(candidates.shape[1]):
        raw, scales = encode(candidates[:, start:stop], dtype)
        raw_tiers.append(raw)
        scale_tiers.append(scales)
        decoded.append(decode(raw, scales, dtype))
    return raw_tiers, (scale_tiers if dtype == "int8" else None), np.concatenate(decoded, axis=1)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_backends_match_reference(rng, backend, dtype):
    candidates = normalized(rng, 37, 64, 24)
    queries = torch.from_numpy(normalized(rng, 3, 16, 24))
    raw_tiers, scales, decoded = tiered(candidates, dtype)
    for r_q, r_c in [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64), (3, 5), (5, 17), (7, 63)]:
        got = score_tiers(queries[:, :r_q], raw_tiers, r_c, dtype, scales, backend=backend)
        expected = maxsim(queries, torch.from_numpy(decoded), budget=(r_q, r_c))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_numba_thread_ranges_match_reference(rng, dtype):
    from metaembed.index.kernels_numba import score_tiers_numba

    candidates = normalized(rng, 301, 64, 40)  # 301: ranges that do not divide evenly
    queries = torch.from_numpy(normalized(rng, 2, 16, 40))
    raw_tiers, scales, decoded = tiered(candidates, dtype)
    for r_q, r_c in [(1, 1), (16, 1), (2, 4), (3, 7), (16, 64), (5, 17)]:  # (16, 1): 32 rows
        for threads in (1, 2, 3):
            got = score_tiers_numba(queries[:, :r_q], raw_tiers, scales, r_c, dtype, threads)
            expected = maxsim(queries, torch.from_numpy(decoded), budget=(r_q, r_c))
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", available_backends())
def test_small_blocks_and_single_tier(rng, backend):
    candidates = normalized(rng, 11, 3, 5)
    queries = torch.from_numpy(normalized(rng, 2, 1, 5))
    got = score_tiers(queries, [candidates], 3, "float32", backend=backend, block_candidates=2)
    torch.testing.assert_close(got, maxsim(queries, torch.from_numpy(candidates)))


def test_half_decoding_is_exact_including_subnormals():
    values = np.array([0.0, -0.0, 1.0, -2.5, 6.1e-5, 5.96e-8, -3.0e-7, 65504.0], dtype=np.float16)
    raw = torch.from_numpy(values.view(np.int16))
    assert decode_block_torch(raw, None, "float16").tolist() == values.astype(np.float32).tolist()
    if "numba" in available_backends():
        tier = values.reshape(1, 1, -1)
        query = torch.eye(values.size, dtype=torch.float32)[:, None, :]  # picks one element each
        got = score_tiers(query, [tier], 1, "float16", backend="numba")[:, 0]
        assert got.tolist() == values.astype(np.float32).tolist()
        one_at_a_time = [  # one query vector: the (1, 1) loop that decodes inside the dot
            score_tiers(query[i : i + 1], [tier], 1, "float16", backend="numba").item()
            for i in range(values.size)
        ]
        assert one_at_a_time == values.astype(np.float32).tolist()


def test_bad_arguments_are_rejected(rng):
    candidates = normalized(rng, 4, 8, 6)
    queries = torch.from_numpy(normalized(rng, 1, 2, 6))
    with pytest.raises(ValueError, match="r_c=9 is outside 1..8"):
        score_tiers(queries, [candidates], 9)
    with pytest.raises(ValueError, match="scales"):
        score_tiers(queries, [candidates.astype(np.int8)], 2, "int8")
    with pytest.raises(ValueError, match="unknown backend"):
        score_tiers(queries, [candidates], 2, backend="fortran")
    with pytest.raises(ValueError, match=r"\(num_candidates, size, 6\)"):
        score_tiers(queries, [candidates[:, :, :5]], 2)
