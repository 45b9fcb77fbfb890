"""Batch schedules: the random sampler's permutation, single-subset batches with distinct
positives, determinism across fresh schedules (resume), and clear errors."""

from __future__ import annotations

import pytest
import torch

from metaembed.items import Item
from metaembed.training.batching import BatchSchedule, positive_key
from metaembed.training.data import TrainingExample
from metaembed.training.trainer import train
from tests.training.training_support import tiny_config


def _examples() -> list[TrainingExample]:
    examples = [  # 30 retrieval pairs with distinct positives, 20 classification pairs, 4 labels
        TrainingExample(Item(text=f"query {i}"), Item(text=f"doc {i}"), subset="retrieval")
        for i in range(30)
    ]
    examples += [
        TrainingExample(Item(text=f"item {i}"), Item(text=f"label {i % 4}"), subset="labels")
        for i in range(20)
    ]
    return examples


def test_random_sampler_is_a_seeded_permutation_cut_into_full_batches():
    examples = _examples()
    schedule = BatchSchedule(examples, batch_size=8, sampler="random", seed=3)
    assert schedule.steps_per_epoch == 50 // 8
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3 * 100_003 + 1)).tolist()
    assert schedule.indices(schedule.steps_per_epoch + 2) == order[16:24]  # epoch 1, batch 2
    first_epoch = [i for step in range(6) for i in schedule.indices(step)]
    assert len(set(first_epoch)) == 48


def test_subset_batches_hold_one_subset_and_distinct_positives():
    examples = _examples()
    schedule = BatchSchedule(examples, batch_size=8, sampler="subset", seed=0, min_batch_size=3)
    for step in range(3 * schedule.steps_per_epoch):
        batch = schedule.indices(step)
        assert 3 <= len(batch) <= 8
        assert len({examples[i].subset for i in batch}) == 1
        assert len({positive_key(examples[i]) for i in batch}) == len(batch)
    label_batches = [b for b in schedule.epoch(0) if examples[b[0]].subset == "labels"]
    assert label_batches and all(len(b) == 4 for b in label_batches)  # capped by 4 labels
    used = sorted(i for batch in schedule.epoch(0) for i in batch)
    assert used == list(range(50))  # every example once per epoch (no batch dropped here)


def test_a_fresh_schedule_gives_the_same_batch_at_any_step():
    examples = _examples()
    first = BatchSchedule(examples, 8, sampler="subset", seed=1)
    wanted = [first.indices(step) for step in range(40)]
    assert BatchSchedule(examples, 8, sampler="subset", seed=1).indices(37) == wanted[37]
    assert BatchSchedule(examples, 8, sampler="subset", seed=2).epoch(0) != first.epoch(0)


def test_subset_fractions_and_positive_ids():
    examples = _examples()
    half = BatchSchedule(examples, 8, sampler="subset", seed=0, subset_fractions={"retrieval": 0.5})
    assert sum(len(b) for b in half.epoch(0) if examples[b[0]].subset == "retrieval") == 15
    same_id = [
        TrainingExample(Item(text=f"q{i}"), Item(text=f"d{i}"), positive_id="one") for i in range(6)
    ]
    with pytest.raises(ValueError, match="distinct positives"):
        BatchSchedule(same_id, 4, sampler="subset", min_batch_size=2)


def test_bad_settings_are_named():
    examples = _examples()
    with pytest.raises(ValueError, match="larger than the 50 training examples"):
        BatchSchedule(examples, 64)
    with pytest.raises(ValueError, match="lacks"):
        BatchSchedule(examples, 8, sampler="subset", subset_fractions={"nope": 0.5})
    with pytest.raises(ValueError, match="batch_sampler"):
        BatchSchedule(examples, 8, sampler="bucket")
    with pytest.raises(ValueError, match="subset_fractions"):
        tiny_config("unused", subset_fractions={"colours": 1.5})
    with pytest.raises(ValueError, match="min_batch_size"):
        tiny_config("unused", min_batch_size=9)


def test_trainer_with_subset_batches_trains_and_resumes_exactly(tmp_path):
    common = dict(batch_sampler="subset", batch_size=6, min_batch_size=3, max_steps=5, save_steps=2)
    unbroken = train(tiny_config(tmp_path / "a", **common))
    train(tiny_config(tmp_path / "b", stop_after_steps=3, **common))
    resumed = train(tiny_config(tmp_path / "b", **common))
    assert resumed.resumed_from is not None and resumed.steps == 5
    losses = [r["loss"] for r in unbroken.history if "loss" in r]
    assert [r["loss"] for r in resumed.history if "loss" in r] == pytest.approx(losses, rel=1e-6)
