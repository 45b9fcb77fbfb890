"""One contrastive training step, plain or cached (GradCache), around :class:`MMRLoss`.

The MMR loss couples every query with every positive of the batch, so the
batch cannot simply be split into micro-batches with gradient accumulation.
GradCache (Gao et al., 2021) keeps the exact large-batch gradient while only
``chunk_size`` items are ever in the backbone's autograd graph at once:

1. Embed every chunk of queries and candidates without a graph, recording the
   random state before each chunk (dropout is replayed in step 3).
2. Treat those embeddings as leaves: gather positives across ranks, compute
   the MMR loss on the full batch and back-propagate it to the embeddings
   only; their gradients are the *cache*.
3. Re-embed each chunk with a graph under the recorded random state and
   back-propagate the cached gradient through it (``embeddings . cache``);
   parameter gradients accumulate to the large-batch gradient. Under FSDP2
   gradient reduction is switched off for all chunks but the last.

With ``chunk_size=0`` the plain path embeds the whole local batch with a
graph and back-propagates once; both give the same loss and gradients to
float tolerance (``tests/training/test_gradcache.py``).

Candidates (positives, then every hard negative) share one forward per
chunk; the loss never sees how they were chunked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from metaembed.items import Item
from metaembed.losses.mmr import MMRLoss, MMRLossOutput
from metaembed.training.collator import ItemBatch, chunks
from metaembed.training.distributed import gather_with_grad

__all__ = ["contrastive_step", "embed_items"]


def embed_items(model: Any, items: Sequence[Item], role: str) -> torch.Tensor:
    """``model(model.prepare(items, role), role)``: ``(len(items), R, D)`` float32.

    The model is *called* (not ``model.embed``) so that wrappers' hooks
    (FSDP2 unsharding) run.
    """
    return model(model.prepare(items, role), role)


class _RandomState:
    """The CPU (and current CUDA device) random state, to replay dropout exactly."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _split_candidates(
    candidate_embeddings: torch.Tensor, batch: ItemBatch
) -> tuple[torch.Tensor, torch.Tensor | None]:
    size, n = len(batch), batch.num_negatives
    positives = candidate_embeddings[:size]  # (b, Rc, D)
    if n == 0:
        return positives, None
    negatives = candidate_embeddings[size:]  # (b * n, Rc, D)
    return positives, negatives.reshape(size, n, *negatives.shape[1:])  # (b, n, Rc, D)


def _loss(
    loss_fn: MMRLoss,
    query_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    batch: ItemBatch,
) -> MMRLossOutput:
    positives, negatives = _split_candidates(candidate_embeddings, batch)
    all_positives, offset = gather_with_grad(positives)  # (B_global, Rc, D)
    return loss_fn(query_embeddings, all_positives, negatives, offset)


def _detached(output: MMRLossOutput) -> MMRLossOutput:
    return MMRLossOutput(
        loss=output.loss.detach(),
        group_losses={g: v.detach() for g, v in output.group_losses.items()},
    )


def contrastive_step(
    model: Any,
    loss_fn: MMRLoss,
    batch: ItemBatch,
    *,
    chunk_size: int = 0,
    loss_scale: float = 1.0,
    backward: bool = True,
) -> MMRLossOutput:
    """Embed this rank's ``batch``, compute the MMR loss and (optionally) back-propagate.

    Parameters
    ----------
    model : MetaEmbedModel (or a wrapper with ``prepare`` and ``__call__(batch, role)``)
    loss_fn : MMRLoss
    batch : ItemBatch
        This rank's queries, positives and hard negatives.
    chunk_size : int
        Items per forward pass for GradCache; 0 embeds the batch at once.
    loss_scale : float
        Multiplies the loss before backward (data-parallel weighting of uneven shards).
    backward : bool
        False for evaluation (no gradients are computed).

    Returns
    -------
    MMRLossOutput
        Detached (unscaled) loss and per-group losses of this rank's queries.
    """
    candidates = batch.positives + batch.negatives
    if not backward:
        with torch.no_grad():
            query_embeddings = _embed_chunked(model, batch.queries, "query", chunk_size)
            candidate_embeddings = _embed_chunked(model, candidates, "candidate", chunk_size)
            return _detached(_loss(loss_fn, query_embeddings, candidate_embeddings, batch))
    if chunk_size <= 0:
        query_embeddings = embed_items(model, batch.queries, "query")  # (b, Rq, D)
        candidate_embeddings = embed_items(model, candidates, "candidate")  # (b * (1 + n), Rc, D)
        output = _loss(loss_fn, query_embeddings, candidate_embeddings, batch)
        (output.loss * loss_scale).backward()
        return _detached(output)
    return _cached_step(model, loss_fn, batch, candidates, chunk_size, loss_scale)


def _embed_chunked(model: Any, items: Sequence[Item], role: str, chunk_size: int) -> torch.Tensor:
    parts = [embed_items(model, items[a:b], role) for a, b in chunks(len(items), chunk_size)]
    return torch.cat(parts)  # (len(items), R, D)


def _cached_step(
    model: Any,
    loss_fn: MMRLoss,
    batch: ItemBatch,
    candidates: list[Item],
    chunk_size: int,
    loss_scale: float,
) -> MMRLossOutput:
    device = _device_of(model)
    # Step 1: embed every chunk without a graph, remembering the random state.
    plan = [(batch.queries, "query", r) for r in chunks(len(batch), chunk_size)]
    plan += [(candidates, "candidate", r) for r in chunks(len(candidates), chunk_size)]
    states, cached = [], []
    with torch.no_grad():
        for items, role, (start, stop) in plan:
            states.append(_RandomState(device))
            cached.append(embed_items(model, items[start:stop], role))  # (chunk, R, D)
    # Step 2: loss on the cached embeddings as leaves -> gradient cache.
    num_query_chunks = len(chunks(len(batch), chunk_size))
    leaves = [embedding.detach().requires_grad_(True) for embedding in cached]
    query_embeddings = torch.cat(leaves[:num_query_chunks])  # (b, Rq, D)
    candidate_embeddings = torch.cat(leaves[num_query_chunks:])  # (b * (1 + n), Rc, D)
    output = _loss(loss_fn, query_embeddings, candidate_embeddings, batch)
    (output.loss * loss_scale).backward()
    # Step 3: re-embed chunk by chunk with a graph and push the cached gradient through.
    for index, ((items, role, (start, stop)), state, leaf) in enumerate(
        zip(plan, states, leaves, strict=True)
    ):
        _set_gradient_sync(model, index == len(plan) - 1)
        with state.replay():
            embeddings = embed_items(model, items[start:stop], role)  # (chunk, R, D)
        embeddings.backward(leaf.grad)
    return _detached(output)


def _device_of(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        return torch.device("cpu")


def _set_gradient_sync(model: Any, enabled: bool) -> None:
    """FSDP2 modules reduce gradients after every backward unless told not to."""
    setter = getattr(model, "set_requires_gradient_sync", None)
    if setter is not None:
        setter(enabled)
