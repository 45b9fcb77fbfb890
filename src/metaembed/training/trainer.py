"""The training loop: ``train(config) -> TrainResult``.

Design choices:

* a small plain PyTorch loop, not Hugging Face ``Trainer`` or accelerate:
  GradCache needs two forward passes and several backward passes per step
  steered by the loss (``Trainer.training_step`` would have to be replaced,
  not just ``compute_loss``), the positives are gathered across ranks inside
  the loss step, and exact resume needs full control of batch order and
  random state. The loop is ~400 lines, and every line is ours to test;
* the *global* batch is fixed by ``(seed, step)`` and each rank takes a
  contiguous shard, so 1 or N processes see the same batches (the
  data-parallel equivalence test compares them);
* data parallelism averages the trainable gradients in one all-reduce per
  step (what ``DistributedDataParallel`` does, minus bucketing, which
  matters little for LoRA-sized gradients and would fire on every GradCache
  backward); FSDP2 (``fully_shard`` per decoder layer, then the root) reduces
  gradients itself;
* dropout is re-seeded from ``(seed, step, rank)`` every step, so resuming
  needs no saved random state;
* only rank 0 writes files and logs progress; every rank runs evaluation on
  its shard of each held-out batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from metaembed.losses.mmr import MMRLoss
from metaembed.model.config import write_text_atomic
from metaembed.training.arguments import TRAINING_CONFIG_FILENAME, TrainingConfig, load_config
from metaembed.training.batching import BatchSchedule
from metaembed.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from metaembed.training.collator import ItemBatch, chunks, collate
from metaembed.training.distributed import (
    DistributedContext,
    all_reduce_gradients,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from metaembed.training.gradcache import contrastive_step
from metaembed.training.result import TrainResult
from metaembed.training.setup import (
    build_model,
    export_model,
    make_optimizer,
    prepare_data,
    shard_model,
)

__all__ = ["TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)


def train(config: TrainingConfig | str | os.PathLike[str]) -> TrainResult:
    """Train a MetaEmbed model as ``config`` says (one process or under ``torchrun``).

    ``config`` is a :class:`TrainingConfig` or the path of a YAML/TOML config file.
    """
    if not isinstance(config, TrainingConfig):
        config = load_config(config)
    context = init_distributed(config.strategy)
    return Trainer(config, context).run()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc="train", disable=not (enabled and sys.stderr.isatty())
    )


class _SigtermFlag:
    """Turn SIGTERM (preemption, ``kill``) into a flag checked after every step."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def __enter__(self) -> _SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_batch(config: TrainingConfig, context: DistributedContext) -> None:
    """Check the batch sizes against the ranks."""
    smallest = config.batch_size if config.batch_sampler == "random" else config.min_batch_size
    if smallest < context.world_size:
        raise ValueError(
            f"batches of {smallest} examples cannot be split over {context.world_size} ranks; "
            "raise batch_size (and min_batch_size with batch_sampler: subset)"
        )
    if context.strategy == "fsdp2" and config.batch_size % context.world_size:
        raise ValueError(
            f"under FSDP2 every rank must run the same forward passes: batch_size "
            f"{config.batch_size} must be a multiple of the world size {context.world_size}"
        )


