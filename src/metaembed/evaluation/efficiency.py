"""Efficiency of a retrieval budget: scoring FLOPs, index memory and measured latency.

The paper's table 3 reports, per budget ``(r_q, r_c)`` and for ``N`` candidates
of dimension ``D`` stored in ``bfloat16``:

* scoring FLOPs ``2 * N * r_q * r_c * D`` (one multiply and one add per
  query-vector / candidate-vector coordinate; the max and sum are not counted);
* index memory ``N * r_c * D * bytes_per_value`` (only the first ``r_c`` vectors
  of each candidate have to be stored for that budget);
* scoring latency, measured on the machine.

The first two are pure arithmetic (:func:`efficiency_table`); the third is
measured by :func:`measure_scoring_latency` with the project's index engine
when it is installed, falling back to the reference :func:`metaembed.maxsim`.

With ``N = 100,000``, ``D = 3,584`` and ``bfloat16`` the formulas reproduce
seven of the ten FLOPs and memory cells of table 3 to the printed precision.
The other three cells are not consistent with the rest of the table under any
single formula (every cell must scale with ``r_q * r_c`` or ``r_c``): the
paper prints 0.71 G and 733.89 G FLOPs for (1,1) and (16,64) where
``0.7168 * r_q * r_c`` gives 0.72 and 734.00, and 0.68 GiB for (1,1) where
``0.6676 * r_c`` gives 0.67 (its own (16,64) memory cell, 42.72, is exactly
64 times 0.6676). :data:`PAPER_TABLE3` keeps the printed values so the
difference stays visible.

>>> row = efficiency_row(Budget(16, 64), num_candidates=100_000, dim=3584, dtype="bfloat16")
>>> round(row.scoring_gflops, 2), round(row.index_memory_gib, 2)
(734.0, 42.72)
>>> bytes_per_value("bf16")
2
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from metaembed.budget import PAPER_GROUPS, Budget, parse_budgets

__all__ = [
    "DTYPE_BYTES",
    "PAPER_TABLE3",
    "EfficiencyRow",
    "bytes_per_value",
    "index_memory_bytes",
    "efficiency_row",
    "efficiency_table",
    "measure_scoring_latency",
    "scoring_engine",
]

logger = logging.getLogger(__name__)

GIB = 2**30
"""Bytes in one GiB (the unit of table 3's memory column)."""

DTYPE_BYTES: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
}
"""Bytes per stored value of each supported index dtype."""

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}

PAPER_TABLE3: dict[Budget, dict[str, float]] = {
    Budget(1, 1): {
        "scoring_gflops": 0.71,
        "latency_ms": 1.67,
        "index_memory_gib": 0.68,
        "mmeb": 71.3,
    },
    Budget(2, 4): {
        "scoring_gflops": 5.73,
        "latency_ms": 1.66,
        "index_memory_gib": 2.67,
        "mmeb": 72.0,
    },
    Budget(4, 8): {
        "scoring_gflops": 22.94,
        "latency_ms": 1.67,
        "index_memory_gib": 5.34,
        "mmeb": 72.9,
    },
    Budget(8, 16): {
        "scoring_gflops": 91.75,
        "latency_ms": 1.92,
        "index_memory_gib": 10.68,
        "mmeb": 74.3,
    },
    Budget(16, 64): {
        "scoring_gflops": 733.89,
        "latency_ms": 6.25,
        "index_memory_gib": 42.72,
        "mmeb": 76.6,
    },
}
"""Table 3 of the paper as printed (MetaEmbed-7B, N=100,000, D=3,584, bfloat16, A100)."""


def canonical_dtype(dtype: str | torch.dtype) -> str:
    """Return the canonical name (``"bfloat16"``, ...) of an index dtype.

    >>> canonical_dtype("bf16"), canonical_dtype(torch.float16)
    ('bfloat16', 'float16')
    """
    name = str(dtype).removeprefix("torch.").lower()
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise ValueError(
            f"unknown index dtype {dtype!r}: use one of {', '.join(DTYPE_BYTES)} "
            f"(aliases {', '.join(_DTYPE_ALIASES)})"
        )
    return name


