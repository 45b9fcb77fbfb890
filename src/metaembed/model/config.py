"""MetaEmbedConfig: all that is needed to rebuild a MetaEmbed model, saved as JSON with its weights.

>>> config = MetaEmbedConfig(base_model="Qwen/Qwen2-VL-2B-Instruct", family="qwen2_vl")
>>> MetaEmbedConfig.from_json(config.to_json()) == config
True
>>> config.num_meta_tokens("query"), config.num_meta_tokens("candidate")
(16, 64)
>>> MetaEmbedConfig(family="llama", pooling="last").num_vectors("candidate")
1
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaembed.budget import PAPER_GROUPS, Budget, validate_groups

__all__ = ["CONFIG_FILENAME", "MetaEmbedConfig", "LAYOUTS", "POOLINGS", "META_INITS"]

CONFIG_FILENAME = "metaembed_config.json"
"""File name of the config inside a saved model folder."""

LAYOUTS = ("role", "paper")
"""``role``: a query gets only the R_q query tokens, a candidate only the R_c candidate
tokens. ``paper``: both sets are appended to every input (as in the reference code);
queries read the first R_q, candidates the last R_c."""

POOLINGS = ("meta", "last", "mean", "split")
"""``meta``: meta-token hidden states (MetaEmbed). Baselines of appendix B: ``last`` (last
token, 1 vector), ``mean`` (mean over tokens, 1 vector), ``split`` (tokens cut into
R_q or R_c even segments, one mean per segment)."""

META_INITS = ("embedding_stats", "token_embeddings")
"""``embedding_stats``: rows drawn from a normal with the per-dimension mean and std of
the input embedding matrix. ``token_embeddings``: copies of randomly chosen rows of it."""

FORMAT_VERSION = 1


@dataclass(frozen=True)
class MetaEmbedConfig:
    """Configuration of a MetaEmbed model.

    Parameters
    ----------
    base_model : str, optional
        Hub id or local folder of the Hugging Face backbone; a relative path is
        resolved against the saved model folder. ``None`` for a backbone built in
        memory (it is then saved inside the model folder).
    family : str
        Backbone family (see :func:`metaembed.backbones.registry.available_families`).
    num_query_tokens, num_candidate_tokens : int
        R_q and R_c (paper: 16 and 64).
    groups : tuple of Budget
        Nested training groups of the MMR loss (paper: 1x1, 2x4, 4x8, 8x16, 16x64).
    layout : {"role", "paper"}
        Which meta tokens each input receives (see ``LAYOUTS``).
    projection_dim : int, optional
        Width of a linear projection after the backbone; ``None`` keeps the hidden size.
    pooling : {"meta", "last", "mean", "split"}
        How vectors are read from the last layer (see ``POOLINGS``).
    meta_init : {"embedding_stats", "token_embeddings"}
        Initialisation of the meta-token rows (see ``META_INITS``).
    lora_r, lora_alpha, lora_dropout : int, int, float
        LoRA rank, scaling and dropout (paper: r = alpha = 32); ``lora_r=0`` disables LoRA.
    lora_vision : bool
        Whether LoRA also adapts the vision tower (where the family has one).
    max_length : int, optional
        Truncate prompts to this many tokens (meta tokens not counted).
    """

    base_model: str | None = None
    family: str = "qwen2_vl"
    num_query_tokens: int = 16
    num_candidate_tokens: int = 64
    groups: tuple[Budget, ...] = PAPER_GROUPS
    layout: str = "role"
    projection_dim: int | None = None
    pooling: str = "meta"
    meta_init: str = "embedding_stats"
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_vision: bool = True
    max_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", validate_groups(self.groups))
        self._check_choice("layout", LAYOUTS)
        self._check_choice("pooling", POOLINGS)
        self._check_choice("meta_init", META_INITS)
        for name in ("num_query_tokens", "num_candidate_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be None or >= 1, got {self.projection_dim}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0 (0 disables LoRA), got {self.lora_r}")
        if self.pooling in ("meta", "split"):
            largest = self.groups[-1]
            largest.check_fits(self.num_query_tokens, self.num_candidate_tokens)

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")

    def num_vectors(self, role: str) -> int:
        """Vectors per item for ``role`` (R_q / R_c; 1 for ``last`` and ``mean`` pooling)."""
        if self.pooling in ("last", "mean"):
            return 1
        return self.num_query_tokens if role == "query" else self.num_candidate_tokens

    def num_meta_tokens(self, role: str) -> int:
        """Meta tokens appended to an input of ``role`` (0 when pooling is not ``meta``)."""
        if self.pooling != "meta":
            return 0
        if self.layout == "paper":
            return self.num_query_tokens + self.num_candidate_tokens
        return self.num_query_tokens if role == "query" else self.num_candidate_tokens

    @property
    def max_budget(self) -> Budget:
        """The full budget ``(R_q, R_c)`` (``1x1`` for single-vector pooling)."""
        return Budget(self.num_vectors("query"), self.num_vectors("candidate"))

    def replace(self, **changes: Any) -> MetaEmbedConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (budgets as ``"RqxRc"`` strings)."""
        data = dataclasses.asdict(self)
        data["groups"] = [str(group) for group in self.groups]
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaEmbedConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"config format_version {version} is newer than this metaembed "
                f"({FORMAT_VERSION}); upgrade metaembed"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MetaEmbedConfig fields {unknown}; known: {sorted(known)}")
        if "groups" in data:
            data["groups"] = tuple(Budget.parse(group) for group in data["groups"])
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MetaEmbedConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``metaembed_config.json`` atomically into ``directory``; return its path."""
        path = Path(directory) / CONFIG_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> MetaEmbedConfig:
        """Read ``metaembed_config.json`` from a model folder."""
        path = Path(directory) / CONFIG_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {directory} is not a saved MetaEmbed model "
                "(save one with MetaEmbedModel.save_pretrained)"
            )
        return cls.from_json(path.read_text(encoding="utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and ``os.replace``."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
