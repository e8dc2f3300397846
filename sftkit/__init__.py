"""sftkit: parameter-efficient supervised fine-tuning (LoRA SFT) of small base language models.

The notebooks, the `sftkit` command and the tests all call the functions re-exported here.
Imports are lazy so that `import sftkit` (and `sftkit --help`) stays fast: torch and
transformers load only when a function that needs them is first used.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# The library's modules report progress on loggers under "sftkit" (`logging.getLogger(__name__)`);
# it prints nothing unless an application asks: `sftkit.cli.main` and the notebooks' first cell
# (`sftkit.notebook.quiet_libraries`) show them as "[sftkit] ..." lines.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "load_tokenizer": "models",
    "load_model": "models",
    "hardware_name": "models",
    "prepare_tokenizer": "chat",
    "prepare_model": "chat",
    "tokenize_conversation": "masking",
    "tokenize_dataset": "masking",
    "inspect_mask": "masking",
    "load_conversations": "data",
    "split_dataset": "data",
    "make_task_splits": "tasks",
    "generate_batch": "generate",
    "train_lora": "train",
    "evaluate_model": "evaluation",
    "get_preset": "config",
    "resolve_preset": "config",
    "RunConfig": "config",
    "run_demo": "demo",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


# Modules and subpackages reachable as attributes; the later chapters' methods are under
# `sftkit.chapters`, the evaluation prompt sets and their scorers under `sftkit.evalsets`.
_SUBMODULES = set(_EXPORTS.values()) | {
    "metrics", "viz", "lora", "measure", "adapters", "run_card", "runs", "cli",
    "chapters", "evalsets",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    if name in _SUBMODULES:  # `import sftkit; sftkit.config` works like `import sftkit.config`
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sftkit' has no attribute {name!r}")