def bytes_per_value(dtype: str | torch.dtype) -> int:
    """Bytes used to store one embedding coordinate in ``dtype``."""
    return DTYPE_BYTES[canonical_dtype(dtype)]


def _check_sizes(num_candidates: int, dim: int) -> None:
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")


def index_memory_bytes(
    budget: Budget | str, num_candidates: int, dim: int, dtype: str = "bfloat16"
) -> int:
    """Bytes to store the first ``r_c`` vectors of ``num_candidates`` candidates.

    >>> index_memory_bytes("1x4", num_candidates=10, dim=8, dtype="float32")
    1280
    """
    budget = Budget.parse(budget)
    _check_sizes(num_candidates, dim)
    return num_candidates * budget.r_c * dim * bytes_per_value(dtype)


@dataclass(frozen=True)
class EfficiencyRow:
    """Cost of one budget.

    Attributes
    ----------
    budget : Budget
        The retrieval budget ``(r_q, r_c)``.
    scoring_flops : int
        FLOPs to score one query against every candidate (``2 * N * r_q * r_c * D``).
    index_memory_bytes : int
        Bytes of the index for this budget (``N * r_c * D * bytes_per_value``).
    latency_ms_mean, latency_ms_std : float, optional
        Measured scoring latency of one query (milliseconds), when measured.
    latency_candidates : int, optional
        Number of candidates the latency was measured on (may be fewer than ``N``).
    """

    budget: Budget
    scoring_flops: int
    index_memory_bytes: int
    latency_ms_mean: float | None = None
    latency_ms_std: float | None = None
    latency_candidates: int | None = None

    @property
    def scoring_gflops(self) -> float:
        """Scoring FLOPs in units of 10^9 (table 3's "G")."""
        return self.scoring_flops / 1e9

    @property
    def index_memory_gib(self) -> float:
        """Index memory in GiB (2^30 bytes)."""
        return self.index_memory_bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict, budget as ``"RqxRc"``."""
        return {
            "budget": str(self.budget),
            "scoring_flops": self.scoring_flops,
            "scoring_gflops": self.scoring_gflops,
            "index_memory_bytes": self.index_memory_bytes,
            "index_memory_gib": self.index_memory_gib,
            "latency_ms_mean": self.latency_ms_mean,
            "latency_ms_std": self.latency_ms_std,
            "latency_candidates": self.latency_candidates,
        }


def efficiency_row(
    budget: Budget | str, num_candidates: int, dim: int, dtype: str = "bfloat16"
) -> EfficiencyRow:
    """FLOPs and memory of one budget (no measurement)."""
    budget = Budget.parse(budget)
    _check_sizes(num_candidates, dim)
    return EfficiencyRow(
        budget=budget,
        scoring_flops=budget.scoring_flops(num_candidates, dim),
        index_memory_bytes=index_memory_bytes(budget, num_candidates, dim, dtype),
    )


def efficiency_table(
    num_candidates: int = 100_000,
    dim: int = 3584,
    dtype: str = "bfloat16",
    budgets: Iterable[Budget | str] | str = PAPER_GROUPS,
) -> list[EfficiencyRow]:
    """FLOPs and memory of every budget, in the given order (defaults: table 3's setting).

    >>> [round(row.scoring_gflops, 2) for row in efficiency_table()]
    [0.72, 5.73, 22.94, 91.75, 734.0]
    """
    return [efficiency_row(budget, num_candidates, dim, dtype) for budget in parse_budgets(budgets)]


def _random_embeddings(
    num: int, num_vectors: int, dim: int, generator: torch.Generator
) -> torch.Tensor:
    embeddings = torch.randn(num, num_vectors, dim, generator=generator)  # (num, R, D)
    return torch.nn.functional.normalize(embeddings, dim=-1)


def _index_engine() -> Any:
    """Return the embedded index class, or ``None`` when it is not installed."""
    try:
        from metaembed.index.multivector import MultiVectorIndex
    except ImportError:
        return None
    return MultiVectorIndex


def scoring_engine(engine: str = "auto") -> str:
    """Return the engine used for timing: ``"MultiVectorIndex"`` or ``"maxsim"``."""
    if engine not in ("auto", "index", "maxsim"):
        raise ValueError(f"engine must be 'auto', 'index' or 'maxsim', got {engine!r}")
    if engine == "maxsim":
        return "maxsim"
    if _index_engine() is None:
        if engine == "index":
            raise ValueError(
                "engine='index' needs metaembed.index.multivector; use engine='maxsim'"
            )
        return "maxsim"
    return "MultiVectorIndex"


def measure_scoring_latency(
    budgets: Iterable[Budget | str] | str = PAPER_GROUPS,
    num_candidates: int = 10_000,
    dim: int = 3584,
    dtype: str = "bfloat16",
    *,
    repeats: int = 10,
    warmup: int = 1,
    engine: str = "auto",
    seed: int = 0,
) -> dict[Budget, tuple[float, float]]:
    """Measure the time to score one query against ``num_candidates`` candidates.

    Random unit-norm embeddings stand in for real ones (scoring cost does not
    depend on the values). The index holds ``max r_c`` vectors per candidate in
    ``dtype``; each budget is timed ``repeats`` times after ``warmup`` runs.

    Parameters
    ----------
    budgets : iterable of Budget or str
        Budgets to time.
    num_candidates, dim : int
        Index size.
    dtype : str
        Storage dtype of the index.
    repeats, warmup : int
        Timed and untimed runs per budget.
    engine : {"auto", "index", "maxsim"}
        ``"index"``: :class:`metaembed.MultiVectorIndex` search (top-10);
        ``"maxsim"``: the reference scorer; ``"auto"``: the index when installed.
    seed : int
        Seed of the random embeddings.

    Returns
    -------
    dict[Budget, tuple[float, float]]
        Mean and standard deviation of the latency in milliseconds.
    """
    budgets = parse_budgets(budgets)
    _check_sizes(num_candidates, dim)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    index_class = _index_engine() if scoring_engine(engine) == "MultiVectorIndex" else None
    generator = torch.Generator().manual_seed(seed)
    max_rq = max(budget.r_q for budget in budgets)
    max_rc = max(budget.r_c for budget in budgets)
    torch_dtype = getattr(torch, canonical_dtype(dtype)) if dtype != "int8" else torch.float16
    query_embeddings = _random_embeddings(1, max_rq, dim, generator)  # (1, max_rq, D)
    candidate_embeddings = _random_embeddings(
        num_candidates, max_rc, dim, generator
    )  # (N, max_rc, D)
    candidate_embeddings = candidate_embeddings.to(torch_dtype)

    with tempfile.TemporaryDirectory(prefix="metaembed-latency-") as folder:
        if index_class is not None:
            index = index_class.create(
                folder + "/index", dim=dim, num_vectors=max_rc, dtype=canonical_dtype(dtype)
            )
            index.add(list(range(num_candidates)), candidate_embeddings)

            def score(budget: Budget) -> None:
                index.search(query_embeddings, k=10, budget=budget)

            logger.info(
                "timing scoring with %s on %d candidates", index_class.__name__, num_candidates
            )
        else:
            from metaembed.maxsim import maxsim

            def score(budget: Budget) -> None:
                torch.topk(
                    maxsim(query_embeddings, candidate_embeddings, budget),
                    k=min(10, num_candidates),
                )

            logger.info("timing scoring with metaembed.maxsim on %d candidates", num_candidates)
        return {budget: _time(score, budget, repeats, warmup) for budget in budgets}


def _time(score: Any, budget: Budget, repeats: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        score(budget)
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        score(budget)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    spread = statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0
    return statistics.fmean(times_ms), spread if math.isfinite(spread) else 0.0
