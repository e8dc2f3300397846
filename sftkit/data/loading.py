"""Loading: raw rows in, a validated ``messages`` dataset and a report of every dropped row out.

Nothing is lost silently: `load_conversations` counts every dropped row by reason, lists its
row number, and checks that ``rows_read == kept + dropped``; ``strict=True`` stops at the first
bad row instead. One bad row never sinks the file: each row is converted and validated on its
own, and the ``Dataset`` is built only from the rows that passed. `format_report` prints it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import datasets

from .converters import FORMATS, detect_format, to_messages
from .errors import InvalidConversationError
from .readers import _open_source, _RawRow
from .validation import (
    INVALID_JSON,
    MESSAGES_FEATURES,
    NOT_AN_OBJECT,
    SOURCE_FEATURES,
    UNCONVERTIBLE_ROW,
    validate_conversation,
)


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
