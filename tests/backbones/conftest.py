"""Shared fixtures for model tests: one torch thread, tiny models built once per session."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama():
    """Tiny Llama MetaEmbed model with small R_q/R_c (fast)."""
    from metaembed.testing import tiny_model

    return tiny_model("llama", num_query_tokens=4, num_candidate_tokens=8, groups=["1x1", "2x4", "4x8"])
