"""Batched inference: length-sorted batches, inference mode, progress bar, budget prefixes.

>>> vectors_for_budget("4x8", "candidate", Budget(16, 64))
8
>>> vectors_for_budget(None, "query", Budget(16, 64))
16
>>> length_order([Item(text="a long text"), Item(text="b")])
[0, 1]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from metaembed.budget import Budget
from metaembed.items import Item

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.model.modeling import MetaEmbedModel

__all__ = ["encode_in_batches", "length_order", "vectors_for_budget"]

_IMAGE_LENGTH = 10_000
"""Sort weight of an image: items with images are long sequences for VLMs."""


def vectors_for_budget(
    budget: Budget | str | Sequence[int] | int | None, role: str, max_budget: Budget
) -> int:
    """Return how many leading vectors to keep for ``role`` under ``budget``.

    An ``int`` is the count for this role directly. Raises ``ValueError`` when the
    budget exceeds what the model produces.
    """
    if budget is None:
        return max_budget.r_q if role == "query" else max_budget.r_c
    if isinstance(budget, int) and not isinstance(budget, bool):
        budget = Budget(budget, 1) if role == "query" else Budget(1, budget)
    budget = Budget.parse(budget)
    budget.check_fits(max_budget.r_q, max_budget.r_c)
    return budget.r_q if role == "query" else budget.r_c


def length_order(items: Sequence[Item]) -> list[int]:
    """Return the indices of ``items`` from longest to shortest (stable; a token-count proxy)."""

    def length(index: int) -> int:
        item = items[index]
        text = len(item.text or "") + len(item.instruction or "")
        return text + (_IMAGE_LENGTH if item.image is not None else 0)

    return sorted(range(len(items)), key=length, reverse=True)


def _progress(total: int, show_progress: bool, role: str):  # noqa: ANN202 - tqdm type
    from tqdm.auto import tqdm

    enabled = show_progress and sys.stderr.isatty()
    return tqdm(total=total, desc=f"encoding {role}s", unit="item", disable=not enabled)


def _prepared_batches(
    model: MetaEmbedModel,
    items: Sequence[Item],
    role: str,
    batches: list[list[int]],
    prefetch: bool,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield ``(indices, prepared batch)`` pairs in order.

    With ``prefetch`` the next batch is processed in a background thread while the
    current one runs on the model.
    """

    def prepare(indices: list[int]) -> dict[str, torch.Tensor]:
        return model.prepare([items[i] for i in indices], role, indices)

    if not prefetch:
        for indices in batches:
            yield indices, prepare(indices)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="metaembed-prepare") as pool:
        pending = pool.submit(prepare, batches[0]) if batches else None
        for position, indices in enumerate(batches):
            batch = pending.result()
            if position + 1 < len(batches):
                pending = pool.submit(prepare, batches[position + 1])
            yield indices, batch


def encode_in_batches(
    model: MetaEmbedModel,
    items: Sequence[Item],
    role: str,
    count: int,
    batch_size: int = 16,
    show_progress: bool = True,
    prefetch: bool | None = None,
) -> torch.Tensor:
    """Encode ``items`` longest first in batches; return ``(N, count, dim)`` float32 on CPU.

    Sorting by length keeps padding small; the output is put back in input order.
    The model is put in eval mode for the call and restored afterwards.
    ``prefetch`` (default: on when the model is on a GPU) processes the next
    batch (tokenising, image resizing) in a background thread meanwhile.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prefetch is None:
        prefetch = model.device.type != "cpu"
    order = length_order(items)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    chunks: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _progress(len(items), show_progress, role) as bar:
            for indices, batch in _prepared_batches(model, items, role, batches, prefetch):
                embeddings = model.embed(batch, role)  # (batch, R, dim)
                chunks.append(embeddings[:, :count].cpu())  # (batch, count, dim)
                bar.update(len(indices))
    finally:
        model.train(was_training)
    if not chunks:
        dim = model.config.projection_dim or model.adapter.hidden_size
        return torch.zeros(0, count, dim)
    sorted_embeddings = torch.cat(chunks, dim=0)  # (N, count, dim) in length order
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return sorted_embeddings[inverse].contiguous()  # (N, count, dim) in input order
