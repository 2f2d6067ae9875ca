"""CSV cells from users and datasets open as text in a spreadsheet, never as formulas."""

from __future__ import annotations

import pytest

from painmon.core.util.csvsafe import guard_formula, text_cell


@pytest.mark.parametrize("text", ["=1+1", "+s1", "-s2", "@SUM(A1)", "\tx", "\rx", "  =1+1"])
def test_formula_starts_are_quoted(text):
    assert guard_formula(text) == "'" + text


@pytest.mark.parametrize("text", ["s001", "patient 7", "", "1-2", "a=b"])
def test_plain_text_is_left_alone(text):
    assert guard_formula(text) == text


def test_text_cell_is_one_guarded_line():
    assert text_cell(None) == ""
    assert text_cell("=cmd\r\nnext") == "'=cmd next"
    assert text_cell(42) == "42"
    # A line break first: flattened to a space, the formula behind it is still guarded.
    assert text_cell("\n=HYPERLINK(x)") == "' =HYPERLINK(x)"
    assert text_cell("\r\n@SUM(A1)") == "' @SUM(A1)"
