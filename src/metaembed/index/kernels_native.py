"""Compiled C budgeted MaxSim over tiered storage (AVX2, AVX-512, AMX): the fastest CPU backend.

The kernel is ``_native*.c`` next to this file, built by ``pip install`` as an
optional extension (an install without a C compiler still succeeds) and called
through :mod:`ctypes`, which releases the GIL; the kernel splits the candidates
into one contiguous range per thread itself (threads started and joined inside
the call, so none outlives a search and forking stays safe). It needs an
x86-64 CPU with AVX2, FMA and F16C, checked at run time; elsewhere
:func:`load_library` returns ``None`` and :mod:`metaembed.index.kernels` uses
the numba or torch backend. Where the CPU and OS also support AVX-512F the kernel
runs its 16-float copy (twice the FLOPs per instruction), and where they support
AMX (Xeon since Sapphire Rapids, Linux) its tile copy for the shapes where that
measured faster (``amx_pays`` in ``_native.c``; batches, one query at r_q = 16,
bfloat16 and int8 read straight from whole tiers from 4-8 query vectors): bfloat16
tile products of split inputs (int8: int8 products of three query digits), within
2^-18 of float32 per product; where they support AVX-512 VNNI, int8 with one query
vector at r_c = 1, or 3-4 at r_c > 1, runs the VNNI copy (``vnni_pays``), with the same
three digits.
:func:`instruction_sets` lists what this machine runs and ``instruction_set=`` holds
the kernel to one. Forms and blocking are described
in ``_native.c`` and ``_native_amx.c``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaembed.index.codecs import bytes_per_vector
from metaembed.index.kernel_threads import plain_array, query_matrix, worker_count

__all__ = [
    "instruction_sets",
    "load_library",
    "score_tiers_native",
    "single_thread_seconds",
    "top_k_native",
]

logger = logging.getLogger(__name__)

MAX_TIERS = 8
_KINDS = {"float32": 0, "float16": 1, "bfloat16": 2, "int8": 3}
# bit values of the C library, in the order the automatic choice prefers them
_INSTRUCTION_SETS = {"amx": 4, "vnni": 8, "avx512": 2, "avx2": 1}
_LANE_GROUPS = {None: 0, True: 16, False: 32}  # ME_LANE_GROUPS_ON / _OFF, or the CPU's rule
_STATUS = {
    -1: "this build or CPU has no native kernel for that instruction set (x86-64 with AVX2, "
    "FMA and F16C needed; AVX-512F for instruction_set='avx512'; AVX512-VNNI, -BW and -VL for "
    "instruction_set='vnni'; AMX-BF16 and AVX512-BF16 on Linux for instruction_set='amx')",
    -2: "the native kernel ran out of memory for its buffers",
    -3: "the native kernel rejected its arguments",
}


@functools.lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL | None:
    """Return the compiled kernel library, or ``None`` when not built or not supported here."""
    spec = importlib.util.find_spec("metaembed.index._native")
    if spec is None or not spec.origin:
        logger.info("metaembed's native kernel is not built (no C compiler at install time)")
        return None
    return open_library(spec.origin)


def open_library(path: str | Path) -> ctypes.CDLL | None:
    """Open the kernel library built at ``path`` (a ``_native*.so``).

    Returns ``None`` when this CPU cannot run it; :func:`load_library` opens the installed
    one this way. Another checkout's build, passed as ``library`` to
    :func:`score_tiers_native`, can be timed beside the installed one in one process
    (``bench/kernel_ab.py``).

    Raises
    ------
    OSError
        When ``path`` is not a loadable shared library.
    """
    library = ctypes.CDLL(str(path))
    library.metaembed_native_supported.restype = ctypes.c_int
    if not library.metaembed_native_supported():
        logger.info("this CPU lacks AVX2/FMA/F16C; the native kernel is disabled")
        return None
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    score = getattr(library, "metaembed_native_score", None)
    if score is None:  # a stale build from before the current entry point
        logger.warning("metaembed's native kernel at %s is out of date; reinstall metaembed", path)
        return None
    score.restype = ctypes.c_int
    score.argtypes = [
        pointer, int64, int64, int64,  # queries, num_queries, r_q, dim
        pointer, pointer, pointer, int64,  # tiers, scales, sizes, num_tiers
        int64, ctypes.c_int, int64, int64,  # r_c, kind, start, stop
        pointer, int64, int64, ctypes.c_int,  # scores, stride, threads, instruction set
    ]  # fmt: skip
    library.metaembed_native_instruction_sets.restype = ctypes.c_int
    top_k = getattr(library, "metaembed_native_top_k", None)
    if top_k is not None:  # absent from builds before it (kernel_ab may open those)
        top_k.restype = ctypes.c_int
        top_k.argtypes = [pointer, int64, int64, int64, int64, pointer, pointer, int64]
    return library


def instruction_sets() -> tuple[str, ...]:
    """Instruction sets the native kernel runs with on this machine, widest first.

    ``()`` when the kernel is not built or the CPU lacks AVX2, FMA and F16C.
    """
    library = load_library()
    if library is None:
        return ()
    available = library.metaembed_native_instruction_sets()
    return tuple(name for name, bit in _INSTRUCTION_SETS.items() if available & bit)


# single-thread rates of this kernel on small, cache-resident collections (2-core EPYC VM,
# Zen 3), used only to decide whether a search is worth a second thread
_FLOPS_PER_SECOND = 70e9
_BYTES_PER_SECOND = 30e9


def single_thread_seconds(
    num_candidates: int, query_vectors: int, r_c: int, dim: int, dtype: str
) -> float:
    """Estimate one thread's time for a search: the larger of FLOP time and byte time.

    >>> round(single_thread_seconds(8_000, 1, 1, 128, "float16") * 1e6)
    68
    """
    flops = 2.0 * num_candidates * query_vectors * r_c * dim
    read_bytes = float(num_candidates * r_c * bytes_per_vector(dtype, dim))
    return max(flops / _FLOPS_PER_SECOND, read_bytes / _BYTES_PER_SECOND)


def score_tiers_native(
    query_embeddings: torch.Tensor,
    tiers: Sequence[Any],
    scales: Sequence[Any] | None,
    r_c: int,
    dtype: str,
    num_threads: int | None = None,
    instruction_set: str | None = None,
    library: ctypes.CDLL | None = None,
    lane_groups: bool | None = None,
) -> torch.Tensor:
    """Native backend of :func:`metaembed.index.kernels.score_tiers` (same arguments).

    ``num_threads`` defaults to ``torch.get_num_threads()``, fewer when the estimated work
    (:func:`single_thread_seconds`) does not pay for starting them; given, it is used as is
    (up to one thread per 64 candidates). ``instruction_set`` is one of
    :func:`instruction_sets`; by default the kernel picks per call: AMX where available
    and faster for the shape, else the widest vector copy (``"avx512"`` where available),
    except on Zen 4, whose AVX-512 runs on 256-bit units: there 3-8 query vectors in a call
    at ``r_c > 1`` run the ``"avx2"`` copy, measured faster for those shapes. On AMD CPUs
    with AVX-512 (Zen 4, Zen 5), int8 with 3 query vectors (4 from D = 512) at ``r_c > 1``,
    or one at ``r_c = 1``, runs the ``"vnni"`` copy
    (VPDPBUSD on three int8 digits of the query, exact int32 sums; up to 4 query vectors and
    D = 4096, other shapes on the AVX-512 copy). ``lane_groups`` holds the AVX-512 copy's
    lane-groups form for 3-8 query vectors on (``True``) or off (``False``, the grouped form)
    instead of the CPU's measured rule (off from Zen 5, on elsewhere); the scores agree
    either way, so it is for tests and side-by-side timings.
    ``"amx"`` with float32 storage runs the AVX-512 copy (float32 is not split into
    bfloat16 parts). ``library``: a build opened with :func:`open_library`, for timing
    builds side by side; the installed one by default.
    """
    library = load_library() if library is None else library
    if library is None:
        raise RuntimeError(_STATUS[-1])
    if instruction_set is not None and instruction_set not in instruction_sets():
        raise ValueError(
            f"instruction_set={instruction_set!r} is not available here; this machine runs "
            f"{instruction_sets()}"
        )
    num_queries, r_q, dim = query_embeddings.shape
    queries = query_matrix(query_embeddings)  # (M, D)
    raw = np.uint16 if dtype in ("float16", "bfloat16") else None
    used, used_scales, sizes, remaining = [], [], [], r_c
    for index, tier in enumerate(tiers):
        if remaining <= 0:
            break
        used.append(plain_array(tier, raw))  # (N, size, D)
        used_scales.append(plain_array(scales[index], np.float32) if dtype == "int8" else None)
        sizes.append(int(tier.shape[1]))
        remaining -= sizes[-1]
    if len(used) > MAX_TIERS:
        raise ValueError(f"the native kernel reads at most {MAX_TIERS} tiers, got {len(used)}")
    num_candidates = int(used[0].shape[0])
    scores = np.empty((num_queries, num_candidates), dtype=np.float32)  # (Nq, N)
    tier_pointers = (ctypes.c_void_p * len(used))(*(array.ctypes.data for array in used))
    scale_pointers = (ctypes.c_void_p * len(used))(
        *(None if array is None else array.ctypes.data for array in used_scales)
    )
    size_array = (ctypes.c_int64 * len(used))(*sizes)
    seconds = single_thread_seconds(num_candidates, num_queries * r_q, r_c, dim, dtype)
    # the kernel splits the candidates over its own threads (started and joined inside the
    # call, the GIL released): a Python thread pool cost ~100 us more per search
    status = library.metaembed_native_score(
        queries.ctypes.data, num_queries, r_q, dim,
        tier_pointers, scale_pointers, size_array, len(used),
        r_c, _KINDS[dtype], 0, num_candidates,
        scores.ctypes.data, num_candidates, worker_count(num_candidates, num_threads, seconds),
        _INSTRUCTION_SETS.get(instruction_set or "", 0) | _LANE_GROUPS[lane_groups],
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(_STATUS.get(status, f"native kernel status {status}"))
    return torch.from_numpy(scores)


# scores (over all rows) per thread, so that each thread's scan outlasts its ~50 us start: one
# thread scans about 13 scores per ns (8 queries x 100k: 0.06 ms on the Zen 5 VM)
_TOP_K_SCORES_PER_THREAD = 1 << 22
_TOP_K_MAX = 256  # larger k go to torch.topk (see top_k_native)


def top_k_native(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return the ``k`` largest scores of each row, best first (``None`` without the kernel).

    Parameters
    ----------
    scores : torch.Tensor, shape (Nq, n)
        float32 on the CPU (a copy is made if it is not contiguous).
    k : int
        Slots per row, at least 1; rows with fewer than ``k`` scores above ``-inf`` fill
        the rest with ``-inf`` and position ``-1``. Above ``_TOP_K_MAX`` (256) this returns
        ``None``: each entry into the sorted best k shifts up to k of them, which for rows
        in rising order costs n * k, where ``torch.topk``'s selection stays linear.

    Returns
    -------
    tuple of torch.Tensor or None
        Scores (Nq, k) float32 and column positions (Nq, k) int64. Equal scores keep the
        lower position first. Unlike ``torch.topk`` this runs on the kernel's own threads,
        not torch's OpenMP pool, whose spinning workers slow the next search's scoring.
    """
    library = load_library()
    if library is None or getattr(library, "metaembed_native_top_k", None) is None:
        return None
    if scores.dtype != torch.float32 or scores.device.type != "cpu" or scores.dim() != 2:
        return None
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > _TOP_K_MAX:
        return None
    matrix = np.ascontiguousarray(scores.numpy())  # (Nq, n)
    num_queries, n = matrix.shape
    top_scores = np.empty((num_queries, k), dtype=np.float32)  # (Nq, k)
    top_positions = np.empty((num_queries, k), dtype=np.int64)  # (Nq, k)
    threads = max(1, min(torch.get_num_threads(), matrix.size // _TOP_K_SCORES_PER_THREAD))
    status = library.metaembed_native_top_k(
        matrix.ctypes.data, num_queries, n, n, k,
        top_scores.ctypes.data, top_positions.ctypes.data, threads,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(_STATUS.get(status, f"native top-k status {status}"))
    return torch.from_numpy(top_scores), torch.from_numpy(top_positions)
