"""Conversation data: load, convert, validate, split and describe chat datasets.

Supervised fine-tuning learns from conversations, and a chat template can only render a
conversation that is well formed: roles it knows, string contents, a system prompt only
at the start, and at least one assistant reply to learn from. Real datasets break these
rules in a few rows out of thousands, and they come in several shapes (Alpaca, Dolly,
ShareGPT, prompt/completion). This module turns every source into one canonical shape,
the ``messages`` format::

    {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}

and checks every row against a fixed, small vocabulary of reasons (``REASONS``).

Two decisions shape the loader:

- **Nothing is lost silently.** ``load_conversations`` returns a report next to the
  dataset that counts every dropped row by reason and lists its row number, and it checks
  that ``rows_read == kept + dropped``. ``strict=True`` stops at the first bad row instead.
- **One bad row never sinks the file.** ``datasets.load_dataset("json", ...)`` lets
  pyarrow infer one schema for the whole file, so one malformed line or one row whose
  ``content`` is an int makes the entire load fail. Local json/jsonl files are therefore
  read line by line with the ``json`` module, parquet rows are read with pyarrow as plain
  Python objects, each row is validated on its own, and the ``Dataset`` is built only from
  the rows that passed (``Dataset.from_list``). Hub datasets still go through
  ``datasets.load_dataset``: the Hub has already parsed them, and that is the path
  Colab users take. A local folder laid out as a Hub dataset repository (README with
  ``configs``, ``data/*.parquet``; `sftkit.standins` writes one) goes through the same call.
- **A sample, not the first rows.** A big Hub split is often sorted (smol-smoltalk's rows come
  grouped by ``source``), so its first N rows are one sub-dataset. `sample_conversations`
  streams the split in a seeded random order (parquet row groups shuffled, then a shuffle
  buffer) and keeps the ``source`` column so the sample's mix can be reported
  (`rows_per_source`); a run evaluates on the dataset's own ``test`` split when it has one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .config import DataConfig

__all__ = [
    "ROLES",
    "FORMATS",
    "REASONS",
    "NOT_AN_OBJECT",
    "MISSING_MESSAGES",
    "MESSAGES_NOT_A_LIST",
    "MESSAGES_EMPTY",
    "MESSAGE_NOT_AN_OBJECT",
    "MESSAGE_WITHOUT_ROLE",
    "MESSAGE_WITHOUT_CONTENT",
    "UNKNOWN_ROLE",
    "CONTENT_NOT_A_STRING",
    "NO_ASSISTANT_TURN",
    "EMPTY_ASSISTANT_REPLY",
    "SYSTEM_NOT_FIRST",
    "INVALID_JSON",
    "UNCONVERTIBLE_ROW",
    "MESSAGES_FEATURES",
    "DataSourceError",
    "InvalidConversationError",
    "validate_conversation",
    "from_alpaca",
    "from_dolly",
    "from_sharegpt",
    "from_prompt_completion",
    "detect_format",
    "to_messages",
    "load_conversations",
    "sample_conversations",
    "stream_sample",
    "dataset_split_names",
    "load_hub_dataset",
    "rows_per_source",
    "SAMPLE_BUFFER",
    "format_report",
    "split_dataset",
    "conversation_stats",
]

ROLES = ("system", "user", "assistant")

# The formats `to_messages` understands, in the order `detect_format` tries them.
FORMATS = ("messages", "sharegpt", "alpaca", "dolly", "prompt-completion")

# --- The reason vocabulary ------------------------------------------------------------
# Reasons are fixed strings rather than free text so that a report can count them: two rows
# with the same defect must land in the same bucket. Details (which field, what JSON
# error) go into exception messages, never into the reason itself.
NOT_AN_OBJECT = "not an object"
MISSING_MESSAGES = "missing messages"
MESSAGES_NOT_A_LIST = "messages is not a list"
MESSAGES_EMPTY = "messages is empty"
MESSAGE_NOT_AN_OBJECT = "message is not an object"
MESSAGE_WITHOUT_ROLE = "message without role"
MESSAGE_WITHOUT_CONTENT = "message without content"
UNKNOWN_ROLE = "unknown role"
CONTENT_NOT_A_STRING = "content is not a string"
NO_ASSISTANT_TURN = "no assistant turn"
EMPTY_ASSISTANT_REPLY = "empty assistant reply"
SYSTEM_NOT_FIRST = "system message is not first"
# Added by the loader, not by `validate_conversation`:
INVALID_JSON = "invalid JSON"
UNCONVERTIBLE_ROW = "unconvertible row"

REASONS = (
    NOT_AN_OBJECT,
    MISSING_MESSAGES,
    MESSAGES_NOT_A_LIST,
    MESSAGES_EMPTY,
    MESSAGE_NOT_AN_OBJECT,
    MESSAGE_WITHOUT_ROLE,
    MESSAGE_WITHOUT_CONTENT,
    UNKNOWN_ROLE,
    CONTENT_NOT_A_STRING,
    NO_ASSISTANT_TURN,
    EMPTY_ASSISTANT_REPLY,
    SYSTEM_NOT_FIRST,
    INVALID_JSON,
    UNCONVERTIBLE_ROW,
)

# The schema of every dataset this module returns. Giving it explicitly (instead of letting
# pyarrow infer it) makes an empty result still have a `messages` column, and keeps the
# column type identical whatever the source was.
MESSAGES_FEATURES = datasets.Features(
    {"messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})}
)

# A sampled Hub dataset keeps its `source` column (which sub-dataset a row comes from).
SOURCE_FEATURES = datasets.Features({**MESSAGES_FEATURES, "source": datasets.Value("string")})

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
BUILTIN_SOURCE = "builtin-tasks"
OFFLINE_HINT = f'work offline with source="{BUILTIN_SOURCE}" or a local .json/.jsonl/.parquet path'


class DataSourceError(RuntimeError):
    """A source could not be opened at all (Hub unreachable, no such file, unreadable file).

    Row-level problems never raise this; they are counted in the report (or raise
    `InvalidConversationError` in strict mode).
    """


class InvalidConversationError(ValueError):
    """A row that is not a valid conversation, raised by strict loading.

    ``row`` is the 0-based position in the source and ``reason`` one of ``REASONS``;
    ``detail`` optionally says more (the JSON error, the converter's message).
    """

    def __init__(self, row: int, reason: str, detail: str | None = None) -> None:
        self.row = row
        self.reason = reason
        self.detail = detail
        message = f"row {row}: {reason}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


# --- Validation -----------------------------------------------------------------------


def validate_conversation(row: Any) -> str | None:
    """Return None if ``row`` is a valid ``messages`` row, else the first reason it is not.

    Checks run in a fixed order (the row, then each message in order, then whole-
    conversation rules), so a row with several defects always gets the same reason.
    A key whose value is None counts as missing: parquet and the Hub fill absent struct
    fields with null, and such a message has no role or content in any useful sense.
    """
    if not isinstance(row, Mapping):
        return NOT_AN_OBJECT
    messages = row.get("messages")
    if messages is None:
        return MISSING_MESSAGES
    if not isinstance(messages, list):
        return MESSAGES_NOT_A_LIST
    if not messages:
        return MESSAGES_EMPTY
    for message in messages:
        if not isinstance(message, Mapping):
            return MESSAGE_NOT_AN_OBJECT
        if message.get("role") is None:
            return MESSAGE_WITHOUT_ROLE
        if message.get("content") is None:
            return MESSAGE_WITHOUT_CONTENT
        if message["role"] not in ROLES:
            return UNKNOWN_ROLE
        if not isinstance(message["content"], str):
            return CONTENT_NOT_A_STRING
    # Chat templates put the system prompt at the top; a system message later on would be
    # rendered in a place the model never sees one at inference time.
    if any(m["role"] == "system" for m in messages[1:]):
        return SYSTEM_NOT_FIRST
    assistant_replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not assistant_replies:
        # SFT only learns from assistant tokens: such a row contributes no loss at all.
        return NO_ASSISTANT_TURN
    if any(not reply.strip() for reply in assistant_replies):
        # Training on an empty reply teaches the model to end its turn immediately.
        return EMPTY_ASSISTANT_REPLY
    return None


# --- Converters -----------------------------------------------------------------------
# Each converter takes one source row and returns {"messages": [...]} whose contents are
# all strings. They raise ValueError when a field they need is missing or of the wrong type;
# they do not judge the conversation (an empty reply converts fine and is then rejected by
# `validate_conversation`), so every quality rule lives in one place.


def _required_text(row: Mapping[str, Any], key: str, fmt: str) -> str:
    if not isinstance(row, Mapping):
        raise ValueError(f"a {fmt} row must be an object, got {type(row).__name__}")
    if row.get(key) is None:
        raise ValueError(f"{fmt} row has no '{key}' field (keys: {sorted(map(str, row))})")
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"{fmt} field '{key}' is not a string (got {type(value).__name__})")
    return value


def _optional_text(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{fmt} field '{key}' is not a string (got {type(value).__name__})")
    return value


def _join_prompt(instruction: str, extra: str) -> str:
    # Blank-line separation is what the Alpaca and Dolly prompt templates themselves use.
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def from_alpaca(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Alpaca (instruction, optional input, output) to a user/assistant exchange."""
    instruction = _required_text(row, "instruction", "alpaca")
    extra = _optional_text(row, "input", "alpaca")
    output = _required_text(row, "output", "alpaca")
    return {
        "messages": [
            {"role": "user", "content": _join_prompt(instruction, extra)},
            {"role": "assistant", "content": output},
        ]
    }


def from_dolly(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Dolly (instruction, optional context, response) to a user/assistant exchange."""
    instruction = _required_text(row, "instruction", "dolly")
    context = _optional_text(row, "context", "dolly")
    response = _required_text(row, "response", "dolly")
    return {
        "messages": [
            {"role": "user", "content": _join_prompt(instruction, context)},
            {"role": "assistant", "content": response},
        ]
    }


# ShareGPT speaker names seen in the wild, mapped to our roles ("model" is Gemini's word).
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
}


def from_sharegpt(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """ShareGPT (``conversations``: list of {"from", "value"}) to messages.

    Turns written as {"role", "content"} are accepted too: several Hub datasets keep the
    ``conversations`` key but use the OpenAI field names.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a sharegpt row must be an object, got {type(row).__name__}")
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise ValueError("sharegpt row has no 'conversations' list")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise ValueError(f"sharegpt turn {i} is not an object")
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if speaker is None or text is None:
            raise ValueError(f"sharegpt turn {i} needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise ValueError(
                f"sharegpt turn {i} has unknown 'from' value {speaker!r} (known: {', '.join(SHAREGPT_ROLES)})"
            )
        if not isinstance(text, str):
            raise ValueError(f"sharegpt turn {i} value is not a string (got {type(text).__name__})")
        messages.append({"role": role, "content": text})
    return {"messages": messages}


def _as_messages(value: Any, default_role: str, key: str) -> list[Any]:
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, list):
        # Conversational prompt/completion (TRL's format): already messages; copied as is
        # and left to `validate_conversation` to judge.
        return list(value)
    raise ValueError(f"prompt-completion field '{key}' must be a string or a list of messages, got {type(value).__name__}")


def from_prompt_completion(row: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Prompt/completion to messages.

    Strings become one user and one assistant message; message lists (TRL's
    conversational prompt/completion) are concatenated, prompt first.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a prompt-completion row must be an object, got {type(row).__name__}")
    for key in ("prompt", "completion"):
        if row.get(key) is None:
            raise ValueError(f"prompt-completion row has no '{key}' field (keys: {sorted(map(str, row))})")
    prompt = _as_messages(row["prompt"], "user", "prompt")
    completion = _as_messages(row["completion"], "assistant", "completion")
    return {"messages": prompt + completion}


def _from_messages(row: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(row, Mapping) or row.get("messages") is None:
        raise ValueError("row has no 'messages' field")
    return {"messages": row["messages"]}


_CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": from_sharegpt,
    "alpaca": from_alpaca,
    "dolly": from_dolly,
    "prompt-completion": from_prompt_completion,
}


def _short_repr(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def detect_format(row: Mapping[str, Any]) -> str:
    """Tell a row's format from its keys: one of ``FORMATS``.

    Keys are tested from the most specific to the least: ``messages`` and
    ``conversations`` are unambiguous; ``instruction`` alone is shared by Alpaca and Dolly,
    so the answer key (``output`` or ``response``) decides.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"cannot tell the format of row {_short_repr(row)}: it is not an object")
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "instruction" in keys and "response" in keys:
        return "dolly"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    raise ValueError(
        f"cannot tell the format of row {_short_repr(row)}: keys {sorted(map(str, keys))}; expected "
        "'messages', 'conversations' (sharegpt), 'instruction'+'output' (alpaca), "
        "'instruction'+'response' (dolly) or 'prompt'+'completion'"
    )


def to_messages(row: Mapping[str, Any], fmt: str | None = None) -> dict[str, Any]:
    """Convert one row of format ``fmt`` (detected when None) to ``{"messages": [...]}``."""
    if fmt is None:
        fmt = detect_format(row)
    try:
        converter = _CONVERTERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}") from None
    return converter(row)


# --- Reading sources ------------------------------------------------------------------
# Every reader yields (row_number, value, error): value is the parsed row, or None with an
# error string when the row could not even be parsed. Row numbers are 0-based positions
# in the source, so a user can find the row again.

_RawRow = tuple[int, Any, "str | None"]


def _read_json_lines(path: Path, limit: int | None) -> Iterator[_RawRow]:
    # Bytes, decoded line by line: one line with broken UTF-8 is then one invalid row
    # rather than a UnicodeDecodeError for the whole file.
    number = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue  # Blank lines (a trailing newline, separators) are not rows.
            if limit is not None and number >= limit:
                return
            try:
                text = raw.decode("utf-8")
                if number == 0:
                    text = text.removeprefix("\ufeff")  # Editors on Windows add a BOM.
                yield number, json.loads(text), None
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield number, None, str(error)
            number += 1


def _read_json(path: Path, limit: int | None) -> Iterator[_RawRow]:
    """A .json file holds either one JSON array of rows or JSON lines; tell by parsing."""
    data = path.read_bytes()
    if data.decode("utf-8-sig", errors="replace").lstrip().startswith("["):
        try:
            rows = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            # An array has no line structure to recover from: after one syntax error there
            # is no reliable way to tell where the next row starts, so this is a file error.
            message = f"{path} is not a valid JSON array ({error}); fix it or save it as JSON lines (.jsonl)"
            raise DataSourceError(message) from None
        for number, row in enumerate(rows if limit is None else rows[:limit]):
            yield number, row, None
        return
    # Anything else is JSON lines, except that a single pretty-printed object spanning
    # several lines is one row (what a one-line .jsonl file would give).
    try:
        single = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        yield from _read_json_lines(path, limit)
        return
    yield 0, single, None


def _read_parquet(path: Path, limit: int | None) -> Iterator[_RawRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for bad files.
        raise DataSourceError(f"{path} could not be read as parquet: {error}") from None
    number = 0
    # Batches keep memory flat on large files and let `limit` stop early. to_pylist gives
    # plain Python objects, so validation sees the same shapes as for JSON.
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            if limit is not None and number >= limit:
                return
            yield number, row, None
            number += 1


def _env_true(name: str) -> bool:
    # The same truthy spellings huggingface_hub accepts.
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _connection_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, TimeoutError, requests' errors
    try:
        import httpx  # huggingface_hub >= 1.0 talks to the Hub through httpx.

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _is_local_repository(name: str) -> bool:
    """A local folder laid out like a Hub dataset repository (read by the same `load_dataset` call)."""
    return Path(name).expanduser().is_dir()


def _check_hub(name: str, offline_hint: str) -> None:
    """Fail in one line, fast, when `name` is a Hub id and the Hub is out of reach."""
    from .models import hub_reachable

    if _is_local_repository(name):
        return  # a local folder needs no network
    # Check offline mode ourselves, at call time: huggingface_hub reads HF_HUB_OFFLINE once
    # at import, so setting it later (in a notebook cell, or a test) would otherwise be
    # ignored and the call would retry a dead network for half a minute.
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(variable):
            raise DataSourceError(
                f"could not reach the Hugging Face Hub for {name!r}: offline mode is on ({variable}=1); {offline_hint}"
            )
    if not hub_reachable():
        raise DataSourceError(f"could not reach the Hugging Face Hub for {name!r}; {offline_hint}")


class _HubErrors:
    """Turn the Hub's errors into one-line `DataSourceError`s (a context manager)."""

    def __init__(self, name: str, offline_hint: str) -> None:
        self.name = name
        self.offline_hint = offline_hint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        from datasets.exceptions import DatasetNotFoundError

        if error is None:
            return False
        # Checked before OSError (it subclasses FileNotFoundError): the Hub answered, and
        # the answer was "no such dataset", which is a different fix from being offline.
        if isinstance(error, DatasetNotFoundError):
            raise DataSourceError(
                f"dataset {self.name!r} was not found on the Hugging Face Hub (check the name, or log in for a gated "
                f"dataset); {self.offline_hint}"
            ) from None
        if isinstance(error, _connection_errors()):
            # `from None`: the chained traceback from requests/urllib3 is pages long and says
            # nothing more than this line does.
            raise DataSourceError(
                f"could not reach the Hugging Face Hub for {self.name!r} ({type(error).__name__}); {self.offline_hint}"
            ) from None
        return False


def load_hub_dataset(name: str, split: str = "train", limit: int | None = None,
                     offline_hint: str = OFFLINE_HINT) -> datasets.Dataset:
    """A Hub dataset split (or one of a local folder laid out as a Hub dataset repository),
    failing in one line, fast, when the Hub is out of reach.

    This downloads the whole split; `stream_sample` draws a sample without doing so.
    `offline_hint` ends the error message: what to use instead offline.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    _check_hub(name, offline_hint)
    # Slicing the split ("train[:4000]") keeps the prepared dataset small. A split that is
    # already sliced is left alone; the row loop still stops at `limit`.
    if limit is not None and "[" not in split:
        split = f"{split}[:{limit}]"
    with _HubErrors(name, offline_hint):
        return datasets.load_dataset(name, split=split)


def dataset_split_names(name: str, offline_hint: str = OFFLINE_HINT) -> list[str]:
    """The splits of a Hub dataset (or of a local folder laid out as one), e.g. ``["train", "test"]``."""
    _check_hub(name, offline_hint)
    with _HubErrors(name, offline_hint):
        return list(datasets.get_dataset_split_names(name))


# How many rows the streamed sample's shuffle buffer holds. The stream visits the split's
# parquet row groups in a seeded random order (`IterableDataset.reshard`), and the buffer mixes
# the rows of the groups it has read; a larger buffer mixes more groups at the cost of memory
# and download (rows read >= buffer + sample).
SAMPLE_BUFFER = DataConfig().shuffle_buffer


def stream_sample(name: str, split: str, seed: int = 0, buffer_size: int = SAMPLE_BUFFER,
                  offline_hint: str = OFFLINE_HINT) -> datasets.IterableDataset:
    """A split of a Hub dataset (or a local folder laid out as one), streamed in a seeded random order.

    Nothing is downloaded up front: rows arrive as the result is iterated, so taking a few
    thousand rows of a big split reads about ``buffer_size`` + that many rows, not the split.
    The order is random at two levels: the split is cut into its parquet row groups
    (`IterableDataset.reshard`) whose order is shuffled, and a buffer of ``buffer_size`` rows,
    fed by up to ten row groups at a time (`IterableDataset.shuffle`), is shuffled as it
    streams. A split sorted by some column (smol-smoltalk's ``source``) therefore still gives
    a sample that spans it, as far as the row groups read do: a cluster sample of about
    (``buffer_size`` + rows taken) / rows-per-group groups.
    """
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
    _check_hub(name, offline_hint)
    with _HubErrors(name, offline_hint):
        stream = datasets.load_dataset(name, split=split, streaming=True)
        return stream.reshard().shuffle(seed=seed, buffer_size=buffer_size)


def rows_per_source(dataset: datasets.Dataset | Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows come from each ``source`` (most first); empty when there is no such column."""
    if isinstance(dataset, datasets.Dataset):
        values = list(dataset["source"]) if "source" in dataset.column_names else []
    else:
        values = [row["source"] for row in dataset if "source" in row]
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _read_hub(dataset: datasets.Dataset, limit: int | None) -> Iterator[_RawRow]:
    for number, row in enumerate(dataset):
        if limit is not None and number >= limit:
            return
        yield number, row, None


class _HubRows:
    """Raw rows of a Hub dataset, iterable more than once (format detection, then conversion)
    without copying the dataset into Python objects up front."""

    def __init__(self, dataset: datasets.Dataset, limit: int | None) -> None:
        self.dataset = dataset
        self.limit = limit

    def __iter__(self) -> Iterator[_RawRow]:
        return _read_hub(self.dataset, self.limit)


def _open_source(source: str, split: str, limit: int | None) -> Iterable[_RawRow]:
    """Pick the reader for ``source``; returns a re-iterable collection of raw rows."""
    if source == BUILTIN_SOURCE:
        raise DataSourceError(
            f'source "{BUILTIN_SOURCE}" is generated by sftkit.tasks, not loaded from a file or the Hub'
        )
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in LOCAL_SUFFIXES:
        if not path.is_file():
            raise DataSourceError(f"no such file: {source}")
        if suffix == ".jsonl":
            return list(_read_json_lines(path, limit))
        if suffix == ".json":
            return list(_read_json(path, limit))
        return list(_read_parquet(path, limit))
    if path.exists() and not path.is_dir():
        # A local file of another kind. Refused here rather than passed on to `load_dataset`,
        # whose schema inference is exactly what this module avoids.
        raise DataSourceError(f"cannot load {source}: pass one local file ending in {', '.join(LOCAL_SUFFIXES)}, "
                              "or a folder laid out as a Hub dataset repository")
    # A Hub id, or a local folder laid out as a Hub dataset repository: the same call.
    return _HubRows(load_hub_dataset(source, split, limit), limit)


def _detect_source_format(rows: Iterable[_RawRow]) -> str | None:
    # The format is decided once per source: rows of one file share a shape, and deciding
    # per row would silently accept a file that mixes formats. The first row whose format
    # can be told decides, so one garbled first line does not sink the file.
    for _, value, error in rows:
        if error is None and isinstance(value, Mapping):
            try:
                return detect_format(value)
            except ValueError:
                continue
    return None


def _normalise(messages: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    # Only role and content are kept: extra per-message keys (names, weights, tool calls)
    # vary between rows and would make pyarrow's schema inference fail, and no chat
    # template step downstream uses them.
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_conversations(
    source: str,
    strict: bool = False,
    split: str = "train",
    fmt: str | None = None,
    limit: int | None = None,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Load conversations from a Hub id, a local folder laid out as a Hub dataset repository (both
    through `datasets.load_dataset`), or a local .json/.jsonl/.parquet file.

    This reads the *first* rows (``limit``); `sample_conversations` draws a representative
    sample of a big split instead.

    Every row is converted to the ``messages`` format (``fmt``, or detected once for the
    whole source) and validated. Lenient mode (the default) keeps the valid rows and counts
    the rest; ``strict=True`` raises `InvalidConversationError` at the first bad row.
    ``limit`` caps how many rows are read (the Hub split is sliced accordingly).

    Returns the dataset (one ``messages`` column) and a report::

        {"source", "format", "rows_read", "kept",
         "dropped": {reason: count}, "dropped_rows": {reason: [row numbers]}}

    Row numbers are 0-based positions in the source: array index for a JSON array, index
    among non-blank lines for JSON lines, row index for parquet and the Hub.
    """
    source = os.fspath(source)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")

    rows = _open_source(source, split, limit)
    detected = fmt or _detect_source_format(rows)
    return _convert_rows(source, rows, detected, strict)


def _convert_rows(source: str, rows: Iterable[_RawRow], detected: str | None, strict: bool,
                  keep_source: bool = False, want: int | None = None) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Convert and validate raw rows into a ``messages`` dataset and its drop report.

    With `keep_source`, a string ``source`` column of the rows is kept (a sub-dataset's name,
    as smol-smoltalk has). With `want`, reading stops once that many rows were kept.
    """
    # No row has a recognisable shape: fall back to "messages", so that every row is
    # dropped with a reason (usually "missing messages") rather than the call failing.
    used_format = detected or "messages"

    kept: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    dropped_rows: dict[str, list[int]] = {}
    rows_read = 0

    def drop(number: int, reason: str, detail: str | None = None) -> None:
        if strict:
            raise InvalidConversationError(number, reason, detail)
        dropped[reason] = dropped.get(reason, 0) + 1
        dropped_rows.setdefault(reason, []).append(number)

    for number, value, error in rows:
        rows_read += 1
        if error is not None:
            drop(number, INVALID_JSON, error)
            continue
        if not isinstance(value, Mapping):
            drop(number, NOT_AN_OBJECT)
            continue
        if used_format == "messages":
            # Validated as read, so a missing or broken `messages` gets its precise reason
            # instead of the catch-all "unconvertible row".
            conversation: Mapping[str, Any] = value
        else:
            try:
                conversation = to_messages(value, used_format)
                conversion_error = None
            except ValueError as error:
                conversion_error = str(error)
            if conversion_error is not None:
                # Dropped outside the `except` block, so that a strict-mode error does not
                # carry the converter's traceback chained under it.
                drop(number, UNCONVERTIBLE_ROW, conversion_error)
                continue
        reason = validate_conversation(conversation)
        if reason is not None:
            drop(number, reason)
            continue
        row = {"messages": _normalise(conversation["messages"])}
        if keep_source:
            label = value.get("source")
            row["source"] = label if isinstance(label, str) else ""
        kept.append(row)
        if want is not None and len(kept) >= want:
            break  # before the next row is pulled: a stream is read no further than needed

    total_dropped = sum(dropped.values())
    if rows_read != len(kept) + total_dropped:  # Not `assert`: it must survive `python -O`.
        raise AssertionError(f"row accounting broken: read {rows_read}, kept {len(kept)}, dropped {total_dropped}")

    features = SOURCE_FEATURES if keep_source else MESSAGES_FEATURES
    # from_list cannot build an empty dataset with a given schema; from_dict can.
    dataset = (
        datasets.Dataset.from_list(kept, features=features)
        if kept
        else datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    )
    report = {
        "source": source,
        "format": used_format,
        "rows_read": rows_read,
        "kept": len(kept),
        "dropped": dropped,
        "dropped_rows": dropped_rows,
    }
    return dataset, report


def split_rows_per_source(name: str, split: str, offline_hint: str = OFFLINE_HINT) -> dict[str, int]:
    """How many rows of a split come from each ``source``, reading that column only (parquet
    column projection: a streamed Hub split sends the ``source`` pages, not the conversations)."""
    _check_hub(name, offline_hint)
    counts: dict[str, int] = {}
    with _HubErrors(name, offline_hint):
        stream = datasets.load_dataset(name, split=split, streaming=True, columns=["source"])
        for batch in stream.iter(batch_size=10_000):
            for value in batch["source"]:
                counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def source_quotas(counts: Mapping[str, int], n: int) -> dict[str, int]:
    """Rows per source for a sample of `n` in proportion to `counts` (largest remainder: the
    quotas sum to `n`, and each is the source's exact share rounded down or up)."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("no rows to take a share of")
    exact = {key: n * count / total for key, count in counts.items()}
    quotas = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (-(exact[key] - quotas[key]), key))
    for key in by_remainder[: n - sum(quotas.values())]:
        quotas[key] += 1
    return quotas


def _stratified(rows: Iterable[_RawRow], quotas: dict[str, int], fmt: str | None,
                skipped: dict[str, int]) -> Iterator[_RawRow]:
    """Pass rows of sources whose quota is not yet filled by valid rows; count the others in `skipped`.

    An invalid row is passed on (the converter drops it with its reason) without using the
    quota, so the kept rows fill every quota when the stream has enough valid ones.
    """
    filled = dict.fromkeys(quotas, 0)
    for number, value, error in rows:
        label = value.get("source") if isinstance(value, Mapping) else None
        if label in filled and filled[label] >= quotas[label]:
            skipped[label] = skipped.get(label, 0) + 1
            continue
        if label in filled and error is None:
            try:
                conversation = value if (fmt or "messages") == "messages" else to_messages(value, fmt)
                valid = validate_conversation(conversation) is None
            except ValueError:
                valid = False
            filled[label] += valid
        yield number, value, error


def sample_conversations(
    source: str,
    n: int,
    split: str = "train",
    seed: int = 0,
    buffer_size: int = SAMPLE_BUFFER,
    strict: bool = False,
    fmt: str | None = None,
    stratify_by_source: bool = False,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """A seeded, representative sample of `n` valid conversations from one split of a Hub dataset
    (or a local folder laid out as one), streamed (`stream_sample`) instead of downloaded whole.

    Rows are converted and validated as in `load_conversations`; a dropped row is counted by
    reason and replaced by the next row of the stream, so the sample has `n` rows unless the
    split runs out. A string ``source`` column (which sub-dataset a row comes from) is kept.
    Row numbers in the report are positions in the shuffled stream (the source's own row
    numbers are unknown there). The report adds ``split``, ``seed``, ``buffer_size`` and
    ``rows_per_source``.

    With `stratify_by_source`, each ``source`` gets its share of the split's rows
    (`split_rows_per_source`, `source_quotas`): rows of a source whose quota is filled are
    skipped (counted in the report's ``skipped_by_stratification``, not as dropped), so a rare
    source may need the stream read further, up to the whole split. The report then adds
    ``split_rows_per_source``.
    """
    source = os.fspath(source)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    stream = stream_sample(source, split, seed=seed, buffer_size=buffer_size)
    with _HubErrors(source, OFFLINE_HINT):
        # The first n rows decide the format; rows beyond them are streamed (same seed, same
        # order) only when some were dropped and need replacing.
        rows = [(number, row, None) for number, row in enumerate(stream.take(n))]
        detected = fmt or _detect_source_format(rows)
        keep_source = any(isinstance(row, Mapping) and isinstance(row.get("source"), str) for _, row, _ in rows)
        more = ((number, row, None) for number, row in enumerate(stream.skip(n), start=n))
        stream_rows: Iterable[_RawRow] = _chain(rows, more)
        skipped: dict[str, int] = {}
        if stratify_by_source:
            if not keep_source:
                raise DataSourceError(f"{source!r} has no string 'source' column to stratify by")
            split_counts = split_rows_per_source(source, split)
            stream_rows = _stratified(stream_rows, source_quotas(split_counts, n), detected, skipped)
        dataset, report = _convert_rows(source, stream_rows, detected, strict, keep_source=keep_source, want=n)
    report.update(split=split, seed=seed, buffer_size=buffer_size, rows_per_source=rows_per_source(dataset))
    if stratify_by_source:
        report.update(split_rows_per_source=split_counts, skipped_by_stratification=skipped)
    return dataset, report


def _chain(*parts: Iterable[_RawRow]) -> Iterator[_RawRow]:
    for part in parts:
        yield from part


def format_report(report: Mapping[str, Any], max_rows: int = 5) -> str:
    """A short human-readable summary of a `load_conversations` report."""
    rows_read = report["rows_read"]
    kept = report["kept"]
    where = f" ({report['split']} split, seed {report['seed']})" if "split" in report and "seed" in report else ""
    lines = [f"{report['source']}{where}: kept {kept} of {rows_read} rows ({rows_read - kept} dropped)"]
    # Most frequent reason first: that is the one worth fixing.
    for reason, count in sorted(report["dropped"].items(), key=lambda item: (-item[1], item[0])):
        numbers = report.get("dropped_rows", {}).get(reason, [])
        shown = ", ".join(str(n) for n in numbers[:max_rows])
        more = f", ... ({len(numbers) - max_rows} more)" if len(numbers) > max_rows else ""
        label = "row" if len(numbers) == 1 else "rows"
        lines.append(f"  {reason}: {count} ({label} {shown}{more})" if numbers else f"  {reason}: {count}")
    return "\n".join(lines)


# --- Splitting ------------------------------------------------------------------------


def _test_count(test_size: float | int, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size {test_size} is out of range: a fraction must be strictly between 0 and 1")
        count = round(test_size * n)
        if not 1 <= count <= n - 1:
            raise ValueError(
                f"test_size {test_size} of {n} rows gives {count} test rows; both splits need at least one row"
            )
        return count
    if not 1 <= test_size <= n - 1:
        raise ValueError(
            f"test_size {test_size} is out of range: a row count must be between 1 and {n - 1} for {n} rows"
        )
    return test_size


def _stratified_test_indices(values: list[Any], n_test: int, rng: np.random.Generator) -> np.ndarray:
    groups: dict[Any, list[int]] = {}
    for index, value in enumerate(values):
        try:
            groups.setdefault(value, []).append(index)
        except TypeError:
            raise ValueError(f"cannot stratify: row {index} has an unhashable value {_short_repr(value)}") from None
    n = len(values)
    # Largest-remainder rounding: each group gets floor(exact share) and the rows still
    # missing go to the groups with the largest fractional parts. Every group is then within
    # one row of its exact share, and the test set has exactly n_test rows.
    exact = {key: len(members) * n_test / n for key, members in groups.items()}
    counts = {key: math.floor(share) for key, share in exact.items()}
    missing = n_test - sum(counts.values())
    # Ties broken by first appearance (dict order), which keeps the split deterministic.
    by_remainder = sorted(groups, key=lambda key: -(exact[key] - counts[key]))
    for key in by_remainder[:missing]:
        counts[key] += 1
    chosen = [rng.permutation(np.asarray(members))[: counts[key]] for key, members in groups.items()]
    return np.concatenate(chosen) if chosen else np.array([], dtype=int)


def split_dataset(
    dataset: datasets.Dataset,
    test_size: float | int,
    seed: int = 0,
    stratify_by: str | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split into (train, test), deterministic for a given ``seed``.

    ``test_size`` is a fraction in (0, 1) or a row count. With ``stratify_by`` naming a
    column, each value keeps its share in the test set (within one row). This is done here
    with numpy rather than ``Dataset.train_test_split(stratify_by_column=...)`` because the
    latter only accepts ClassLabel columns, and ours are usually strings or bools (a task
    name, "has a system prompt"). Both splits come back in shuffled order.
    """
    n = len(dataset)
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify_by is None:
        order = rng.permutation(n)
        test_indices, train_indices = order[:n_test], order[n_test:]
    else:
        if stratify_by not in dataset.column_names:
            raise ValueError(f"cannot stratify by {stratify_by!r}: columns are {dataset.column_names}")
        # list(): datasets 5 returns a lazy Column object for dataset[name].
        test_indices = _stratified_test_indices(list(dataset[stratify_by]), n_test, rng)
        in_test = np.zeros(n, dtype=bool)
        in_test[test_indices] = True
        # Shuffle both: concatenated groups would otherwise leave the rows sorted by label.
        train_indices = rng.permutation(np.flatnonzero(~in_test))
        test_indices = rng.permutation(test_indices)
    return dataset.select(train_indices.tolist()), dataset.select(test_indices.tolist())


# --- Statistics -----------------------------------------------------------------------


def conversation_stats(dataset: datasets.Dataset | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Describe conversations: count, turns per conversation, system-prompt share, roles.

    Character counts only; token lengths depend on the tokenizer and are computed where
    one is loaded. Means, min and max are None for an empty dataset.
    """
    if isinstance(dataset, datasets.Dataset):
        conversations = list(dataset["messages"])  # a lazy Column in datasets 5
    else:
        conversations = [row["messages"] for row in dataset]
    turns = [len(messages) for messages in conversations]
    role_counts = {role: 0 for role in ROLES}
    reply_chars: list[int] = []
    with_system = 0
    for messages in conversations:
        if messages and messages[0]["role"] == "system":
            with_system += 1
        for message in messages:
            role_counts[message["role"]] = role_counts.get(message["role"], 0) + 1
            if message["role"] == "assistant":
                reply_chars.append(len(message["content"]))
    n = len(conversations)
    return {
        "conversations": n,
        "turns": {
            "mean": sum(turns) / n if n else None,
            "min": min(turns) if n else None,
            "max": max(turns) if n else None,
        },
        "system_share": with_system / n if n else None,
        "role_counts": role_counts,
        "assistant_chars_mean": sum(reply_chars) / len(reply_chars) if reply_chars else None,
    }
