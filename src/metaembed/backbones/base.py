"""Backbone adapters: the thin, per-family layer between MetaEmbed and a Hugging Face model.

An adapter owns one loaded Hugging Face model (``self.model``) and its
processor or tokenizer (``self.processor``) and knows four things about its
family; everything else (meta tokens, pooling, projection, LoRA, batching,
saving) lives in :mod:`metaembed.model` and is shared by all families.

The contract (stable; changes are announced in the changelog at the end of
this docstring)
------------------------------------------------------------------------------
A family is one file ``metaembed/backbones/<family>.py`` defining a subclass of
:class:`BackboneAdapter` plus one line in :mod:`metaembed.backbones.registry`.
The subclass sets the class attributes and implements the abstract methods:

``family`` (str)
    Registry name, e.g. ``"qwen2_vl"``.
``model_types`` (tuple of str)
    Hugging Face ``config.model_type`` values this adapter handles (used to
    detect the family of a checkpoint).
``supports_images`` (bool)
    Whether items may carry an image.
``load_processor(name_or_path, **kwargs)`` / ``load_model(name_or_path, *, dtype, **kwargs)``
    (classmethods, optional) What the shared ``load`` calls: defaults are
    ``AutoProcessor`` and the headless ``AutoModel`` (``last_hidden_state``, no
    LM head). Override them for a family's own classes; override ``load``
    itself only for a backbone that is not a Hugging Face checkpoint.
``build_inputs(items, role)``
    Turn a list of :class:`~metaembed.items.Item` (images already loaded as
    RGB PIL images) into the model's keyword arguments, **left padded**, with
    no meta tokens yet: ``input_ids`` and ``attention_mask`` of shape
    ``(batch, seq)`` plus any extra tensors (``pixel_values``,
    ``image_grid_thw``, ...). Use :meth:`render_prompt` (chat template when
    the processor has one) to build the text, and truncate text prompts to
    ``self.max_length`` tokens when it is set.
``lora_target_modules(include_vision=True)``
    The module-name regex (a peft ``target_modules`` string) of the linear
    layers LoRA adapts: the language model's attention and MLP projections,
    and the vision tower's where ``include_vision`` and the family allows.

Optional overrides: ``meta_placeholder_id`` (the token id written at meta
positions before their embeddings are replaced; default the pad token, a plain
text token, so multimodal RoPE numbers the meta tokens as text that follows the
prompt), ``extend_per_token_inputs`` (how per-token tensors other than
``input_ids``/``attention_mask`` grow by the meta positions), ``run_backbone``
(the forward call; default ``self.model(**inputs, use_cache=False)`` reading
``last_hidden_state``), ``save_processor(directory)`` (default
``processor.save_pretrained``; ``load`` must read back what it writes), and
``build_tiny(seed, **overrides)`` (a tiny random adapter for
:func:`metaembed.testing.tiny_model`; ``load`` must be able to reload its saved
base model and processor offline).

How meta tokens get into the sequence
-------------------------------------
:meth:`BackboneAdapter.append_meta_placeholders` appends ``num_meta``
placeholder ids to every (left padded) row, so the meta tokens are the last
``num_meta`` positions of every sequence, whatever the prompt length.
:meth:`BackboneAdapter.forward_with_meta` then registers a forward hook on the
input embedding module (``model.get_input_embeddings()``) that replaces the
embeddings of those last positions with the learnable meta-token rows, runs the
backbone, and returns the last-layer hidden states ``(batch, seq, hidden)``.
The hook runs inside the backbone's own forward, so image features are merged
and position ids (Qwen2-VL's 3-D rope index included) computed exactly as for
any text token at those positions. The hook checks that it fired exactly once;
a lock serialises meta-token forwards of one adapter, so threads (a web
server) may share a model safely.

Changelog
---------
- v1: first version.
- v2: ``save(directory)`` became ``save_processor(directory)``; the base model
  weights are saved by the shared serialization code. New attribute
  ``max_length`` (prompt truncation, set by the model from its config).
  New helper ``positions_from_mask`` for families whose HF model numbers
  left-padded positions from the padding (pass it as ``position_ids`` in
  ``run_backbone``).
- v3: ``load`` is shared; families supply ``load_processor`` / ``load_model``.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.items import Item

__all__ = ["BackboneAdapter", "ROLES", "check_role", "positions_from_mask"]

logger = logging.getLogger(__name__)

ROLES = ("query", "candidate")
"""The two sides of retrieval; prompts and meta tokens depend on the role."""


def check_role(role: str) -> str:
    """Return ``role`` if it is ``"query"`` or ``"candidate"``, else raise ``ValueError``.

    >>> check_role("query")
    'query'
    """
    if role not in ROLES:
        raise ValueError(f"role must be 'query' or 'candidate', got {role!r}")
    return role


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding safe).

    >>> positions_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1, 2]]
    """
    positions = attention_mask.long().cumsum(dim=1) - 1  # (batch, seq)
    return positions.clamp_min(0)


