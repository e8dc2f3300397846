"""Execute notebooks so the committed ``.ipynb`` copies carry outputs from a real run.

    SFTKIT_PRESET=cpu-demo python notebooks/execute.py 00 01 02 03 04

The source of each chapter is its jupytext file ``NN_*.py`` (py:percent); the cells are read
from it, so an edit to the source is what runs, and the executed notebook is written to the
paired ``NN_*.ipynb``. Each runs top to bottom in a fresh kernel from the notebooks/ folder;
the wall time of each is printed and appended to ``runs/<preset>/notebook_times.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main(prefixes: list[str]) -> None:
    preset = os.environ.get("SFTKIT_PRESET", "cpu-demo")
    log = HERE.parent / "runs" / preset / "notebook_times.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    for prefix in prefixes:
        [source] = sorted(HERE.glob(f"{prefix}_*.py"))
        path = source.with_suffix(".ipynb")
        notebook = jupytext.read(source)
        start = time.perf_counter()
        NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        wall = time.perf_counter() - start
        jupytext.write(notebook, path)
        print(f"{path.name}: {wall:.0f} s", flush=True)
        with log.open("a") as handle:
            handle.write(json.dumps({"notebook": path.name, "preset": preset, "wall_s": round(wall, 1)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["00", "01", "02", "03", "04"])
