"""The classic Alpaca exercise: instruction data, its two prompt templates, and prompt-masked labels.

Stanford Alpaca (Taori et al., 2023) fine-tuned LLaMA on 52k rows of
``{"instruction", "input", "output"}`` rendered with one of two plain-text templates (with
or without the optional input), training only on the response: the prompt's labels are
-100. It predates chat templates and is still the standard first exercise for comparing
full fine-tuning, a hand-written LoRA and peft's LoRA on identical data, which is what
this module prepares:

- `filter_empty_outputs`: rows with nothing to learn are dropped *and counted* (with row
  numbers), as everywhere in sftkit;
- `split_alpaca`: a deterministic train/test split stratified by whether a row has an
  input, so both templates keep their share in both splits;
- `alpaca_prompt` / `tokenize_alpaca`: the two templates and labels that train exactly the
  response and the EOS that ends it (the EOS is what teaches the model to stop);
- `alpaca_from_tasks`: the built-in verifiable tasks as Alpaca rows, so the exercise runs
  offline and its results can be checked exactly; `load_alpaca_hub` is the Colab path.

The templates follow the issue's wording, which ends each prompt with ``"### Response:\\n"``
(as alpaca-lora and most later recipes do); Stanford's original ``train.py`` ends at
``"### Response:"`` with no newline. One constant each, so a notebook can show both.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..data import NOT_AN_OBJECT
from ..masking import IGNORE_INDEX, NoTrainableTokensError

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

EMPTY_OUTPUT = "empty output"
EMPTY_INSTRUCTION = "empty instruction"

# Built-in tasks that are one question and one answer (``recall`` is two turns: not Alpaca).
SINGLE_TURN_TASKS = ("reverse", "vowels", "add", "upper", "json")
# How the prompt of a task is cut into instruction and input, for tasks given an input.
# `add` and `vowels` keep their whole prompt as the instruction, so both templates occur.
INPUT_SEPARATORS = {"reverse": ": ", "upper": ": ", "json": " Text: "}


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""


def has_input(row: Mapping[str, Any]) -> bool:
    """True when the row's ``input`` has any non-blank text (it then uses `PROMPT_WITH_INPUT`)."""
    return bool(_text(row, "input").strip())


# --------------------------------------------------------------------------- cleaning and splitting


