"""Helpers of the training tests: toy data files and a small config on a tiny random Llama.

A uniquely named module (not ``conftest``): test folders share one ``sys.path`` namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

from metaembed.training.arguments import TrainingConfig

REPO = Path(__file__).resolve().parents[2]
TOY_DATA = REPO / "configs" / "data" / "toy"


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings for broken lines) as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(output_dir: Path, **changes) -> TrainingConfig:
    """A fast config: tiny Llama, R_q=2, R_c=4, two groups, the toy set."""
    values = dict(
        tiny_family="llama",
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=("1x1", "2x4"),
        lora_r=4,
        lora_alpha=4,
        lora_dropout=0.0,
        train_data=({"path": str(TOY_DATA), "format": "mmeb"},),
        eval_fraction=0.05,
        learning_rate=1e-3,
        lr_scheduler="constant",
        batch_size=8,
        max_steps=4,
        seed=0,
        output_dir=str(output_dir),
        logging_steps=2,
        eval_steps=None,
        save_steps=None,
        show_progress=False,
    )
    values.update(changes)
    return TrainingConfig(**values)
