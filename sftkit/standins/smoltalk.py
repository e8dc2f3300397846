"""The smol-smoltalk stand-in: the offline conversations recombined into smol-smoltalk's kinds of rows.

The `t4` preset's data path (streaming a sample, the ``test`` split, the ``source`` column,
rows longer than ``max_length``) needs a dataset shaped like the Hub's: the same features, a
README with ``configs``, parquet files with many row groups, rows sorted by ``source``. This
module writes one from the package's offline set, in seconds and without a network.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from ..report import markdown_table
from .paths import DATASET_ID

# smol-smoltalk's features as its README declares them: `messages` is a list of structs whose
# fields are `content` then `role` (alphabetical, as the Hub's parquet conversion writes them).
HUB_FEATURES = datasets.Features(
    {
        "messages": datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")}),
        "source": datasets.Value("string"),
    }
)

# System prompts for the stand-in's "systemchats" rows (written for this project).
SYSTEM_PROMPTS = (
    "You are a concise assistant. Answer in a few sentences.",
    "You are a friendly tutor who explains things simply.",
    "You are a careful assistant: say so when you are not sure.",
    "You are an assistant for a busy professional; keep replies short and practical.",
    "You are a helpful assistant who writes in plain English.",
)
# Row kinds, named after smol-smoltalk's sub-datasets with a "standin-" prefix, and their share
# of a split. Task rows (from the built-in tasks) are drawn among the single exchanges.
KIND_WEIGHTS = {
    "standin-magpie": 0.35,
    "standin-systemchats": 0.25,
    "standin-everyday-convs": 0.25,
    "standin-tasks": 0.10,
    "standin-longalign": 0.05,
}
# Rows per parquet row group. A streamed sample visits row groups in a random order and mixes
# the rows of `buffer_size / ROW_GROUP_ROWS` of them (`sftkit.data.stream_sample`); a big Hub
# split has hundreds of row groups, so the small stand-in gets small ones (40 in 4,000 rows).
ROW_GROUP_ROWS = 100
# A "longalign" row joins offline conversations until it has this many characters: about
# 1,500 SmolLM2 tokens, beyond the t4 preset's max_length of 1024.
LONG_CHARS = 6000


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    # Field order content, role: what the Hub's parquet holds.
    return [{"content": m["content"], "role": m["role"]} for m in row["messages"]]


def _join(parts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """One conversation from several: the first one's system prompt (if any), then every turn."""
    joined = _messages(parts[0])
    for part in parts[1:]:
        joined.extend(m for m in _messages(part) if m["role"] != "system")
    return joined


