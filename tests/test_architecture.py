"""Imports run one way: no module imports a module of a higher layer (DESIGN.md, issue 16)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sftkit"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    {"config"},
    {"data", "tasks", "offline_conversations", "run_data", "models", "standins"},
    {"chat", "masking", "lora", "lm_head"},
    {"metrics", "generate", "measure", "adapters", "train", "run_card"},
    {"instructions", "refusal", "evaluation", "viz"},
    {"runs"},
    {"trials", "preference", "alpaca", "classify", "distill"},
    {"demo"},
    {"cli", "__init__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _sftkit_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("sftkit."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sftkit."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= set(LAYER_OF), f"modules without a layer: {sorted(modules - set(LAYER_OF))}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.glob("*.py")):
        for target in _sftkit_imports(path):
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[path.stem]:
                upward.append(f"{path.stem} (layer {LAYER_OF[path.stem]}) imports {target} (layer {LAYER_OF[target]})")
    assert not upward, "\n".join(upward)


def test_the_import_reader_sees_relative_and_lazy_imports():
    # demo imports runs at the top and chat inside a function; both must be seen, or the
    # test above could pass by reading nothing.
    assert {"runs", "evaluation", "chat", "run_data"} <= _sftkit_imports(PACKAGE / "demo.py")
