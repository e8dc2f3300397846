"""Tests for sftkit.data: every drop reason, every file kind, converters, splits, offline Hub.

All data is written into `tmp_path`; nothing touches the network (the Hub tests either set
offline mode or replace `datasets.load_dataset`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftkit import data
from sftkit.data import (
    DataSourceError,
    InvalidConversationError,
    conversation_stats,
    detect_format,
    format_report,
    from_alpaca,
    from_dolly,
    from_prompt_completion,
    from_sharegpt,
    load_conversations,
    split_dataset,
    to_messages,
    validate_conversation,
)


def msgs(*pairs: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in pairs]}


GOOD = msgs(("user", "What is 2+2?"), ("assistant", "4"))
GOOD_SYSTEM = msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."))

# One row per reason in the vocabulary. Strings are written verbatim as a JSON line (so
# that invalid JSON can be written); everything else is json.dumps'ed.
BAD_ROWS: dict[str, Any] = {
    "not an object": [1, 2, 3],
    "missing messages": {"text": "hello"},
    "messages is not a list": {"messages": "hello"},
    "messages is empty": {"messages": []},
    "message is not an object": {"messages": ["hello", {"role": "assistant", "content": "hi"}]},
    "message without role": {"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]},
    "message without content": {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
    "unknown role": msgs(("user", "hi"), ("tool", "42"), ("assistant", "x")),
    "content is not a string": msgs(("user", 42), ("assistant", "x")),
    "no assistant turn": msgs(("system", "s"), ("user", "hi")),
    "empty assistant reply": msgs(("user", "hi"), ("assistant", " \n\t")),
    "system message is not first": msgs(("user", "hi"), ("system", "s"), ("assistant", "x")),
    "invalid JSON": '{"messages": [{"role": "user", "content": "unterminated',
}
VALIDATOR_REASONS = [reason for reason in BAD_ROWS if reason != "invalid JSON"]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- validation -----------------------------------------------------------------------


def test_vocabulary_is_exported_exactly() -> None:
    expected = set(BAD_ROWS) | {"unconvertible row"}
    assert set(data.REASONS) == expected
    assert data.ROLES == ("system", "user", "assistant")


@pytest.mark.parametrize("reason", VALIDATOR_REASONS)
def test_validate_conversation_gives_each_reason(reason: str) -> None:
    assert validate_conversation(BAD_ROWS[reason]) == reason


def test_validate_conversation_accepts_valid_rows() -> None:
    assert validate_conversation(GOOD) is None
    assert validate_conversation(GOOD_SYSTEM) is None
    # Several turns, a system prompt first: still valid.
    long = msgs(("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    assert validate_conversation(long) is None


def test_none_counts_as_missing() -> None:
    # Parquet and the Hub fill absent struct fields with null.
    assert validate_conversation({"messages": [{"role": None, "content": "x"}]}) == "message without role"
    assert validate_conversation({"messages": [{"role": "user", "content": None}]}) == "message without content"
    assert validate_conversation({"messages": None}) == "missing messages"


# --- lenient and strict loading of every reason ------------------------------------------


def test_lenient_load_counts_every_reason_with_row_numbers(tmp_path: Path) -> None:
    rows: list[Any] = [GOOD]
    expected_rows: dict[str, list[int]] = {}
    for reason, bad in BAD_ROWS.items():
        expected_rows[reason] = [len(rows)]
        rows.append(bad)
        rows.append(GOOD_SYSTEM)
    path = write_jsonl(tmp_path / "all.jsonl", rows)

    dataset, report = load_conversations(str(path))

    n_bad = len(BAD_ROWS)
    assert report["rows_read"] == len(rows) == 2 * n_bad + 1
    assert report["kept"] == len(dataset) == n_bad + 1
    assert report["dropped"] == {reason: 1 for reason in BAD_ROWS}
    assert report["dropped_rows"] == expected_rows
    assert report["format"] == "messages"
    assert dataset.column_names == ["messages"]
    assert dataset[0]["messages"] == GOOD["messages"]
    assert dataset[1]["messages"] == GOOD_SYSTEM["messages"]


def test_row_numbers_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "blanks.jsonl"
    path.write_text(
        "\n".join([json.dumps(GOOD), "", "   ", json.dumps(BAD_ROWS["messages is empty"]), "", json.dumps(GOOD)])
        + "\n\n",
        encoding="utf-8",
    )
    _, report = load_conversations(str(path))
    assert report["rows_read"] == 3
    assert report["dropped_rows"] == {"messages is empty": [1]}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_strict_load_raises_at_first_bad_row(tmp_path: Path, reason: str) -> None:
    # Two bad rows: strict mode must name the first one (row 2), not the later one (row 4).
    path = write_jsonl(tmp_path / "strict.jsonl", [GOOD, GOOD, BAD_ROWS[reason], GOOD, BAD_ROWS[reason]])
    with pytest.raises(InvalidConversationError) as caught:
        load_conversations(str(path), strict=True)
    error = caught.value
    assert error.row == 2
    assert error.reason == reason
    assert str(error).startswith(f"row 2: {reason}")


def test_strict_load_passes_a_clean_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "clean.jsonl", [GOOD, GOOD_SYSTEM])
    dataset, report = load_conversations(str(path), strict=True)
    assert len(dataset) == 2
    assert report["dropped"] == {}


def test_mixed_schemas_load_leniently_with_exact_counts(tmp_path: Path) -> None:
    # Each of these breaks pyarrow's one-schema-per-file inference in `load_dataset("json")`.
    rows = [
        {**GOOD, "meta": 1},
        {**GOOD, "meta": "a string this time"},
        {**GOOD, "meta": {"nested": [1, 2]}},
        msgs(("user", "hi"), ("assistant", 7)),  # content is an int
        {"messages": [{"role": "user", "content": "hi", "weight": 0.5}, {"role": "assistant", "content": "ok"}]},
        "not json at all",
        GOOD_SYSTEM,
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)

    dataset, report = load_conversations(str(path))

    assert report["rows_read"] == 7
    assert report["kept"] == 5
    assert report["dropped"] == {"content is not a string": 1, "invalid JSON": 1}
    assert report["dropped_rows"] == {"content is not a string": [3], "invalid JSON": [5]}
    assert dataset.column_names == ["messages"]
    # Extra per-message keys are dropped: only role and content survive.
    assert dataset[3]["messages"][0] == {"role": "user", "content": "hi"}


def test_broken_utf8_is_one_invalid_row(tmp_path: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "\xff\xfe"}\n' + json.dumps(GOOD).encode())
    _, report = load_conversations(str(path))
    assert report["kept"] == 2
    assert report["dropped_rows"] == {"invalid JSON": [1]}


# --- file kinds -----------------------------------------------------------------------


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text(json.dumps([GOOD, BAD_ROWS["no assistant turn"], GOOD_SYSTEM, 5], indent=2), encoding="utf-8")
    dataset, report = load_conversations(str(path))
    assert report["rows_read"] == 4
    assert report["kept"] == len(dataset) == 2
    assert report["dropped_rows"] == {"no assistant turn": [1], "not an object": [3]}


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [GOOD, BAD_ROWS["invalid JSON"], GOOD_SYSTEM])
    dataset, report = load_conversations(str(path))
    assert report["rows_read"] == 3
    assert len(dataset) == 2
    assert report["dropped_rows"] == {"invalid JSON": [1]}


def test_malformed_json_array_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"messages": []}, {"messages": ', encoding="utf-8")
    with pytest.raises(DataSourceError, match="not a valid JSON array"):
        load_conversations(str(path))


def test_parquet_file(tmp_path: Path) -> None:
    rows = [
        GOOD,
        msgs(("user", "hi"), ("assistant", "")),
        # A message with an extra field: pyarrow adds `name` to every message as null.
        {"messages": [{"role": "user", "content": "a", "name": "bob"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": None, "content": "a"}, {"role": "assistant", "content": "b"}]},
        GOOD_SYSTEM,
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    dataset, report = load_conversations(str(path))

    assert report["rows_read"] == 5
    assert report["kept"] == len(dataset) == 3
    assert report["dropped_rows"] == {"empty assistant reply": [1], "message without role": [3]}
    assert dataset[1]["messages"][0] == {"role": "user", "content": "a"}


def test_limit_caps_rows_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "many.jsonl", [GOOD] * 3 + [BAD_ROWS["messages is empty"]] * 2)
    dataset, report = load_conversations(str(path), limit=3)
    assert report["rows_read"] == 3
    assert len(dataset) == 3
    assert report["dropped"] == {}
    with pytest.raises(ValueError, match="limit"):
        load_conversations(str(path), limit=0)


def test_alpaca_file_is_converted_and_unconvertible_rows_counted(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
        {"instruction": "No output here"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Empty", "input": "", "output": "  "},
    ]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    dataset, report = load_conversations(str(path))
    assert report["format"] == "alpaca"
    assert report["kept"] == 2
    assert report["dropped_rows"] == {"unconvertible row": [1], "empty assistant reply": [3]}
    assert dataset[0]["messages"][0]["content"] == "Add\n\n2 and 2"

    with pytest.raises(InvalidConversationError, match=r"row 1: unconvertible row \(.*'output'"):
        load_conversations(str(path), strict=True)


def test_format_detected_from_first_recognisable_row(tmp_path: Path) -> None:
    rows = ["garbage", {"prompt": "p", "completion": "c"}, {"prompt": "p2", "completion": "c2"}]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    dataset, report = load_conversations(str(path))
    assert report["format"] == "prompt-completion"
    assert report["kept"] == 2
    assert report["dropped_rows"] == {"invalid JSON": [0]}


def test_fmt_argument_overrides_detection(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dolly.jsonl", [{"instruction": "q", "response": "a", "output": "x"}])
    _, detected = load_conversations(str(path))
    assert detected["format"] == "alpaca"  # instruction + output wins when both are there
    dataset, report = load_conversations(str(path), fmt="dolly")
    assert report["format"] == "dolly"
    assert dataset[0]["messages"][1]["content"] == "a"
    with pytest.raises(ValueError, match="unknown format"):
        load_conversations(str(path), fmt="csv")


def test_local_source_errors(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no such file"):
        load_conversations(str(tmp_path / "missing.jsonl"))
    other = tmp_path / "rows.csv"
    other.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"\.jsonl"):
        load_conversations(str(other))


def test_empty_result_still_has_messages_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [BAD_ROWS["messages is empty"]])
    dataset, report = load_conversations(str(path))
    assert len(dataset) == 0
    assert dataset.column_names == ["messages"]
    assert report["dropped"] == {"messages is empty": 1}


def test_format_report(tmp_path: Path) -> None:
    rows = [GOOD] + [BAD_ROWS["no assistant turn"]] * 7 + [BAD_ROWS["unknown role"]]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    _, report = load_conversations(str(path))
    text = format_report(report)
    lines = text.splitlines()
    assert "kept 1 of 9 rows" in lines[0]
    assert lines[1].strip() == "no assistant turn: 7 (rows 1, 2, 3, 4, 5, ... (2 more))"
    assert lines[2].strip() == "unknown role: 1 (row 8)"


# --- converters and format detection -----------------------------------------------------


def test_from_alpaca() -> None:
    with_input = from_alpaca({"instruction": "Translate", "input": "bonjour", "output": "hello"})
    assert with_input == {
        "messages": [
            {"role": "user", "content": "Translate\n\nbonjour"},
            {"role": "assistant", "content": "hello"},
        ]
    }
    for empty in ("", "   ", None):
        row = {"instruction": "Say hi", "input": empty, "output": "hi"}
        assert from_alpaca(row)["messages"][0] == {"role": "user", "content": "Say hi"}
    assert from_alpaca({"instruction": "Say hi", "output": "hi"})["messages"][0]["content"] == "Say hi"
    with pytest.raises(ValueError, match="'output'"):
        from_alpaca({"instruction": "x", "input": ""})
    with pytest.raises(ValueError, match="not a string"):
        from_alpaca({"instruction": "x", "output": 3})


def test_from_dolly() -> None:
    row = {"instruction": "Summarise", "context": "Long text.", "response": "Short.", "category": "summarization"}
    assert from_dolly(row) == {
        "messages": [
            {"role": "user", "content": "Summarise\n\nLong text."},
            {"role": "assistant", "content": "Short."},
        ]
    }
    assert from_dolly({"instruction": "Q", "context": "", "response": "A"})["messages"][0]["content"] == "Q"
    with pytest.raises(ValueError, match="'response'"):
        from_dolly({"instruction": "Q"})


def test_from_sharegpt() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
            {"from": "user", "value": "again"},
            {"from": "model", "value": "yes"},
            {"from": "assistant", "value": "!"},
        ]
    }
    assert [m["role"] for m in from_sharegpt(row)["messages"]] == [
        "system", "user", "assistant", "user", "assistant", "assistant",
    ]
    assert from_sharegpt(row)["messages"][1]["content"] == "hi"
    with pytest.raises(ValueError, match="unknown 'from' value 'bing'"):
        from_sharegpt({"conversations": [{"from": "bing", "value": "x"}]})
    with pytest.raises(ValueError, match="conversations"):
        from_sharegpt({"dialogue": []})
    with pytest.raises(ValueError, match="turn 0"):
        from_sharegpt({"conversations": [{"from": "human"}]})


def test_from_prompt_completion() -> None:
    assert from_prompt_completion({"prompt": "2+2?", "completion": "4"}) == msgs(("user", "2+2?"), ("assistant", "4"))
    conversational = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    assert from_prompt_completion(conversational) == msgs(("system", "s"), ("user", "q"), ("assistant", "a"))
    with pytest.raises(ValueError, match="'completion'"):
        from_prompt_completion({"prompt": "only"})
    with pytest.raises(ValueError, match="string or a list"):
        from_prompt_completion({"prompt": "p", "completion": 5})


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (GOOD, "messages"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"instruction": "i", "context": "", "response": "r", "category": "qa"}, "dolly"),
        ({"conversations": [], "id": 3}, "sharegpt"),
        ({"prompt": "p", "completion": "c"}, "prompt-completion"),
    ],
)
def test_detect_format(row: dict[str, Any], expected: str) -> None:
    assert detect_format(row) == expected
    # to_messages with no fmt detects the same way and yields a valid conversation.
    if expected != "sharegpt":
        assert validate_conversation(to_messages(row)) in (None, "empty assistant reply")


def test_detect_format_rejects_unknown_rows() -> None:
    with pytest.raises(ValueError, match=r"cannot tell the format of row .*keys \['answer', 'question'\]"):
        detect_format({"question": "q", "answer": "a"})
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format(["not", "a", "dict"])


def test_to_messages_dispatch() -> None:
    row = {"instruction": "i", "response": "r"}
    assert to_messages(row, "dolly") == to_messages(row) == from_dolly(row)
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        to_messages(row, "yaml")


# --- splitting ------------------------------------------------------------------------


def make_dataset(n: int = 40) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "id": list(range(n)),
            # Uneven groups: 24 / 12 / 4 rows.
            "task": ["math"] * (n * 3 // 5) + ["code"] * (n * 3 // 10) + ["chat"] * (n - n * 3 // 5 - n * 3 // 10),
            "has_system": [i % 4 == 0 for i in range(n)],
        }
    )


def test_split_is_deterministic_by_seed() -> None:
    dataset = make_dataset()
    train_a, test_a = split_dataset(dataset, 0.25, seed=1)
    train_b, test_b = split_dataset(dataset, 0.25, seed=1)
    train_c, test_c = split_dataset(dataset, 0.25, seed=2)
    assert list(train_a["id"]) == list(train_b["id"]) and list(test_a["id"]) == list(test_b["id"])
    assert sorted(test_a["id"]) != sorted(test_c["id"])


def test_split_is_disjoint_and_complete() -> None:
    dataset = make_dataset()
    train, test = split_dataset(dataset, 0.25, seed=0)
    assert len(test) == 10 and len(train) == 30
    assert not set(train["id"]) & set(test["id"])
    assert sorted(list(train["id"]) + list(test["id"])) == list(range(40))
    # An integer test_size is a row count.
    train, test = split_dataset(dataset, 7, seed=0)
    assert (len(train), len(test)) == (33, 7)


@pytest.mark.parametrize("column", ["task", "has_system"])
@pytest.mark.parametrize("seed", [0, 5])
def test_stratified_split_preserves_shares(column: str, seed: int) -> None:
    dataset = make_dataset()
    n_test = 9  # 9/40 of each group is never a whole number: rounding must stay within 1
    train, test = split_dataset(dataset, n_test, seed=seed, stratify_by=column)
    assert len(test) == n_test
    assert sorted(list(train["id"]) + list(test["id"])) == list(range(40))
    values = list(dataset[column])
    in_test = list(test[column])
    for value in set(values):
        expected = values.count(value) * n_test / len(dataset)
        assert abs(in_test.count(value) - expected) <= 1, (value, in_test.count(value), expected)


def test_stratified_split_is_deterministic_and_checks_column() -> None:
    dataset = make_dataset()
    first = list(split_dataset(dataset, 0.3, seed=3, stratify_by="task")[1]["id"])
    second = list(split_dataset(dataset, 0.3, seed=3, stratify_by="task")[1]["id"])
    assert first == second
    with pytest.raises(ValueError, match="cannot stratify by 'label'"):
        split_dataset(dataset, 0.3, stratify_by="label")


@pytest.mark.parametrize("bad", [0, 0.0, 1.0, 1.5, -0.1, 40, 41, -1, True, "0.2", 0.001])
def test_split_rejects_out_of_range_test_size(bad: Any) -> None:
    with pytest.raises(ValueError, match="test_size"):
        split_dataset(make_dataset(), bad)


# --- the Hub --------------------------------------------------------------------------


def assert_no_chained_traceback(error: BaseException) -> None:
    # `raise ... from None` sets __suppress_context__; an error raised outside any except
    # block has no context to suppress.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("load_dataset must not be called in offline mode")


def test_hub_offline_raises_data_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", _no_network)
    with pytest.raises(DataSourceError) as caught:
        load_conversations("HuggingFaceTB/smol-smoltalk", limit=10)
    message = str(caught.value)
    assert "builtin-tasks" in message
    assert "Hub" in message
    assert "\n" not in message
    assert_no_chained_traceback(caught.value)


def test_hub_unreachable_raises_data_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the quick TCP probe (this machine has no network): the fake load_dataset decides.
    monkeypatch.setattr("sftkit.models.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataSourceError, match=r"could not reach the Hugging Face Hub.*builtin-tasks") as caught:
        load_conversations("x/y")
    assert caught.value.__context__ is not None  # raised while handling the ConnectionError ...
    assert_no_chained_traceback(caught.value)  # ... which users are not shown


def test_hub_dataset_is_sliced_converted_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the quick TCP probe (this machine has no network): the fake load_dataset decides.
    monkeypatch.setattr("sftkit.models.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(
            [
                {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
                {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "b"}]},
            ]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset, report = load_conversations("org/sharegpt-like", split="train", limit=3)
    assert calls == [("org/sharegpt-like", "train[:3]")]
    assert report["format"] == "sharegpt"
    assert (report["rows_read"], report["kept"]) == (3, 2)
    assert report["dropped_rows"] == {"empty assistant reply": [1]}
    assert dataset[1]["messages"][1] == {"role": "assistant", "content": "b"}


def test_builtin_tasks_is_not_a_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "load_dataset", _no_network)
    with pytest.raises(DataSourceError, match="sftkit.tasks"):
        load_conversations("builtin-tasks")


# --- statistics -----------------------------------------------------------------------


def test_conversation_stats() -> None:
    dataset = datasets.Dataset.from_list(
        [
            GOOD,  # 2 turns, reply "4"
            GOOD_SYSTEM,  # 3 turns, reply "Hello."
            msgs(("user", "a"), ("assistant", "bb"), ("user", "c"), ("assistant", "dddd")),
        ]
    )
    stats = conversation_stats(dataset)
    assert stats["conversations"] == 3
    assert stats["turns"] == {"mean": 3.0, "min": 2, "max": 4}
    assert stats["system_share"] == pytest.approx(1 / 3)
    assert stats["role_counts"] == {"system": 1, "user": 4, "assistant": 4}
    assert stats["assistant_chars_mean"] == pytest.approx((1 + 6 + 2 + 4) / 4)
    empty = conversation_stats([])
    assert empty["conversations"] == 0 and empty["turns"]["mean"] is None


def test_unreachable_hub_fails_fast_without_calling_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("sftkit.models.hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be called"))
    with pytest.raises(DataSourceError, match="could not reach the Hugging Face Hub"):
        load_conversations("org/name")
