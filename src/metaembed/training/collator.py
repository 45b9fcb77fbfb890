"""Batches of training items: queries, positives and a fixed number of hard negatives per query.

A batch stays a list of :class:`~metaembed.items.Item` until the loss step
embeds it, because GradCache and the data-parallel split cut it into pieces
(chunks, rank shards) that are each processed by ``model.prepare`` separately.

>>> from metaembed.training.data import TrainingExample
>>> rows = [TrainingExample(Item(text=f"q{i}"), Item(text=f"p{i}"), (Item(text=f"n{i}"),))
...         for i in range(4)]
>>> batch = collate(rows, num_hard_negatives=1)
>>> len(batch), [n.text for n in batch.shard(1, 2).negatives]
(4, ['n2', 'n3'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metaembed.items import Item
from metaembed.training.data import TrainingExample

__all__ = ["ItemBatch", "collate", "shard_bounds", "chunks"]


@dataclass(frozen=True)
class ItemBatch:
    """Items of one (global or per-rank) batch.

    Attributes
    ----------
    queries, positives : list of Item, length B
    negatives : list of Item, length B * num_negatives
        Query-major: query ``u``'s negatives are ``negatives[u * n:(u + 1) * n]``.
    num_negatives : int
    """

    queries: list[Item]
    positives: list[Item]
    negatives: list[Item]
    num_negatives: int

    def __len__(self) -> int:
        return len(self.queries)

    def slice(self, start: int, stop: int) -> ItemBatch:
        """Return the queries ``start:stop`` with their positives and negatives."""
        n = self.num_negatives
        return ItemBatch(
            self.queries[start:stop],
            self.positives[start:stop],
            self.negatives[start * n : stop * n],
            n,
        )

    def shard(self, rank: int, world_size: int) -> ItemBatch:
        """Return the contiguous part of ``rank`` (see :func:`shard_bounds`)."""
        return self.slice(*shard_bounds(len(self), rank, world_size))


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``count`` rows for ``rank``; sizes differ by at most one.

    >>> [shard_bounds(5, r, 2) for r in range(2)]
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def chunks(count: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``chunk_size`` (all in one when ``chunk_size`` is 0).

    >>> chunks(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    if chunk_size <= 0 or chunk_size >= count:
        return [(0, count)]
    return [(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]


def collate(examples: Sequence[TrainingExample], num_hard_negatives: int) -> ItemBatch:
    """Group examples into an :class:`ItemBatch` with the first ``num_hard_negatives`` negatives.

    Raises ``ValueError`` naming the row when an example has fewer negatives.
    """
    negatives: list[Item] = []
    for example in examples:
        if len(example.negatives) < num_hard_negatives:
            raise ValueError(
                f"{example.source} row {example.row} has {len(example.negatives)} hard "
                f"negatives but num_hard_negatives is {num_hard_negatives}; add negatives "
                "or lower num_hard_negatives"
            )
        negatives.extend(example.negatives[:num_hard_negatives])
    return ItemBatch(
        [e.query for e in examples], [e.positive for e in examples], negatives, num_hard_negatives
    )
