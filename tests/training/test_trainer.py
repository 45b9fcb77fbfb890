"""The loop on a tiny Llama: the loss goes down, a killed run resumes exactly, outputs load back."""

from __future__ import annotations

import json

import pytest
import torch

from metaembed.training.checkpoint import STATE_FILE, latest_checkpoint
from metaembed.training.trainer import train
from tests.training.training_support import tiny_config


def _weights(directory):
    return torch.load(directory / STATE_FILE, weights_only=False)["model"]


def test_a_few_steps_lower_the_loss(tmp_path):
    config = tiny_config(tmp_path / "run", max_steps=12, batch_size=16, eval_steps=6, chunk_size=8)
    result = train(config)
    losses = [r["loss"] for r in result.history if "loss" in r]
    evaluations = [r["eval_loss"] for r in result.history if "eval_loss" in r]
    assert len(losses) == 12 and len(evaluations) == 2
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    assert evaluations[-1] < evaluations[0]
    record = next(r for r in result.history if "eval_groups" in r)
    assert set(record["eval_groups"]) == {"1x1", "2x4"}
    assert result.steps == 12 and result.best_checkpoint == tmp_path / "run" / "best"
    assert "trained 12 steps" in result.summary() and "best checkpoint" in result.summary()

    from metaembed.model.modeling import MetaEmbedModel

    trained = MetaEmbedModel.from_pretrained(result.final_checkpoint, device="cpu")
    embeddings = trained.encode_queries(["a red ball"], show_progress=False)
    assert tuple(embeddings.shape) == (1, 2, 32)
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert saved["max_steps"] == 12
    summary = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert summary["steps"] == 12 and summary["best_checkpoint"] == str(result.best_checkpoint)


def test_killed_run_resumes_to_the_same_state(tmp_path):
    common = dict(max_steps=6, save_steps=2, eval_steps=3, chunk_size=3, lora_dropout=0.1)
    unbroken = train(tiny_config(tmp_path / "a", **common))
    killed = train(tiny_config(tmp_path / "b", stop_after_steps=5, **common))  # dies after step 5
    assert (
        killed.final_checkpoint is None
        and latest_checkpoint(tmp_path / "b").name == "checkpoint-000004"
    )
    resumed = train(tiny_config(tmp_path / "b", **common))
    assert resumed.resumed_from.name == "checkpoint-000004" and resumed.steps == 6
    final_a, final_b = (
        _weights(tmp_path / "a/checkpoint-000006"),
        _weights(tmp_path / "b/checkpoint-000006"),
    )
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        torch.testing.assert_close(final_b[name], final_a[name], rtol=0, atol=1e-7, msg=name)
    assert [r.get("loss") for r in resumed.history] == pytest.approx(
        [r.get("loss") for r in unbroken.history]
    )
    assert resumed.best_eval_loss == pytest.approx(unbroken.best_eval_loss)


def test_early_stopping_and_baseline_flag(tmp_path):
    config = tiny_config(
        tmp_path / "run",
        baseline="single-last",
        max_steps=8,
        eval_steps=1,
        learning_rate=0.5,
        early_stopping_patience=1,
        save_total_limit=1,
        save_steps=1,
    )
    result = train(config)
    assert result.stopped_early and result.steps < 8
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == [
        f"checkpoint-{result.steps:06d}"
    ]
    from metaembed.model.config import MetaEmbedConfig

    saved = MetaEmbedConfig.load(result.best_checkpoint)
    assert saved.pooling == "last" and [str(g) for g in saved.groups] == ["1x1"]


def test_batch_larger_than_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size 1000 is larger than"):
        train(tiny_config(tmp_path / "run", batch_size=1000))


def test_gradient_checkpointing_trains_the_same_weights(tmp_path):
    common = dict(max_steps=2, chunk_size=3, save_steps=2)
    train(tiny_config(tmp_path / "plain", **common))
    train(tiny_config(tmp_path / "checkpointed", gradient_checkpointing=True, **common))
    plain = _weights(tmp_path / "plain/checkpoint-000002")
    checkpointed = _weights(tmp_path / "checkpointed/checkpoint-000002")
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path, monkeypatch):
    import os
    import signal

    from metaembed.training.trainer import Trainer

    common = dict(max_steps=5, save_steps=4, chunk_size=3)
    train(tiny_config(tmp_path / "a", **common))
    original = Trainer.train_step

    def step_then_sigterm(self):
        record = original(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. a preempted job
        return record

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    stopped = train(tiny_config(tmp_path / "b", **common))
    assert stopped.steps == 3 and stopped.final_checkpoint is None
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(tiny_config(tmp_path / "b", **common))
    assert resumed.resumed_from.name == "checkpoint-000003" and resumed.steps == 5
    final_a = _weights(tmp_path / "a/checkpoint-000005")
    final_b = _weights(tmp_path / "b/checkpoint-000005")
    for name in final_a:
        torch.testing.assert_close(final_b[name], final_a[name], rtol=0, atol=1e-7, msg=name)