def _split_rows(offline: datasets.Dataset, n_rows: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n_rows` stand-in rows recombined from one split of the offline conversations, sorted by source."""
    records = [dict(row) for row in offline]
    tasks = [r for r in records if r["task"]]
    chats = [r for r in records if not r["task"]]
    plain = [r for r in chats if r["messages"][0]["role"] != "system"]
    if not tasks or not plain:
        raise ValueError("the offline split needs both task rows and conversations without a system prompt")
    kinds = list(KIND_WEIGHTS)
    counts = {kind: int(round(KIND_WEIGHTS[kind] * n_rows)) for kind in kinds}
    counts["standin-magpie"] += n_rows - sum(counts.values())
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for _ in range(counts[kind]):
            if kind == "standin-magpie":
                messages = _messages(rng.choice(chats))
            elif kind == "standin-tasks":
                messages = _messages(rng.choice(tasks))
            elif kind == "standin-systemchats":
                messages = [{"content": rng.choice(SYSTEM_PROMPTS), "role": "system"}] + _join([rng.choice(plain)])
            elif kind == "standin-everyday-convs":
                messages = _join(rng.sample(chats, rng.randint(2, 3)))
            else:  # standin-longalign
                parts = [rng.choice(chats)]
                while sum(len(m["content"]) for m in _join(parts)) < LONG_CHARS:
                    parts.append(rng.choice(plain))
                messages = _join(parts)
            rows.append({"messages": messages, "source": kind})
    # Sorted by source (stable): a first-N read sees one source only.
    return sorted(rows, key=lambda row: row["source"])


def _dataset_card(counts: dict[str, int], sizes: dict[str, int], download_size: int,
                  sources: dict[str, dict[str, int]], seed: int) -> str:
    import yaml

    front = {
        "dataset_info": {
            "features": [
                {"name": "messages",
                 "list": [{"name": "content", "dtype": "string"}, {"name": "role", "dtype": "string"}]},
                {"name": "source", "dtype": "string"},
            ],
            "splits": [{"name": split, "num_bytes": sizes[split], "num_examples": n} for split, n in counts.items()],
            "download_size": download_size,
            "dataset_size": sum(sizes.values()),
        },
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in counts],
            }
        ],
    }
    table = markdown_table(["source", *counts],
                           [(source, *(sources[split].get(source, 0) for split in counts))
                            for source in sorted({s for split in sources.values() for s in split})],
                           align=["left"] + ["right"] * len(counts))
    return "\n".join([
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# Stand-in for {DATASET_ID} (offline, built by `sftkit standins`)",
        "",
        f"Not the real dataset. A local folder with the layout and features of [{DATASET_ID}]"
        f"(https://huggingface.co/datasets/{DATASET_ID}) (`messages`: list of `{{content, role}}`, "
        "`source`: string; `data/train-*.parquet`, `data/test-*.parquet`), so that "
        "`datasets.load_dataset(this_folder, split=..., streaming=True)` runs the same code as the Hub id. "
        "It exists for CI: the `t4` preset's path runs on it before a Colab user runs it.",
        "",
        "## Provenance",
        "",
        "- Conversations: `sftkit/resources/conversations.jsonl`, the package's offline set (see its "
        "`conversations.md`): conversations written for the sftkit project (Apache-2.0), instruction-following "
        "rows kept only when IFEval's official checker passes them, and rows of sftkit's built-in "
        "verifiable tasks.",
        "- Recombined by `sftkit.standins` with `random.Random(" + str(seed) + ")` into smol-smoltalk's kinds "
        "of rows: single exchanges (`standin-magpie`), a system prompt written for this project before a "
        "conversation (`standin-systemchats`), two or three conversations joined into one multi-turn chat "
        "(`standin-everyday-convs`), task rows (`standin-tasks`), and conversations joined until a row has at "
        f"least {LONG_CHARS} characters, longer than the `t4` preset's `max_length` of 1024 tokens "
        "(`standin-longalign`). Rows repeat: the offline set is smaller than the stand-in.",
        f"- Parquet row groups of {ROW_GROUP_ROWS} rows, so that the small stand-in has tens of them, as a big "
        "Hub split has hundreds: a streamed sample visits row groups in a random order.",
        "- `train` is built from the offline set's `train` split and `test` from its `test` split; their "
        "prompt topics are disjoint. Both splits are sorted by `source`, so reading the first rows gives one "
        "source only.",
        "",
        "## Rows per source",
        "",
        *table,
        "",
    ])


def build_dataset_standin(folder: str | Path, train_rows: int = 4000, test_rows: int = 400, seed: int = 0) -> Path:
    """Write the smol-smoltalk stand-in (README.md with configs, two parquet files) into `folder`."""
    from ..offline_conversations import load_offline_conversations

    if train_rows < len(KIND_WEIGHTS) or test_rows < len(KIND_WEIGHTS):
        raise ValueError(f"train_rows and test_rows must be at least {len(KIND_WEIGHTS)} (one row per source)")
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    download_size = 0
    sources: dict[str, dict[str, int]] = {}
    for split, n_rows in (("train", train_rows), ("test", test_rows)):
        rows = _split_rows(load_offline_conversations(split), n_rows, rng)
        dataset = datasets.Dataset.from_list(rows, features=HUB_FEATURES)
        parquet = folder / "data" / f"{split}-00000-of-00001.parquet"
        dataset.to_parquet(str(parquet), batch_size=ROW_GROUP_ROWS)
        counts[split] = len(rows)
        sizes[split] = dataset.data.nbytes  # Arrow bytes, what the Hub's num_bytes counts
        download_size += parquet.stat().st_size
        sources[split] = {}
        for row in rows:
            sources[split][row["source"]] = sources[split].get(row["source"], 0) + 1
    (folder / "README.md").write_text(_dataset_card(counts, sizes, download_size, sources, seed))
    return folder
