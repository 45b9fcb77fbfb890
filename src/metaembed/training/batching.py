"""Which training examples form the global batch of each step.

Two samplers, both pure functions of ``(seed, step)`` so that one process and
``N`` ranks, and a resumed run, see the same batches:

* ``random``: every epoch is a seeded permutation of all examples, cut into
  batches of ``batch_size`` (the left-over tail is dropped);
* ``subset``: every batch comes from one subset (an MMEB-train dataset, a
  task), the usual practice when tasks differ in kind (a batch mixing
  classification with retrieval pairs lets the model tell them apart by
  format, a shortcut instead of a lesson), and no two examples of a batch
  share a positive, so every in-batch negative of InfoNCE is a true negative
  (a classification subset with 21 labels gives batches of at most 21).
  ``subset_fractions`` keeps a seeded fraction of a subset in each epoch
  (``{"classification": 0.3}``) and batches smaller than ``min_batch_size``
  are dropped (few negatives, a full step's cost).

>>> from metaembed.items import Item
>>> from metaembed.training.data import TrainingExample
>>> examples = [
...     TrainingExample(Item(text=f"q{i}"), Item(text=f"label{i % 2}"), subset="cls")
...     for i in range(4)
... ]
>>> schedule = BatchSchedule(examples, batch_size=4, sampler="subset", seed=0)
>>> [sorted(examples[i].positive.text for i in batch) for batch in schedule.epoch(0)]
[['label0', 'label1'], ['label0', 'label1']]
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SAMPLERS", "BatchSchedule", "positive_key", "fill_distinct_batches"]

SAMPLERS = ("random", "subset")


def positive_key(example: Any) -> str:
    """Return what makes positives the same: ``positive_id`` when set, else text and image."""
    if getattr(example, "positive_id", None) is not None:
        return f"id:{example.positive_id}"
    positive = example.positive
    image = positive.image
    image_key = str(image) if isinstance(image, (str, bytes)) or image is None else id(image)
    return f"{positive.text!r}|{image_key}"


def fill_distinct_batches(
    indices: Sequence[int], keys: Sequence[str], batch_size: int, min_size: int
) -> list[list[int]]:
    """Greedy first fit: put each index in the first open batch that lacks its key.

    Returns the batches (lists of indices) of at least ``min_size``.

    >>> fill_distinct_batches([0, 1, 2, 3], ["a", "a", "b", "c"], batch_size=2, min_size=1)
    [[0, 2], [1, 3]]
    """
    batches: list[list[int]] = []
    taken: list[set[str]] = []
    first_open = 0  # batches before it are full
    for index in indices:
        key = keys[index]
        for position in range(first_open, len(batches)):
            if len(batches[position]) < batch_size and key not in taken[position]:
                batches[position].append(index)
                taken[position].add(key)
                break
        else:
            batches.append([index])
            taken.append({key})
        while first_open < len(batches) and len(batches[first_open]) >= batch_size:
            first_open += 1
    return [batch for batch in batches if len(batch) >= min_size]


class BatchSchedule:
    """The global batch of every step: ``indices(step)`` into ``examples``.

    Parameters
    ----------
    examples : sequence of TrainingExample
        The training examples (``subset`` and ``positive`` are read).
    batch_size : int
        The global batch size (the largest batch with ``sampler="subset"``).
    sampler : {"random", "subset"}
        See the module docstring.
    seed : int
        Fixes every epoch's order.
    subset_fractions : mapping of str to float, optional
        ``subset`` only: the fraction of a subset used in each epoch (default 1).
    min_batch_size : int
        ``subset`` only: smaller batches are dropped.
    """

    def __init__(
        self,
        examples: Sequence[Any],
        batch_size: int,
        sampler: str = "random",
        seed: int = 0,
        subset_fractions: Mapping[str, float] | None = None,
        min_batch_size: int = 2,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"batch_sampler must be one of {SAMPLERS}, got {sampler!r}")
        if batch_size > len(examples):
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(examples)} training examples; "
                "lower batch_size or add data"
            )
        self.num_examples = len(examples)
        self.batch_size = batch_size
        self.sampler = sampler
        self.seed = seed
        self.fractions = dict(subset_fractions or {})
        self.min_batch_size = max(1, min_batch_size)
        self._subsets: dict[str, list[int]] = {}
        for index, example in enumerate(examples):
            self._subsets.setdefault(str(example.subset), []).append(index)
        unknown = sorted(set(self.fractions) - set(self._subsets))
        if unknown:
            raise ValueError(
                f"subset_fractions names subsets {unknown} that the data lacks; "
                f"subsets: {sorted(self._subsets)}"
            )
        self._keys = [positive_key(example) for example in examples]
        self._epochs: dict[int, list[list[int]]] = {}
        self._starts = [0]  # _starts[e]: the first step of epoch e
        if not self.epoch(0):
            raise ValueError(
                f"no batch of at least min_batch_size={self.min_batch_size} examples with "
                "distinct positives; lower min_batch_size or add data"
            )

    @property
    def steps_per_epoch(self) -> int:
        """Batches in the first epoch (``subset`` epochs can differ by a few)."""
        return len(self.epoch(0))

    def epoch(self, epoch: int) -> list[list[int]]:
        """Return the batches of ``epoch`` (cached: the last few epochs are kept)."""
        if epoch not in self._epochs:
            self._epochs[epoch] = self._build(epoch)
            for old in [e for e in self._epochs if e < epoch - 2]:
                del self._epochs[old]
        return self._epochs[epoch]

    def _build(self, epoch: int) -> list[list[int]]:
        generator_seed = self.seed * 100_003 + epoch
        if self.sampler == "random":
            generator = torch.Generator().manual_seed(generator_seed)
            order = torch.randperm(self.num_examples, generator=generator).tolist()
            count = self.num_examples // self.batch_size
            return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(count)]
        rng = random.Random(generator_seed)
        batches: list[list[int]] = []
        for subset in sorted(self._subsets):
            members = list(self._subsets[subset])
            rng.shuffle(members)
            fraction = self.fractions.get(subset, 1.0)
            members = members[: max(1, round(fraction * len(members)))]
            batches += fill_distinct_batches(
                members, self._keys, self.batch_size, self.min_batch_size
            )
        rng.shuffle(batches)
        return batches

    def indices(self, step: int) -> list[int]:
        """Return the example indices of the global batch of ``step``."""
        while len(self._starts) <= 1 or self._starts[-1] <= step:
            epoch = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self.epoch(epoch)))
        epoch = next(e for e in range(len(self._starts) - 1) if self._starts[e + 1] > step)
        return list(self.epoch(epoch)[step - self._starts[epoch]])
