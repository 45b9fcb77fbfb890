"""The text-model settings every tiny test backbone shares (hidden 32, 2 layers, 4 heads).

Each family's ``build_tiny`` starts from :func:`tiny_text_config` and changes
only what its architecture needs, so the tiny models stay comparable.

>>> from types import SimpleNamespace
>>> tokenizer = SimpleNamespace(__len__=None, pad_token_id=0, eos_token_id=1, bos_token_id=2)
>>> config = tiny_text_config(tokenizer, vocab_size=100, num_hidden_layers=3)
>>> config["hidden_size"], config["num_hidden_layers"], config["bos_token_id"]
(32, 3, None)
"""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_text_config"]


def tiny_text_config(tokenizer: Any, **changes: Any) -> dict[str, Any]:
    """Return tiny decoder settings tied to ``tokenizer``'s special tokens, updated by ``changes``.

    ``vocab_size`` defaults to ``len(tokenizer)``; ``bos_token_id`` to None (the
    tiny tokenizers add no BOS) unless given.
    """
    config: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if "vocab_size" not in changes:
        config["vocab_size"] = len(tokenizer)
    config.update(changes)
    return config
