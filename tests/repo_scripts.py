"""The repository's scripts (scripts/*.py, benchmarks/*.py) as modules, for the tests of their functions.

The scripts are run from a shell, not installed with the package, so a test loads one from
its file; this is the one place that does it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def load_script(name: str, folder: str = "scripts") -> ModuleType:
    """``<folder>/<name>.py`` (scripts or benchmarks) imported as the module `name` (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: a script's dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
