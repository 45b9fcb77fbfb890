"""Retrieval budgets: how many query and candidate vectors take part in scoring.

A :class:`Budget` ``(r_q, r_c)`` selects the first ``r_q`` query meta embeddings
and the first ``r_c`` candidate meta embeddings (the prefix-nested groups of
Matryoshka Multi-Vector Retrieval, paper section 3.2). Budgets are small
immutable values: they hash, compare by cost and round-trip through strings.

>>> Budget.parse("16x64")
Budget(r_q=16, r_c=64)
>>> str(Budget(2, 4))
'2x4'
>>> sorted([Budget(16, 64), Budget(1, 1), Budget(4, 8)])[0]
Budget(r_q=1, r_c=1)
>>> [str(b) for b in PAPER_GROUPS]
['1x1', '2x4', '4x8', '8x16', '16x64']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import total_ordering

__all__ = ["Budget", "PAPER_GROUPS", "parse_budgets", "validate_groups"]

_BUDGET_PATTERN = re.compile(r"^\s*\(?\s*(\d+)\s*[x,×*]\s*(\d+)\s*\)?\s*$", re.IGNORECASE)


@total_ordering
@dataclass(frozen=True)
class Budget:
    """A retrieval budget ``(r_q, r_c)``.

    Parameters
    ----------
    r_q : int
        Number of query vectors used (a prefix of the query meta embeddings), >= 1.
    r_c : int
        Number of candidate vectors used (a prefix of the candidate meta embeddings), >= 1.

    Notes
    -----
    Budgets order by scoring cost ``r_q * r_c`` and then by ``(r_c, r_q)`` so the
    order is total and deterministic.
    """

    r_q: int
    r_c: int

    def __post_init__(self) -> None:
        for name in ("r_q", "r_c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"Budget.{name} must be an int, got {type(value).__name__} {value!r}"
                )
            if value < 1:
                raise ValueError(f"Budget.{name} must be >= 1, got {value}")

    @classmethod
    def parse(cls, text: str | Budget | Sequence[int]) -> Budget:
        """Parse ``"16x64"``, ``"16,64"``, ``"(16, 64)"``, a pair, or a Budget.

        >>> Budget.parse("(4, 8)")
        Budget(r_q=4, r_c=8)
        >>> Budget.parse([2, 4])
        Budget(r_q=2, r_c=4)
        """
        if isinstance(text, Budget):
            return text
        if isinstance(text, str):
            match = _BUDGET_PATTERN.match(text)
            if match is None:
                raise ValueError(
                    f"cannot parse budget {text!r}: write it as 'R_QxR_C', for example '16x64'"
                )
            return cls(int(match.group(1)), int(match.group(2)))
        values = tuple(text)
        if len(values) != 2:
            raise ValueError(f"a budget is a pair (r_q, r_c), got {values!r}")
        return cls(int(values[0]), int(values[1]))

    @property
    def cost(self) -> int:
        """Number of query-candidate vector dot products per scored pair (``r_q * r_c``)."""
        return self.r_q * self.r_c

    def scoring_flops(self, num_candidates: int, dim: int) -> int:
        """FLOPs to score one query against ``num_candidates`` (``2 * N * r_q * r_c * D``).

        >>> Budget(16, 64).scoring_flops(100_000, 3584)
        734003200000
        """
        return 2 * num_candidates * self.r_q * self.r_c * dim

    def fits(self, num_query_vectors: int, num_candidate_vectors: int) -> bool:
        """Whether this budget fits inside embeddings with the given numbers of vectors."""
        return self.r_q <= num_query_vectors and self.r_c <= num_candidate_vectors

    def check_fits(self, num_query_vectors: int, num_candidate_vectors: int) -> None:
        """Raise a ``ValueError`` naming the limit if the budget exceeds the vectors available."""
        if self.r_q > num_query_vectors:
            raise ValueError(
                f"budget {self} asks for r_q={self.r_q} query vectors but only "
                f"{num_query_vectors} are available; use r_q <= {num_query_vectors}"
            )
        if self.r_c > num_candidate_vectors:
            raise ValueError(
                f"budget {self} asks for r_c={self.r_c} candidate vectors but only "
                f"{num_candidate_vectors} are stored; use r_c <= {num_candidate_vectors}"
            )

    def _key(self) -> tuple[int, int, int]:
        return (self.cost, self.r_c, self.r_q)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Budget):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        return f"{self.r_q}x{self.r_c}"

    def as_tuple(self) -> tuple[int, int]:
        """Return ``(r_q, r_c)``."""
        return (self.r_q, self.r_c)


PAPER_GROUPS: tuple[Budget, ...] = tuple(
    Budget(r_q, r_c) for r_q, r_c in ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
)
"""The five nested groups used to train MetaEmbed in the paper (section 4.1)."""


def parse_budgets(values: str | Iterable[str | Budget | Sequence[int]]) -> tuple[Budget, ...]:
    """Parse a list of budgets, or a comma/space separated string such as ``"1x1 4x8"``.

    >>> [str(b) for b in parse_budgets("1x1, 16x64")]
    ['1x1', '16x64']
    """
    if isinstance(values, str):
        parts = [p for p in re.split(r"[\s;]+|,(?=\s*\d+\s*[x×*])", values) if p.strip()]
        return tuple(Budget.parse(p) for p in parts)
    return tuple(Budget.parse(v) for v in values)


def validate_groups(groups: Sequence[Budget]) -> tuple[Budget, ...]:
    """Check that groups are strictly nested (both r_q and r_c increase) and return them.

    >>> validate_groups([Budget(1, 1), Budget(2, 4)])
    (Budget(r_q=1, r_c=1), Budget(r_q=2, r_c=4))
    """
    groups = tuple(Budget.parse(g) for g in groups)
    if not groups:
        raise ValueError("at least one group is needed, for example PAPER_GROUPS")
    for previous, current in zip(groups, groups[1:], strict=False):
        if not (current.r_q >= previous.r_q and current.r_c >= previous.r_c) or current == previous:
            raise ValueError(
                f"groups must be nested and increasing, but {current} follows {previous}; "
                "sort them from smallest to largest, e.g. 1x1, 2x4, 4x8, 8x16, 16x64"
            )
    return groups
