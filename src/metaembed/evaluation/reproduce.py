"""The paper's ablations (table 5, figure 4b) at small scale, on the synthetic benchmark.

Five variants of the same tiny vision-language model are trained identically
(same data, seed, steps, batch and learning rate; only the pooling and the
MMR groups differ) and evaluated on every budget they support:

===============  ===============  ==================  =======================
variant          vectors          trained groups      evaluated budgets
===============  ===============  ==================  =======================
MetaEmbed        meta tokens      all nested groups   every group
NoMMR            meta tokens      the largest only    every group
single-last      last token       (1, 1)              (1, 1)
single-mean      mean of tokens   (1, 1)              (1, 1)
split-RqxRc      segment means    the largest only    the largest
===============  ===============  ==================  =======================

Training goes through :func:`metaembed.training.train` when the trainer is
installed; :func:`train_minimal` (a plain loop over :class:`MMRLoss`, the
same loss) is used otherwise, and the report says which one ran.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaembed.budget import Budget
from metaembed.evaluation.synthetic_tasks import SyntheticConfig, write_synthetic_benchmark
from metaembed.items import Item

__all__ = [
    "AblationSettings",
    "VARIANTS",
    "variant_config",
    "eval_budgets",
    "train_minimal",
    "run_ablations",
]

logger = logging.getLogger(__name__)

VARIANTS = ("MetaEmbed", "NoMMR", "single-last", "single-mean", "split")
"""Variant names (``split`` is reported as ``split-RqxRc``)."""


@dataclass(frozen=True)
class AblationSettings:
    """Everything that is identical across variants.

    Parameters
    ----------
    family : str
        Tiny backbone family (must accept images).
    num_query_tokens, num_candidate_tokens : int
        R_q and R_c.
    groups : tuple of str
        MMR groups of MetaEmbed (the others derive from the largest).
    steps, batch_size, learning_rate, temperature : int, int, float, float
        Optimisation (one hard negative per query, in-batch negatives).
    lora_r : int
        LoRA rank; 0 trains every weight of the (random) tiny backbone.
    seed : int
        Seeds the model, the data order and the synthetic data.
    data : SyntheticConfig
        Size of the synthetic benchmark.
    model_overrides : dict
        Backbone config overrides (``hidden_size`` ...).
    """

    family: str = "qwen2_vl"
    num_query_tokens: int = 16
    num_candidate_tokens: int = 64
    groups: tuple[str, ...] = ("1x1", "2x4", "4x8", "8x16", "16x64")
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    temperature: float = 0.03
    lora_r: int = 0
    seed: int = 0
    data: SyntheticConfig = field(
        default_factory=lambda: SyntheticConfig(eval_rows=100, train_examples=1200)
    )
    model_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def largest(self) -> Budget:
        """The largest group, e.g. ``16x64``."""
        return Budget.parse(self.groups[-1])

    def label(self, variant: str) -> str:
        """Display name: ``split`` becomes ``split-16x64``."""
        return f"split-{self.largest}" if variant == "split" else variant


def variant_config(variant: str, settings: AblationSettings) -> dict[str, Any]:
    """``MetaEmbedConfig`` fields of a variant (pooling and groups)."""
    largest = str(settings.largest)
    fields: dict[str, dict[str, Any]] = {
        "MetaEmbed": {"pooling": "meta", "groups": list(settings.groups)},
        "NoMMR": {"pooling": "meta", "groups": [largest]},
        "single-last": {"pooling": "last", "groups": ["1x1"]},
        "single-mean": {"pooling": "mean", "groups": ["1x1"]},
        "split": {"pooling": "split", "groups": [largest]},
    }
    if variant not in fields:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    return {
        **fields[variant],
        "num_query_tokens": settings.num_query_tokens,
        "num_candidate_tokens": settings.num_candidate_tokens,
        "lora_r": settings.lora_r,
    }


def eval_budgets(variant: str, settings: AblationSettings) -> list[Budget]:
    """Budgets each variant is evaluated at (see the module table)."""
    if variant in ("MetaEmbed", "NoMMR"):
        return [Budget.parse(g) for g in settings.groups]
    if variant == "split":
        return [settings.largest]
    return [Budget(1, 1)]


def _train_item(text: str, image: str, root: Path) -> Item:
    from metaembed.evaluation.mmeb import split_placeholder

    clean, _ = split_placeholder(text)
    return Item(text=clean, image=root / image if image else None)


def train_minimal(
    model: Any, train_path: Path, settings: AblationSettings, log_every: int = 25
) -> list[float]:
    """Train ``model`` in place with :class:`~metaembed.losses.mmr.MMRLoss` over its groups.

    AdamW on the trainable parameters, ``settings.steps`` steps of
    ``settings.batch_size`` (query, positive, hard negative) triples drawn in a
    seeded order. Returns the loss of every step.
    """
    from metaembed.losses.mmr import MMRLoss

    root = train_path.parent
    rows = [
        json.loads(line)
        for line in train_path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    triples = [
        (
            _train_item(r["qry"], r["qry_image_path"], root),
            _train_item(r["pos_text"], r["pos_image_path"], root),
            _train_item(r["neg_text"], r["neg_image_path"], root),
        )
        for r in rows
    ]
    loss_fn = MMRLoss(groups=model.config.groups, temperature=settings.temperature)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20))
    rng = random.Random(settings.seed)
    order: list[int] = []
    losses = []
    model.train()
    for step in range(settings.steps):
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(triples)), len(triples))
        batch = [triples[i] for i in order[: settings.batch_size]]
        del order[: settings.batch_size]
        queries, positives, negatives = (list(part) for part in zip(*batch, strict=True))
        query_embeddings = model.embed(model.prepare(queries, "query"), "query")  # (B, Rq, D)
        candidate_embeddings = model.embed(
            model.prepare(positives + negatives, "candidate"), "candidate"
        )  # (2B, Rc, D)
        output = loss_fn(
            query_embeddings, candidate_embeddings[: len(batch)], candidate_embeddings[len(batch) :]
        )
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(output.loss.detach()))
        if step % log_every == 0 or step == settings.steps - 1:
            logger.info("step %d/%d loss %.4f", step + 1, settings.steps, losses[-1])
    model.eval()
    return losses


TrainFn = Callable[[Any, Path, AblationSettings], list[float]]


def _build_model(variant: str, settings: AblationSettings) -> Any:
    from metaembed.testing import tiny_model

    torch.manual_seed(settings.seed)
    model = tiny_model(
        settings.family,
        seed=settings.seed,
        **variant_config(variant, settings),
        **settings.model_overrides,
    )
    if settings.lora_r == 0:  # from scratch: every weight of the random backbone learns
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    return model


def run_ablations(
    work_dir: str | Path,
    settings: AblationSettings | None = None,
    variants: Sequence[str] = VARIANTS,
    train_fn: TrainFn | None = None,
) -> dict[str, Any]:
    """Write the synthetic data, train and evaluate every variant; return the raw results.

    Returns
    -------
    dict
        ``{"settings": ..., "trainer": ..., "variants": {label: {"sweep": SweepResult dict,
        "losses": [...], "seconds": ...}}}``, ready for
        :func:`metaembed.evaluation.ablation_report.write_ablation_report`.
    """
    from metaembed.evaluation.mmeb import load_mmeb
    from metaembed.evaluation.runner import run_mmeb

    settings = settings or AblationSettings()
    work_dir = Path(work_dir)
    paths = write_synthetic_benchmark(work_dir / "data", settings.data)
    tasks, revision = load_mmeb(paths["eval"])
    trainer_name = (
        "metaembed.evaluation.reproduce.train_minimal"
        if train_fn is None
        else getattr(train_fn, "__qualname__", str(train_fn))
    )
    train_fn = train_fn or train_minimal
    results: dict[str, Any] = {}
    for variant in variants:
        started = time.perf_counter()
        logger.info("training %s", settings.label(variant))
        model = _build_model(variant, settings)
        losses = train_fn(model, paths["train"], settings)
        trained = time.perf_counter()
        with torch.no_grad():
            sweep = run_mmeb(
                model,
                tasks,
                eval_budgets(variant, settings),
                revision=revision,
                show_progress=False,
                benchmark="synthetic",
                batch_size=64,
            )
        results[settings.label(variant)] = {
            "variant": variant,
            "sweep": sweep.to_dict(),
            "losses": losses,
            "train_seconds": round(trained - started, 1),
            "eval_seconds": round(time.perf_counter() - trained, 1),
        }
        logger.info(
            "%s: %s",
            settings.label(variant),
            {b: round(sweep.summary(b)["overall"], 4) for b in sweep.budgets},
        )
    return {"settings": _settings_dict(settings), "trainer": trainer_name, "variants": results}


def _settings_dict(settings: AblationSettings) -> dict[str, Any]:
    data = asdict(settings)
    data["data"] = asdict(settings.data)
    return data
