"""What the compiled CPU backends share: zero-copy array views and candidate ranges on threads.

Both compiled backends (:mod:`metaembed.index.kernels_native`,
:mod:`metaembed.index.kernels_numba`) split a search into one contiguous range
of candidates per thread (:func:`worker_count` threads). The native kernel
starts and joins its threads inside the call; numba's ranges run on a small
shared Python pool (:func:`run_on_ranges`, the GIL released). Neither uses an
OpenMP runtime, so forking after a search stays safe.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["plain_array", "query_matrix", "run_on_ranges", "worker_count"]

MIN_CANDIDATES_PER_THREAD = 64
# a second thread pays off above ~100 us of single-thread work (measured with the native
# kernel on a 2-core EPYC VM: a thread start costs 50-60 us; (1, 1) at D = 128 float16,
# 8,000 candidates: 106 us on one thread, 135 on two; 32,000: 305 vs 237)
MIN_SECONDS_PER_THREAD = 100e-6


def plain_array(values: Any, dtype: Any = None) -> np.ndarray:
    """Return a C-contiguous, read-only ndarray view of ``values`` (numpy or CPU torch).

    ``dtype`` reinterprets the bits (bfloat16 and float16 tiers are read as uint16).

    >>> plain_array(torch.ones(2, 3)).flags.c_contiguous
    True
    """
    array = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if dtype is not None and array.dtype != dtype:
        array = array.view(dtype)
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


def query_matrix(query_embeddings: torch.Tensor) -> np.ndarray:
    """Return the query vectors ``(num_queries, r_q, dim)`` as one float32 ``(M, dim)`` matrix.

    >>> query_matrix(torch.ones(2, 3, 4, dtype=torch.float16)).shape
    (6, 4)
    """
    dim = query_embeddings.shape[-1]
    rows = query_embeddings.detach().to(torch.float32).reshape(-1, dim)  # (Nq*r_q, D)
    return np.ascontiguousarray(rows.cpu().numpy())  # (M, D)


def worker_count(
    num_candidates: int, num_threads: int | None, single_thread_seconds: float | None = None
) -> int:
    """Return the number of threads for a search over ``num_candidates``.

    ``num_threads`` when given, else ``torch.get_num_threads()`` capped by the work: one
    thread per ``MIN_SECONDS_PER_THREAD`` of estimated single-thread time
    (``single_thread_seconds``), since starting a thread costs ~50 us here. Always fewer
    for small collections (at least ``MIN_CANDIDATES_PER_THREAD`` candidates each), and at
    least one.

    >>> worker_count(100, 4), worker_count(10_000, 4), worker_count(0, 2)
    (1, 4, 1)
    >>> worker_count(10_000, None, 50e-6), worker_count(10_000, 2, 50e-6)
    (1, 2)
    """
    wanted = num_threads or torch.get_num_threads()
    if num_threads is None and single_thread_seconds is not None:
        wanted = min(wanted, int(single_thread_seconds / MIN_SECONDS_PER_THREAD))
    return max(1, min(wanted, num_candidates // MIN_CANDIDATES_PER_THREAD or 1))


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metaembed-score")


def run_on_ranges(
    score_range: Callable[[int, int], None], num_candidates: int, num_threads: int | None
) -> None:
    """Call ``score_range(start, stop)`` on contiguous candidate ranges, one per thread.

    ``num_threads`` defaults to ``torch.get_num_threads()``; small collections use
    fewer threads (at least ``MIN_CANDIDATES_PER_THREAD`` candidates each).
    """
    workers = worker_count(num_candidates, num_threads)
    if workers == 1:
        score_range(0, num_candidates)
        return
    bounds = np.linspace(0, num_candidates, workers + 1).astype(np.int64)
    ranges = [(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    # the calling thread scores the first range itself: one hand-off fewer per search
    # (measured: a pool round trip costs ~65 us, a sizeable part of a (1, 1) search)
    futures = [_pool(workers - 1).submit(score_range, *bounds_) for bounds_ in ranges[1:]]
    try:
        score_range(*ranges[0])
    finally:
        for future in futures:
            future.result()
