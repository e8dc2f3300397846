"""Build the offline conversational set and its card from ``data/``, exactly and checkably.

    python scripts/build_conversations.py           # write sftkit/resources/conversations.{jsonl,md}
    python scripts/build_conversations.py --check   # exit 1 when the committed files differ from a build

The set is assembled, not generated: the conversations are written for the project
(``data/conversations/``, one file per kind, rules in ``data/README.md``); the instruction rows
are built from written answers by ``scripts/ifeval_training.py`` and kept only when lm-eval's
official IFEval checker passes them; the task rows come from `sftkit.tasks`. Everything is
seeded and ordered, so a build writes the same bytes every time and ``--check`` (run by the
tests) proves the shipped file is what this script makes from ``data/``.

A build refuses to write (and names the file, row and reason) when a written row breaks the
rules, a prompt is shared across splits, or a training row shares 8 consecutive words with an
evaluation prompt (`sftkit.decontamination`; IFEval's canonical instruction wording excepted).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_written_rows import row_problems  # noqa: E402  (a sibling script)
from ifeval_training import build_rows as build_ifeval_rows  # noqa: E402

from sftkit.decontamination import NGRAM, overlaps  # noqa: E402
from sftkit.offline_conversations import SOURCE_IFEVAL, SOURCE_TASKS, SOURCE_WRITTEN  # noqa: E402

DATA = ROOT / "data" / "conversations"
IFEVAL_CONTENT = DATA / "train" / "ifeval_content.jsonl"
OUT = ROOT / "sftkit" / "resources"
SEED = 0
#: Built-in task rows per task and split: a small share, so the demo can report exact match.
TASKS = ("upper", "json", "recall")
TASK_ROWS = {"train": 30, "dev": 4, "test": 4}

KIND_NOTES = {
    "everyday": "everyday multi-turn chats; follow-ups refer back and never copy the earlier reply",
    "system": "a system prompt sets a persona, tone, format or scope; every reply honours it",
    "fact": "short factual answers, a direct answer first",
    "howto": "explanations and step-by-step how-tos of fitting length",
    "list": "exactly the number of items asked for",
    "rewrite": "the reply is the rewritten text (formal, casual, simpler, corrected, shorter ...)",
    "summary": "faithful summaries of a given paragraph, in the form asked for",
    "extract": "fields of a given text as JSON that parses; missing values null",
    "refusal": "clearly harmful requests, refused briefly and politely with an alternative",
    "no-refusal": "harmless requests that sound edgy, answered fully",
    "ifeval": "IFEval instruction families, kept only when lm-eval's official checker passes",
}


def read_written(path: Path, split: str) -> list[dict]:
    """The rows of one written file as set rows; raises naming the file, line and reason."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        problems = row_problems(row, training=split == "train")
        if problems:
            raise ValueError(f"{path.relative_to(ROOT)} line {number}: {'; '.join(problems)}")
        rows.append({"messages": row["messages"], "source": SOURCE_WRITTEN, "split": split, "kind": row["kind"],
                     "topic": row["topic"], "task": "", "answer": ""})
    return rows


def task_rows(split: str) -> list[dict]:
    from sftkit.tasks import make_task_examples

    rows = make_task_examples(TASK_ROWS[split] * len(TASKS), split, SEED, TASKS, mix={})
    return [{"messages": r["messages"], "source": f"{SOURCE_TASKS}/{r['task']}", "split": split, "kind": "task",
             "topic": r["task"], "task": r["task"], "answer": r["answer"]} for r in rows]


