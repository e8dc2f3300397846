"""An offline conversational set: conversations written for the project, instruction rows, task rows.

Teaching a *base* model to converse needs conversations worth imitating, and the CPU demo's
machine has no Hugging Face Hub. ``resources/conversations.jsonl`` ships with the package
instead, in the spirit of LIMA (Zhou et al. 2023: about 1,000 carefully written examples teach
a base model to converse) and in the proportions of smol-smoltalk's mix:

- conversations written for the project (``source`` = `SOURCE_WRITTEN`): everyday multi-turn
  chats whose follow-ups refer back, system prompts that set a persona, tone or format, short
  factual answers, explanations and how-tos, lists of exactly the number asked for, rewriting,
  summarising and extraction of a given text, refusals of harmful requests and help with
  harmless ones that merely sound edgy;
- instruction-following rows in IFEval's instruction families (`SOURCE_IFEVAL`), built from
  written answers and kept only when lm-eval's official checker passes every instruction;
- rows of the built-in verifiable tasks (``builtin-tasks/<task>``: upper, json, recall).

The ``dev`` and ``test`` splits are written apart from training, about subjects that no
training row touches (``data/eval_topics.txt``), and no 8 consecutive words are shared
(`sftkit.decontamination`). ``resources/conversations.md`` is the card (counts by kind and
source, how each kind was written and checked, licence); ``scripts/build_conversations.py``
rebuilds both files exactly from ``data/``.

Rows have the columns ``messages``, ``source``, ``task`` and ``answer`` (both empty except for
task rows). Every row is checked with `sftkit.data.validate_conversation` when loaded; a bad
row raises with its line number and reason, since a shipped file with a bad row is a bug, not
noise.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import datasets

from .data import MESSAGES_FEATURES, validate_conversation
from .tasks import SPLITS

__all__ = ["RESOURCE", "SPLITS", "COLUMNS", "FEATURES", "SOURCE_WRITTEN", "SOURCE_IFEVAL", "SOURCE_TASKS",
           "load_offline_conversations", "offline_conversation_splits", "trained_instruction_ids"]

RESOURCE = Path(__file__).parent / "resources" / "conversations.jsonl"
COLUMNS = ("messages", "source", "task", "answer")
#: Who wrote a row's replies: the project's authors; the same, built from written answers and
#: kept only when lm-eval's IFEval checker passes them; the built-in task generators.
SOURCE_WRITTEN = "written-for-sftkit"
SOURCE_IFEVAL = "written-for-sftkit/ifeval-checked"
SOURCE_TASKS = "builtin-tasks"
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


def _read_rows(split: str, with_kind: bool = False) -> list[dict]:
    """The rows of one split, in file order, each validated (line numbers are 1-based); with
    ``with_kind`` each also carries its ``kind`` (the card's row kinds: everyday, ifeval, ...)."""
    if not RESOURCE.is_file():
        raise FileNotFoundError(
            f"{RESOURCE} is missing: reinstall sftkit (it is package data) or rebuild it with "
            "`python scripts/build_conversations.py` from the repository root"
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
                    **({"kind": row.get("kind") or ""} if with_kind else {}),
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
    train_size: int | None, eval_size: int | None, eval_split: str = "test", seed: int = 0,
    kind_rows: dict[str, int] | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and held-out sets: ``train_size`` train rows shuffled by ``seed`` (None: all of them),
    and the first ``eval_size`` rows of ``eval_split`` (``test`` or ``dev``) in file order.

    ``kind_rows`` ({kind: rows}) sets the mix: that many rows of each named kind (``ifeval``,
    ``refusal`` ...; the kinds of the card), and the rest of ``train_size`` drawn from the other
    kinds, all in the seeded order. Empty or None: a plain seeded sample, whose shares follow the
    file's. Asking for more rows than a split (or a kind) has raises instead of returning fewer.
    The eval rows are not shuffled, so the same ``eval_size`` always gives the same rows,
    whatever the seed: seeds vary the training data, never the yardstick.
    """
    _check_split(eval_split, ("test", "dev"))
    for name, size in (("train_size", train_size), ("eval_size", eval_size)):
        if size is not None and size < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {size}")
    kind_rows = dict(kind_rows or {})
    rows = _read_rows("train", with_kind=True)
    with_kind = datasets.Features({**FEATURES, "kind": datasets.Value("string")})
    train = datasets.Dataset.from_list(rows, features=with_kind).shuffle(seed=seed)
    held_out = load_offline_conversations(eval_split)
    for name, size, data, split in (("train_size", train_size, train, "train"),
                                    ("eval_size", eval_size, held_out, eval_split)):
        if size is not None and size > len(data):
            raise ValueError(f"{name}={size} but the {split} split has only {len(data)} rows")
    if kind_rows:
        size = len(train) if train_size is None else train_size
        train = train.select(_mixed_positions(train["kind"], kind_rows, size))
    elif train_size is not None:
        train = train.select(range(train_size))
    if eval_size is not None:
        held_out = held_out.select(range(eval_size))
    return train.remove_columns("kind").flatten_indices(), held_out


def _mixed_positions(kinds: list[str], kind_rows: dict[str, int], train_size: int) -> list[int]:
    """Positions (in the shuffled order, kept) of ``kind_rows[k]`` rows of each named kind ``k``
    and ``train_size - sum(kind_rows)`` rows of the other kinds."""
    available = Counter(kinds)
    for kind, wanted in kind_rows.items():
        if kind not in available:
            known = ", ".join(sorted(available))
            raise ValueError(f"data.kind_rows: no training row has kind {kind!r} (kinds: {known})")
        if not 0 <= wanted <= available[kind]:
            raise ValueError(f"data.kind_rows: {kind}={wanted} but the train split has {available[kind]} such rows")
    rest = train_size - sum(kind_rows.values())
    others = sum(n for kind, n in available.items() if kind not in kind_rows)
    if not 0 <= rest <= others:
        raise ValueError(f"data.kind_rows asks for {sum(kind_rows.values())} rows of the named kinds, leaving "
                         f"{rest} of data.train_size={train_size} for the other kinds, which have {others} rows")
    quota = {**kind_rows, None: rest}
    positions = []
    for position, kind in enumerate(kinds):
        key = kind if kind in kind_rows else None
        if quota[key] > 0:
            quota[key] -= 1
            positions.append(position)
    return positions


@functools.cache  # read once per process: the suite asks for every model it scores
def trained_instruction_ids() -> frozenset[str]:
    """The IFEval instruction ids that the training split's instruction rows contain."""
    ids: set[str] = set()
    with RESOURCE.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row.get("split") == "train":
                    ids.update(row.get("instruction_id_list") or ())
    return frozenset(ids)
