"""Evaluation: ranking metrics, benchmark runners and budget sweeps."""

from __future__ import annotations

from metaembed.evaluation.metrics import evaluate, parse_metric, per_query

__all__ = ["evaluate", "parse_metric", "per_query"]
