"""The ablation report: table 5 and figure 4b of the paper, from :func:`run_ablations` results.

Writes ``ablations.json`` (everything, including per-task scores and loss
curves), ``ablations.md`` (tables and the honest reading of the numbers) and
``ablations.png`` (accuracy against budget for MetaEmbed and NoMMR, with the
single-vector baselines as dashed lines and the split baseline as a point).

Each overall accuracy comes with a standard error, ``sqrt(p (1 - p) / n)``
over the ``n`` scored rows (the unweighted task mean is close to the row mean
here because every task has the same number of rows): differences smaller
than about two standard errors are reported as not significant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metaembed.budget import Budget
from metaembed.evaluation.io import write_json_atomic, write_text_atomic
from metaembed.evaluation.sweep import SweepResult, plot_budget_curves

__all__ = ["write_ablation_report", "ablation_rows"]


def _sweeps(results: dict[str, Any]) -> dict[str, SweepResult]:
    return {
        label: SweepResult.from_dict(entry["sweep"]) for label, entry in results["variants"].items()
    }


def _rows_scored(sweep: SweepResult) -> int:
    return sum(int(task.get("num_rows", 0)) for task in sweep.tasks.values())


def _stderr(value: float, rows: int) -> float:
    return math.sqrt(max(value * (1 - value), 0.0) / rows) if rows else math.nan


def ablation_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 5's rows: ``{"name", "budget", "overall", "stderr", "delta", "groups"}``.

    ``delta`` is the difference to single-last (the paper's reference), in points.
    """
    sweeps = _sweeps(results)
    reference = sweeps.get("single-last")
    reference_value = reference.summary("1x1")["overall"] if reference else math.nan
    rows = []
    for label, sweep in sweeps.items():
        budgets = sweep.budgets if label in ("MetaEmbed", "NoMMR") else sweep.budgets[-1:]
        for budget in budgets:
            summary = sweep.summary(budget)
            name = (
                label
                if len(sweep.budgets) == 1 and label not in ("MetaEmbed", "NoMMR")
                else (f"{label} ({budget.replace('x', ', ')})")
            )
            rows.append(
                {
                    "name": name,
                    "variant": label,
                    "budget": budget,
                    "overall": summary["overall"],
                    "stderr": _stderr(summary["overall"], _rows_scored(sweep)),
                    "delta": 100 * (summary["overall"] - reference_value),
                    "groups": {k: v for k, v in summary.items() if k != "overall"},
                }
            )
    return rows


def chance_row(sweep: SweepResult) -> dict[str, Any] | None:
    """P@1 of random scores (mean of 1 / candidates per row), as a table row; None if unknown."""
    chances = {name: facts["chance"] for name, facts in sweep.tasks.items() if "chance" in facts}
    if not chances or len(chances) != len(sweep.tasks):
        return None
    budget = sweep.budgets[0]
    chance_sweep = SweepResult(sweep.benchmark, sweep.metric, {budget: chances}, sweep.task_groups)
    summary = chance_sweep.summary(budget)
    return {
        "name": "chance (random scores)",
        "variant": "chance",
        "budget": budget,
        "overall": summary["overall"],
        "stderr": 0.0,
        "delta": math.nan,
        "groups": {k: v for k, v in summary.items() if k != "overall"},
    }


def _table(rows: list[dict[str, Any]]) -> str:
    groups = list(dict.fromkeys(g for row in rows for g in row["groups"]))
    header = ["Variant", "Overall (%)", "± s.e.", "Δ vs single-last", *groups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["name"],
            f"{100 * row['overall']:.1f}",
            f"{100 * row['stderr']:.1f}",
            "-" if math.isnan(row["delta"]) else f"{row['delta']:+.1f}",
        ]
        cells += [f"{100 * row['groups'][g]:.1f}" if g in row["groups"] else "-" for g in groups]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _value(rows: list[dict[str, Any]], variant: str, budget: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["variant"] == variant and r["budget"] == budget), None)


def _compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a is None or b is None:
        return "not measured"
    diff = 100 * (a["overall"] - b["overall"])
    noise = 200 * math.hypot(a["stderr"], b["stderr"])
    verdict = "within noise" if abs(diff) < noise else ("higher" if diff > 0 else "lower")
    left = f"{a['name']} {100 * a['overall']:.1f} vs {b['name']} {100 * b['overall']:.1f}"
    return f"{left}: {diff:+.1f} points ({verdict}, 2 s.e. = {noise:.1f})"


