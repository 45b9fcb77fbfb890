"""GradCache gives the plain loss and the plain gradients on a tiny model; dropout is replayed."""

from __future__ import annotations

import pytest
import torch

from metaembed.losses.mmr import MMRLoss
from metaembed.model.lora import lora_parameters
from metaembed.testing import tiny_model
from metaembed.training.collator import collate
from metaembed.training.data import load_training_data
from metaembed.training.gradcache import _RandomState, contrastive_step


@pytest.fixture(scope="module")
def model():
    model = tiny_model(
        "llama",
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["1x1", "2x4"],
        lora_r=4,
        lora_alpha=4,
        lora_dropout=0.0,
    )
    with torch.no_grad():  # LoRA B starts at zero, which would zero every lora_A gradient
        for name, parameter in lora_parameters(model).items():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    return model.train()


@pytest.fixture(scope="module")
def batch(toy_data_path):
    examples = load_training_data([str(toy_data_path)]).examples
    return collate(examples[:3] + examples[70:74], num_hard_negatives=1)  # 7 queries, two subsets


@pytest.fixture(scope="module")
def toy_data_path():
    from tests.training.training_support import TOY_DATA

    return TOY_DATA


def _step(model, batch, chunk_size):
    model.zero_grad(set_to_none=True)
    loss_fn = MMRLoss(groups=model.config.groups, temperature=0.03)
    output = contrastive_step(model, loss_fn, batch, chunk_size=chunk_size)
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return output, gradients


@pytest.mark.parametrize("chunk_size", [1, 3, 5])
def test_cached_loss_and_gradients_equal_plain(model, batch, chunk_size):
    plain, plain_grads = _step(model, batch, chunk_size=0)
    cached, cached_grads = _step(model, batch, chunk_size=chunk_size)
    torch.testing.assert_close(cached.loss, plain.loss, rtol=1e-5, atol=1e-6)
    for group in plain.group_losses:
        torch.testing.assert_close(
            cached.group_losses[group], plain.group_losses[group], rtol=1e-5, atol=1e-6
        )
    assert set(cached_grads) == set(plain_grads) and any("lora_A" in n for n in plain_grads)
    for name, gradient in plain_grads.items():
        assert gradient.abs().sum() > 0, f"{name} got no gradient"
        scale = float(gradient.abs().max())
        torch.testing.assert_close(
            cached_grads[name], gradient, rtol=1e-4, atol=1e-5 * scale, msg=name
        )


def test_evaluation_step_has_no_gradients_and_same_loss(model, batch):
    plain, _ = _step(model, batch, chunk_size=0)
    model.zero_grad(set_to_none=True)
    loss_fn = MMRLoss(groups=model.config.groups, temperature=0.03)
    evaluated = contrastive_step(model, loss_fn, batch, chunk_size=2, backward=False)
    torch.testing.assert_close(evaluated.loss, plain.loss, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_random_state_replays_dropout():
    dropout = torch.nn.Dropout(0.5)
    values = torch.ones(1000)
    state = _RandomState(torch.device("cpu"))
    first = dropout(values)
    after = torch.rand(3)
    with state.replay():
        replayed = dropout(values)
    assert torch.equal(first, replayed)
    torch.set_rng_state(state.cpu)
    dropout(values)
    assert torch.equal(torch.rand(3), after)  # replay left the outer random stream untouched


def test_step_wires_each_querys_own_negatives(model, tmp_path):
    """Two hard negatives per query: the step's loss is MMRLoss on hand-embedded tensors."""
    from tests.training.training_support import write_jsonl

    rows = [
        {"query_text": f"query {i}", "positive_text": f"answer {i}",
         "negative_text": [f"wrong {i} a", f"wrong {i} b"]}
        for i in range(4)
    ]  # fmt: skip
    examples = load_training_data([str(write_jsonl(tmp_path / "two.jsonl", rows))]).examples
    batch = collate(examples, num_hard_negatives=2)
    loss_fn = MMRLoss(groups=model.config.groups, temperature=0.03)
    with torch.no_grad():
        queries = model.embed(model.prepare([e.query for e in examples], "query"), "query")
        positives = model.embed(
            model.prepare([e.positive for e in examples], "candidate"), "candidate"
        )
        per_query = [model.prepare(list(e.negatives), "candidate") for e in examples]
        negatives = torch.stack([model.embed(inputs, "candidate") for inputs in per_query])
        # negatives: (4 queries, 2, Rc, D)
        expected = loss_fn(queries, positives, negatives)
    for chunk_size in (0, 3):
        got = contrastive_step(model, loss_fn, batch, chunk_size=chunk_size, backward=False)
        torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-6)
    swapped = loss_fn(queries, positives, negatives.flip(0))  # other queries' negatives
    assert not torch.allclose(swapped.loss, expected.loss)
