"""TrainingConfig: every knob of a training run, with the paper's defaults.

A run is described by one frozen dataclass, loaded from a YAML or TOML file
plus ``--key value`` overrides (what ``metaembed train CONFIG --key value``
passes). Defaults follow the paper (section 4.1, appendix A): learning rate
1e-4, temperature 0.03, the five nested groups, LoRA r = alpha = 32, one hard
negative, 1% of every subset held out, early stopping on the held-out loss.

Baselines of appendix B are one field, ``baseline``, mapped onto the model's
pooling and the loss groups by :meth:`TrainingConfig.model_fields`:

==============  =========  ===================================
baseline        pooling    loss groups
==============  =========  ===================================
(none)          meta       ``groups`` (MMR, paper: five)
``nommr``       meta       only the largest group
``single-last`` last       1x1
``single-mean`` mean       1x1
``split-16x64`` split      16x64 (R_q=16, R_c=64 segments)
==============  =========  ===================================

>>> config = TrainingConfig.from_mapping({"baseline": "nommr"}, ["--learning_rate", "2e-4"])
>>> config.learning_rate, [str(g) for g in config.model_fields()["groups"]]
(0.0002, ['16x64'])
>>> TrainingConfig(baseline="split-4x8").model_fields()["pooling"]
'split'
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaembed.budget import PAPER_GROUPS, Budget, validate_groups
from metaembed.training.batching import SAMPLERS

__all__ = [
    "TrainingConfig",
    "BASELINES",
    "TRAINING_CONFIG_FILENAME",
    "load_config",
    "parse_overrides",
]

BASELINES = ("nommr", "single-last", "single-mean", "split-16x64")
"""Appendix B baselines; ``split-RqxRc`` accepts any sizes (``split-4x8``)."""
TRAINING_CONFIG_FILENAME = "training_config.json"
"""The run's config, written into the output folder and into every exported model."""
STRATEGIES = ("auto", "single", "ddp", "fsdp2")
SCHEDULERS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TrainingConfig:
    """Configuration of one training run (see ``docs/training.md`` for each key).

    Model: ``base_model`` (Hub id / folder) or ``tiny_family`` (a tiny random
    model, for tests and smoke runs); ``init_from`` continues a saved MetaEmbed
    model. Data: ``train_data`` is a list of sources, each a path or a mapping
    ``{path, format, subset, images_root, split, config}``, or a generated
    source ``{source: NAME, ...}`` (:data:`metaembed.training.data.SOURCES`).
    Batches: ``batch_size`` is the *global* batch (split across ranks);
    ``chunk_size`` > 0 turns GradCache on (items embedded per forward pass);
    ``batch_sampler: subset`` draws each batch from one subset with distinct
    positives (:mod:`metaembed.training.batching`). ``warm_start_projector``
    fits the backbone's projector in closed form before training (families
    with a trainable projector, e.g. ``composite``).
    """

    # model
    base_model: str | None = None
    family: str | None = None
    tiny_family: str | None = None
    init_from: str | None = None
    num_query_tokens: int = 16
    num_candidate_tokens: int = 64
    groups: tuple[Budget, ...] = PAPER_GROUPS
    group_weights: tuple[float, ...] | None = None
    baseline: str | None = None
    layout: str = "role"
    projection_dim: int | None = None
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_vision: bool = True
    max_length: int | None = None
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    # data
    train_data: tuple[Any, ...] = ()
    num_hard_negatives: int = 1
    on_invalid: str = "error"
    check_images: bool = True
    placeholder_image: bool = False
    placeholder_image_size: int = 56
    eval_fraction: float = 0.01
    max_eval_examples: int | None = None
    # optimisation
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    temperature: float = 0.03
    score_normalization: str = "mean"
    batch_size: int = 32
    eval_batch_size: int | None = None
    chunk_size: int = 0
    batch_sampler: str = "random"
    subset_fractions: dict[str, float] | None = None
    min_batch_size: int = 2
    warm_start_projector: bool = False
    max_steps: int | None = None
    num_epochs: float = 1.0
    seed: int = 42
    # operations
    output_dir: str = "runs/metaembed"
    logging_steps: int = 10
    eval_steps: int | None = 100
    save_steps: int | None = 100
    save_total_limit: int | None = 2
    early_stopping_patience: int | None = 3
    resume: bool = True
    strategy: str = "auto"
    stop_after_steps: int | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "groups", validate_groups([Budget.parse(g) for g in self.groups]))
        if self.group_weights is not None:
            set_(self, "group_weights", tuple(float(w) for w in self.group_weights))
        data = self.train_data
        set_(self, "train_data", (data,) if isinstance(data, (str, dict)) else tuple(data))
        self._check()

    def _check(self) -> None:
        if self.base_model is None and self.tiny_family is None and self.init_from is None:
            if self.train_data:
                raise ValueError(
                    "no model: set base_model (Hub id or folder), init_from (a saved MetaEmbed "
                    "model) or tiny_family (a tiny random model, e.g. 'llama')"
                )
        if self.baseline is not None and self.baseline not in BASELINES:
            if not self.baseline.startswith("split-"):
                raise ValueError(
                    f"baseline must be one of {BASELINES} or None, got {self.baseline!r}"
                )
            Budget.parse(self.baseline[len("split-") :])
        choices = {
            "batch_sampler": SAMPLERS,
            "strategy": STRATEGIES,
            "lr_scheduler": SCHEDULERS,
            "on_invalid": ("error", "skip"),
            "dtype": ("float32", "bfloat16", "float16"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size < 1 or self.chunk_size < 0:
            raise ValueError("batch_size must be >= 1 and chunk_size >= 0 (0 turns GradCache off)")
        if self.min_batch_size < 1 or self.min_batch_size > self.batch_size:
            raise ValueError(
                f"min_batch_size must be in [1, batch_size={self.batch_size}], "
                f"got {self.min_batch_size}"
            )
        for subset, fraction in (self.subset_fractions or {}).items():
            if not 0.0 < float(fraction) <= 1.0:
                raise ValueError(f"subset_fractions[{subset!r}] must be in (0, 1], got {fraction}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.num_hard_negatives < 0:
            raise ValueError("num_hard_negatives must be >= 0")
        if self.max_steps is None and not self.num_epochs > 0:
            raise ValueError("set max_steps or a positive num_epochs")

    # ----------------------------------------------------------------- model
    def model_fields(self) -> dict[str, Any]:
        """``MetaEmbedConfig`` fields of this run, with the baseline applied."""
        pooling, groups = "meta", self.groups
        num_query, num_candidate = self.num_query_tokens, self.num_candidate_tokens
        if self.baseline == "nommr":
            groups = (groups[-1],)
        elif self.baseline in ("single-last", "single-mean"):
            pooling, groups = self.baseline.split("-")[1], (Budget(1, 1),)
        elif self.baseline is not None:  # split-RqxRc
            size = Budget.parse(self.baseline[len("split-") :])
            pooling, groups = "split", (size,)
            num_query, num_candidate = size.r_q, size.r_c
        return {
            "num_query_tokens": num_query,
            "num_candidate_tokens": num_candidate,
            "groups": groups,
            "layout": self.layout,
            "projection_dim": self.projection_dim,
            "pooling": pooling,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "lora_vision": self.lora_vision,
            "max_length": self.max_length,
        }

    def loss_weights(self) -> tuple[float, ...] | None:
        """Return the loss group weights (``None``: 1 each, also when a baseline sets groups)."""
        if self.group_weights is None or self.baseline is not None:
            return None
        return self.group_weights

    # ------------------------------------------------------------ file I/O
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (budgets as strings)."""
        data = dataclasses.asdict(self)
        data["groups"] = [str(g) for g in self.groups]
        data["train_data"] = list(self.train_data)
        return data

    def replace(self, **changes: Any) -> TrainingConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, values: dict[str, Any], overrides: list[str] | None = None
    ) -> TrainingConfig:
        """Build from a dict (a parsed file) plus ``["--key", "value", ...]`` overrides."""
        values = dict(values)
        values.update(parse_overrides(overrides or []))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training config keys {unknown}; known keys: {sorted(known)} "
                "(see docs/training.md)"
            )
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn override strings into the field's type (``"1e-4"`` -> float, ``"none"`` -> None)."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) and name != "train_data" else value
    hint = _field_types(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional and value.strip().lower() in ("none", "null", ""):
        return None
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    try:
        if base is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if base is int:
            return int(value)
        if base is float:
            return float(value)
    except ValueError:
        raise ValueError(f"config key {name!r} expects {base.__name__}, got {value!r}") from None
    if name == "groups":
        from metaembed.budget import parse_budgets

        return parse_budgets(value)
    json_keys = ("train_data", "group_weights", "extra", "subset_fractions")
    if name in json_keys and value.lstrip()[:1] in "[{":
        return json.loads(value)
    if name == "group_weights":
        return tuple(float(v) for v in value.split(","))
    return value


def parse_overrides(arguments: list[str]) -> dict[str, str]:
    """``["--lr", "1", "--x=2"]`` -> ``{"lr": "1", "x": "2"}`` (dashes in keys become underscores).

    >>> parse_overrides(["--max_steps", "5", "--output-dir=runs/a"])
    {'max_steps': '5', 'output_dir': 'runs/a'}
    """
    parsed: dict[str, str] = {}
    position = 0
    while position < len(arguments):
        token = arguments[position]
        if not token.startswith("--") or len(token) < 3:
            raise ValueError(f"expected --key value, got {token!r} (e.g. --max_steps 100)")
        key, equals, value = token[2:].partition("=")
        if not equals:
            if position + 1 >= len(arguments):
                raise ValueError(f"override {token} has no value; write {token} VALUE")
            value = arguments[position + 1]
            position += 1
        parsed[key.replace("-", "_")] = value
        position += 1
    return parsed


def load_config(
    path: str | os.PathLike[str] | None, overrides: list[str] | None = None
) -> TrainingConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file and apply overrides.

    Relative data paths in the file are resolved against the file's folder when
    they exist there, so configs can travel with their data.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} not found")
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            values = _toml_module().loads(text)
        else:
            raise ValueError(f"config {path} must end in .yaml, .yml or .toml")
        if not isinstance(values, dict):
            raise ValueError(f"config {path} must hold a mapping of key: value")
        values = _resolve_data_paths(values, path.parent)
    return TrainingConfig.from_mapping(values, overrides)


def _toml_module() -> Any:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError(
                "TOML configs need Python >= 3.11 or `pip install tomli`; or use a YAML config"
            ) from None
    return tomllib


def _resolve_data_paths(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    sources = values.get("train_data")
    if sources is None:
        return values
    sources = [sources] if isinstance(sources, (str, dict)) else list(sources)
    resolved = []
    for source in sources:
        spec = {"path": source} if isinstance(source, str) else dict(source)
        for key in ("path", "images_root"):
            path = str(spec.get(key) or "")
            if path and not path.startswith("hf:") and not Path(path).is_absolute():
                if not Path(path).exists() and (folder / path).exists():
                    spec[key] = str(folder / path)
        resolved.append(spec["path"] if isinstance(source, str) else spec)
    return {**values, "train_data": resolved}