def _findings(rows: list[dict[str, Any]], largest: str) -> list[str]:
    smallest = "1x1"
    lines = [
        "- MMR at the smallest budget (paper: NoMMR drops sharply at (1, 1)): "
        + _compare(_value(rows, "MetaEmbed", smallest), _value(rows, "NoMMR", smallest)),
        "- MMR at the full budget (paper: no loss): "
        + _compare(_value(rows, "MetaEmbed", largest), _value(rows, "NoMMR", largest)),
        "- MetaEmbed at the full budget vs single-last (paper: MetaEmbed higher): "
        + _compare(_value(rows, "MetaEmbed", largest), _value(rows, "single-last", "1x1")),
        "- MetaEmbed at the full budget vs single-mean: "
        + _compare(_value(rows, "MetaEmbed", largest), _value(rows, "single-mean", "1x1")),
        "- MetaEmbed at the full budget vs the split baseline (paper: MetaEmbed higher): "
        + _compare(_value(rows, "MetaEmbed", largest), _value(rows, f"split-{largest}", largest)),
    ]
    curve = [r for r in rows if r["variant"] == "MetaEmbed"]
    if len(curve) > 1:
        values = ", ".join(f"{100 * r['overall']:.1f}" for r in curve)
        lines.append(f"- MetaEmbed accuracy from the smallest to the largest budget: {values}")
    chance = next((r for r in rows if r["variant"] == "chance"), None)
    if chance is not None:
        above = [r for r in rows if r["variant"] != "chance"]
        margins = ", ".join(
            f"{r['name']} {100 * (r['overall'] - chance['overall']):+.1f}" for r in above
        )
        lines.append(
            f"- Random scores would give {100 * chance['overall']:.1f}%; each row minus that "
            f"(points): {margins}. A result below chance means tied or anti-correlated scores "
            "(ties count as misses)."
        )
    return lines


def write_ablation_report(
    results: dict[str, Any], output_dir: str | Path, command: str = ""
) -> dict[str, Path]:
    """Write ``ablations.json``, ``ablations.md`` and ``ablations.png`` into ``output_dir``."""
    output_dir = Path(output_dir)
    rows = ablation_rows(results)
    sweeps = _sweeps(results)
    settings = results["settings"]
    largest = str(Budget.parse(settings["groups"][-1]))
    paths = {
        "json": output_dir / "ablations.json",
        "markdown": output_dir / "ablations.md",
        "plot": output_dir / "ablations.png",
    }
    write_json_atomic(paths["json"], {**results, "table": rows})
    curves = {
        label: {b: sweeps[label].summary(b)["overall"] for b in sweeps[label].budgets}
        for label in ("MetaEmbed", "NoMMR", f"split-{largest}")
        if label in sweeps
    }
    chance = chance_row(next(iter(sweeps.values())))
    baselines = {
        label: sweeps[label].summary("1x1")["overall"]
        for label in ("single-last", "single-mean")
        if label in sweeps
    }
    if chance is not None:
        baselines["chance (random scores)"] = chance["overall"]
    plot_budget_curves(
        curves,
        paths["plot"],
        metric="synthetic P@1",
        title="Ablations (synthetic, tiny model)",
        baselines=baselines,
    )
    table_rows = rows if chance is None else [*rows, chance]
    write_text_atomic(paths["markdown"], _markdown(results, table_rows, sweeps, largest, command))
    return paths


def _markdown(
    results: dict[str, Any],
    rows: list[dict[str, Any]],
    sweeps: dict[str, SweepResult],
    largest: str,
    command: str,
) -> str:
    settings = results["settings"]
    data = settings["data"]
    any_sweep = next(iter(sweeps.values()))
    lines = [
        "# Ablations at small scale (table 5 and figure 4b, synthetic benchmark)",
        "",
        f"Reproduce with `{command}`." if command else "",
        "",
        f"Tiny random `{settings['family']}` model trained on CPU, identically for every "
        f"variant: {settings['steps']} steps of {settings['batch_size']} (query, positive, "
        "hard negative) triples, "
        f"learning rate {settings['learning_rate']}, temperature {settings['temperature']}, "
        f"LoRA r = alpha = {settings['lora_r']}, seed {settings['seed']}, "
        f"R_q={settings['num_query_tokens']}, R_c={settings['num_candidate_tokens']}. "
        f"Trainer: `{results['trainer']}`. "
        f"Data: {data['train_examples']} training examples per in-distribution task; "
        f"{data['eval_rows']} evaluation rows per task ({len(any_sweep.task_names)} tasks, "
        f"metric P@1 over each row's own candidates, ties count as misses).",
        "",
        "## Overall accuracy and Δ to single-last (table 5)",
        "",
        _table(rows),
        "",
        "![accuracy vs budget](ablations.png)",
        "",
        "## What the numbers show",
        "",
        *_findings(rows, largest),
        "",
        "## Per task, every variant and budget (P@1, %)",
        "",
    ]
    for label, sweep in sweeps.items():
        lines += [
            f"### {label}",
            "",
            sweep.markdown().split("### Per task", 1)[1].split("\n", 2)[2],
            "",
        ]
    timing = ", ".join(
        f"{label} {entry['train_seconds']} s + {entry['eval_seconds']} s"
        for label, entry in results["variants"].items()
    )
    lines += [f"Training + evaluation time: {timing}.", ""]
    return "\n".join(lines)
