"""`sftkit.report.markdown_table`: the one way sftkit's reports write a Markdown table."""

from __future__ import annotations

import pytest

from sftkit.report import markdown_table, table_row


def test_a_table_is_its_header_a_rule_and_one_line_per_row():
    lines = markdown_table(("metric", "before", "after"), [("exact_match", "0.125", "0.375"), ("bleu", 1.3, 9)])
    assert lines == [
        "| metric | before | after |",
        "| --- | --- | --- |",
        "| exact_match | 0.125 | 0.375 |",
        "| bleu | 1.3 | 9 |",
    ]


def test_numeric_columns_right_align_when_asked():
    lines = markdown_table(["source", "train", "test"], [("a", 30, 4)], align=["left", "right", "right"])
    assert lines[:2] == ["| source | train | test |", "| --- | ---: | ---: |"]
    assert markdown_table(["x"], [], align=["center"]) == ["| x |", "| :---: |"]


def test_rows_may_be_any_iterable_and_an_empty_table_is_its_header():
    assert markdown_table(["a", "b"], iter([[1, 2]]))[-1] == "| 1 | 2 |"
    assert markdown_table(["a", "b"], []) == ["| a | b |", "| --- | --- |"]


def test_cells_are_written_with_str_and_an_empty_cell_as_a_bare_bar():
    assert table_row(["assistant perplexity", "3.21", "2.10", ""]) == "| assistant perplexity | 3.21 | 2.10 | |"
    assert table_row([None, 0, 1_000, "r4+mlp"]) == "| None | 0 | 1000 | r4+mlp |"


@pytest.mark.parametrize(("header", "rows", "align", "message"), [
    (["a", "b"], [(1,)], None, "a row has 1 cells for 2 columns"),
    (["a", "b"], [(1, 2, 3)], None, "a row has 3 cells for 2 columns"),
    (["a", "b"], [], ["right"], "align has 1 entries for 2 columns"),
    (["a"], [], ["middle"], "unknown alignment"),
])
def test_a_table_that_does_not_add_up_is_refused(header, rows, align, message):
    with pytest.raises(ValueError, match=message):
        markdown_table(header, rows, align=align)
