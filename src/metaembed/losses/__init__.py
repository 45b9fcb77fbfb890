"""Training losses: each takes embedding tensors and returns a scalar plus per-group values."""

from __future__ import annotations

from metaembed.losses.mmr import MMRLoss, MMRLossOutput, group_scores

__all__ = ["MMRLoss", "MMRLossOutput", "group_scores"]