class Trainer:
    """Holds the state of one run; :meth:`run` trains and returns a :class:`TrainResult`."""

    def __init__(self, config: TrainingConfig, context: DistributedContext | None = None) -> None:
        self.config = config
        self.context = context or DistributedContext()
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        data = prepare_data(config, self.context)
        self.train_examples, self.eval_examples = data.train, data.held_out
        _check_batch(config, self.context)
        self.schedule = BatchSchedule(
            self.train_examples,
            config.batch_size,
            sampler=config.batch_sampler,
            seed=config.seed,
            subset_fractions=config.subset_fractions,
            min_batch_size=config.min_batch_size,
        )
        self.steps_per_epoch = self.schedule.steps_per_epoch
        self.model = self._build_model(self.context, data.needs_images)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.sharded = self.context.strategy == "fsdp2"
        if self.sharded and self.model.adapter.supports_images and not config.placeholder_image:
            logger.warning(
                "FSDP2 with a vision-language backbone: set placeholder_image: true so that every "
                "rank runs the vision tower (a rank with only text items can hang the job)"
            )
        if self.sharded:
            shard_model(self.model, self.context)
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_fn = MMRLoss(
            groups=self.model.config.groups,
            temperature=config.temperature,
            weights=config.loss_weights(),
            score_normalization=config.score_normalization,
        )
        self.total_steps = config.max_steps or math.ceil(config.num_epochs * self.steps_per_epoch)
        self.optimizer, self.scheduler = make_optimizer(self.trainable, config, self.total_steps)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_eval_loss: float | None = None
        self.best_step: int | None = None
        self.patience = 0
        self.resumed_from: Path | None = None
        self._export_twin: Any = None
        if config.resume:
            self._resume()

    def _build_model(self, context: DistributedContext, needs_images: bool = False) -> Any:
        """Build the model; warm-start it when asked (deterministic: a resume or twin agrees)."""
        model = build_model(self.config, context, needs_images)
        if self.config.warm_start_projector:
            model.adapter.warm_start(self.train_examples)
        return model

    # ------------------------------------------------------------- batches
    def global_batch(self, step: int) -> ItemBatch:
        """Return the global batch of ``step`` (a pure function of seed and step)."""
        indices = self.schedule.indices(step)
        if self.sharded:  # FSDP2: equal shards, every rank runs the same forward passes
            indices = indices[: len(indices) - len(indices) % self.context.world_size]
        return collate([self.train_examples[i] for i in indices], self.config.num_hard_negatives)

    def _seed_step(self, step: int) -> None:
        torch.manual_seed((self.config.seed * 1_000_003 + step) * 101 + self.context.rank)

    # ---------------------------------------------------------------- step
    def _reduce_losses(self, output: Any, local: int, total: int) -> tuple[float, dict[str, float]]:
        groups = list(output.group_losses)
        values = torch.stack(
            [output.loss.float()] + [output.group_losses[g].float() for g in groups]
        )
        mean = all_reduce_sum(values * local).cpu() / total  # (1 + groups,), on the device for NCCL
        return float(mean[0]), {str(g): float(v) for g, v in zip(groups, mean[1:], strict=True)}

    def train_step(self) -> dict[str, Any]:
        """One optimizer step on the global batch of ``self.step``; returns its record."""
        context = self.context
        global_batch = self.global_batch(self.step)
        local = global_batch.shard(context.rank, context.world_size)
        self._seed_step(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        scale = context.world_size * len(local) / len(global_batch)
        output = contrastive_step(
            self.model, self.loss_fn, local, chunk_size=self.config.chunk_size, loss_scale=scale
        )
        if not self.sharded:
            all_reduce_gradients(self.trainable)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        loss, group_losses = self._reduce_losses(output, len(local), len(global_batch))
        return {"step": self.step, "loss": loss, "lr": learning_rate, "groups": group_losses}

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any] | None:
        """Per-group MMR loss on the held-out examples (in-batch negatives within eval batches)."""
        if len(self.eval_examples) < self.context.world_size:
            return None
        self.model.eval()
        size = self.config.eval_batch_size or self.config.batch_size
        world = self.context.world_size
        count = len(self.eval_examples)
        if self.sharded:  # equal shards: FSDP2 collectives must match across ranks
            size, count = max(world, size - size % world), count - count % world
        spans = chunks(count, size)
        if len(spans) > 1 and spans[-1][1] - spans[-1][0] < self.context.world_size:
            spans = spans[:-2] + [(spans[-2][0], spans[-1][1])]  # fold a too-small tail
        totals: dict[str, float] = {}
        for start, stop in spans:
            batch = collate(self.eval_examples[start:stop], self.config.num_hard_negatives)
            local = batch.shard(self.context.rank, self.context.world_size)
            output = contrastive_step(self.model, self.loss_fn, local, backward=False)
            loss, groups = self._reduce_losses(output, len(local), len(batch))
            for key, value in {"loss": loss, **groups}.items():
                totals[key] = totals.get(key, 0.0) + value * len(batch)
        eval_loss = totals.pop("loss") / count
        return {
            "step": self.step,
            "eval_loss": eval_loss,
            "eval_groups": {k: v / count for k, v in totals.items()},
        }

    # ---------------------------------------------------------- checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_eval_loss": self.best_eval_loss,
            "best_step": self.best_step,
            "patience": self.patience,
            "history": self.history,
        }

    def save(self) -> None:
        """Write ``checkpoint-STEP`` (all ranks call; rank 0 writes) and drop old ones."""
        directory = self.output_dir / f"checkpoint-{self.step:06d}"
        save_checkpoint(
            directory,
            self.model,
            self.optimizer,
            self.scheduler,
            self._trainer_state(),
            is_main=self.context.is_main,
            sharded=self.sharded,
        )
        if self.context.is_main:
            rotate_checkpoints(self.output_dir, self.config.save_total_limit)
        barrier()

    def _resume(self) -> None:
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            return
        state = load_checkpoint(
            checkpoint, self.model, self.optimizer, self.scheduler, sharded=self.sharded
        )
        self.step, self.history = int(state["step"]), list(state["history"])
        self.best_eval_loss, self.best_step = state["best_eval_loss"], state["best_step"]
        self.patience = int(state["patience"])
        self.resumed_from = checkpoint
        if self.context.is_main:
            logger.info("resumed from %s at step %d", checkpoint, self.step)

    def _export(self, directory: Path) -> Path:
        twin = None
        if self.sharded:

            def twin() -> Any:  # unsharded CPU copy on rank 0, built once (FSDP2 only)
                if self._export_twin is None:
                    cpu = DistributedContext(device=torch.device("cpu"))
                    self._export_twin = self._build_model(cpu)
                return self._export_twin

        exported = export_model(self.model, directory, self.context, twin)
        if self.context.is_main:  # provenance: what trained this model (the demo reads its split)
            self._write_config(exported)
        return exported

    def _write_config(self, directory: Path) -> None:
        text = json.dumps(self.config.to_dict(), indent=1, default=str)
        write_text_atomic(directory / TRAINING_CONFIG_FILENAME, text + "\n")

    def _after_evaluation(self, record: dict[str, Any]) -> bool:
        """Track the best held-out loss, export the best model; return True to stop early."""
        self.history.append(record)
        if self.context.is_main:
            groups = " ".join(f"{k}={v:.4f}" for k, v in record["eval_groups"].items())
            logger.info("step %d held-out loss %.4f (%s)", self.step, record["eval_loss"], groups)
        if self.best_eval_loss is None or record["eval_loss"] < self.best_eval_loss:
            self.best_eval_loss, self.best_step, self.patience = record["eval_loss"], self.step, 0
            self._export(self.output_dir / "best")
            return False
        self.patience += 1
        patience = self.config.early_stopping_patience
        return patience is not None and self.patience >= patience

    # ----------------------------------------------------------------- run
    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0

    def _log_window(self) -> None:
        window = [r for r in self.history[-self.config.logging_steps :] if "loss" in r]
        loss = sum(r["loss"] for r in window) / len(window)
        groups = " ".join(f"{k}={v:.4f}" for k, v in window[-1]["groups"].items())
        logger.info(
            "step %d/%d loss %.4f (last: %s) lr %.2e",
            self.step,
            self.total_steps,
            loss,
            groups,
            window[-1]["lr"],
        )

    def run(self) -> TrainResult:
        """Train until ``total_steps``, early stopping, ``stop_after_steps`` or SIGTERM.

        On SIGTERM the current step finishes, a checkpoint is saved and the
        run returns (``final_checkpoint`` None); rerunning resumes from it.
        """
        config, context = self.config, self.context
        started = time.monotonic()
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._write_config(self.output_dir)
        bar = _progress(self.total_steps, self.step, config.show_progress and context.is_main)
        stopped_early = False
        with _SigtermFlag() as sigterm:
            while self.step < self.total_steps and not stopped_early:
                stopped_early = self._one_step(bar)
                interrupted = (
                    config.stop_after_steps is not None and self.step >= config.stop_after_steps
                )
                if self._agreed(sigterm.received):
                    logger.warning("SIGTERM: saving checkpoint-%06d and stopping", self.step)
                    if not self._due(config.save_steps):
                        self.save()
                    interrupted = True
                if interrupted:
                    bar.close()
                    return self._result(started, final=None, stopped_early=False)
        bar.close()
        if not any(r.get("step") == self.step and "eval_loss" in r for r in self.history):
            evaluation = self.evaluate()
            if evaluation is not None:
                self._after_evaluation(evaluation)
        if not self._due(config.save_steps):
            self.save()
        final = self._export(self.output_dir / "final")
        result = self._result(started, final=final, stopped_early=stopped_early)
        if context.is_main:
            write_text_atomic(self.output_dir / "train_result.json", result.to_json() + "\n")
            logger.info("%s", result.summary())
        return result

    def _one_step(self, bar: Any) -> bool:
        """Train, log, evaluate and save as due; return True to stop early."""
        config, stop = self.config, False
        record = self.train_step()
        self.history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if self.context.is_main and self._due(config.logging_steps):
            self._log_window()
        if self._due(config.eval_steps):
            evaluation = self.evaluate()
            stop = evaluation is not None and self._after_evaluation(evaluation)
        if self._due(config.save_steps):
            self.save()
        return stop

    def _agreed(self, flag: bool) -> bool:
        """Whether any rank raised ``flag`` (all ranks must stop together)."""
        if not self.context.enabled:
            return flag
        values = torch.tensor([float(flag)], device=self.context.device)
        return bool(all_reduce_sum(values).item() > 0)

    def _result(self, started: float, final: Path | None, stopped_early: bool) -> TrainResult:
        best = self.output_dir / "best" if self.best_step is not None else None
        return TrainResult(
            output_dir=self.output_dir,
            best_checkpoint=best,
            final_checkpoint=final,
            history=list(self.history),
            steps=self.step,
            seconds=time.monotonic() - started,
            stopped_early=stopped_early,
            best_eval_loss=self.best_eval_loss,
            resumed_from=self.resumed_from,
            extra={"best_step": self.best_step, "world_size": self.context.world_size},
        )
