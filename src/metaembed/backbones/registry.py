"""Registry of backbone families: family name -> adapter class, imported lazily.

Adding a family is one file (``metaembed/backbones/<family>.py`` with a
:class:`~metaembed.backbones.base.BackboneAdapter` subclass) plus one line in
``_FAMILIES`` below. Entries are ``"module:Class"`` strings so importing the
registry imports no model code.

>>> "qwen2_vl" in available_families()
True
>>> family_for_model_type("qwen2")
'llama'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.backbones.base import BackboneAdapter

__all__ = ["available_families", "get_adapter_class", "family_for_model_type", "FAMILY_ALIASES"]

_FAMILIES: dict[str, str] = {
    "llama": "metaembed.backbones.causal_lm:CausalLMAdapter",
    "qwen2_vl": "metaembed.backbones.qwen2_vl:Qwen2VLAdapter",
    "qwen2_5_vl": "metaembed.backbones.qwen2_5_vl:Qwen2_5_VLAdapter",
    "idefics3": "metaembed.backbones.idefics3:Idefics3Adapter",
    "paligemma": "metaembed.backbones.paligemma:PaliGemmaAdapter",
    "mllama": "metaembed.backbones.mllama:MllamaAdapter",
    "composite": "metaembed.backbones.composite:CompositeAdapter",
}
"""One line per family: registry name -> ``"module:AdapterClass"``."""

FAMILY_ALIASES: dict[str, str] = {
    "causal_lm": "llama",
    "qwen2": "llama",
    "smollm2": "llama",
    "mistral": "llama",
    "smolvlm": "idefics3",
    "llama3_vision": "mllama",
}
"""Other names users may type, mapped to a registry name."""

_MODEL_TYPES: dict[str, str] = {
    "llama": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "mistral": "llama",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
    "paligemma": "paligemma",
    "mllama": "mllama",
}
"""Hugging Face ``config.model_type`` -> registry name (for checkpoints without a family)."""


def available_families() -> tuple[str, ...]:
    """Registry names of all families, sorted."""
    return tuple(sorted(_FAMILIES))


def _canonical(family: str) -> str:
    name = family.strip().lower().replace("-", "_")
    return FAMILY_ALIASES.get(name, name)


def get_adapter_class(family: str) -> type[BackboneAdapter]:
    """Return the adapter class of ``family`` (a registry name or an alias).

    Raises
    ------
    ValueError
        For an unknown family, listing the known ones.
    ImportError
        If the family is registered but its module is not available yet.
    """
    name = _canonical(family)
    target = _FAMILIES.get(name)
    if target is None:
        raise ValueError(
            f"unknown backbone family {family!r}; "
            f"known families: {', '.join(available_families())} "
            "(add one with a file in metaembed/backbones/ and a line in registry._FAMILIES)"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ImportError(
            f"backbone family {name!r} is registered but {module_name} is not implemented yet"
        ) from error
    return getattr(module, class_name)


def family_for_model_type(model_type: str) -> str:
    """Map a Hugging Face ``config.model_type`` to a registry family name.

    Raises ``ValueError`` naming the supported model types when there is no match.
    """
    family = _MODEL_TYPES.get(model_type)
    if family is None:
        raise ValueError(
            f"no backbone family handles model_type {model_type!r}; supported: "
            f"{', '.join(sorted(_MODEL_TYPES))}; pass family=... explicitly"
        )
    return family
