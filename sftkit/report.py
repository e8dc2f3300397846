"""Markdown tables for the reports sftkit writes: `report.md`, `eval.md`, `run.md`, `trials.md`, model cards.

Every report is Markdown read by people (on GitHub, the Hub, in a notebook), and most of it is
tables. `markdown_table` is the one place a table's rows are written, so that every report
spells a table the same way (a header, a rule, one line per row, each cell between ``| `` and
`` |``) and a module that reports something only says which columns and which cells. Cells
are formatted by the caller (``f"{x:.3f}"``): this module only lays them out. It imports
nothing from sftkit, so any module may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# The rule under the header, per column: "---" leaves the alignment to the renderer (left on
# GitHub and the Hub), "---:" right-aligns (counts and other numbers), ":---:" centres.
RULES = {"left": "---", "right": "---:", "center": ":---:"}


def table_row(cells: Sequence[Any]) -> str:
    """One table line: ``| a | b |``; a cell is written with `str`, an empty one as ``| |``."""
    texts = [str(cell) for cell in cells]
    return "|" + "".join(f" {text} |" if text else " |" for text in texts)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Sequence[str] | None = None) -> list[str]:
    """The lines of a Markdown table: the header, its rule, then one line per row.

    `align` gives each column's alignment, "left" (the default), "right" or "center"; numeric
    columns read best right-aligned (``---:``). Every row must have a cell per column.
    """
    align = list(align) if align is not None else ["left"] * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} entries for {len(header)} columns")
    unknown = sorted(set(align) - set(RULES))
    if unknown:
        raise ValueError(f"unknown alignment {unknown}; choose from {sorted(RULES)}")
    lines = [table_row(header), "|" + "".join(f" {RULES[a]} |" for a in align)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append(table_row(row))
    return lines
