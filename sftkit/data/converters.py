"""Converters from the common chat-data shapes (Alpaca, Dolly, ShareGPT, prompt/completion) to ``messages``.

Real datasets come in several shapes; everything downstream sees one. Each converter takes one
source row and returns ``{"messages": [...]}`` whose contents are all strings, raising
ValueError when a field it needs is missing or of the wrong type. Converters do not judge the
conversation (an empty reply converts fine and is then rejected by `validate_conversation`), so
every quality rule lives in one place. `detect_format` tells a row's shape from its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The formats `to_messages` understands, in the order `detect_format` tries them.
FORMATS = ("messages", "sharegpt", "alpaca", "dolly", "prompt-completion")


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


def _instruction_exchange(
    row: Mapping[str, Any], fmt: str, extra_key: str, reply_key: str
) -> dict[str, list[dict[str, str]]]:
    """An instruction row (instruction, optional extra text, reply) as a user/assistant exchange."""
    instruction = _required_text(row, "instruction", fmt)
    extra = _optional_text(row, extra_key, fmt)
    reply = _required_text(row, reply_key, fmt)
    return {
        "messages": [
            {"role": "user", "content": _join_prompt(instruction, extra)},
            {"role": "assistant", "content": reply},
        ]
    }


def from_alpaca(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Alpaca (instruction, optional input, output) to a user/assistant exchange."""
    return _instruction_exchange(row, "alpaca", "input", "output")


def from_dolly(row: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Dolly (instruction, optional context, response) to a user/assistant exchange."""
    return _instruction_exchange(row, "dolly", "context", "response")


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
    raise ValueError(f"prompt-completion field '{key}' must be a string or a list of messages, "
                     f"got {type(value).__name__}")


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
