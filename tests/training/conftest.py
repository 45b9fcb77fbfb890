"""Fixtures for training tests (helpers live in ``training_support``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.training_support import TOY_DATA


@pytest.fixture
def toy_data() -> Path:
    return TOY_DATA
