"""Data parallelism equals one process on the concatenated batch (gloo on CPU, 2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from metaembed.losses.mmr import MMRLoss
from metaembed.training.checkpoint import STATE_FILE
from metaembed.training.collator import shard_bounds
from metaembed.training.distributed import gather_with_grad
from metaembed.training.trainer import train
from tests.training.training_support import tiny_config

REPO = Path(__file__).resolve().parents[2]
SIZES = (3, 2)  # uneven shards: 5 queries in all


def _tensors():
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(5, 2, 8, generator=generator), dim=-1)
    positives = torch.nn.functional.normalize(torch.randn(5, 4, 8, generator=generator), dim=-1)
    negatives = torch.nn.functional.normalize(torch.randn(5, 4, 8, generator=generator), dim=-1)
    return queries, positives, negatives


def _rank_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    start, stop = shard_bounds(sum(SIZES), rank, world_size)
    queries, positives, negatives = (t[start:stop].clone().requires_grad_(True) for t in _tensors())
    gathered, offset = gather_with_grad(positives)
    output = MMRLoss(groups=["1x1", "2x4"])(queries, gathered, negatives, offset)
    (output.loss * world_size * (stop - start) / sum(SIZES)).backward()
    torch.save(
        {
            "offset": offset,
            "loss": output.loss.detach(),
            "grads": [queries.grad, positives.grad, negatives.grad],
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def test_gathered_loss_gradients_equal_the_full_batch(tmp_path):
    torch.multiprocessing.spawn(
        _rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2
    )
    queries, positives, negatives = (t.clone().requires_grad_(True) for t in _tensors())
    full = MMRLoss(groups=["1x1", "2x4"])(queries, positives, negatives)
    full.loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["offset"] for r in ranks] == [0, 3]
    mean_loss = sum(r["loss"] * size for r, size in zip(ranks, SIZES, strict=True)) / sum(SIZES)
    torch.testing.assert_close(mean_loss, full.loss.detach())
    for index, tensor in enumerate((queries, positives, negatives)):
        # each rank holds its rows of the full-batch gradient times the world size (averaged later)
        stitched = torch.cat([r["grads"][index] for r in ranks]) / 2
        torch.testing.assert_close(stitched, tensor.grad, rtol=1e-5, atol=1e-7)


def _torchrun(config, tmp_path, name):
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "metaembed_cli.main",
        "train",
        str(config_file),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _assert_same_weights(checkpoint_a, checkpoint_b):
    first = torch.load(checkpoint_a / STATE_FILE, weights_only=False)["model"]
    second = torch.load(checkpoint_b / STATE_FILE, weights_only=False)["model"]
    assert first.keys() == second.keys() and first
    for name in first:
        # AdamW moves every weight by about lr (1e-3) whatever its gradient's size, so float
        # noise on a near-zero gradient (summation order differs between one process and two,
        # and between CPUs) moves that weight visibly: one element of 128 was 1.25e-5 off on an
        # Intel Xeon. So: almost every element within 1e-6, none beyond 5% of lr.
        difference = (first[name].float() - second[name].float()).abs()
        assert difference.max() <= 5e-5, (name, float(difference.max()))
        assert (difference > 1e-6).float().mean() <= 0.02, (name, difference)


def _losses(checkpoint):
    history = json.loads((checkpoint / "trainer_state.json").read_text())["history"]
    return [r["loss"] for r in history if "loss" in r]


@pytest.mark.slow
def test_two_process_ddp_training_equals_one_process(tmp_path):
    common = dict(max_steps=2, batch_size=7, eval_steps=2, save_steps=2, lora_dropout=0.0)
    config = tiny_config(
        tmp_path / "ddp", chunk_size=2, **common
    )  # shards of 4 and 3, GradCache on
    completed = _torchrun(config, tmp_path, "ddp")
    assert "trained 2 steps" in completed.stdout
    single = train(tiny_config(tmp_path / "one", chunk_size=0, **common))
    _assert_same_weights(tmp_path / "ddp/checkpoint-000002", tmp_path / "one/checkpoint-000002")
    single_losses = [r["loss"] for r in single.history if "loss" in r]
    assert _losses(tmp_path / "ddp/checkpoint-000002") == pytest.approx(single_losses, rel=1e-5)


_FSDP_SCRIPT = """
import sys
import yaml
from metaembed.training.arguments import TrainingConfig
from metaembed.training.trainer import train

values = yaml.safe_load(open(sys.argv[1]))
train(TrainingConfig.from_mapping(values, ["--stop_after_steps", "3"]))  # 'killed' after step 3
result = train(TrainingConfig.from_mapping(values))  # resumes from checkpoint-000002
assert result.resumed_from is not None and result.resumed_from.name == "checkpoint-000002", result
print(result.summary())
"""


@pytest.mark.slow
def test_fsdp2_training_with_resume_equals_one_process(tmp_path):
    """FSDP2 (fully_shard, gloo, CPU) with GradCache, interrupted after step 3, resumed to 4."""
    common = dict(batch_size=8, eval_steps=2, save_steps=2, lora_dropout=0.0, max_steps=4)
    config = tiny_config(tmp_path / "fsdp", chunk_size=2, strategy="fsdp2", **common)
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(config.to_dict()))
    (tmp_path / "resume.py").write_text(_FSDP_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(tmp_path / "resume.py"),
        str(tmp_path / "fsdp.yaml"),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "trained 4 steps" in completed.stdout
    single = train(tiny_config(tmp_path / "one", chunk_size=0, **common))
    _assert_same_weights(tmp_path / "fsdp/checkpoint-000004", tmp_path / "one/checkpoint-000004")
    single_losses = [r["loss"] for r in single.history if "loss" in r]
    assert _losses(tmp_path / "fsdp/checkpoint-000004") == pytest.approx(single_losses, rel=1e-5)

    from metaembed.model.modeling import MetaEmbedModel

    exported = MetaEmbedModel.from_pretrained(tmp_path / "fsdp/final", device="cpu")
    reference = MetaEmbedModel.from_pretrained(tmp_path / "one/final", device="cpu")
    texts = ["a red ball", "a wooden boat"]
    torch.testing.assert_close(
        exported.encode_queries(texts, show_progress=False),
        reference.encode_queries(texts, show_progress=False),
        rtol=1e-4,
        atol=1e-5,
    )