def instruction_rows() -> tuple[list[dict], dict[str, int]]:
    rows, drops = build_ifeval_rows(IFEVAL_CONTENT, seed=SEED)
    out = []
    for index, row in enumerate(rows):
        problems = row_problems({**row, "kind": "ifeval"}, training=True)
        if problems:
            raise ValueError(f"instruction row {index} ({row['topic']}): {'; '.join(problems)}")
        out.append({"messages": row["messages"], "source": SOURCE_IFEVAL, "split": "train", "kind": "ifeval",
                    "topic": row["topic"], "task": "", "answer": "",
                    "instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]})
    return out, drops


def evaluation_prompts() -> tuple[list[tuple[str, str]], list[str]]:
    """Every text an evaluation shows a model, named, and IFEval's canonical instruction wording."""
    from lm_eval.tasks.ifeval import instructions_registry

    from sftkit.evalsets.facts import load_facts
    from sftkit.ifeval import offline_rows

    texts, boilerplate = [], []
    for row in offline_rows():
        texts.append((f"ifeval:{row.id}", row.prompt))
        for instruction_id, kwargs in zip(row.instruction_id_list, row.kwargs):
            if instruction_id != "combination:repeat_prompt":  # its description contains the task itself
                instruction = instructions_registry.INSTRUCTION_DICT[instruction_id](instruction_id)
                boilerplate.append(instruction.build_description(**kwargs))
    texts += [(f"facts:{fact.id}", fact.question) for fact in load_facts()]
    return texts, boilerplate


def check_disjoint(rows: list[dict]) -> int:
    """Raise when a prompt is shared across splits or a training row overlaps an evaluation text;
    returns how many (training row, evaluation text) pairs were compared."""
    first_user = {}
    for row in rows:
        if row["source"].startswith(SOURCE_TASKS):
            continue  # task rows draw from per-split pools (sftkit.tasks), disjoint by construction
        text = next(m["content"] for m in row["messages"] if m["role"] == "user")
        other = first_user.setdefault(text, row["split"])
        if other != row["split"]:
            raise ValueError(f"the prompt {text[:60]!r} is in both the {other} and the {row['split']} split")
    written = [r for r in rows if not r["source"].startswith(SOURCE_TASKS)]
    training = [(f"train:{i}:{r['topic']}", " ".join(m["content"] for m in r["messages"]))
                for i, r in enumerate(written) if r["split"] == "train"]
    evaluation, boilerplate = evaluation_prompts()
    evaluation += [(f"{r['split']}:{i}:{r['topic']}", " ".join(m["content"] for m in r["messages"]))
                   for i, r in enumerate(written) if r["split"] != "train"]
    found = overlaps(training, evaluation, boilerplate)
    if found:
        listing = "\n".join(f"  {a} ~ {b}: '{shared}'" for a, b, shared in found[:20])
        raise ValueError(f"{len(found)} training rows share {NGRAM} consecutive words with an evaluation text:\n"
                         f"{listing}")
    return len(training) * len(evaluation)


def build() -> tuple[list[dict], dict]:
    """Every row of the set in file order, and what the card reports."""
    rows = []
    for path in sorted((DATA / "train").glob("*.jsonl")):
        if path != IFEVAL_CONTENT:
            rows += read_written(path, "train")
    ifeval, drops = instruction_rows()
    rows += ifeval + task_rows("train")
    random.Random(f"{SEED}-train").shuffle(rows)
    for split in ("dev", "test"):
        held_out = read_written(DATA / "eval" / f"{split}.jsonl", split) + task_rows(split)
        random.Random(f"{SEED}-{split}").shuffle(held_out)
        rows += held_out
    compared = check_disjoint(rows)
    return rows, {"ifeval_drops": drops, "decontamination_pairs": compared}


def card(rows: list[dict], report: dict) -> str:
    """conversations.md: what is in the set, who wrote it, how it was checked, its licence."""
    splits = ("train", "dev", "test")
    kinds = sorted({r["kind"] for r in rows}, key=lambda k: (k == "task", k))
    count = Counter((r["split"], r["kind"]) for r in rows)
    sources = Counter((r["split"], r["source"]) for r in rows)
    lines = [
        "# conversations.jsonl",
        "",
        "The offline conversational set of the `cpu-demo` preset (`sftkit.offline_conversations`), built by",
        "`scripts/build_conversations.py` from `data/` (see `data/README.md`); rerunning it writes this",
        "file and the set byte for byte (a test checks).",
        "",
        "## Who wrote the replies (`source`)",
        "",
        f"- `{SOURCE_WRITTEN}`: conversations written for this project by its authors (drafted with AI",
        "  assistance and reviewed against the rules in `data/README.md`: correct, does what was asked,",
        "  follow-ups build on earlier turns, system prompts honoured, at most 150 words a conversation).",
        f"- `{SOURCE_IFEVAL}`: single-turn prompts in 19 of IFEval's 25 instruction families, worded",
        "  in the project's own phrasings and parameters; the reply is built from a written answer",
        "  (lowercased, bulleted, titled, ...) and kept only when lm-eval's official strict checker passes",
        "  every instruction of its prompt. Six families are left out on purpose, to measure what",
        "  generalises:",
        *[f"  `{i}`" + ("." if i == HELD_OUT_IDS[-1] else ",") for i in HELD_OUT_IDS],
        f"- `{SOURCE_TASKS}/<task>`: the built-in verifiable tasks ({', '.join(TASKS)}; `sftkit.tasks`),",
        "  with `task` and `answer` fields for exact match.",
        "",
        "No reply comes from a model.",
        "",
        "## Rows by kind",
        "",
        "| kind | what | " + " | ".join(splits) + " |",
        "| --- | --- |" + " ---: |" * len(splits),
    ]
    for kind in kinds:
        note = KIND_NOTES.get(kind, "built-in verifiable tasks" if kind == "task" else "")
        lines.append(f"| {kind} | {note} | " + " | ".join(str(count[(s, kind)]) for s in splits) + " |")
    lines.append("| **all** | | " + " | ".join(str(sum(r["split"] == s for r in rows)) for s in splits) + " |")
    lines += ["", "| source | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
    for source in sorted({r["source"] for r in rows}):
        lines.append(f"| {source} | " + " | ".join(str(sources[(s, source)]) for s in splits) + " |")
    lines += ["", "| split | with a system prompt | with 2+ user turns | median words per reply |",
              "| --- | ---: | ---: | ---: |"]
    for split in splits:
        part = [r for r in rows if r["split"] == split]
        system = sum(r["messages"][0]["role"] == "system" for r in part)
        multi = sum(sum(m["role"] == "user" for m in r["messages"]) >= 2 for r in part)
        words = [len(m["content"].split()) for r in part for m in r["messages"] if m["role"] == "assistant"]
        lines.append(f"| {split} | {system} | {multi} | {statistics.median(words):g} |")
    ids = Counter(i for r in rows for i in r.get("instruction_id_list", ()))
    lines += ["", "## Instruction rows per IFEval id (train)", "", "| instruction id | rows |", "| --- | ---: |"]
    lines += [f"| {i} | {n} |" for i, n in sorted(ids.items())]
    drops = report["ifeval_drops"]
    lines += ["", "Built rows the checker rejected (counted, not kept): "
              + ("; ".join(f"{reason}: {n}" for reason, n in sorted(drops.items())) if drops else "none") + "."]
    lines += [
        "",
        "## Held out",
        "",
        "- The `dev` and `test` conversations are written apart from training, about the subjects in",
        "  `data/eval_topics.txt`, which no training row mentions (a word list checks every training row).",
        "  So are the IFEval-format prompts (`sftkit/evalsets/ifeval_prompts.jsonl`) and the short-answer",
        "  facts (`sftkit/evalsets/facts.jsonl`).",
        f"- Decontamination: no training row shares {NGRAM} consecutive words with a dev or test conversation,",
        "  an IFEval-format prompt or a fact question, IFEval's canonical instruction wording excepted",
        f"  ({report['decontamination_pairs']:,} pairs compared; `sftkit.decontamination`).",
        "- Choose settings on `dev`; `test` is for the final figures.",
        "",
        "## Licence",
        "",
        "Apache-2.0, as the rest of sftkit: the rows are the project's own writing.",
        "",
    ]
    return "\n".join(lines)


#: IFEval ids the instruction rows never use (the card lists them; the builder enforces it).
HELD_OUT_IDS = ("combination:repeat_prompt", "combination:two_responses", "detectable_format:multiple_sections",
                "keywords:letter_frequency", "change_case:capital_word_frequency", "language:response_language")


def render() -> dict[Path, str]:
    rows, report = build()
    used = {i for r in rows for i in r.get("instruction_id_list", ())}
    if used & set(HELD_OUT_IDS):
        raise ValueError(f"instruction rows use held-out ids {sorted(used & set(HELD_OUT_IDS))}")
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return {OUT / "conversations.jsonl": text, OUT / "conversations.md": card(rows, report)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [path for path, text in files.items()
                 if not path.is_file() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from a fresh build: run python scripts/build_conversations.py")
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
