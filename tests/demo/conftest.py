"""Fixtures of the demo tests: a small synthetic openclipart tree (transparent PNGs + SVG twins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo.clipart_support import write_clipart_tree


@pytest.fixture()
def clipart_root(tmp_path: Path) -> Path:
    """A synthetic openclipart installation (``png/`` and ``svg/``) under ``tmp_path``."""
    return write_clipart_tree(tmp_path / "openclipart")
