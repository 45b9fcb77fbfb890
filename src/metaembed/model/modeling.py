"""MetaEmbedModel: a backbone adapter + learnable meta tokens -> nested multi-vector embeddings.

Data flow of one batch (paper section 3.2)::

    items --prepare--> left-padded inputs + R placeholder positions at the end
          --embed----> backbone forward with meta-token rows written over the
                       placeholders -> last hidden states at those positions
                       -> optional projection -> L2 normalisation -> (B, R, D)

``prepare`` only processes (tokenises, loads images); ``embed`` is the
differentiable forward used by training; ``encode_queries`` and
``encode_candidates`` are the batched inference entry points that return the
first ``r_q`` / ``r_c`` vectors for a retrieval budget.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaembed.backbones.base import BackboneAdapter, check_role
from metaembed.budget import Budget
from metaembed.items import ItemLike, as_items, load_item_images
from metaembed.model.config import MetaEmbedConfig
from metaembed.model.encoding import encode_in_batches, vectors_for_budget
from metaembed.model.lora import apply_lora, is_peft_model
from metaembed.model.meta_tokens import MetaTokens
from metaembed.model.pooling import pool_last, pool_mean, pool_meta, pool_split

__all__ = ["MetaEmbedModel", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(
    device: str | torch.device | None, dtype: torch.dtype | None = None
) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; warns about half precision on CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        logger.warning("%s on CPU is very slow (no fast half-precision matmul); use float32", dtype)
    return device


class MetaEmbedModel(nn.Module):
    """MetaEmbed retrieval model.

    Build one for training with :meth:`from_base_model` (or :meth:`from_adapter`
    for an adapter already in memory), load a trained one with
    :meth:`from_pretrained`, or get a tiny random one with
    :func:`metaembed.testing.tiny_model`.

    Parameters
    ----------
    adapter : BackboneAdapter
        The loaded backbone (its ``model`` may already carry LoRA).
    config : MetaEmbedConfig
        Model configuration; ``config.family`` should match the adapter.
    """

    def __init__(self, adapter: BackboneAdapter, config: MetaEmbedConfig) -> None:
        super().__init__()
        self.adapter = adapter
        self.config = config
        adapter.max_length = config.max_length
        self.backbone = adapter.model
        hidden_size = adapter.hidden_size
        self.meta_tokens: MetaTokens | None = None
        if config.pooling == "meta":
            self.meta_tokens = MetaTokens(
                config.num_query_tokens, config.num_candidate_tokens, hidden_size
            )
        self.projection: nn.Linear | None = None
        if config.projection_dim is not None:
            self.projection = nn.Linear(hidden_size, config.projection_dim)

    # ---------------------------------------------------------------- building
    @classmethod
    def from_adapter(
        cls,
        adapter: BackboneAdapter,
        config: MetaEmbedConfig | None = None,
        seed: int = 0,
        **fields: Any,
    ) -> MetaEmbedModel:
        """Build a fresh, trainable model: meta tokens initialised, LoRA added if ``lora_r > 0``.

        ``fields`` override config fields (``num_query_tokens=4``, ``pooling="last"``...).
        The backbone's own weights are frozen; LoRA, meta tokens and projection train.
        """
        config = config or MetaEmbedConfig(family=adapter.family)
        config = config.replace(**fields) if fields else config
        for parameter in adapter.model.parameters():
            parameter.requires_grad_(False)
        if config.lora_r > 0:
            adapter.model = apply_lora(
                adapter.model,
                adapter.lora_target_modules(include_vision=config.lora_vision),
                r=config.lora_r,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
            )
        model = cls(adapter, config)
        if model.meta_tokens is not None:
            embedding_matrix = adapter.input_embeddings().weight  # (vocab, hidden)
            model.meta_tokens.initialize(embedding_matrix, config.meta_init, seed=seed)
        if model.projection is not None:
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            model.projection.reset_parameters()
            torch.random.set_rng_state(generator_state)
        return model.to(adapter.input_embeddings().weight.device)

    @classmethod
    def from_base_model(
        cls,
        base_model: str,
        family: str | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = "auto",
        seed: int = 0,
        load_kwargs: dict[str, Any] | None = None,
        **fields: Any,
    ) -> MetaEmbedModel:
        """Load a Hugging Face backbone (Hub id or folder) and make a fresh MetaEmbed model.

        ``family`` is detected from the checkpoint's ``model_type`` when omitted.
        ``device="auto"`` picks CUDA when available; ``dtype`` (default float32) is
        the backbone's compute dtype (bfloat16 on GPUs; keep float32 on CPUs).
        """
        from metaembed.backbones.registry import family_for_model_type, get_adapter_class

        if family is None:
            from transformers import AutoConfig

            family = family_for_model_type(AutoConfig.from_pretrained(base_model).model_type)
        adapter_class = get_adapter_class(family)
        device = resolve_device(device, dtype)
        adapter = adapter_class.load(base_model, dtype=dtype, device=device, **(load_kwargs or {}))
        local = Path(base_model)
        recorded = str(local.resolve()) if local.is_dir() else str(base_model)  # Hub id kept as is
        config = MetaEmbedConfig(base_model=recorded, family=adapter_class.family, **fields)
        return cls.from_adapter(adapter, config, seed=seed)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = "auto",
        trainable: bool = False,
        base_model: str | None = None,
    ) -> MetaEmbedModel:
        """Load a saved model (local folder or Hub id); see :mod:`metaembed.model.serialization`.

        ``device="auto"`` picks CUDA when available; ``trainable=True`` keeps LoRA, meta
        tokens and projection trainable (to continue training); ``base_model``
        overrides the backbone location recorded in the config.
        """
        from metaembed.model.serialization import load_model

        device = resolve_device(device, dtype)
        return load_model(
            cls, path_or_id, dtype=dtype, device=device, trainable=trainable, base_model=base_model
        )

    def save_pretrained(
        self, directory: str | os.PathLike[str], save_base_model: bool | None = None
    ) -> None:
        """Save config, meta tokens, projection, LoRA adapter and a model card to ``directory``.

        ``save_base_model`` (default: when ``config.base_model`` is None, i.e. built in
        memory, or ``"base_model"``, i.e. loaded from such a folder) also writes the
        bare backbone and processor into ``directory/base_model``.
        """
        from metaembed.model.serialization import save_model

        save_model(self, directory, save_base_model=save_base_model)

    # ------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Device of the backbone's input embeddings."""
        return self.adapter.input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the backbone."""
        return self.adapter.input_embeddings().weight.dtype

    @property
    def max_budget(self) -> Budget:
        """The full budget ``(R_q, R_c)``."""
        return self.config.max_budget

    def gradient_checkpointing_enable(self) -> None:
        """Turn on non-reentrant activation checkpointing in the backbone (and its vision tower).

        Non-reentrant checkpointing keeps gradients flowing into LoRA layers even when
        the checkpointed block's inputs (e.g. frozen patch embeddings) need no grad;
        input gradients are also enabled for reentrant-only code paths.
        """
        base = self.backbone.get_base_model() if is_peft_model(self.backbone) else self.backbone
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()

    # ---------------------------------------------------------------- forward
    def prepare(
        self,
        items: Sequence[ItemLike],
        role: str,
        item_indices: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Process items for ``role`` into model inputs (CPU tensors); no model computation.

        Images given as paths are opened here; bad items raise errors naming their
        index (``item_indices``: the items' positions in the caller's list).
        """
        check_role(role)
        checked = as_items(items)
        indices = list(range(len(checked))) if item_indices is None else list(item_indices)
        if not self.adapter.supports_images:
            for index, item in zip(indices, checked, strict=True):
                if item.image is not None:
                    raise ValueError(
                        f"item {index} has an image but family {self.config.family!r} is "
                        "text-only; use a vision-language family such as 'qwen2_vl' "
                        "or drop the image"
                    )
        loaded = load_item_images(checked, indices=indices)
        inputs = self.adapter.build_inputs(loaded, role)
        num_meta = self.config.num_meta_tokens(role)
        if num_meta:
            inputs = self.adapter.append_meta_placeholders(inputs, num_meta)
        return inputs

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device, dtype = self.device, self.dtype
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(dtype)
            moved[key] = value
        return moved

    def embed(self, batch: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        """Differentiable forward: L2-normalised float32 embeddings ``(batch, R, dim)``.

        ``R`` is R_q for queries and R_c for candidates (1 for ``last``/``mean`` pooling).
        """
        check_role(role)
        inputs = self._to_device(batch)
        config = self.config
        if self.meta_tokens is not None:
            meta_rows = self.meta_tokens.rows(role, config.layout)  # (num_meta, hidden)
            hidden_states = self.adapter.forward_with_meta(
                inputs, meta_rows
            )  # (batch, seq, hidden)
            read = self.meta_tokens.read_slice(role, config.layout)
            vectors = pool_meta(hidden_states, meta_rows.shape[0], read)  # (batch, R, hidden)
        else:
            hidden_states = self.adapter.forward_with_meta(inputs, None)  # (batch, seq, hidden)
            mask = inputs["attention_mask"]  # (batch, seq)
            if config.pooling == "last":
                vectors = pool_last(hidden_states, mask)  # (batch, 1, hidden)
            elif config.pooling == "mean":
                vectors = pool_mean(hidden_states, mask)  # (batch, 1, hidden)
            else:
                vectors = pool_split(
                    hidden_states, mask, config.num_vectors(role)
                )  # (batch, R, hidden)
        vectors = vectors.float()  # (batch, R, hidden)
        if self.projection is not None:
            vectors = self.projection(vectors)  # (batch, R, dim)
        return F.normalize(vectors, p=2, dim=-1)  # (batch, R, dim)

    def forward(self, batch: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        """Run :meth:`embed` (so ``model(batch, role)`` works too)."""
        return self.embed(batch, role)

    # --------------------------------------------------------------- encoding
    def encode(
        self,
        items: Sequence[ItemLike],
        role: str,
        budget: Budget | str | Sequence[int] | int | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> torch.Tensor:
        """Encode items for ``role`` in inference mode; see :meth:`encode_queries`."""
        check_role(role)
        checked = as_items(items)
        count = vectors_for_budget(budget, role, self.config.max_budget)
        return encode_in_batches(self, checked, role, count, batch_size, show_progress)

    def encode_queries(
        self,
        items: Sequence[ItemLike],
        budget: Budget | str | Sequence[int] | int | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> torch.Tensor:
        """Encode queries: float32 CPU tensor ``(N, r_q, dim)``, L2-normalised.

        Parameters
        ----------
        items : list
            ``str`` (text), ``pathlib.Path`` / PIL image, or :class:`~metaembed.Item`.
        budget : Budget or str or int, optional
            Keep the first ``r_q`` vectors (``"4x8"`` -> 4); ``None`` keeps all R_q.
        batch_size : int
            Items per forward pass (items are sorted by length first).
        show_progress : bool
            Show a progress bar (only when stderr is a terminal).
        """
        return self.encode(items, "query", budget, batch_size, show_progress)

    def encode_candidates(
        self,
        items: Sequence[ItemLike],
        budget: Budget | str | Sequence[int] | int | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> torch.Tensor:
        """Encode candidates: float32 CPU tensor ``(N, r_c, dim)``; see :meth:`encode_queries`."""
        return self.encode(items, "candidate", budget, batch_size, show_progress)

    def extra_repr(self) -> str:
        """Summary shown by ``repr(model)``."""
        config = self.config
        return (
            f"family={config.family}, pooling={config.pooling}, R_q={config.num_query_tokens}, "
            f"R_c={config.num_candidate_tokens}, layout={config.layout}"
        )
