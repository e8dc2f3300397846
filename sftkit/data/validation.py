"""The canonical ``messages`` shape and the one check every row goes through.

A chat template can only render a well-formed conversation: known roles, string contents, a
system prompt only at the start, at least one non-empty assistant reply. `validate_conversation`
is the single place these rules live (converters only reshape rows), and it answers with one of
a fixed vocabulary of reasons (``REASONS``) so that a report can count rows by defect.
``MESSAGES_FEATURES`` is the schema of every dataset `sftkit.data` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets

ROLES = ("system", "user", "assistant")

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
