from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaembed import PAPER_GROUPS, Budget, parse_budgets
from metaembed.budget import validate_groups


@given(st.integers(1, 4096), st.integers(1, 4096))
def test_str_round_trip(r_q: int, r_c: int) -> None:
    budget = Budget(r_q, r_c)
    assert Budget.parse(str(budget)) == budget
    assert Budget.parse(budget.as_tuple()) == budget


@pytest.mark.parametrize("text", ["16x64", "16X64", "(16, 64)", "16,64", " 16 x 64 ", "16×64"])
def test_parse_forms(text: str) -> None:
    assert Budget.parse(text) == Budget(16, 64)


@pytest.mark.parametrize("text", ["", "16", "16x", "x64", "16x64x2", "a x b", "0x4"])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        Budget.parse(text)


@pytest.mark.parametrize("args", [(0, 1), (1, 0), (-1, 4)])
def test_rejects_non_positive(args: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Budget(*args)


def test_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        Budget(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Budget(True, 2)  # type: ignore[arg-type]


def test_frozen_and_hashable() -> None:
    budget = Budget(2, 4)
    with pytest.raises(AttributeError):
        budget.r_q = 3  # type: ignore[misc]
    assert {budget: 1}[Budget(2, 4)] == 1


def test_order_by_cost() -> None:
    assert sorted(reversed(PAPER_GROUPS)) == list(PAPER_GROUPS)
    assert Budget(1, 8) < Budget(4, 4) < Budget(2, 16)  # costs 8 < 16, then r_c breaks the tie
    assert max(PAPER_GROUPS) == Budget(16, 64)


def test_paper_groups() -> None:
    assert [b.as_tuple() for b in PAPER_GROUPS] == [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]


def test_check_fits_names_limit() -> None:
    with pytest.raises(ValueError, match="r_c=64.*only 16"):
        Budget(16, 64).check_fits(16, 16)
    with pytest.raises(ValueError, match="r_q=16.*only 8"):
        Budget(16, 64).check_fits(8, 64)
    Budget(16, 64).check_fits(16, 64)


def test_parse_budgets_string() -> None:
    assert parse_budgets("1x1 2x4,4x8") == (Budget(1, 1), Budget(2, 4), Budget(4, 8))


def test_validate_groups() -> None:
    assert validate_groups(PAPER_GROUPS) == PAPER_GROUPS
    with pytest.raises(ValueError, match="nested"):
        validate_groups([Budget(2, 4), Budget(1, 1)])
    with pytest.raises(ValueError):
        validate_groups([])
