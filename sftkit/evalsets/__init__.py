"""The evaluation sets: prompts as data files shipped with the package, and the code that scores them.

`sftkit.evaluation` (the before/after harness) runs a model on the run's held-out rows and,
when asked, on fixed prompt sets kept here, each with a ``dev`` and a ``test`` split and written
about subjects no training row touches (``data/eval_topics.txt``):

- `ifeval_prompts.jsonl`: the project's instruction-following prompts in IFEval's format
  (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``, ``split``), scored by IFEval's
  official checkers through lm-eval in `sftkit.ifeval`;
- `facts`: short questions with accepted answers (``facts.jsonl``), scored by answer containment;
- `refusal`: harmful requests paired with harmless look-alikes, in `refusal.jsonl`, and a
  transparent refusal detector.

The prompts are data, not code, so they can be read, diffed and extended without touching
the scorers; they ship as package data (`pyproject.toml`) and are read with
`importlib.resources`, so they load the same from a checkout, a wheel or a zip.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def read_jsonl(name: str, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of package data file `name` (or of `text`).

    Raises ValueError naming the file and line when a line is not a JSON object.
    """
    if text is None:
        text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} line {number} is not JSON: {err}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{name} line {number} is not a JSON object")
        rows.append((number, row))
    return rows
