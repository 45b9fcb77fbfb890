"""Compiled (numba) budgeted MaxSim over tiered storage: the CPU backend without the C kernel.

Importing this module imports numba (optional extra ``metaembed[index]``);
:mod:`metaembed.index.kernels` imports it lazily and falls back to pure torch
when it is missing. Design choices:

* candidates are split into contiguous ranges, one per thread (threads release
  the GIL; no numba threading layer, so forking after a search is safe; see
  :mod:`metaembed.index.kernel_threads`); each candidate's
  first ``r_c`` stored vectors are decoded into a small float32 buffer (at most
  ``r_c * dim * 4`` bytes, in L1/L2) and scored against every query vector of
  the batch while hot, so stored bytes are read from memory exactly once per call;
* half floats are decoded with integer operations that the compiler vectorises
  (``(h & 0x7fff) << 13 | (h & 0x8000) << 16`` reinterpreted as float32, times
  2^112: exact for normal and subnormal halves); bfloat16 is ``bits << 16``;
  int8 is ``value * scale``;
* one form for every budget: a BLAS-sgemm form (a block of candidates decoded
  into an L2-sized buffer, multiplied by all query vectors at once) was measured
  slower than this one at every paper budget but batched 1x1 (bench/index_search.py,
  docs/index.md), so it was dropped;
* ``r_c = 1`` (a (1, 1) search; for float16 with at most ``FIRST_VECTOR_MAX_ROWS``
  query vectors) has its own loop: four candidates per pass, stored values decoded inside the
  dot product (no buffer); measured 2-3.6x faster single-threaded for float16,
  bfloat16 and int8 at D = 128 and never slower;
* the dot products are register-blocked, four query vectors by two candidate
  vectors per pass over ``dim`` (LLVM vectorises the pass 8-wide); an odd last
  candidate vector is paired with itself (a repeated vector cannot change a
  max); left-over query rows use 1 x 4 blocks and plain dot products;
* functions are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import torch

from metaembed.index.kernel_threads import plain_array, query_matrix, run_on_ranges

__all__ = ["score_tiers_numba"]

_KINDS = {"float32": 0, "float16": 1, "bfloat16": 2, "int8": 3}
_HALF_SCALE = np.float32(2.0**112)
_NO_SCALES = np.ones((1, 1), dtype=np.float32)
_NO_SCALES.flags.writeable = False
MAX_TIERS = 8
FIRST_VECTOR_MAX_ROWS = 4
"""Float16 query vectors up to which ``r_c = 1`` takes :func:`_score_first_vectors` (other
dtypes always do: measured faster with 16 query vectors too; float16 decodes per query row)."""
"""Tiers the compiled kernel reads (padded to this count: one compiled signature per dtype)."""


@numba.njit(inline="always", fastmath=True)
def _decode_vector(source: Any, scale: float, kind: int, target: Any) -> None:
    """Decode one stored vector (dim,) into float32 ``target`` (dim,)."""
    dim = source.shape[0]
    if kind == 0:
        for d in range(dim):
            target[d] = source[d]
    elif kind == 1:  # one pass: bit operations, reinterpretation, rebias (vectorised)
        for d in range(dim):
            half = np.uint32(source[d])
            bits = ((half & np.uint32(0x7FFF)) << np.uint32(13)) | (
                (half & np.uint32(0x8000)) << np.uint32(16)
            )
            target[d] = np.uint32(bits).view(np.float32) * _HALF_SCALE
    elif kind == 2:
        for d in range(dim):
            target[d] = np.uint32(np.uint32(source[d]) << np.uint32(16)).view(np.float32)
    else:
        for d in range(dim):
            target[d] = np.float32(source[d]) * scale


@numba.njit(inline="always", fastmath=True)
def _max_dots(queries: Any, buffer: Any, r_c: int, best: Any) -> None:
    """``best[m] = max_j <queries[m], buffer[j]>``: 4 x 2 register blocks, then leftover rows."""
    num_query_vectors, dim = queries.shape
    blocked = num_query_vectors - num_query_vectors % 4 if r_c > 1 else 0
    for m in range(0, blocked, 4):
        best0 = best1 = best2 = best3 = np.float32(-np.inf)
        for j in range(0, r_c, 2):
            j1 = min(j + 1, r_c - 1)
            a00 = a01 = a02 = a03 = np.float32(0.0)
            a10 = a11 = a12 = a13 = np.float32(0.0)
            for d in range(dim):
                c0 = buffer[j, d]
                c1 = buffer[j1, d]
                q0 = queries[m, d]
                q1 = queries[m + 1, d]
                q2 = queries[m + 2, d]
                q3 = queries[m + 3, d]
                a00 += q0 * c0
                a01 += q1 * c0
                a02 += q2 * c0
                a03 += q3 * c0
                a10 += q0 * c1
                a11 += q1 * c1
                a12 += q2 * c1
                a13 += q3 * c1
            best0 = max(best0, max(a00, a10))
            best1 = max(best1, max(a01, a11))
            best2 = max(best2, max(a02, a12))
            best3 = max(best3, max(a03, a13))
        best[m] = best0
        best[m + 1] = best1
        best[m + 2] = best2
        best[m + 3] = best3
    for m in range(blocked, num_query_vectors):  # left-over rows: 1 x 4 blocks, then singles
        top = np.float32(-np.inf)
        quads = r_c - r_c % 4
        for j in range(0, quads, 4):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for d in range(dim):
                q = queries[m, d]
                a0 += q * buffer[j, d]
                a1 += q * buffer[j + 1, d]
                a2 += q * buffer[j + 2, d]
                a3 += q * buffer[j + 3, d]
            top = max(top, max(max(a0, a1), max(a2, a3)))
        for j in range(quads, r_c):
            total = np.float32(0.0)
            for d in range(dim):
                total += queries[m, d] * buffer[j, d]
            top = max(top, total)
        best[m] = top


@numba.njit(fastmath=True, nogil=True, cache=True)
def _score_range(queries, tiers, scales, takes, kind, num_queries, r_q, start, stop, scores):  # noqa: ANN001
    """Score candidates ``start:stop`` of ``tiers`` (each (n, size, D)) into ``scores`` (Nq, n)."""
    dim = queries.shape[1]
    r_c = 0
    for take in takes:
        r_c += take
    buffer = np.empty((r_c, dim), dtype=np.float32)  # (r_c, D) decoded vectors of one candidate
    best = np.empty(queries.shape[0], dtype=np.float32)  # (M,) max over candidate vectors
    for n in range(start, stop):
        row = 0
        for t in range(len(tiers)):
            for j in range(takes[t]):
                scale = scales[t][n, j] if kind == 3 else np.float32(1.0)
                _decode_vector(tiers[t][n, j], scale, kind, buffer[row])
                row += 1
        _max_dots(queries, buffer, r_c, best)
        for q in range(num_queries):
            total = np.float32(0.0)
            for i in range(r_q):
                total += best[q * r_q + i]
            scores[q, n] = total


@numba.njit(inline="always", fastmath=True)
def _stored_value(raw: Any, kind: int) -> Any:
    """Return one stored value as float32, without the float16 rebias."""
    if kind == 1:
        half = np.uint32(raw)
        bits = ((half & np.uint32(0x7FFF)) << np.uint32(13)) | (
            (half & np.uint32(0x8000)) << np.uint32(16)
        )
        return np.uint32(bits).view(np.float32)
    if kind == 2:
        return np.uint32(np.uint32(raw) << np.uint32(16)).view(np.float32)
    return np.float32(raw)


@numba.njit(fastmath=True, nogil=True, cache=True)
def _score_first_vectors(queries, tier, scales, kind, num_queries, r_q, start, stop, scores):  # noqa: ANN001
    """``r_c = 1`` with few query vectors: four candidates per pass, values decoded in the dot.

    No decode buffer and no per-candidate tier loop: at (1, 1) those cost more
    than the bytes. For float16 the caller pre-multiplies ``queries`` by 2^112
    (the rebias), so products stay normal floats.
    """
    dim = queries.shape[1]
    quads = start + (stop - start) // 4 * 4
    for n in range(start, quads, 4):
        s0 = s1 = s2 = s3 = np.float32(1.0)
        if kind == 3:
            s0, s1, s2, s3 = scales[n, 0], scales[n + 1, 0], scales[n + 2, 0], scales[n + 3, 0]
        for q in range(num_queries):
            t0 = t1 = t2 = t3 = np.float32(0.0)
            for i in range(r_q):
                m = q * r_q + i
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for d in range(dim):
                    x = queries[m, d]
                    a0 += x * _stored_value(tier[n, 0, d], kind)
                    a1 += x * _stored_value(tier[n + 1, 0, d], kind)
                    a2 += x * _stored_value(tier[n + 2, 0, d], kind)
                    a3 += x * _stored_value(tier[n + 3, 0, d], kind)
                t0 += a0 * s0
                t1 += a1 * s1
                t2 += a2 * s2
                t3 += a3 * s3
            scores[q, n], scores[q, n + 1], scores[q, n + 2], scores[q, n + 3] = t0, t1, t2, t3
    for n in range(quads, stop):
        scale = scales[n, 0] if kind == 3 else np.float32(1.0)
        for q in range(num_queries):
            total = np.float32(0.0)
            for i in range(r_q):
                dot = np.float32(0.0)
                for d in range(dim):
                    dot += queries[q * r_q + i, d] * _stored_value(tier[n, 0, d], kind)
                total += dot * scale
            scores[q, n] = total


def _padded_tiers(
    tiers: Sequence[Any], scales: Sequence[Any] | None, r_c: int, dtype: str, dim: int
):
    """Fixed-length tuples (one compiled signature per dtype) of the tiers ``r_c`` needs."""
    raw = np.uint16 if dtype in ("float16", "bfloat16") else None
    takes, used, used_scales, remaining = [], [], [], r_c
    for index, tier in enumerate(tiers):
        if remaining <= 0:
            break
        takes.append(min(int(tier.shape[1]), remaining))
        remaining -= takes[-1]
        used.append(plain_array(tier, raw))
        used_scales.append(
            plain_array(scales[index], np.float32) if dtype == "int8" else _NO_SCALES
        )
    if len(used) > MAX_TIERS:
        raise ValueError(f"the numba kernel reads at most {MAX_TIERS} tiers, got {len(used)}")
    empty = plain_array(np.empty((0, 0, dim), dtype=used[0].dtype))
    padding = MAX_TIERS - len(used)
    return (
        tuple(used) + (empty,) * padding,
        tuple(used_scales) + (_NO_SCALES,) * padding,
        np.asarray(takes + [0] * padding, dtype=np.int64),
    )


def score_tiers_numba(
    query_embeddings: torch.Tensor,
    tiers: Sequence[Any],
    scales: Sequence[Any] | None,
    r_c: int,
    dtype: str,
    num_threads: int | None = None,
) -> torch.Tensor:
    """Numba backend of :func:`metaembed.index.kernels.score_tiers` (same arguments).

    ``num_threads`` defaults to ``torch.get_num_threads()``; candidates are split
    into that many contiguous ranges scored by threads that release the GIL.
    """
    num_queries, r_q, dim = query_embeddings.shape
    queries = query_matrix(query_embeddings)  # (M, D)
    used, used_scales, takes = _padded_tiers(tiers, scales, r_c, dtype, dim)
    num_candidates = used[0].shape[0]
    scores = np.empty((num_queries, num_candidates), dtype=np.float32)  # (Nq, N)
    kind = _KINDS[dtype]
    if r_c == 1 and (queries.shape[0] <= FIRST_VECTOR_MAX_ROWS or kind != 1):
        kernel = _score_first_vectors
        if kind == 1:
            queries = queries * _HALF_SCALE  # (M, D): the float16 rebias, folded into the query
        arguments = (queries, used[0], used_scales[0], kind, num_queries, r_q)
    else:
        kernel = _score_range
        arguments = (queries, used, used_scales, takes, kind, num_queries, r_q)
    run_on_ranges(
        lambda start, stop: kernel(*arguments, start, stop, scores), num_candidates, num_threads
    )
    return torch.from_numpy(scores)
