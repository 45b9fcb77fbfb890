"""The package surface: lazy exports resolve, and importing has no side effects."""

from __future__ import annotations

import subprocess
import sys

import pytest

import metaembed
import metaembed.evaluation
import metaembed.index


@pytest.mark.parametrize("name", sorted(metaembed._LAZY_EXPORTS))
def test_lazy_exports_resolve(name: str) -> None:
    assert getattr(metaembed, name) is not None


@pytest.mark.parametrize("name", sorted(metaembed.evaluation._LAZY_EXPORTS))
def test_evaluation_exports_resolve(name: str) -> None:
    assert getattr(metaembed.evaluation, name) is not None


@pytest.mark.parametrize("name", sorted(metaembed.index._LAZY_EXPORTS))
def test_index_exports_resolve(name: str) -> None:
    assert getattr(metaembed.index, name) is not None


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        metaembed.not_a_thing  # noqa: B018


def test_import_is_light_and_silent() -> None:
    code = (
        "import sys, logging; import metaembed; "
        "assert 'transformers' not in sys.modules, 'transformers imported eagerly'; "
        "assert 'metaembed.model' not in sys.modules; "
        "assert not logging.getLogger().handlers, 'library configured logging'"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "" and completed.stderr == ""