class BackboneAdapter(abc.ABC):
    """Base class of a backbone family (see the module docstring for the contract).

    Parameters
    ----------
    model : torch.nn.Module
        The Hugging Face model (preferably the headless ``AutoModel`` class).
    processor : Any
        Its processor (VLMs) or tokenizer (text-only LMs), padding on the left.
    """

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    supports_images: ClassVar[bool] = False
    model_class: ClassVar[str] = "AutoModel"
    """The transformers class :meth:`load_model` loads (headless: returns hidden states)."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.max_length: int | None = None  # prompt tokens kept by build_inputs (None: all)
        self._forward_lock = threading.RLock()  # the meta-token hook is per-forward state
        tokenizer = self.tokenizer
        if tokenizer is not None:
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BackboneAdapter:
        """Load the headless model and its processor from a Hub id or a local folder.

        Families customise :meth:`load_processor` and :meth:`load_model`; only a
        backbone that is not a Hugging Face checkpoint overrides ``load`` itself.
        """
        processor = cls.load_processor(name_or_path, **kwargs)
        model = cls.load_model(name_or_path, dtype=dtype or torch.float32, **kwargs)
        if device is not None:
            model.to(device)
        return cls(model.eval(), processor)

    @classmethod
    def load_processor(cls, name_or_path: str, **kwargs: Any) -> Any:
        """Load the processor (default ``AutoProcessor``; ``kwargs`` are the model's)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(name_or_path)

    @classmethod
    def load_model(cls, name_or_path: str, *, dtype: torch.dtype, **kwargs: Any) -> Any:
        """Load the headless model: the transformers class named by ``model_class``."""
        import transformers

        model_class = getattr(transformers, cls.model_class)
        return model_class.from_pretrained(name_or_path, dtype=dtype, **kwargs)

    @classmethod
    def build_tiny(cls, seed: int = 0, **overrides: Any) -> BackboneAdapter:
        """Return a tiny random adapter built offline (for tests); optional per family."""
        raise NotImplementedError(f"family {cls.family!r} has no tiny test model")

    def save_processor(self, directory: str) -> None:
        """Save the processor (or tokenizer) so that :meth:`load` can read it back.

        The base model itself is saved by :mod:`metaembed.model.serialization`
        (without LoRA tensors); families whose processor needs care override this.
        """
        self.processor.save_pretrained(directory)

    # ------------------------------------------------------------ warm start
    @property
    def base_weights_changed(self) -> bool:
        """Whether frozen base weights differ from what ``base_model`` names (then saved too)."""
        return False

    def warm_start(self, examples: Sequence[Any]) -> None:
        """Initialise trainable parts from training pairs before training (optional per family).

        ``examples`` are :class:`metaembed.training.data.TrainingExample`. Families
        with a projector between a frozen encoder and the LM override this.
        """
        raise ValueError(
            f"family {self.family!r} has nothing to warm-start (warm_start_projector is for "
            "families with a projector, such as 'composite'); remove warm_start_projector"
        )

    # ------------------------------------------------------------ introspection
    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (the processor itself for text-only models)."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def hidden_size(self) -> int:
        """Width of the last-layer hidden states (and of the meta-token rows)."""
        return int(self.input_embeddings().weight.shape[1])

    def input_embeddings(self) -> nn.Embedding:
        """Return the token embedding module whose output the meta-token hook edits."""
        return self.model.get_input_embeddings()

    @property
    def meta_placeholder_id(self) -> int:
        """Token id written at meta positions (replaced before the first layer)."""
        tokenizer = self.tokenizer
        token_id = tokenizer.pad_token_id
        if token_id is None:
            token_id = tokenizer.eos_token_id
        if token_id is None:
            raise ValueError(
                f"the tokenizer of family {self.family!r} has neither a pad nor an eos token; "
                "set tokenizer.pad_token before building the adapter"
            )
        return int(token_id)

    # ---------------------------------------------------------------- prompting
    def render_prompt_with_image_token(self, item: Item, role: str) -> str:
        """Return :meth:`render_prompt`, with the processor's ``image_token`` put first.

        For families whose processor expands one image token per image: when the
        checkpoint has no chat template, nothing wrote the token, so an image item
        gets it in front of the text.
        """
        prompt = self.render_prompt(item, role)
        image_token = self.processor.image_token
        if item.image is not None and image_token not in prompt:  # no chat template
            prompt = image_token + prompt
        return prompt

    def render_prompt(self, item: Item, role: str) -> str:
        """Return the prompt text for one item, through the chat template when there is one.

        The user turn holds the image (if any), then the instruction and the text
        separated by a newline; the generation prompt is added so the meta tokens
        sit where the answer would start.
        """
        check_role(role)
        text = "\n".join(part for part in (item.instruction, item.text) if part)
        template_owner = self.processor if self._has_chat_template(self.processor) else None
        if template_owner is None and self._has_chat_template(self.tokenizer):
            template_owner = self.tokenizer
        if template_owner is None:
            return text
        content: list[dict[str, str]] = []
        if item.image is not None:
            content.append({"type": "image"})
        if text:
            content.append({"type": "text", "text": text})
        if template_owner is self.tokenizer and not self.supports_images:
            messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
        else:
            messages = [{"role": "user", "content": content}]
        return template_owner.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    @staticmethod
    def _has_chat_template(owner: Any) -> bool:
        return bool(getattr(owner, "chat_template", None)) and hasattr(owner, "apply_chat_template")

    @abc.abstractmethod
    def build_inputs(self, items: Sequence[Item], role: str) -> dict[str, torch.Tensor]:
        """Process items into left-padded model inputs without meta tokens."""

    # ------------------------------------------------------------------- LoRA
    @abc.abstractmethod
    def lora_target_modules(self, include_vision: bool = True) -> str:
        """Regex of module names LoRA adapts (peft ``target_modules``)."""

    # ------------------------------------------------------------- meta tokens
    def extend_per_token_inputs(
        self, inputs: dict[str, torch.Tensor], num_meta: int
    ) -> dict[str, torch.Tensor]:
        """Grow ``(batch, seq)`` tensors other than ids and mask by ``num_meta`` columns.

        The default pads ``token_type_ids`` and ``mm_token_type_ids`` with zeros
        (text). Families with other per-token inputs override this.
        """
        extended = dict(inputs)
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in extended and extended[key] is not None:
                values = extended[key]  # (batch, seq)
                zeros = values.new_zeros((values.shape[0], num_meta))  # (batch, num_meta)
                extended[key] = torch.cat([values, zeros], dim=1)  # (batch, seq + num_meta)
        return extended

    def append_meta_placeholders(
        self, inputs: dict[str, torch.Tensor], num_meta: int
    ) -> dict[str, torch.Tensor]:
        """Append ``num_meta`` placeholder positions at the end of every left-padded row.

        Raises ``ValueError`` if the rows are not left padded (the meta tokens would
        not be contiguous with the prompt).
        """
        input_ids = inputs["input_ids"]  # (batch, seq)
        attention_mask = inputs["attention_mask"]  # (batch, seq)
        if attention_mask.shape[1] and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                f"family {self.family!r} produced right-padded inputs; build_inputs must pad "
                "on the left so the meta tokens are the last positions"
            )
        batch_size = input_ids.shape[0]
        placeholders = input_ids.new_full((batch_size, num_meta), self.meta_placeholder_id)
        extended = self.extend_per_token_inputs(inputs, num_meta)
        extended["input_ids"] = torch.cat([input_ids, placeholders], dim=1)  # (batch, seq + R)
        ones = attention_mask.new_ones((batch_size, num_meta))  # (batch, R)
        extended["attention_mask"] = torch.cat([attention_mask, ones], dim=1)  # (batch, seq + R)
        return extended

    @contextmanager
    def meta_token_hook(self, meta_embeddings: torch.Tensor) -> Iterator[list[int]]:
        """Replace the last ``R`` input embeddings of every row by ``meta_embeddings``.

        Parameters
        ----------
        meta_embeddings : torch.Tensor
            ``(R, hidden)`` (shared by the batch) or ``(batch, R, hidden)``.

        Yields
        ------
        list of int
            A counter list; one entry is appended per time the hook fired.
        """
        num_meta = meta_embeddings.shape[-2]
        fired: list[int] = []

        def replace_last_rows(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            if output.dim() != 3 or output.shape[1] < num_meta:
                return output  # a look-up of single tokens, not the sequence
            batch_size = output.shape[0]
            meta_rows = meta_embeddings.to(dtype=output.dtype, device=output.device)
            meta_rows = meta_rows.expand(batch_size, -1, -1)  # (batch, R, hidden)
            fired.append(batch_size)
            return torch.cat([output[:, :-num_meta], meta_rows], dim=1)  # (batch, seq, hidden)

        handle = self.input_embeddings().register_forward_hook(replace_last_rows)
        try:
            yield fired
        finally:
            handle.remove()

    def run_backbone(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the Hugging Face model and return last-layer hidden states ``(batch, seq, hidden)``.

        The default suits headless ``AutoModel`` classes (``last_hidden_state``).
        Families whose model class has a head override this, or ask for
        ``output_hidden_states`` and read ``hidden_states[-1]``.
        """
        outputs = self.model(**inputs, use_cache=False, return_dict=True)
        hidden_states = getattr(outputs, "last_hidden_state", None)
        if hidden_states is None:
            raise RuntimeError(
                f"{type(self.model).__name__} returned no last_hidden_state; load the headless "
                f"AutoModel class in {type(self).__name__}.load or override run_backbone()"
            )
        return hidden_states

    def forward_with_meta(
        self, inputs: dict[str, torch.Tensor], meta_embeddings: torch.Tensor | None
    ) -> torch.Tensor:
        """Run the backbone with meta-token rows written over the last positions.

        Parameters
        ----------
        inputs : dict of str to torch.Tensor
            Output of :meth:`append_meta_placeholders` (on the model's device).
        meta_embeddings : torch.Tensor or None
            ``(R, hidden)`` rows for the last ``R`` positions; ``None`` runs a bare
            forward (pooling baselines, benchmarks).

        Returns
        -------
        torch.Tensor
            Last-layer hidden states, ``(batch, seq, hidden)``.
        """
        if meta_embeddings is None:
            return self.run_backbone(inputs)
        with self._forward_lock, self.meta_token_hook(meta_embeddings) as fired:
            hidden_states = self.run_backbone(inputs)  # (batch, seq, hidden)
        if len(fired) != 1:
            raise RuntimeError(
                f"the meta-token hook of family {self.family!r} fired {len(fired)} times "
                "(expected once): the backbone did not embed the sequence through "
                "get_input_embeddings(); override input_embeddings() or run_backbone()"
            )
        return hidden_states

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, hidden={self.hidden_size})"
        )
