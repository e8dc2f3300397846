"""Declared types of the configuration's fields: checking a value, reading one from ``--set`` text.

`sftkit.config` declares every field with a type (``int | None``, a ``Literal`` of choices,
``list[str]``); this module is what reads those declarations: whether a value matches one
(`check_types`, run by every settings section), how ``--set KEY=VALUE`` text becomes a value
of that type (`parse_value`), and how `sftkit config` shows a type and a value (`type_text`,
`format_value`, the inverse of `parse_value`). It depends on nothing else in sftkit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, NamedTuple

__all__ = ["Setting", "settings", "check_types", "format_value", "parse_value", "type_hints", "type_text"]


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    # The annotations are strings (`from __future__ import annotations`); this evaluates them once.
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def type_text(hint: Any) -> str:
    """A declared type as `sftkit config` shows it: ``int or none``, ``group|pack|pad``, ``list[str]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "|".join(str(choice) for choice in args)
    if _is_union(hint):
        return " or ".join("none" if arg is type(None) else type_text(arg) for arg in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_text(arg) for arg in args)}]"
    return getattr(hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` is of the declared type (bool is not a number here; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return isinstance(value, str) and value in args
    if _is_union(hint):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)


def check_types(obj: Any, prefix: str) -> None:
    """Raise `ValueError` naming the first field of `obj` (not a section) whose value is not of its declared type."""
    hints = type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hint):  # a section: checked field by field by its own validate()
            if not isinstance(value, hint):
                raise ValueError(f"{key} must be a {hint.__name__} (a section of the configuration), got {value!r}")
            continue
        if _matches(value, hint):
            continue
        first = typing.get_args(hint)[0] if _is_union(hint) else hint
        wanted = ("one of " if typing.get_origin(first) is Literal else "") + type_text(hint)
        raise ValueError(f"{key} must be {wanted}, got {value!r}")


def parse_value(text: str, hint: Any, key: str) -> Any:
    """`text` read as the field's declared type (`hint`); raises `ValueError` naming `key`.

    bool: true/false (1/0, yes/no); ``X | None``: none or null, else an X; a list: JSON
    (``["q_proj"]``) or comma-separated (``q_proj,v_proj``); a dict: JSON. A ``Literal``
    comes back as the text, and `RunConfig.validate` names the choices when it is not one.
    """
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {key}: expected true or false, got {text!r}")
    try:
        return _parse_as(text, hint)
    except ValueError as error:
        detail = f" ({error})" if str(error) else ""
        raise ValueError(f"--set {key}: cannot read {text!r} as {type_text(hint)}{detail}") from None


def _parse_as(text: str, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        choices = [choice for arg in args if typing.get_origin(arg) is Literal for choice in typing.get_args(arg)]
        if text in choices:
            return text
        for arg in args:
            if arg is type(None) or typing.get_origin(arg) is Literal:
                continue
            # Beside a Literal, a list needs its comma or brackets: a bare word is a misspelt choice
            # ("mpl"), which validation names, rather than a one-module list that fails after loading.
            if choices and typing.get_origin(arg) is list and "," not in text and not text.startswith("["):
                continue
            try:
                return _parse_as(text, arg)
            except ValueError:
                continue
        if choices:
            return text
        raise ValueError("")  # `parse_value` names the union; no one member's complaint is the reason
    if origin is Literal or hint is str:
        return text
    if hint is bool:
        if text.lower() in ("true", "1", "yes", "false", "0", "no"):
            return text.lower() in ("true", "1", "yes")
        raise ValueError("expected true or false")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if origin is list:
        if text.startswith("["):
            value = json.loads(text)
            if not isinstance(value, list):
                raise ValueError("not a JSON list")
            return value
        return [part.strip() for part in text.split(",") if part.strip()]
    if origin is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    raise ValueError(f"no reader for {hint}")


def format_value(value: Any) -> str:
    """A value as `--set` reads it back (the inverse of `parse_value`): none, true, a,b, JSON for dicts."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # one name stays JSON: a bare word beside a Literal reads as a choice
        return ",".join(value) if len(value) > 1 else json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class Setting(NamedTuple):
    """One key `--set` takes, as `sftkit config` lists it."""

    key: str  # dotted: "train.learning_rate"
    type: str  # `type_text` of the declaration
    value: str  # `format_value` of the value in the config at hand
    help: str


def settings(cfg: Any) -> list[Setting]:
    """Every key `--set` takes, in declaration order, with its type, its value in `cfg` and its help."""
    rows = []

    def walk(obj: Any, prefix: str) -> None:
        hints = type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                rows.append(Setting(prefix + f.name, type_text(hints[f.name]), format_value(value),
                                    f.metadata["help"]))

    walk(cfg, "")
    return rows
