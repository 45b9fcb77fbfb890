"""TrainResult: what a training run produced (paths, history, steps, time), and its summary line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What a run produced.

    Attributes
    ----------
    output_dir : Path
    best_checkpoint : Path or None
        Saved model (``save_pretrained`` folder) with the lowest held-out loss.
    final_checkpoint : Path or None
        Saved model after the last step (None when the run was interrupted).
    history : list of dict
        One record per step (``{"step", "loss", "lr", "groups"}``) and per
        evaluation (``{"step", "eval_loss", "eval_groups"}``).
    steps : int
        Optimizer steps done (including those before a resume).
    seconds : float
        Wall time of this process's run.
    stopped_early : bool
    best_eval_loss : float or None
    """

    output_dir: Path
    best_checkpoint: Path | None
    final_checkpoint: Path | None
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    stopped_early: bool = False
    best_eval_loss: float | None = None
    resumed_from: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """JSON of the result without the history (that lives in the checkpoints)."""
        data = {
            "output_dir": str(self.output_dir),
            "best_checkpoint": None if self.best_checkpoint is None else str(self.best_checkpoint),
            "final_checkpoint": None
            if self.final_checkpoint is None
            else str(self.final_checkpoint),
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
            "best_eval_loss": self.best_eval_loss,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            **self.extra,
        }
        return json.dumps(data, indent=1)

    def summary(self) -> str:
        """One paragraph for the end of a run."""
        best = "none" if self.best_checkpoint is None else f"{self.best_checkpoint}"
        if self.best_eval_loss is not None:
            best += f" (held-out loss {self.best_eval_loss:.4f})"
        return (
            f"trained {self.steps} steps in {self.seconds:.1f} s"
            f"{' (stopped early)' if self.stopped_early else ''}; best checkpoint: {best}; "
            f"final model: {self.final_checkpoint}; output: {self.output_dir}"
        )
