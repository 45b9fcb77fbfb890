"""How nested multi-vectors map onto a Qdrant collection's named vectors.

Qdrant scores a multivector with ``MAX_SIM`` over *all* of its sub-vectors, so a
budget ``(r_q, r_c)`` is exact only if some named vector holds exactly the first
``r_c`` candidate vectors. The layout therefore stores **cumulative prefixes**,
one named multivector per prefix size (``"p4"`` = vectors 1-4, ``"p8"`` =
vectors 1-8, ...), following the trained nested groups. Design choices:

* prefix 1 is not a multivector: the first candidate vector is stored once as
  the dense vector ``"first"`` (DOT, HNSW) that serves the prefetch, and a
  budget ``(r_q, 1)`` is scored exactly on it with the summed query vectors,
  because ``sum_i <q_i, c_1> = <sum_i q_i, c_1>``;
* the multivectors have HNSW disabled (``m=0``): they only rerank;
* storage cost: the paper's prefixes 1, 4, 8, 16, 64 store 93 vectors per
  candidate instead of 64 (1.45x). Disjoint per-tier storage (1, 2-4, 5-8,
  9-16, 17-64) would store 64, but Qdrant cannot combine tiers into one
  ``sum_i max_j`` (the max must run over the union), so it would not be exact.
  Store fewer prefixes (``prefix_sizes=(1, 64)``) to trade budgets for space;
* a budget whose ``r_c`` is not a stored prefix raises ``ValueError`` naming the
  stored sizes, or, with ``round_up=True``, is rounded up to the next stored
  prefix with a logged warning (the result reports the budget actually used).

>>> layout = QdrantLayout(dim=128, prefix_sizes=default_prefix_sizes(64))
>>> layout.prefix_sizes
(1, 4, 8, 16, 64)
>>> layout.vector_name(16), layout.vector_name(1)
('p16', 'first')
>>> layout.resolve(Budget(4, 8), num_query_vectors=16)
Budget(r_q=4, r_c=8)
>>> layout.resolve(Budget(4, 6), num_query_vectors=16, round_up=True)
Budget(r_q=4, r_c=8)
>>> layout.stored_vectors_per_candidate
93
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metaembed.budget import PAPER_GROUPS, Budget

__all__ = ["FIRST_VECTOR", "QdrantLayout", "default_prefix_sizes"]

logger = logging.getLogger(__name__)

FIRST_VECTOR = "first"
"""Name of the dense vector holding each candidate's first meta embedding."""

LAYOUT_FORMAT = 1
"""Version of the layout description stored in the collection metadata."""

_DATATYPE_BYTES = {"float32": 4, "float16": 2, "uint8": 1}


def default_prefix_sizes(
    num_vectors: int, groups: Sequence[Budget] = PAPER_GROUPS
) -> tuple[int, ...]:
    """Prefix sizes to store: the groups' ``r_c`` up to ``num_vectors``, plus ``num_vectors``.

    >>> default_prefix_sizes(64)
    (1, 4, 8, 16, 64)
    >>> default_prefix_sizes(12)
    (1, 4, 8, 12)
    """
    if num_vectors < 1:
        raise ValueError(f"num_vectors must be >= 1, got {num_vectors}")
    sizes = {1, num_vectors} | {group.r_c for group in groups if group.r_c <= num_vectors}
    return tuple(sorted(sizes))


