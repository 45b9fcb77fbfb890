"""Evaluation: ranking metrics, benchmark runners, budget sweeps and the efficiency table.

``metrics`` is pure Python and imported eagerly; everything else (which imports torch
or optional dependencies) is imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from metaembed.evaluation.metrics import evaluate, parse_metric, per_query

_LAZY_EXPORTS = {
    "SweepResult": "metaembed.evaluation.sweep",
    "plot_budget_curves": "metaembed.evaluation.sweep",
    "EmbeddingCache": "metaembed.evaluation.cache",
    "model_fingerprint": "metaembed.evaluation.cache",
    "load_mmeb": "metaembed.evaluation.mmeb",
    "MMEB_TASKS": "metaembed.evaluation.mmeb",
    "IND_TASKS": "metaembed.evaluation.mmeb",
    "load_vidore": "metaembed.evaluation.vidore",
    "run_mmeb": "metaembed.evaluation.runner",
    "run_vidore": "metaembed.evaluation.runner",
    "efficiency_table": "metaembed.evaluation.efficiency",
    "measure_scoring_latency": "metaembed.evaluation.efficiency",
    "PAPER_TABLE3": "metaembed.evaluation.efficiency",
    "SyntheticConfig": "metaembed.evaluation.synthetic_tasks",
    "write_synthetic_benchmark": "metaembed.evaluation.synthetic_tasks",
    "AblationSettings": "metaembed.evaluation.reproduce",
    "run_ablations": "metaembed.evaluation.reproduce",
    "write_ablation_report": "metaembed.evaluation.ablation_report",
}

__all__ = ["evaluate", "parse_metric", "per_query", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'metaembed.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
