"""Numbers in a notebook's write-up come from its outputs: prose and cells cannot drift apart.

A chapter's markdown interprets the outputs beside it ("the stop rate rose from 0.000 to 0.938").
When a notebook is re-executed and the prose is not rewritten, the two disagree silently. This
test reads every executed notebook and checks that each number quoted in its markdown appears
in that notebook's outputs, its code (a parameter quoted in the text), or a results file the
markdown links to, allowing the rounding a writer does (0.9375 may be quoted as 0.94 or 93.8%).

Not checked, by rule: integers below 10 (counts, chapter and list numbers), years (citations),
numbers glued to letters (names such as "270M" or "4-gram"), inline code and link targets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Chapters whose committed outputs come from an earlier preset (SmolLM2-135M-Instruct on the
# built-in tasks) and whose write-up has not yet been redrawn from a run on the base model:
# expected to fail until they are re-executed; `strict` makes this list fail once one passes.
NOT_YET_REDRAWN: set[str] = set()

# A number not glued to letters ("4-gram" and "SmolLM2" are names, not quantities).
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)(?![\w]|\.\d)")
LINK = re.compile(r"\]\(([^)]+)\)")
CODE = re.compile(r"`[^`]*`")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _outputs(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(_text(output.get("text", "")))
        for mime, data in output.get("data", {}).items():
            if mime.startswith("text/") or mime == "application/json":
                parts.append(_text(data) if mime != "application/json" else json.dumps(data))
    return "\n".join(parts)


def _values(text: str) -> list[float]:
    return [float((whole + frac).replace(",", "")) for whole, frac, _ in NUMBER.findall(text)]


def quoted_numbers(markdown: str) -> list[tuple[str, float, int, bool]]:
    """(as written, value, decimals, is a percentage) for each number the rule checks."""
    found = []
    for line in markdown.splitlines():
        # Link targets (results/cpu-demo-base/...) and inline code (`r=16`, `-100`) are not quotes of a result.
        line = CODE.sub(" ", LINK.sub("]", line))
        for match in NUMBER.finditer(line):
            whole, frac, percent = match.groups()
            value = float((whole + (frac or "")).replace(",", ""))
            if not frac and not percent and (value < 10 or 1900 <= value <= 2099):
                continue
            found.append((match.group(0), value, len(frac) - 1 if frac else 0, bool(percent)))
    return found


def supported(value: float, decimals: int, percent: bool, pool: list[float]) -> bool:
    """Is `value` (written with `decimals` decimals) a rounding of a number in `pool`?"""
    for candidate in pool:
        for scaled in ((candidate, candidate * 100) if percent else (candidate,)):
            if abs(round(scaled, decimals) - value) < 1e-9 or abs(scaled - value) < 1e-9:
                return True
    return False


def unsupported_numbers(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = notebook["cells"]
    evidence = [_outputs(c) for c in cells] + [_text(c["source"]) for c in cells if c["cell_type"] == "code"]
    markdown = "\n".join(_text(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for target in LINK.findall(markdown):
        linked = (path.parent / target.split("#")[0]).resolve()
        if linked.is_file() and linked.suffix in (".md", ".json", ".txt", ".csv") and ROOT in linked.parents:
            evidence.append(linked.read_text(encoding="utf-8"))
    pool = sorted(set(_values("\n".join(evidence))))
    return [f"{written!r}" for written, value, decimals, percent in quoted_numbers(markdown)
            if not supported(value, decimals, percent, pool)]


def test_the_rule_accepts_roundings_and_rejects_other_numbers():
    pool = _values("stop rate 0.9375, ROUGE-L 0.4417, 1,717 s, ratio 0.817")
    assert supported(0.94, 2, False, pool) and supported(93.8, 1, True, pool) and supported(1717, 0, False, pool)
    assert not supported(0.95, 2, False, pool) and not supported(0.78, 2, False, pool)
    numbers = quoted_numbers("It rose to 0.938 in 1,717 s (Zhou et al. 2023), r=16, top 9, 167.8M, `-100`, "
                             "[run](results/run-12345/report.md), 4-gram")
    assert [n[0] for n in numbers] == ["0.938", "1,717", "16"]


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="outputs from an earlier preset"))
    if p.stem in NOT_YET_REDRAWN else p for p in NOTEBOOKS], ids=[p.stem for p in NOTEBOOKS])
def test_every_number_in_the_write_up_is_in_the_outputs(path):
    missing = unsupported_numbers(path)
    assert not missing, f"{path.name}: numbers in the markdown that no output, code or linked result holds: {missing}"
