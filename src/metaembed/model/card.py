"""Model card (README.md) written next to a saved MetaEmbed model.

>>> from metaembed.model.config import MetaEmbedConfig
>>> config = MetaEmbedConfig(base_model="Qwen/Qwen2-VL-2B-Instruct", family="qwen2_vl")
>>> card = render_model_card(config)
>>> "| 16x64 |" in card and "library_name: metaembed" in card
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from metaembed.model.config import MetaEmbedConfig

__all__ = ["render_model_card"]


def _budget_table(config: MetaEmbedConfig) -> str:
    lines = [
        "| budget (r_q x r_c) | query vectors | candidate vectors | trained |",
        "|---|---|---|---|",
    ]
    for group in config.groups:
        lines.append(f"| {group} | {group.r_q} | {group.r_c} | yes |")
    return "\n".join(lines)


def render_model_card(config: MetaEmbedConfig, base_model_label: str | None = None) -> str:
    """Markdown model card: front matter, what the model is, trained budgets, usage.

    Parameters
    ----------
    config : MetaEmbedConfig
        The saved model's configuration.
    base_model_label : str, optional
        How to name the backbone (defaults to ``config.base_model``).
    """
    base = base_model_label or config.base_model or "(saved in base_model/)"
    dim = config.projection_dim or "hidden size of the backbone"
    lora = f"r={config.lora_r}, alpha={config.lora_alpha}" if config.lora_r else "none"
    front_matter = "\n".join(
        [
            "---",
            "library_name: metaembed",
            "pipeline_tag: visual-document-retrieval",
            "tags: [metaembed, multi-vector, late-interaction, matryoshka]",
            *([f"base_model: {config.base_model}"] if config.base_model else []),
            "---",
        ]
    )
    return f"""{front_matter}

# MetaEmbed model ({config.family})

A [MetaEmbed](https://arxiv.org/abs/2509.18095) retrieval model: learnable meta tokens
appended to the input of `{base}`; the L2-normalised last-layer hidden states at
their positions form a nested multi-vector embedding, scored with MaxSim.

- query vectors R_q = {config.num_query_tokens}, \
candidate vectors R_c = {config.num_candidate_tokens}
- meta-token layout: `{config.layout}`, pooling: `{config.pooling}`, embedding dim: {dim}
- LoRA: {lora} (vision tower included: {config.lora_vision})

## Budgets trained with Matryoshka Multi-Vector Retrieval

At search time pick a budget (r_q, r_c): the first r_q query and r_c candidate vectors.

{_budget_table(config)}

## Usage

```python
from pathlib import Path

from metaembed import Budget, MetaEmbedModel, maxsim

model = MetaEmbedModel.from_pretrained("path/to/this/folder")
queries = model.encode_queries(["a red bicycle"], budget=Budget(4, 8))
candidates = model.encode_candidates([Path("photo.jpg"), "a caption"], budget=Budget(4, 8))
scores = maxsim(queries, candidates)  # (num_queries, num_candidates)
```
"""
