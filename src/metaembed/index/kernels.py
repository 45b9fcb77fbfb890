"""Exhaustive budgeted MaxSim over tiered storage: the index's scoring kernels.

:func:`score_tiers` scores a batch of queries against every candidate of one
block of tiers (see :mod:`metaembed.index.storage`)::

    scores[q, n] = sum_{i < r_q} max_{j < r_c} <query[q, i], candidate[n, j]>

reading only the tiers that hold the first ``r_c`` vectors. Design choices:

* stored values (float16, bfloat16, int8 with per-vector scales) are decoded on
  the fly, one cache-sized block of candidates at a time, and all arithmetic is
  float32: half-precision matmul on AVX2 CPUs runs at a fraction of a GFLOP/s,
  and numpy's/torch's own half -> float conversion at about 0.4 GB/s here, so
  decoding uses bit operations (``(h & 0x7fff) << 13 | sign``, times 2^112);
* three backends, the fastest available chosen automatically: ``"native"`` (a C
  kernel with AVX2/FMA/F16C, and AVX-512F where present, built by ``pip install``,
  all cores, see :mod:`metaembed.index.kernels_native`), ``"numba"`` (compiled on first use, any
  CPU numba supports, :mod:`metaembed.index.kernels_numba`) and ``"torch"``
  (pure torch, also the CUDA path when the tiers are CUDA tensors);
* memory is bounded by the block size, independent of the number of candidates;
* int8 scales multiply the dot product (one multiply per vector pair).

Every backend is tested against :func:`metaembed.maxsim` on decoded values.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metaembed.index.codecs import check_storage_dtype

__all__ = [
    "available_backends",
    "default_backend",
    "score_tiers",
    "decode_block_torch",
    "merge_top_k",
]

logger = logging.getLogger(__name__)

_TARGET_BLOCK_BYTES = 2 * 1024 * 1024  # float32 bytes of one decoded candidate block
_HALF_TO_FLOAT_SCALE = 2.0**112  # rebias a half's exponent field shifted into a float's


@functools.lru_cache(maxsize=1)
def _numba_module() -> Any:
    try:
        from metaembed.index import kernels_numba
    except ImportError as error:  # numba missing or broken: the torch backend takes over
        logger.info("numba unavailable (%s); using the pure-torch scoring kernel", error)
        return None
    return kernels_numba


@functools.lru_cache(maxsize=1)
def _native_module() -> Any:
    from metaembed.index import kernels_native

    return kernels_native if kernels_native.load_library() is not None else None


_COMPILED = {"native": _native_module, "numba": _numba_module}
_INSTALL_HINT = {
    "native": "the C kernel is built by `pip install metaembed` where a C compiler is present "
    "and runs on x86-64 CPUs with AVX2, FMA and F16C",
    "numba": "pip install 'metaembed[index]'",
}


def available_backends() -> tuple[str, ...]:
    """Backends usable in this environment, fastest first."""
    compiled = tuple(name for name, module in _COMPILED.items() if module() is not None)
    return (*compiled, "torch")


def default_backend() -> str:
    """Return the backend ``"auto"`` resolves to on CPU (without loading slower ones).

    Stops at the first compiled backend that loads: importing numba alone takes a
    noticeable fraction of a second, which a search with the native kernel need not pay.
    """
    for name, module in _COMPILED.items():
        if module() is not None:
            return name
    return "torch"


def _as_raw_tensor(values: Any) -> torch.Tensor:
    """Return a torch view of a raw stored array (bfloat16 bits as int16)."""
    if isinstance(values, torch.Tensor):
        return values
    array = np.asarray(values)
    if array.dtype == np.uint16:
        array = array.view(np.int16)
    with warnings.catch_warnings():  # read-only memory maps: the kernels never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def decode_block_torch(raw: torch.Tensor, scales: torch.Tensor | None, dtype: str) -> torch.Tensor:
    """Decode raw stored values ``(..., dim)`` to float32 with torch ops (CPU or CUDA).

    >>> raw = torch.tensor([[0.5, -2.0, 1e-6]], dtype=torch.float16)
    >>> decode_block_torch(raw.view(torch.int16), None, "float16").tolist() == raw.float().tolist()
    True
    """
    if dtype == "float32":
        return raw.to(torch.float32)
    if dtype == "bfloat16":
        return raw.view(torch.int16).to(torch.int32).bitwise_left_shift(16).view(torch.float32)
    if dtype == "int8":
        return raw.to(torch.float32) * scales.to(torch.float32)[..., None]
    if raw.is_cuda:
        return raw.view(torch.float16).to(torch.float32)
    bits = raw.view(torch.int16).to(torch.int32)  # (..., dim) sign-extended half bits
    magnitude = (bits & 0x7FFF).bitwise_left_shift(13)  # exponent + mantissa in float position
    sign = (bits & 0x8000).bitwise_left_shift(16)  # sign bit in float position
    return (magnitude | sign).view(torch.float32) * _HALF_TO_FLOAT_SCALE


def _check_tiers(query_embeddings: torch.Tensor, tiers: Sequence[Any], r_c: int) -> int:
    if query_embeddings.ndim != 3:
        raise ValueError(
            f"query_embeddings must be (num_queries, r_q, dim), got {tuple(query_embeddings.shape)}"
        )
    if not tiers:
        raise ValueError("tiers is empty: pass the stored tier arrays, first tier first")
    stored = sum(int(tier.shape[1]) for tier in tiers)
    if not 1 <= r_c <= stored:
        raise ValueError(f"r_c={r_c} is outside 1..{stored}, the vectors stored in these tiers")
    dim = int(query_embeddings.shape[2])
    for tier in tiers:
        if tier.ndim != 3 or int(tier.shape[2]) != dim or tier.shape[0] != tiers[0].shape[0]:
            raise ValueError(
                f"every tier must be (num_candidates, size, {dim}); got {tuple(tier.shape)}"
            )
    return int(tiers[0].shape[0])


def _needed(tiers: Sequence[Any], r_c: int) -> list[tuple[int, int]]:
    """(tier index, vectors taken from it) for the first ``r_c`` vectors."""
    parts, remaining = [], r_c
    for index, tier in enumerate(tiers):
        if remaining <= 0:
            break
        take = min(int(tier.shape[1]), remaining)
        parts.append((index, take))
        remaining -= take
    return parts


def _score_torch(
    query_embeddings: torch.Tensor,
    tiers: Sequence[Any],
    scales: Sequence[Any] | None,
    r_c: int,
    dtype: str,
    block_candidates: int,
) -> torch.Tensor:
    num_candidates = int(tiers[0].shape[0])
    num_queries, r_q, dim = query_embeddings.shape
    raw_tiers = [_as_raw_tensor(t) for t in tiers]
    device = raw_tiers[0].device
    flat_queries = query_embeddings.to(device=device, dtype=torch.float32).reshape(
        -1, dim
    )  # (Nq*r_q, D)
    scores = torch.empty(num_queries, num_candidates, dtype=torch.float32, device=device)
    for start in range(0, num_candidates, block_candidates):
        stop = min(start + block_candidates, num_candidates)
        best = None
        for tier, take in _needed(tiers, r_c):
            raw = raw_tiers[tier][start:stop, :take]  # (n, take, D)
            tier_scales = (
                None if scales is None else _as_raw_tensor(scales[tier])[start:stop, :take]
            )
            block = decode_block_torch(raw, tier_scales, dtype)  # (n, take, D)
            similarity = block.reshape(-1, dim) @ flat_queries.T  # (n*take, Nq*r_q)
            tier_best = similarity.view(stop - start, take, -1).amax(dim=1)  # (n, Nq*r_q)
            best = tier_best if best is None else torch.maximum(best, tier_best)
        scores[:, start:stop] = best.view(stop - start, num_queries, r_q).sum(dim=2).T  # (Nq, n)
    return scores


def score_tiers(
    query_embeddings: torch.Tensor,
    tiers: Sequence[Any],
    r_c: int,
    dtype: str = "float32",
    scales: Sequence[Any] | None = None,
    *,
    backend: str = "auto",
    block_candidates: int | None = None,
    num_threads: int | None = None,
) -> torch.Tensor:
    """Budgeted MaxSim of every query against every candidate of tiered storage.

    Parameters
    ----------
    query_embeddings : torch.Tensor, shape (num_queries, r_q, dim)
        The query vectors to use (already cut to the budget's ``r_q``); any float dtype.
    tiers : sequence of numpy.ndarray or torch.Tensor, each (num_candidates, tier_size, dim)
        Raw stored values, first tier first (float32, float16, bfloat16 bits as
        uint16/int16, or int8). Torch CUDA tensors select the CUDA path.
    r_c : int
        Number of candidate vectors to use (a prefix across the tiers).
    dtype : str
        Storage dtype of the tiers: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``.
    scales : sequence of arrays, each (num_candidates, tier_size), optional
        Per-vector float32 scales, required for int8.
    backend : str
        ``"auto"`` (the first of :func:`available_backends`; torch for CUDA tensors),
        ``"native"``, ``"numba"`` or ``"torch"``.
    block_candidates : int, optional
        Candidates decoded per block by the torch backend (memory bound); chosen
        from the cache size by default. The numba backend decodes one candidate at a time.
    num_threads : int, optional
        Threads of the compiled backends; by default ``torch.get_num_threads()``, which the
        native backend lowers for searches too small to pay for starting threads.

    Returns
    -------
    torch.Tensor, shape (num_queries, num_candidates), float32
        On the tiers' device.
    """
    dtype = check_storage_dtype(dtype)
    query_embeddings = torch.as_tensor(query_embeddings)
    num_candidates = _check_tiers(query_embeddings, tiers, r_c)
    if dtype == "int8" and scales is None:
        raise ValueError("int8 tiers need their per-vector scales (scales=...)")
    num_queries = int(query_embeddings.shape[0])
    if num_candidates == 0:
        return torch.empty(num_queries, 0, dtype=torch.float32)
    dim = int(query_embeddings.shape[2])
    if block_candidates is None:
        block_candidates = max(8, _TARGET_BLOCK_BYTES // (4 * r_c * dim))
    on_cuda = isinstance(tiers[0], torch.Tensor) and tiers[0].is_cuda
    if backend == "auto":
        backend = "torch" if on_cuda else default_backend()
    if backend in _COMPILED:
        module = _COMPILED[backend]()
        if module is None:
            raise ValueError(
                f"backend={backend!r} is not available here ({_INSTALL_HINT[backend]}); "
                f"available: {available_backends()}"
            )
        if on_cuda:
            raise ValueError(
                f"backend={backend!r} runs on CPU arrays; CUDA tensors use backend='torch'"
            )
        score = getattr(module, f"score_tiers_{backend}")
        return score(query_embeddings, tiers, scales, r_c, dtype, num_threads)
    if backend != "torch":
        raise ValueError(
            f"unknown backend {backend!r}; choose 'auto', 'native', 'numba' or 'torch'"
        )
    return _score_torch(query_embeddings, tiers, scales, r_c, dtype, block_candidates)


def merge_top_k(
    best_scores: torch.Tensor,
    best_ids: torch.Tensor,
    scores: torch.Tensor,
    chunk_ids: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a chunk's scores (Nq, n) with ids (n,) into a running top-k (Nq, k).

    The chunk's top-k comes from the native kernel where it is built (its own threads: the
    OpenMP workers of ``torch.topk`` keep spinning after it and slow the next search's
    scoring), else from ``torch.topk``. Ids beside ``-inf`` scores are arbitrary; the caller
    marks them empty.

    >>> best = torch.full((1, 2), float("-inf")), torch.full((1, 2), -1)
    >>> merge_top_k(*best, torch.tensor([[0.5, 0.9, 0.1]]), torch.tensor([7, 8, 9]), 2)
    (tensor([[0.9000, 0.5000]]), tensor([[8, 7]]))
    """
    take = min(k, scores.shape[1])
    native = _native_module() if take > 0 else None
    found = native.top_k_native(scores, take) if native is not None else None
    chunk_scores, positions = found or torch.topk(scores, take, dim=1)  # (Nq, take) each
    positions = positions.clamp(min=0)  # the native kernel's -1 beside -inf
    if take == k and bool(torch.isneginf(best_scores[:, 0]).all()):  # nothing held yet
        return chunk_scores, chunk_ids[positions]
    all_scores = torch.cat([best_scores, chunk_scores], dim=1)  # (Nq, k + take)
    all_ids = torch.cat([best_ids, chunk_ids[positions]], dim=1)  # (Nq, k + take)
    top_scores, order = torch.topk(all_scores, k, dim=1)  # (Nq, k)
    return top_scores, torch.gather(all_ids, 1, order)
