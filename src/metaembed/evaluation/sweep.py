"""Budget sweeps: a benchmark's scores at every budget, written as JSON, Markdown and a plot.

A :class:`SweepResult` holds one metric per (budget, task) and the task groups
that the paper averages over (MMEB's meta-tasks and IND/OOD, or nothing for
ViDoRe). Group averages are unweighted means over the tasks of the group that
were evaluated (as in table 1: the overall score is the mean over tasks, not
over rows). Scores are fractions in JSON and percentages in Markdown.

:func:`plot_budget_curves` draws metric-vs-budget curves (matplotlib with the
Agg backend, imported only when plotting), as in the paper's figures 3 and 4b.

>>> result = SweepResult("demo", "p@1", {"1x1": {"a": 0.5, "b": 1.0}, "2x4": {"a": 1.0, "b": 1.0}},
...                      task_groups={"G": ("a",)})
>>> result.summary("1x1")
{'G': 0.5, 'overall': 0.75}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaembed.budget import Budget
from metaembed.evaluation.io import (
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["SweepResult", "plot_budget_curves", "markdown_table"]

logger = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _budget_key(text: str) -> Budget:
    return Budget.parse(text)


@dataclass
class SweepResult:
    """Scores of one benchmark at several budgets.

    Attributes
    ----------
    benchmark : str
        ``"mmeb"``, ``"vidore-v1"``, ``"vidore-v2"``, ``"synthetic"`` ...
    metric : str
        Metric name, e.g. ``"p@1"`` or ``"ndcg@5"``.
    scores : dict[str, dict[str, float]]
        ``{budget: {task: value}}`` with budgets written ``"RqxRc"``.
    task_groups : dict[str, tuple[str, ...]]
        Named groups of tasks averaged in the summary (e.g. meta-tasks, IND, OOD);
        ``overall`` (all tasks) is always added.
    tasks : dict[str, dict[str, Any]]
        Per-task facts (number of rows, skipped rows, meta-task ...).
    metadata : dict[str, Any]
        Model, data, revision, timings.
    """

    benchmark: str
    metric: str
    scores: dict[str, dict[str, float]]
    task_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def budgets(self) -> list[str]:
        """Budgets, cheapest first."""
        return [str(b) for b in sorted(_budget_key(text) for text in self.scores)]

    @property
    def task_names(self) -> list[str]:
        """Tasks evaluated, in first-seen order."""
        names: dict[str, None] = {}
        for per_task in self.scores.values():
            names.update(dict.fromkeys(per_task))
        return list(names)

    def summary(self, budget: str | Budget) -> dict[str, float]:
        """Group means (groups with at least one evaluated task) and ``overall`` at ``budget``."""
        per_task = self.scores[str(Budget.parse(budget))]
        means = {}
        for group, names in self.task_groups.items():
            present = [per_task[name] for name in names if name in per_task]
            if present:
                means[group] = _mean(present)
        means["overall"] = _mean(list(per_task.values()))
        return means

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: per budget, per task and averaged."""
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "budgets": self.budgets,
            "results": {
                budget: {"tasks": self.scores[budget], "averages": self.summary(budget)}
                for budget in self.budgets
            },
            "task_groups": {name: list(tasks) for name, tasks in self.task_groups.items()},
            "tasks": self.tasks,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            benchmark=data["benchmark"],
            metric=data["metric"],
            scores={budget: dict(entry["tasks"]) for budget, entry in data["results"].items()},
            task_groups={name: tuple(tasks) for name, tasks in data.get("task_groups", {}).items()},
            tasks=dict(data.get("tasks", {})),
            metadata=dict(data.get("metadata", {})),
        )

    @classmethod
    def read(cls, path: str | Path) -> SweepResult:
        """Read a ``results.json`` written by :meth:`write`."""
        return cls.from_dict(read_json(path))

    def markdown(self) -> str:
        """Markdown report: averages per budget, then every task per budget (percent)."""
        groups = [g for g in self.task_groups if any(g in self.summary(b) for b in self.budgets)]
        columns = [*groups, "overall"]
        summary_rows = {f"({b.replace('x', ', ')})": self.summary(b) for b in self.budgets}
        lines = [f"## {self.benchmark}: {self.metric} (%) by retrieval budget", ""]
        lines.append(markdown_table("Budget", columns, summary_rows))
        lines += ["", f"### Per task ({self.metric}, %)", ""]
        per_task = {
            task: {b: self.scores[b].get(task, math.nan) for b in self.budgets}
            for task in self.task_names
        }
        lines.append(markdown_table("Task", self.budgets, per_task))
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | Path, plot: bool = True) -> dict[str, Path]:
        """Write ``results.json``, ``results.md`` and (if ``plot``) ``results.png`` atomically."""
        output_dir = Path(output_dir)
        paths = {"json": output_dir / RESULTS_JSON, "markdown": output_dir / RESULTS_MD}
        write_json_atomic(paths["json"], self.to_dict())
        write_text_atomic(paths["markdown"], self.markdown())
        if plot:
            curves = {"overall": {b: self.summary(b)["overall"] for b in self.budgets}}
            paths["plot"] = output_dir / RESULTS_PNG
            plot_budget_curves(curves, paths["plot"], metric=self.metric, title=self.benchmark)
        return paths


def _cell(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(
    first: str, columns: Sequence[str], rows: Mapping[str, Mapping[str, float]]
) -> str:
    """Markdown table of fractions shown as percentages (``-`` for missing values).

    >>> markdown_table("Budget", ["overall"], {"(1, 1)": {"overall": 0.5}}).splitlines()
    ['| Budget | overall |', '|---|---|', '| (1, 1) | 50.0 |']
    """
    lines = ["| " + " | ".join([first, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, values in rows.items():
        lines.append(
            "| " + " | ".join([name, *(_cell(values.get(c, math.nan)) for c in columns)]) + " |"
        )
    return "\n".join(lines)


def plot_budget_curves(
    curves: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    metric: str = "score",
    title: str = "",
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """Plot metric (percent) against budget for each curve and save a PNG atomically.

    Parameters
    ----------
    curves : dict[str, dict[str, float]]
        ``{label: {budget: value}}``; budgets are placed in cost order.
    path : str or Path
        Output PNG.
    metric, title : str
        Axis label and title.
    baselines : dict[str, float], optional
        Horizontal dashed lines (e.g. single-vector baselines).
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    budgets = sorted({Budget.parse(b) for values in curves.values() for b in values})
    positions = {str(b): i for i, b in enumerate(budgets)}
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)  # Agg canvas: no global backend change, no display needed
    axes = figure.subplots()
    for label, values in curves.items():
        ordered = sorted(values, key=lambda b: positions[str(Budget.parse(b))])
        xs = [positions[str(Budget.parse(b))] for b in ordered]
        axes.plot(xs, [100 * values[b] for b in ordered], marker="o", label=label)
    for index, (label, value) in enumerate((baselines or {}).items()):
        colour = "0.5" if label.startswith("chance") else f"C{len(curves) + index}"
        axes.axhline(100 * value, linestyle="--", linewidth=1, color=colour, label=label)
    axes.set_xticks(range(len(budgets)), [f"({b.r_q},{b.r_c})" for b in budgets])
    axes.set_xlabel("retrieval budget (r_q, r_c)")
    axes.set_ylabel(f"{metric} (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)