def filter_empty_outputs(rows: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Drop rows with no output (missing, not a string, or blank) or no instruction; count them.

    An empty output trains the model to answer with nothing but EOS. Returns ``(kept,
    report)`` with ``report = {"rows", "kept", "dropped": {reason: n}, "dropped_rows":
    {reason: [row numbers]}}`` (0-based positions in `rows`), like `sftkit.data`'s reports.
    """
    kept: list[dict[str, Any]] = []
    dropped_rows: dict[str, list[int]] = {}
    total = 0
    for number, row in enumerate(rows):
        total += 1
        if not isinstance(row, Mapping):
            reason = NOT_AN_OBJECT
        elif not _text(row, "output").strip():
            reason = EMPTY_OUTPUT
        elif not _text(row, "instruction").strip():
            reason = EMPTY_INSTRUCTION
        else:
            kept.append({**row, "input": _text(row, "input")})  # a missing/None input is the empty input
            continue
        dropped_rows.setdefault(reason, []).append(number)
    report = {
        "rows": total,
        "kept": len(kept),
        "dropped": {reason: len(numbers) for reason, numbers in dropped_rows.items()},
        "dropped_rows": dropped_rows,
    }
    if report["kept"] + sum(report["dropped"].values()) != total:
        raise AssertionError(f"rows were lost without being counted: {report}")
    return kept, report


def _group_counts(dataset: Any) -> dict[str, int]:
    values = list(dataset["has_input"])
    return {"with input": sum(values), "without input": len(values) - sum(values)}


def split_alpaca(rows: Iterable[Mapping[str, Any]], n_train: int = 2000, n_test: int = 200, seed: int = 101):
    """Deterministic train/test split stratified by whether a row has an input.

    Returns ``(train, test, report)`` as `datasets.Dataset`s with columns ``instruction``,
    ``input``, ``output``, ``has_input`` (plus any other columns the rows share). When there
    are fewer rows than ``n_train + n_test`` both sizes are scaled down in proportion and the
    report says so (``scaled_down`` and ``note``).

    Stratification uses `sftkit.data.split_dataset`: the test split keeps each group's share
    of all rows within one row; the train split is drawn from the remaining rows and keeps
    their share within one row (when every row is used, that is the share of all rows too).
    """
    from datasets import Dataset

    from ..data import split_dataset

    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    rows = [dict(row) for row in rows]
    for number, row in enumerate(rows):
        for key in ("instruction", "output"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"row {number}: {key!r} must be a string (run filter_empty_outputs first)")
        row["input"] = _text(row, "input")
        row["has_input"] = has_input(row)
    available = len(rows)
    if available < 2:
        raise ValueError(f"need at least 2 rows to split, got {available}")
    wanted = n_train + n_test
    note = None
    if available < wanted:
        # Keep the requested train:test ratio; both splits keep at least one row.
        test_size = min(max(1, round(available * n_test / wanted)), available - 1)
        train_size = available - test_size
        note = (f"only {available} rows, fewer than n_train + n_test = {wanted}: scaled down proportionally to "
                f"{train_size} train / {test_size} test")
    else:
        train_size, test_size = n_train, n_test
    dataset = Dataset.from_list(rows)
    rest, test = split_dataset(dataset, test_size, seed=seed, stratify_by="has_input")
    if len(rest) > train_size:
        # The rows beyond n_train are left out with the same stratification; "test" here is the kept part.
        _, train = split_dataset(rest, train_size, seed=seed + 1, stratify_by="has_input")
    else:
        train = rest
    report = {
        "rows": available,
        "requested": {"train": n_train, "test": n_test},
        "train": len(train),
        "test": len(test),
        "unused": available - len(train) - len(test),
        "scaled_down": note is not None,
        "note": note,
        "groups": {"all": _group_counts(dataset), "train": _group_counts(train), "test": _group_counts(test)},
        "seed": seed,
    }
    return train, test, report


# --------------------------------------------------------------------------- prompts and labels


def alpaca_prompt(row: Mapping[str, Any]) -> str:
    """The Alpaca prompt for a row: `PROMPT_WITH_INPUT` if it has an input, else `PROMPT_NO_INPUT`."""
    instruction = _text(row, "instruction")
    if has_input(row):
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=_text(row, "input"))
    return PROMPT_NO_INPUT.format(instruction=instruction)


def tokenize_alpaca(row: Mapping[str, Any], tokenizer: Any, max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` with the prompt masked (-100).

    The prompt and the response are tokenized *separately* and concatenated, so the mask
    boundary is exact (joint tokenization can merge the prompt's last characters with the
    response's first, and then "the first len(prompt) tokens" is not the prompt), and so
    training sees the prompt tokenized exactly as generation will. The response is followed
    by the tokenizer's EOS, which is trained. Sequences longer than `max_length` are cut at
    the end; a row whose prompt leaves no response token raises `NoTrainableTokensError`.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: the model could never learn to stop")
    output = _text(row, "output")
    if not output.strip():
        raise ValueError("the row has an empty output (run filter_empty_outputs first)")
    # add_special_tokens=True on the prompt only: a BOS where the family expects one (Llama),
    # nothing for SmolLM2; the response must not get a second BOS in the middle.
    prompt_ids = list(tokenizer(alpaca_prompt(row), add_special_tokens=True)["input_ids"])
    response_ids = list(tokenizer(output, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise NoTrainableTokensError(
            f"the prompt alone has {len(prompt_ids)} tokens, at least max_length={max_length}: no response token left"
        )
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_alpaca_rows(rows: Iterable[Mapping[str, Any]], tokenizer: Any, max_length: int | None = None):
    """Tokenize many rows; returns ``(datasets.Dataset, report)`` with rows left untrainable counted."""
    from datasets import Dataset

    tokenized, dropped, total = [], [], 0
    for number, row in enumerate(rows):
        total += 1
        try:
            tokenized.append(tokenize_alpaca(row, tokenizer, max_length))
        except NoTrainableTokensError:
            dropped.append(number)
    reason = "no response token after truncation"
    report = {"rows": total, "kept": len(tokenized), "dropped": {reason: len(dropped)} if dropped else {},
              "dropped_rows": {reason: dropped} if dropped else {}}
    return Dataset.from_list(tokenized), report


# --------------------------------------------------------------------------- sources


def _split_prompt(task: str, prompt: str) -> tuple[str, str]:
    separator = INPUT_SEPARATORS.get(task)
    if separator is None:
        return prompt, ""
    head, found, tail = prompt.rpartition(separator)
    if not found or not head.strip() or not tail.strip():
        raise ValueError(f"task {task!r}: cannot split the prompt {prompt!r} at {separator!r} "
                         "into instruction and input")
    # "Reverse the letters of this name: m a r i a" -> ("Reverse the letters of this name.", "m a r i a")
    instruction = head.rstrip()
    if instruction[-1] not in ".?!":
        instruction += "."
    return instruction, tail.strip()


def alpaca_from_tasks(n: int, split: str = "train", seed: int = 0,
                      tasks: tuple[str, ...] = SINGLE_TURN_TASKS) -> list[dict[str, str]]:
    """`n` built-in task examples as Alpaca rows (offline, checkable), both templates represented.

    ``reverse``, ``upper`` and ``json`` put their data (the letters, the sentence, the text) in
    ``input``; ``add`` and ``vowels`` keep everything in ``instruction``. Each row also keeps
    ``task`` and ``answer`` so replies can be scored with `sftkit.tasks.check_answer`.
    Train and test come from disjoint pools (`sftkit.tasks`).
    """
    from ..tasks import make_task_examples

    multi_turn = sorted(set(tasks) - set(SINGLE_TURN_TASKS))
    if multi_turn:
        raise ValueError(f"tasks {multi_turn} are not single-turn; Alpaca rows are one instruction and one output")
    rows = []
    for example in make_task_examples(n, split, seed, tasks):
        user, assistant = example["messages"]
        instruction, extra = _split_prompt(example["task"], user["content"])
        rows.append({"instruction": instruction, "input": extra, "output": assistant["content"],
                     "task": example["task"], "answer": example["answer"]})
    return rows


def load_alpaca_hub(name: str = "tatsu-lab/alpaca", limit: int | None = None, split: str = "train"):
    """Alpaca rows from the Hub (the Colab path) as a `datasets.Dataset` of instruction/input/output.

    Raises `sftkit.data.DataSourceError` in one line when the Hub cannot be reached.
    """
    from ..data import DataSourceError, load_hub_dataset

    data = load_hub_dataset(name, split, limit, offline_hint=(
        "offline, use sftkit.chapters.alpaca.alpaca_from_tasks(n) for Alpaca rows built from the verifiable tasks"))
    missing = {"instruction", "output"} - set(data.column_names)
    if missing:
        raise DataSourceError(f"{name!r} is not Alpaca-shaped: no {sorted(missing)} column "
                              f"(columns: {data.column_names})")
    return data.select_columns([c for c in ("instruction", "input", "output") if c in data.column_names])


__all__ = [
    "PROMPT_WITH_INPUT",
    "PROMPT_NO_INPUT",
    "SINGLE_TURN_TASKS",
    "has_input",
    "filter_empty_outputs",
    "split_alpaca",
    "alpaca_prompt",
    "tokenize_alpaca",
    "tokenize_alpaca_rows",
    "alpaca_from_tasks",
    "load_alpaca_hub",
]
