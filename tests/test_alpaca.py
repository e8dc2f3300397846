"""Tests for sftkit.chapters.alpaca: filtering, the stratified split, the two templates, prompt-masked labels,
offline rows."""

from __future__ import annotations

import pytest

from sftkit.chapters.alpaca import (
    PROMPT_NO_INPUT,
    PROMPT_WITH_INPUT,
    alpaca_from_tasks,
    alpaca_prompt,
    filter_empty_outputs,
    has_input,
    load_alpaca_hub,
    split_alpaca,
    tokenize_alpaca,
    tokenize_alpaca_rows,
)
from sftkit.data import DataSourceError
from sftkit.masking import IGNORE_INDEX, NoTrainableTokensError
from sftkit.tasks import check_answer

WITH_INPUT_TEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
    "### Input:\n2 and 3\n\n### Response:\n"
)
NO_INPUT_TEXT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName a colour.\n\n### Response:\n"
)


# --------------------------------------------------------------------------- filtering


def test_filter_counts_every_dropped_row_with_its_number():
    rows = [
        {"instruction": "a", "input": "", "output": "x"},
        {"instruction": "b", "input": "", "output": ""},
        {"instruction": "c", "output": "   \n"},
        {"instruction": "d", "input": None, "output": "y"},
        {"instruction": "e"},
        {"instruction": "", "output": "z"},
        "not a row",
        {"instruction": "f", "input": "ctx", "output": None},
    ]
    kept, report = filter_empty_outputs(rows)
    assert [row["instruction"] for row in kept] == ["a", "d"]
    assert kept[1]["input"] == "", "a missing/None input becomes the empty input"
    assert report["rows"] == 8 and report["kept"] == 2
    assert report["dropped"] == {"empty output": 4, "empty instruction": 1, "not an object": 1}
    assert report["dropped_rows"] == {"empty output": [1, 2, 4, 7], "empty instruction": [5], "not an object": [6]}


# --------------------------------------------------------------------------- splitting


def make_rows(n, every_with_input=3):
    return [{"instruction": f"task {i}", "input": "ctx" if i % every_with_input == 0 else "", "output": f"out {i}"}
            for i in range(n)]


def test_split_sizes_disjoint_and_stratified():
    rows = make_rows(300)  # 100 with input, 200 without
    train, test, report = split_alpaca(rows, n_train=200, n_test=50, seed=101)
    assert (len(train), len(test)) == (200, 50) and report["unused"] == 50 and not report["scaled_down"]
    train_ids, test_ids = set(train["instruction"]), set(test["instruction"])
    assert len(train_ids) == 200 and len(test_ids) == 50 and not train_ids & test_ids, "splits must be disjoint"
    # Test keeps the share of all rows (1/3 with input) within one row.
    assert abs(sum(test["has_input"]) - 50 / 3) <= 1, report["groups"]
    # Train is drawn from the 250 remaining rows and keeps their share within one row.
    remaining_with_input = 100 - sum(test["has_input"])
    assert abs(sum(train["has_input"]) - 200 * remaining_with_input / 250) <= 1, report["groups"]
    assert report["groups"]["test"]["with input"] == sum(test["has_input"])
    for row in test:
        assert row["has_input"] == has_input(row)
    again = split_alpaca(rows, n_train=200, n_test=50, seed=101)
    assert list(again[1]["instruction"]) == list(test["instruction"]), "same seed, same split"
    other = split_alpaca(rows, n_train=200, n_test=50, seed=7)
    assert list(other[1]["instruction"]) != list(test["instruction"])


def test_split_scales_down_when_rows_are_short_and_says_so():
    rows = make_rows(100, every_with_input=4)  # 25 with input
    train, test, report = split_alpaca(rows, n_train=200, n_test=20)
    assert report["scaled_down"] is True
    assert (len(test), len(train)) == (9, 91), "100 rows at the 200:20 ratio -> 9 test, the rest train"
    assert "only 100 rows" in report["note"] and "91 train / 9 test" in report["note"]
    assert not set(train["instruction"]) & set(test["instruction"])
    # Every row is used, so both splits keep the overall share (1/4 with input) within one row.
    assert abs(sum(test["has_input"]) - 9 / 4) <= 1 and abs(sum(train["has_input"]) - 91 / 4) <= 1


