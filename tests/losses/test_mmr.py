"""MMRLoss against a naive per-group, per-query implementation of eq. 4-7."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metaembed import PAPER_GROUPS, Budget
from metaembed.losses import MMRLoss


def naive_score(
    query: torch.Tensor, candidate: torch.Tensor, group: Budget, mean: bool
) -> torch.Tensor:
    total = query.new_zeros(())
    for a in range(group.r_q):
        total = total + torch.stack([query[a] @ candidate[b] for b in range(group.r_c)]).max()
    return total / group.r_q if mean else total


def naive_loss(queries, positives, negatives, groups, temperature, weights, mean, offset=0):
    """Eq. 6 written literally: per query, softmax over all positives + its own negatives."""
    batch = queries.shape[0]
    if negatives is not None and negatives.ndim == 3:
        negatives = negatives[:, None]
    total = queries.new_zeros(())
    per_group = {}
    for group, weight in zip(groups, weights, strict=True):
        group_total = queries.new_zeros(())
        for u in range(batch):
            logits = [
                naive_score(queries[u], positives[v], group, mean)
                for v in range(positives.shape[0])
            ]
            if negatives is not None:
                logits += [naive_score(queries[u], n, group, mean) for n in negatives[u]]
            logits = torch.stack(logits) / temperature
            group_total = group_total - torch.log_softmax(logits, dim=0)[offset + u]
        per_group[group] = group_total / batch
        total = total + weight * per_group[group]
    return total, per_group


def random_unit(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("normalization", ["mean", "sum"])
@pytest.mark.parametrize("negatives_shape", [None, "single", "multi"])
def test_values_and_gradients_match_naive(normalization: str, negatives_shape: str | None) -> None:
    batch, dim = 3, 8
    queries = random_unit(batch, 16, dim, seed=0).requires_grad_()
    positives = random_unit(batch, 64, dim, seed=1).requires_grad_()
    negatives = None
    if negatives_shape == "single":
        negatives = random_unit(batch, 64, dim, seed=2).requires_grad_()
    elif negatives_shape == "multi":
        negatives = random_unit(batch, 2, 64, dim, seed=3).requires_grad_()
    weights = (1.0, 0.5, 2.0, 1.0, 0.25)
    loss_fn = MMRLoss(
        PAPER_GROUPS, temperature=0.05, weights=weights, score_normalization=normalization
    )
    output = loss_fn(queries, positives, negatives)
    expected, expected_groups = naive_loss(
        queries, positives, negatives, PAPER_GROUPS, 0.05, weights, normalization == "mean"
    )
    torch.testing.assert_close(output.loss.double(), expected, rtol=1e-5, atol=1e-6)
    for group in PAPER_GROUPS:
        torch.testing.assert_close(
            output.group_losses[group].double(), expected_groups[group], rtol=1e-5, atol=1e-6
        )
    inputs = [t for t in (queries, positives, negatives) if t is not None]
    got_grads = torch.autograd.grad(output.loss, inputs)
    expected_grads = torch.autograd.grad(expected, inputs)
    for got, want in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_offset_selects_positive_among_gathered() -> None:
    # Two "ranks": this rank's 2 queries own positives 2 and 3 of 5 gathered positives.
    queries = random_unit(2, 4, 6, seed=4)
    positives = random_unit(5, 8, 6, seed=5)
    groups = (Budget(1, 1), Budget(4, 8))
    output = MMRLoss(groups)(queries, positives, offset=2)
    expected, _ = naive_loss(queries, positives, None, groups, 0.03, (1.0, 1.0), True, offset=2)
    torch.testing.assert_close(output.loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_other_queries_negatives_never_enter_the_softmax() -> None:
    queries = random_unit(2, 4, 6, seed=6)
    positives = random_unit(2, 8, 6, seed=7)
    negatives = random_unit(2, 8, 6, seed=8)
    loss_fn = MMRLoss((Budget(4, 8),))
    base = loss_fn(queries, positives, negatives)
    # Replace query 1's negative with a copy of query 0's vectors (a perfect match for query 0).
    changed = negatives.clone()
    changed[1, :4] = queries[0]
    changed_out = loss_fn(queries, positives, changed)
    # Query 0's term is unchanged, so the change is entirely query 1's term.
    q0_base = naive_loss(
        queries[:1], positives, negatives[:1], (Budget(4, 8),), 0.03, (1.0,), True
    )[0]
    q0_changed = naive_loss(
        queries[:1], positives, changed[:1], (Budget(4, 8),), 0.03, (1.0,), True
    )[0]
    torch.testing.assert_close(q0_base, q0_changed)
    assert not torch.allclose(base.loss, changed_out.loss)


def test_mean_and_sum_rank_the_same() -> None:
    queries = random_unit(4, 16, 8, seed=9)
    positives = random_unit(4, 64, 8, seed=10)
    token = torch.einsum("uid,vjd->uivj", queries, positives)
    from metaembed.losses import group_scores

    for group in PAPER_GROUPS:
        mean = group_scores(token, group, "mean")
        total = group_scores(token, group, "sum")
        assert torch.equal(mean.argsort(dim=1), total.argsort(dim=1))
        torch.testing.assert_close(mean * group.r_q, total)


def test_perfect_embeddings_give_small_loss() -> None:
    positives = random_unit(8, 64, 32, seed=11)
    queries = positives[:, :16].clone()
    output = MMRLoss()(queries, positives)
    assert output.loss.item() < 0.1
    assert math.isfinite(output.loss.item())


@pytest.mark.parametrize(
    ("kwargs", "call", "message"),
    [
        ({}, dict(q=(2, 16, 8), p=(2, 64, 4)), "dim"),
        ({}, dict(q=(2, 8, 8), p=(2, 64, 8)), "r_q=16"),
        ({}, dict(q=(2, 16, 8), p=(2, 32, 8)), "r_c=64"),
        ({}, dict(q=(3, 16, 8), p=(2, 64, 8)), "offset"),
        ({}, dict(q=(2, 16, 8), p=(4, 64, 8), offset=3), "offset"),
        ({}, dict(q=(0, 16, 8), p=(2, 64, 8)), "empty"),
        ({}, dict(q=(2, 16, 8), p=(2, 64, 8), n=(3, 64, 8)), "hard_negative"),
        ({}, dict(q=(2, 16, 8), p=(2, 64, 8), n=(2, 16, 8)), "hard negatives"),
        ({}, dict(q=(16, 8), p=(2, 64, 8)), "must be"),
    ],
)
def test_bad_input(kwargs, call, message) -> None:
    negatives = torch.ones(call["n"]) if "n" in call else None
    with pytest.raises(ValueError, match=message):
        MMRLoss(**kwargs)(
            torch.ones(call["q"]), torch.ones(call["p"]), negatives, offset=call.get("offset", 0)
        )


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="temperature"):
        MMRLoss(temperature=0)
    with pytest.raises(ValueError, match="score_normalization"):
        MMRLoss(score_normalization="max")
    with pytest.raises(ValueError, match="weights"):
        MMRLoss(weights=(1.0,))
    with pytest.raises(ValueError, match="nested"):
        MMRLoss(groups=("4x8", "1x1"))
