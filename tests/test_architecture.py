"""Imports run one way: no module imports a module of a higher layer, and the core never a chapter
(the layers are listed in LAYERS below).

And every module and function stays small enough to read in one sitting: at most `MAX_MODULE_LINES`
lines per module and `MAX_FUNCTION_LINES` per function (`test_modules_and_functions_stay_small`).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sftkit"

# Lowest first. A module may import its own layer and the layers below it. Names are dotted
# paths inside sftkit ("chapters.trials"); a subpackage's __init__ is the subpackage's name. A
# module split into a subpackage ("data", "standins") gives its parts the layer it had.
LAYERS = [
    {"config_types", "config", "report"},
    {"data", "data.validation", "data.errors", "data.converters", "data.hub_access", "data.readers", "data.loading",
     "data.sampling", "data.splits", "data.stats",
     "tasks", "offline_conversations", "run_data", "models", "decontamination",
     "standins", "standins.paths", "standins.smoltalk", "standins.chapter_datasets", "standins.causal_lm",
     "standins.encoder"},
    {"chat", "masking", "lora", "lm_head"},
    {"metrics", "generate", "measure", "estimates", "adapters", "precision", "train", "run_card"},
    {"evalsets", "ifeval", "evalsets.refusal", "evalsets.facts", "evaluation", "viz", "judge"},
    {"runs", "export", "talk", "hub", "notebook"},
    {"chapters", "chapters.trials", "chapters.trial_choice", "chapters.preference",
     "chapters.verifiable_preferences", "chapters.alpaca", "chapters.classify", "chapters.distill"},
    {"demo"},
    {"cli", "__init__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
CHAPTERS = "chapters"
# Size limits: a module longer than this does more than one job, and a function longer than this
# is several steps that want names of their own.
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _module_files() -> dict[str, Path]:
    """{dotted module name inside sftkit: its file} for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _resolve(dotted: str) -> str:
    """The module a dotted import target names: its longest prefix that is a module."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return parts[0]


def _sftkit_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The sftkit modules a file imports (relative or absolute; inside functions too, unless `top_level_only`)."""
    relative = path.relative_to(PACKAGE)
    package = list(relative.parent.parts)  # the package a relative import starts from
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    found.add(_resolve(".".join(base + [node.module])))
                else:
                    found.update(_resolve(".".join(base + [alias.name])) for alias in node.names)
            elif node.module and node.module.startswith("sftkit."):
                found.add(_resolve(node.module.removeprefix("sftkit.")))
        elif isinstance(node, ast.Import):
            found.update(_resolve(a.name.removeprefix("sftkit.")) for a in node.names if a.name.startswith("sftkit."))
    return found


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYER_OF), f"modules without a layer: {sorted(set(MODULES) - set(LAYER_OF))}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, path in MODULES.items():
        for target in _sftkit_imports(path):
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[name]:
                upward.append(f"{name} (layer {LAYER_OF[name]}) imports {target} (layer {LAYER_OF[target]})")
    assert not upward, "\n".join(upward)


def test_the_core_never_imports_a_chapter():
    # The later chapters' methods sit beside the core pipeline, not under it: no module outside
    # sftkit.chapters uses them, except the command line, which loads `trials` lazily for
    # `sftkit trials` (so `sftkit --help` and the core never pay for it).
    def is_chapter(name: str) -> bool:
        return name == CHAPTERS or name.startswith(CHAPTERS + ".")

    offenders = []
    for name, path in MODULES.items():
        if is_chapter(name):
            continue
        chapters = {target for target in _sftkit_imports(path) if is_chapter(target)}
        if name == "cli":
            chapters &= _sftkit_imports(path, top_level_only=True)
        offenders += [f"{name} imports {target}" for target in sorted(chapters)]
    assert not offenders, "\n".join(offenders)


def test_the_import_reader_sees_relative_and_lazy_imports():
    # demo imports runs at the top and chat inside a function; both must be seen, or the
    # tests above could pass by reading nothing. Likewise a chapter's "from ..config" and
    # cli's lazy "from .chapters.trials".
    assert {"runs", "evaluation", "chat", "run_data"} <= _sftkit_imports(PACKAGE / "demo.py")
    assert {"config", "train", "runs"} <= _sftkit_imports(PACKAGE / "chapters" / "trials.py")
    assert "evalsets" in _sftkit_imports(PACKAGE / "evalsets" / "refusal.py")
    assert "chapters.trials" in _sftkit_imports(PACKAGE / "cli.py")
    assert "chapters.trials" not in _sftkit_imports(PACKAGE / "cli.py", top_level_only=True)


def _oversized() -> list[str]:
    """Every module over `MAX_MODULE_LINES` and every function (or method) over `MAX_FUNCTION_LINES`, with its size."""
    offenders = []
    for path in MODULES.values():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"module sftkit/{path.relative_to(PACKAGE)}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # signature, docstring and body
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"function sftkit/{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: "
                                     f"{length} lines (limit {MAX_FUNCTION_LINES})")
    return offenders


def test_modules_and_functions_stay_small():
    offenders = _oversized()
    assert not offenders, "split these into parts of one job each:\n" + "\n".join(offenders)
