"""An offline conversational set: system prompts, multi-turn chats and verifiable task rows.

Teaching a *base* model to converse needs conversations, and the CPU demo's machine has no
Hugging Face Hub. ``resources/conversations.jsonl`` ships with the package instead: prompts
written for this project (templates x topic lists, some with a system prompt, some with a
follow-up user turn), answered by sequence-level distillation from SmolLM2-135M-Instruct
(Apache-2.0), plus rows of the built-in verifiable tasks (upper, json, recall). Its splits
``train``, ``dev`` and ``test`` share no prompt topic: the topic lists were split before any
prompt was generated. ``resources/conversations.md`` is the provenance (teacher, decoding,
seed, drop report, rows per split and source); ``scripts/make_conversations.py`` builds it.

One caveat travels with the data: the dev/test references were sampled from the teacher, so
ROUGE-L or NLL against them favours SmolLM2-135M-Instruct itself in a model comparison.

Rows have the columns ``messages``, ``source`` (``distilled/smollm2-135m-instruct`` or
``builtin-tasks/<task>``), ``task`` and ``answer`` (both empty for distilled rows). Every
row is checked with `sftkit.data.validate_conversation` when loaded; a bad row raises with
its line number and reason, since a shipped file with a bad row is a bug, not noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from .data import MESSAGES_FEATURES, validate_conversation
from .tasks import SPLITS

__all__ = ["RESOURCE", "SPLITS", "COLUMNS", "FEATURES", "load_offline_conversations", "offline_conversation_splits"]

RESOURCE = Path(__file__).parent / "resources" / "conversations.jsonl"
COLUMNS = ("messages", "source", "task", "answer")
FEATURES = datasets.Features(
    {
        "messages": MESSAGES_FEATURES["messages"],
        "source": datasets.Value("string"),
        "task": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)


def _check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def _read_rows(split: str) -> list[dict]:
    """The rows of one split, in file order, each validated (line numbers are 1-based)."""
    if not RESOURCE.is_file():
        raise FileNotFoundError(
            f"{RESOURCE} is missing: reinstall sftkit (it is package data) or rebuild it with "
            "`python scripts/make_conversations.py` from the repository root"
        )
    rows = []
    with RESOURCE.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{RESOURCE.name} line {number}: invalid JSON ({error})") from None
            reason = validate_conversation(row)
            if reason is None and not (isinstance(row.get("source"), str) and row["source"]):
                reason = "no source"
            if reason is None and row.get("split") not in SPLITS:
                reason = f"unknown split {row.get('split')!r}"
            if reason is not None:
                raise ValueError(f"{RESOURCE.name} line {number}: {reason}")
            if row["split"] != split:
                continue
            rows.append(
                {
                    "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]],
                    "source": row["source"],
                    "task": row.get("task") or "",
                    "answer": row.get("answer") or "",
                }
            )
    return rows


def load_offline_conversations(split: str) -> datasets.Dataset:
    """The rows of one split (``train``, ``dev`` or ``test``), in file order.

    Columns: ``messages``, ``source``, ``task``, ``answer``.
    """
    _check_split(split)
    return datasets.Dataset.from_list(_read_rows(split), features=FEATURES)


def offline_conversation_splits(
    train_size: int | None, eval_size: int | None, eval_split: str = "test", seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and held-out sets: ``train_size`` train rows shuffled by ``seed`` (None: all of them),
    and the first ``eval_size`` rows of ``eval_split`` (``test`` or ``dev``) in file order.

    Asking for more rows than a split has raises instead of returning fewer. The eval rows
    are not shuffled, so the same ``eval_size`` always gives the same rows,
    whatever the seed: seeds vary the training data, never the yardstick.
    """
    _check_split(eval_split, ("test", "dev"))
    for name, size in (("train_size", train_size), ("eval_size", eval_size)):
        if size is not None and size < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {size}")
    train = load_offline_conversations("train").shuffle(seed=seed)
    held_out = load_offline_conversations(eval_split)
    for name, size, data, split in (("train_size", train_size, train, "train"), ("eval_size", eval_size, held_out, eval_split)):
        if size is not None and size > len(data):
            raise ValueError(f"{name}={size} but the {split} split has only {len(data)} rows")
    if train_size is not None:
        train = train.select(range(train_size))
    if eval_size is not None:
        held_out = held_out.select(range(eval_size))
    return train.flatten_indices(), held_out
