"""An offline byte-level BPE tokenizer with chat and vision special tokens, for tiny models.

Trained in well under a second with the ``tokenizers`` library on a built-in
corpus (so it is the same on every machine), then wrapped as a transformers
fast tokenizer with a ChatML chat template. Byte-level BPE encodes any text,
so tests may feed arbitrary strings.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer"]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<|image|>",
    "<pad>",
)
"""Special tokens of the families we test: ChatML (Qwen, SmolLM2), Qwen2-VL vision,
Idefics3 image tokens, Mllama's ``<|image|>``, and a pad token."""

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML with Qwen2-VL's image placeholder (one ``<|image_pad|>`` the processor expands)."""

_CORPUS = """
MetaEmbed appends a few learnable meta tokens to the input of a vision language model.
Their last hidden states are a nested multi-vector embedding of the query or the candidate.
Find an image that matches the given caption. Represent the document for retrieval.
A red bicycle leans against a brick wall near the old harbour at sunset.
Two dogs play with a ball on the green grass while children watch from a bench.
The quarterly report shows revenue growth of 12 percent and lower operating costs.
What is the capital of France? Paris is the capital and largest city of France.
Retrieve the chart that answers the question about energy consumption in 2021.
The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.
Table 3: accuracy, precision, recall and F1 score for each model on the test split.
0 1 2 3 4 5 6 7 8 9 10 16 32 64 100 2024 3.14 -1 +1 = % $ # @ ( ) [ ] { } < > / \\ | ' " , . ; :
"""


@functools.lru_cache(maxsize=8)
def _train_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.strip().splitlines()] * 4
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer.to_str()


def build_tokenizer(vocab_size: int = 512, chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """Return a fresh fast tokenizer trained offline (deterministic; training is cached).

    Parameters
    ----------
    vocab_size : int
        Target vocabulary size, including the special tokens (at least 300).
    chat_template : str, optional
        Jinja chat template; ``None`` builds a tokenizer without one.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        Left padding, pad token ``<pad>``, eos ``<|im_end|>``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(
            f"vocab_size must be >= 300 (256 bytes + special tokens), got {vocab_size}"
        )
    backend = Tokenizer.from_str(_train_tokenizer_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        bos_token=None,
        unk_token=None,
        padding_side="left",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<pad>")],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
