"""Conversation data: load, convert, validate, split and describe chat datasets.

Supervised fine-tuning learns from conversations, and a chat template can only render a
conversation that is well formed: roles it knows, string contents, a system prompt only
at the start, and at least one assistant reply to learn from. Real datasets break these
rules in a few rows out of thousands, and they come in several shapes (Alpaca, Dolly,
ShareGPT, prompt/completion). This package turns every source into one canonical shape,
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

The package, one idea per module (every public name is re-exported here, so ``from sftkit.data import X``
works for every name)::

    validation.py   the ``messages`` shape, the reason vocabulary, `validate_conversation`
    errors.py       `DataSourceError` (a source cannot be opened), `InvalidConversationError` (strict mode)
    converters.py   Alpaca, Dolly, ShareGPT, prompt/completion to ``messages``; `detect_format`
    hub_access.py   Hub datasets (or local folders laid out as one), failing in one line offline
    readers.py      raw rows of a local json/jsonl/parquet file or a Hub dataset, one by one
    loading.py      `load_conversations`: convert, validate, count what was dropped
    sampling.py     `sample_conversations`: a seeded streamed sample, optionally stratified by source
    splits.py       `split_dataset`: seeded train/test split, optionally stratified by a column
    stats.py        `conversation_stats`
"""

from __future__ import annotations

from .converters import (
    FORMATS,
    SHAREGPT_ROLES,
    detect_format,
    from_alpaca,
    from_dolly,
    from_prompt_completion,
    from_sharegpt,
    to_messages,
)
from .errors import DataSourceError, InvalidConversationError
from .hub_access import BUILTIN_SOURCE, OFFLINE_HINT, dataset_split_names, load_hub_dataset
from .loading import format_report, load_conversations
from .readers import LOCAL_SUFFIXES
from .sampling import (
    SAMPLE_BUFFER,
    no_shutdown_sleep,
    rows_per_source,
    sample_conversations,
    source_quotas,
    split_rows_per_source,
    stream_sample,
)
from .splits import split_dataset
from .stats import conversation_stats
from .validation import (
    CONTENT_NOT_A_STRING,
    EMPTY_ASSISTANT_REPLY,
    INVALID_JSON,
    MESSAGE_NOT_AN_OBJECT,
    MESSAGE_WITHOUT_CONTENT,
    MESSAGE_WITHOUT_ROLE,
    MESSAGES_EMPTY,
    MESSAGES_FEATURES,
    MESSAGES_NOT_A_LIST,
    MISSING_MESSAGES,
    NO_ASSISTANT_TURN,
    NOT_AN_OBJECT,
    REASONS,
    ROLES,
    SOURCE_FEATURES,
    SYSTEM_NOT_FIRST,
    UNCONVERTIBLE_ROW,
    UNKNOWN_ROLE,
    validate_conversation,
)

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
    "no_shutdown_sleep",
    "dataset_split_names",
    "load_hub_dataset",
    "rows_per_source",
    "SAMPLE_BUFFER",
    "format_report",
    "split_dataset",
    "conversation_stats",
    # Re-exported too (the docstring's promise: every public name importable from sftkit.data).
    "SHAREGPT_ROLES",
    "BUILTIN_SOURCE",
    "OFFLINE_HINT",
    "LOCAL_SUFFIXES",
    "source_quotas",
    "split_rows_per_source",
    "SOURCE_FEATURES",
]