def test_split_rejects_bad_sizes_and_unfiltered_rows():
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        split_alpaca(make_rows(10), n_train=5, n_test=0)
    with pytest.raises(ValueError, match="row 1: 'output' must be a string"):
        split_alpaca([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": None}])


# --------------------------------------------------------------------------- templates and labels


def test_templates_are_the_alpaca_wording():
    assert alpaca_prompt({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}) == WITH_INPUT_TEXT
    assert alpaca_prompt({"instruction": "Name a colour.", "input": "", "output": "red"}) == NO_INPUT_TEXT
    assert alpaca_prompt({"instruction": "Name a colour.", "input": "  \n", "output": "red"}) == NO_INPUT_TEXT
    assert alpaca_prompt({"instruction": "Name a colour.", "output": "red"}) == NO_INPUT_TEXT
    assert PROMPT_WITH_INPUT.format(instruction="Add the numbers.", input="2 and 3") == WITH_INPUT_TEXT
    assert PROMPT_NO_INPUT.format(instruction="Name a colour.") == NO_INPUT_TEXT


@pytest.mark.parametrize(
    "row",
    [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5."},
        {"instruction": "Name a colour.", "input": "", "output": "Red, like a {brace} and ### Response:"},
    ],
)
def test_labels_mask_exactly_the_prompt(row, tokenizer):
    tokenized = tokenize_alpaca(row, tokenizer)
    ids, labels = tokenized["input_ids"], tokenized["labels"]
    assert len(ids) == len(labels) == len(tokenized["attention_mask"]) and all(tokenized["attention_mask"])
    prompt_ids = tokenizer(alpaca_prompt(row))["input_ids"]
    n_prompt = len(prompt_ids)
    assert ids[:n_prompt] == prompt_ids and labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    trained = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert labels[n_prompt:] == ids[n_prompt:], "every response token and the EOS are trained"
    assert tokenizer.decode(trained) == row["output"] + tokenizer.eos_token
    assert trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:n_prompt]) == alpaca_prompt(row)


def test_truncation_keeps_the_start_and_refuses_a_row_with_no_response_left(tokenizer):
    row = {"instruction": "Say something long.", "input": "", "output": "word " * 30}
    n_prompt = len(tokenizer(alpaca_prompt(row))["input_ids"])
    cut = tokenize_alpaca(row, tokenizer, max_length=n_prompt + 3)
    assert len(cut["input_ids"]) == n_prompt + 3 and sum(label != IGNORE_INDEX for label in cut["labels"]) == 3
    with pytest.raises(NoTrainableTokensError, match="no response token left"):
        tokenize_alpaca(row, tokenizer, max_length=n_prompt)
    dataset, report = tokenize_alpaca_rows([row, row], tokenizer, max_length=n_prompt)
    assert len(dataset) == 0 and report["dropped_rows"] == {"no response token after truncation": [0, 1]}


# --------------------------------------------------------------------------- sources


def test_offline_rows_use_both_templates_and_stay_checkable():
    rows = alpaca_from_tasks(20, "train", seed=0)
    assert len(rows) == 20
    with_input = [row for row in rows if has_input(row)]
    without = [row for row in rows if not has_input(row)]
    assert with_input and without, "both templates must occur"
    assert {row["task"] for row in with_input} == {"reverse", "upper", "json"}
    assert {row["task"] for row in without} == {"add", "vowels"}
    for row in rows:
        assert row["instruction"].strip() and row["output"].strip()
        assert check_answer(row["task"], row["output"], row["answer"]), row
        if has_input(row):
            assert row["input"] not in row["instruction"], "the data moved to the input, not duplicated"
    prompts = [alpaca_prompt(row) for row in rows]
    assert any("### Input:\n" in p for p in prompts) and any("### Input:" not in p for p in prompts)
    test_inputs = {row["input"] for row in alpaca_from_tasks(20, "test", seed=0) if row["task"] == "reverse"}
    train_inputs = {row["input"] for row in alpaca_from_tasks(40, "train", seed=0) if row["task"] == "reverse"}
    assert not test_inputs & train_inputs, "train and test names come from disjoint pools"
    with pytest.raises(ValueError, match="not single-turn"):
        alpaca_from_tasks(4, tasks=("recall",))


def test_hub_alpaca_fails_in_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError) as info:
        load_alpaca_hub(limit=5)
    assert "tatsu-lab/alpaca" in str(info.value) and "\n" not in str(info.value)
    assert "alpaca_from_tasks" in str(info.value)
