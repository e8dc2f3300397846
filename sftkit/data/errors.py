"""The two ways loading conversations fails, shared by every part of `sftkit.data`.

A source that cannot be opened at all (`DataSourceError`) is a different fix from one bad
row in a good source (`InvalidConversationError`, raised only in strict mode; lenient loading
counts such rows in its report instead). Both live here so that the readers, the Hub access
and the loader raise the same classes without importing each other.
"""

from __future__ import annotations


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
