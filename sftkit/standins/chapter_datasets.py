"""The later chapters' dataset stand-ins: preference pairs (06), Alpaca rows (07), AG News (08).

Each is written in its Hub dataset's layout and features (parquet under ``data/``, a README
with ``dataset_info``), so a chapter's `t4` branch reads it with the same `load_dataset` call
as the Hub id. Contents are recombined from the offline conversations or, for the news
headlines, filled in from templates written for this project.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from .paths import ALPACA_ID, NEWS_ID, PREFERENCE_ID
from .smoltalk import ROW_GROUP_ROWS

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
ALPACA_FEATURES = datasets.Features({name: datasets.Value("string")
                                     for name in ("instruction", "input", "output", "text")})
NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
NEWS_FEATURES = datasets.Features({"text": datasets.Value("string"),
                                   "label": datasets.ClassLabel(names=list(NEWS_LABELS))})
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
                      f"(https://huggingface.co/datasets/{hub_id}), "
                      "so that `datasets.load_dataset(this_folder, split=...)` "
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
    return [{"config_name": "default",
             "data_files": [{"split": split, "path": f"data/{split}-*"} for split in splits]}]


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
    from ..offline_conversations import load_offline_conversations

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
    from ..offline_conversations import load_offline_conversations

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
