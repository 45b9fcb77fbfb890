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

Training goes through the project's trainer, :func:`metaembed.training.train`
(MMR loss over the model's groups, in-batch negatives plus one hard negative).
Each model starts from the same seeded tiny random backbone with LoRA r=32,
alpha=32 (on a hidden size of 32 that is full rank, so the random backbone is
effectively trained) and whole-word tokens for the synthetic vocabulary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaembed.budget import Budget
from metaembed.evaluation.synthetic_tasks import SyntheticConfig, write_synthetic_benchmark

__all__ = [
    "AblationSettings",
    "VARIANTS",
    "variant_config",
    "eval_budgets",
    "train_with_trainer",
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
        LoRA rank (alpha = r, as in the paper).
    warmup_steps : int
        Linear warm-up of the learning rate.
    word_tokens : bool
        Add the synthetic vocabulary as whole-word tokens (see :func:`add_word_tokens`).
    seed : int
        Seeds the model, the data order and the synthetic data.
    data : SyntheticConfig
        Size of the synthetic benchmark.
    model_overrides : dict
        Backbone config overrides (``hidden_size`` ...).
    """

    family: str = "qwen2_vl"
    num_query_tokens: int = 8
    num_candidate_tokens: int = 16
    groups: tuple[str, ...] = ("1x1", "2x4", "4x8", "8x16")
    steps: int = 150
    batch_size: int = 16
    learning_rate: float = 2e-3
    temperature: float = 0.03
    lora_r: int = 32
    warmup_steps: int = 20
    word_tokens: bool = True
    seed: int = 0
    data: SyntheticConfig = field(
        default_factory=lambda: SyntheticConfig(
            eval_rows=60, train_examples=400, image_size=84, prompt_style="short"
        )
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
        "lora_alpha": settings.lora_r,
    }


def eval_budgets(variant: str, settings: AblationSettings) -> list[Budget]:
    """Budgets each variant is evaluated at (see the module table)."""
    if variant in ("MetaEmbed", "NoMMR"):
        return [Budget.parse(g) for g in settings.groups]
    if variant == "split":
        return [settings.largest]
    return [Budget(1, 1)]


def train_with_trainer(
    model: Any, train_path: Path, settings: AblationSettings, run_dir: Path
) -> tuple[Any, list[float]]:
    """Train ``model`` with :func:`metaembed.training.train`; return the trained model and losses.

    The model is saved to ``run_dir/init`` and trained from there (``init_from``),
    so the variant's pooling and groups come from its own config. No held-out
    evaluation or early stopping: every variant runs exactly ``settings.steps``.
    """
    from metaembed.model.modeling import MetaEmbedModel
    from metaembed.training import TrainingConfig, train

    init = run_dir / "init"
    model.save_pretrained(init)
    config = TrainingConfig(
        init_from=str(init),
        train_data=(str(train_path),),
        batch_size=settings.batch_size,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        temperature=settings.temperature,
        seed=settings.seed,
        output_dir=str(run_dir / "train"),
        eval_fraction=0.0,
        eval_steps=None,
        save_steps=None,
        early_stopping_patience=None,
        resume=False,
        show_progress=False,
        logging_steps=25,
    )
    result = train(config)
    if result.final_checkpoint is None:
        raise RuntimeError(f"training in {run_dir} ended without a final model: {result}")
    trained = MetaEmbedModel.from_pretrained(result.final_checkpoint)
    if len(trained.adapter.tokenizer) != len(model.adapter.tokenizer):
        raise RuntimeError("the saved model lost its word tokens; the tokenizer did not round-trip")
    losses = [float(record["loss"]) for record in result.history if "loss" in record]
    return trained.eval(), losses


TrainFn = Callable[[Any, Path, AblationSettings, Path], tuple[Any, list[float]]]


def _build_model(variant: str, settings: AblationSettings) -> Any:
    from metaembed.testing import tiny_model

    torch.manual_seed(settings.seed)
    model = tiny_model(
        settings.family,
        seed=settings.seed,
        **variant_config(variant, settings),
        **settings.model_overrides,
    )
    if settings.word_tokens:
        add_word_tokens(model, synthetic_vocabulary())
    return model


def synthetic_vocabulary() -> list[str]:
    """Every word the synthetic benchmark writes (attributes and instruction words)."""
    from metaembed.evaluation import synthetic as syn

    words = {*syn.SHAPES, *syn.COLOURS, *syn.SIZES}
    words |= {word for position in syn.POSITIONS for word in position.split()}
    words |= {"what", "colour", "shape", "where", "object", "or", "classify", "question", "caption"}
    return sorted(words)


_LEADING_WORDS = ("classify", "question", "caption", "object")
"""Words that open a short prompt (no space before them), added without the space too."""


def add_word_tokens(model: Any, words: Sequence[str]) -> int:
    """Give each word its own token (with its leading space) and grow the embedding matrix.

    The tiny test tokenizer has 512 byte-level pieces, so ``"purple"`` is four
    tokens a 2-layer model must learn to compose; a real VLM's vocabulary has
    such words as single tokens. New rows are drawn from a normal with the
    embedding matrix's mean and standard deviation (seeded by the model's weights).
    Returns the number of tokens added.
    """
    tokenizer = model.adapter.tokenizer
    added = tokenizer.add_tokens([" " + word for word in words] + list(_LEADING_WORDS))
    if added:
        weight = model.adapter.model.get_input_embeddings().weight.detach()  # (vocab, hidden)
        mean, std = weight.mean(dim=0), weight.std(dim=0)  # (hidden,)
        generator = torch.Generator().manual_seed(int(weight.shape[0]))
        noise = torch.randn(added, weight.shape[1], generator=generator)  # (added, hidden)
        rows = mean + std * noise  # (added, hidden)
        model.adapter.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            model.adapter.model.get_input_embeddings().weight[-added:] = rows
    return added


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
    train_fn = train_fn or train_with_trainer
    trainer_name = f"{train_fn.__module__}.{train_fn.__qualname__}"
    results: dict[str, Any] = {}
    for variant in variants:
        started = time.perf_counter()
        logger.info("training %s", settings.label(variant))
        model = _build_model(variant, settings)
        run_dir = work_dir / settings.label(variant)
        model, losses = train_fn(model, paths["train"], settings, run_dir)
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
