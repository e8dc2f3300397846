"""Describing conversations: how many, how long, how many with a system prompt, which roles.

The numbers a notebook prints before training, to see what the data looks like. Character
counts only: token lengths depend on the tokenizer and are computed where one is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import datasets

from .validation import ROLES


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
