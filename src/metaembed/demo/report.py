"""Rendering a demo result: the Markdown table, ``demo-results.json``, the accuracy plot.

>>> row = {"model": "MetaEmbed", "budget": "1x1", "recall@1": 0.1, "recall@10": 0.4,
...        "ndcg@10": 0.25,
...        "classification_accuracy": 0.5, "scoring_flops": 2_000_000, "latency_ms_per_query": 0.5,
...        "index_bytes": 4096}
>>> header, rule, line = format_table([row]).splitlines()
>>> header.split(" | ")[2:]
['R@1', 'R@10', 'NDCG@10', 'class. acc.', 'scoring FLOPs', 'latency ms/query', 'index memory |']
>>> rule
'|---|---|---|---|---|---|---|---|---|'
>>> line
'| MetaEmbed | 1x1 | 10.0 | 40.0 | 25.0 | 50.0 | 2.0 M | 0.50 | 4.0 KiB |'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_table", "format_examples", "write_outputs", "RESULTS_FILENAME", "PLOT_FILENAME"]

RESULTS_FILENAME = "demo-results.json"
PLOT_FILENAME = "demo-results.png"

_COLUMNS = (
    "model",
    "budget",
    "R@1",
    "R@10",
    "NDCG@10",
    "class. acc.",
    "scoring FLOPs",
    "latency ms/query",
    "index memory",
)


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f}"


def _bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the demo rows (metrics in percent)."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        latency = row["latency_ms_per_query"]
        cells = [
            row["model"],
            row["budget"],
            _percent(row["recall@1"]),
            _percent(row["recall@10"]),
            _percent(row["ndcg@10"]),
            _percent(row["classification_accuracy"]),
            _si(row["scoring_flops"]),
            "n/a" if latency is None or math.isnan(latency) else f"{latency:.2f}",
            _bytes(row["index_bytes"]),
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def format_examples(examples: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text example searches: each query, then its top titles (``*`` marks a relevant one)."""
    lines = []
    for example in examples:
        lines.append(f"query: {example['query']!r}")
        for rank, hit in enumerate(example["top"], start=1):
            mark = "*" if hit["relevant"] else " "
            lines.append(f"  {rank}.{mark} {hit['title']}  ({hit['image_id']})")
    return "\n".join(lines)


def write_outputs(result: Any, folder: str | Path) -> dict[str, Path]:
    """Write ``demo-results.json`` and the plot into ``folder`` (atomically); return their paths."""
    from metaembed.evaluation.io import write_json_atomic
    from metaembed.evaluation.sweep import plot_budget_curves

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    results_path = folder / RESULTS_FILENAME
    data = result.to_dict()
    data["table_markdown"] = format_table(result.rows)
    write_json_atomic(results_path, data)
    metaembed = [row for row in result.rows if row["model"] == "MetaEmbed"]
    baselines = [row for row in result.rows if row["model"] != "MetaEmbed"]
    curves = {
        "MetaEmbed R@1 (retrieval)": {row["budget"]: row["recall@1"] for row in metaembed},
        "MetaEmbed NDCG@10 (retrieval)": {row["budget"]: row["ndcg@10"] for row in metaembed},
        "MetaEmbed classification acc.": {
            row["budget"]: row["classification_accuracy"] for row in metaembed
        },
    }
    lines = {}
    for row in baselines:
        lines[f"baseline R@1 ({row['budget']})"] = row["recall@1"]
        lines[f"baseline NDCG@10 ({row['budget']})"] = row["ndcg@10"]
        lines[f"baseline class. acc. ({row['budget']})"] = row["classification_accuracy"]
    plot_path = plot_budget_curves(
        curves,
        folder / PLOT_FILENAME,
        metric="score",
        title="openclipart held-out: accuracy vs retrieval budget",
        baselines=lines,
    )
    return {"results": results_path, "plot": plot_path}