@dataclass(frozen=True)
class QdrantLayout:
    """Named vectors of a MetaEmbed Qdrant collection.

    Parameters
    ----------
    dim : int
        Dimension of every meta embedding.
    prefix_sizes : tuple of int
        Strictly increasing stored prefix sizes; must start with 1 (the dense
        first vector). The last one is the number of vectors stored per candidate.
    datatype : str
        Storage type declared to Qdrant: ``"float32"``, ``"float16"`` or ``"uint8"``
        (a local-mode client keeps float32 whatever is declared).
    """

    dim: int
    prefix_sizes: tuple[int, ...]
    datatype: str = "float32"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        sizes = tuple(int(size) for size in self.prefix_sizes)
        if (
            not sizes
            or sizes[0] != 1
            or any(b <= a for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        ):
            raise ValueError(
                f"prefix_sizes must increase strictly and start with 1, got {self.prefix_sizes}; "
                "for example (1, 4, 8, 16, 64)"
            )
        object.__setattr__(self, "prefix_sizes", sizes)
        if self.datatype not in _DATATYPE_BYTES:
            raise ValueError(
                f"datatype {self.datatype!r} is not supported; use one of {sorted(_DATATYPE_BYTES)}"
            )

    @property
    def num_vectors(self) -> int:
        """Vectors stored per candidate (the largest prefix)."""
        return self.prefix_sizes[-1]

    @property
    def multivector_sizes(self) -> tuple[int, ...]:
        """Prefix sizes stored as MAX_SIM multivectors (all but the dense first vector)."""
        return self.prefix_sizes[1:]

    @property
    def stored_vectors_per_candidate(self) -> int:
        """Vectors actually stored per candidate, summed over every prefix."""
        return sum(self.prefix_sizes)

    @staticmethod
    def vector_name(prefix_size: int) -> str:
        """Named vector holding the first ``prefix_size`` candidate vectors."""
        return FIRST_VECTOR if prefix_size == 1 else f"p{prefix_size}"

    def resolve(self, budget: Budget, num_query_vectors: int, round_up: bool = False) -> Budget:
        """Check ``budget`` against the query and the stored prefixes; return the one to run.

        Raises ``ValueError`` if ``r_q`` exceeds the query's vectors, ``r_c`` exceeds
        the stored vectors, or ``r_c`` is not a stored prefix and ``round_up`` is False.
        """
        budget.check_fits(num_query_vectors, self.num_vectors)
        if budget.r_c in self.prefix_sizes:
            return budget
        larger = min(size for size in self.prefix_sizes if size > budget.r_c)
        if not round_up:
            smaller = max(size for size in self.prefix_sizes if size < budget.r_c)
            raise ValueError(
                f"budget {budget} has r_c={budget.r_c}, which is not a stored prefix "
                f"{self.prefix_sizes}; use r_c={smaller} or r_c={larger}, pass round_up=True, "
                "or create the collection with that prefix in prefix_sizes"
            )
        rounded = Budget(budget.r_q, larger)
        logger.warning("budget %s is not stored; rounding r_c up to %s", budget, rounded)
        return rounded

    def vectors_config(self, models: Any, on_disk: bool = False) -> dict[str, Any]:
        """``vectors_config`` for ``create_collection`` (``models`` is ``qdrant_client.models``)."""
        datatype = getattr(models.Datatype, self.datatype.upper())
        config = {
            FIRST_VECTOR: models.VectorParams(
                size=self.dim, distance=models.Distance.DOT, on_disk=on_disk, datatype=datatype
            )
        }
        for size in self.multivector_sizes:
            config[self.vector_name(size)] = models.VectorParams(
                size=self.dim,
                distance=models.Distance.DOT,
                on_disk=on_disk,
                datatype=datatype,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
                hnsw_config=models.HnswConfigDiff(m=0),  # rerank only: no graph
            )
        return config

    def storage_bytes(self, num_candidates: int) -> dict[str, Any]:
        """Bytes stored, and bytes read per budget by an exhaustive (exact) scan."""
        value_bytes = _DATATYPE_BYTES[self.datatype]
        vector_bytes = self.dim * value_bytes
        per_budget = {
            str(group): num_candidates * group.r_c * vector_bytes
            for group in PAPER_GROUPS
            if group.r_c in self.prefix_sizes
        }
        return {
            "bytes_stored": num_candidates * self.stored_vectors_per_candidate * vector_bytes,
            "storage_overhead": self.stored_vectors_per_candidate / self.num_vectors,
            "bytes_per_budget": per_budget,
        }

    def to_metadata(self) -> dict[str, Any]:
        """JSON-able description stored in the collection metadata."""
        return {
            "format": LAYOUT_FORMAT,
            "dim": self.dim,
            "prefix_sizes": list(self.prefix_sizes),
            "datatype": self.datatype,
        }

    @classmethod
    def from_vectors_config(cls, vectors: Any, collection: str) -> QdrantLayout:
        """Derive the layout from a collection's named vectors (servers without metadata).

        ``vectors`` maps names to ``VectorParams``; the layout needs a dense
        ``"first"`` and MAX_SIM multivectors named ``"p<size>"`` of the same dim.
        """
        first = vectors.get(FIRST_VECTOR) if isinstance(vectors, dict) else None
        prefixes = {
            int(name[1:]): params
            for name, params in (vectors.items() if isinstance(vectors, dict) else ())
            if name[:1] == "p" and name[1:].isdigit() and params.multivector_config is not None
        }
        if first is None or any(params.size != first.size for params in prefixes.values()):
            raise ValueError(
                f"collection {collection!r} has no metaembed layout: it needs a dense "
                f"{FIRST_VECTOR!r} vector and multivectors 'p<size>' of one dim; create it with "
                "QdrantIndex.create"
            )
        datatype = getattr(first.datatype, "value", None) or "float32"
        return cls(dim=first.size, prefix_sizes=(1, *sorted(prefixes)), datatype=datatype)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], collection: str) -> QdrantLayout:
        """Rebuild a layout from :meth:`to_metadata` output; a clear error if it is not one."""
        if not isinstance(metadata, dict) or metadata.get("format") != LAYOUT_FORMAT:
            raise ValueError(
                f"collection {collection!r} has no metaembed layout (format {LAYOUT_FORMAT}) "
                "in its metadata; it was not created by QdrantIndex.create"
            )
        return cls(
            dim=int(metadata["dim"]),
            prefix_sizes=tuple(int(size) for size in metadata["prefix_sizes"]),
            datatype=str(metadata.get("datatype", "float32")),
        )
