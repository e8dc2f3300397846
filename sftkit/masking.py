"""Conversation -> ``input_ids``, ``attention_mask``, ``labels`` with loss on assistant tokens only.

This is what TRL's ``SFTTrainer(assistant_only_loss=True)`` does internally; we do it in the
open so the notebooks can show the mask token by token and the tests can check it. The
labels agree token for token with TRL's (``tests/test_masking.py`` compares them), with two
deliberate additions:

- literal control strings inside a message (a user typing ``<|im_end|>``) are encoded as
  plain text, never as control tokens: otherwise any user could end a turn or forge an
  assistant turn inside the training data;
- rows that truncation leaves without a single trained token are dropped *and counted*
  (TRL drops them silently).

The mask inspector (`inspect_mask`) renders a conversation with its trained tokens
highlighted and refuses to show a mask that would train nothing or never train the model
to stop.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Iterable

from .chat import turn_format_of

IGNORE_INDEX = -100
# Private-use characters bracket control strings found in message content while the
# template renders, so we can tell them apart from the template's own control tokens.
# Two characters absent from the conversation are chosen each time (`_pick_markers`).
_PRIVATE_USE = range(0xE000, 0xF900)


class NoTrainableTokensError(ValueError):
    """A tokenized row has no token with a label (e.g. truncation cut every assistant turn)."""


def control_strings(tokenizer: Any) -> tuple[str, ...]:
    """Strings the tokenizer would turn into control tokens: special and template tokens."""
    template = tokenizer.chat_template or ""
    found = {
        token.content
        for token in tokenizer.added_tokens_decoder.values()
        if token.special or (token.content in template and not token.content.isspace())
    }
    return tuple(sorted(found, key=len, reverse=True))  # longest first, so no prefix wins


def _pick_markers(messages: list[dict[str, str]]) -> tuple[str, str]:
    used = set("".join(message["content"] for message in messages))
    free = (chr(code) for code in _PRIVATE_USE if chr(code) not in used)
    return next(free), next(free)


def _mark_literals(messages: list[dict[str, str]], controls: tuple[str, ...],
                   markers: tuple[str, str]) -> tuple[list[dict], bool]:
    opening, closing = markers
    marked, any_found = [], False
    for message in messages:
        content = message["content"]
        for control in controls:
            if control in content:
                any_found = True
                content = content.replace(control, f"{opening}{control}{closing}")
        marked.append({**message, "content": content})
    return marked, any_found


def _unmark(text: str, spans: list[tuple[int, int]],
            markers: tuple[str, str]) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """Remove the literal markers; return clean text, literal spans and `spans` in clean coordinates."""
    opening, closing = markers
    clean_index = []  # clean_index[i] = position in the clean text of rendered char i
    pieces, literal_spans, position, literal_start = [], [], 0, None
    for char in text:
        clean_index.append(position)
        if char == opening:
            literal_start = position
        elif char == closing:
            literal_spans.append((literal_start, position))
        else:
            pieces.append(char)
            position += 1
    clean_index.append(position)
    mapped = [(clean_index[start], clean_index[end]) for start, end in spans]
    return "".join(pieces), literal_spans, mapped


def _encode_segments(text: str, literal_spans: list[tuple[int, int]], tokenizer: Any):
    """Token ids and character offsets; literal spans are encoded as plain text."""
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    cursor = 0
    bounds = [(start, end, True) for start, end in literal_spans] + [(len(text), len(text), False)]
    for start, end, literal in bounds:
        for seg_start, seg_end, as_text in ((cursor, start, False), (start, end, literal)):
            if seg_end <= seg_start:
                continue
            encoded = tokenizer(
                text[seg_start:seg_end],
                add_special_tokens=False,
                return_offsets_mapping=True,
                split_special_tokens=as_text,
            )
            ids.extend(encoded["input_ids"])
            offsets.extend((a + seg_start, b + seg_start) for a, b in encoded["offset_mapping"])
        cursor = end
    return ids, offsets


def _assistant_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    # The same rule as transformers' apply_chat_template: a token is an assistant token when
    # it overlaps a generation span.
    mask = [0] * len(offsets)
    span_index = 0
    for token_index, (token_start, token_end) in enumerate(offsets):
        while span_index < len(spans) and token_start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        if token_end > spans[span_index][0]:
            mask[token_index] = 1
    return mask


def tokenize_conversation(
    messages: list[dict[str, str]],
    tokenizer: Any,
    max_length: int | None = None,
    truncation: str = "keep_start",
) -> dict[str, list[int]]:
    """Tokenize one conversation with its chat template; labels are -100 except on assistant turns.

    Each assistant turn's ``<|im_end|>`` carries loss (that is how the model learns to stop).
    `truncation` is TRL's ``truncation_mode``: ``keep_start`` cuts the end, ``keep_end`` the
    start. Raises `NoTrainableTokensError` when no assistant token survives.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    if truncation not in ("keep_start", "keep_end"):
        raise ValueError(f"truncation must be 'keep_start' or 'keep_end', got {truncation!r}")
    markers = _pick_markers(messages)
    marked, has_literals = _mark_literals(messages, control_strings(tokenizer), markers)
    rendered, generation_indices = render_jinja_template(
        conversations=[marked],
        chat_template=tokenizer.chat_template,
        return_assistant_tokens_mask=True,
        **tokenizer.special_tokens_map,
    )
    text, spans = rendered[0], generation_indices[0]
    literal_spans: list[tuple[int, int]] = []
    if has_literals:
        text, literal_spans, spans = _unmark(text, spans, markers)
    input_ids, offsets = _encode_segments(text, literal_spans, tokenizer)
    mask = _assistant_mask(offsets, spans)
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, mask)]
    if max_length is not None and len(input_ids) > max_length:
        window = slice(None, max_length) if truncation == "keep_start" else slice(-max_length, None)
        input_ids, labels = input_ids[window], labels[window]
    if all(label == IGNORE_INDEX for label in labels):
        raise NoTrainableTokensError(
            f"no assistant token left after tokenization (length {len(input_ids)}, max_length {max_length})"
        )
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_dataset(dataset: Any, tokenizer: Any, max_length: int | None = None, truncation: str = "keep_start"):
    """Tokenize a `messages` dataset; returns (dataset with input_ids/attention_mask/labels, report).

    Rows left without trainable tokens are dropped and counted in ``report["dropped"]`` with
    their row numbers, never lost silently.
    """
    from datasets import Dataset

    rows, dropped_rows, truncated = [], [], 0
    for index, example in enumerate(dataset):
        try:
            row = tokenize_conversation(example["messages"], tokenizer, max_length, truncation)
        except NoTrainableTokensError:
            dropped_rows.append(index)
            continue
        if max_length is not None and len(row["input_ids"]) == max_length:
            truncated += 1  # at the limit: possibly cut (an exact fit counts too)
        rows.append({"messages": example["messages"], **row})
    report = {
        "rows": len(dataset),
        "kept": len(rows),
        "at_max_length": truncated,
        "dropped": {"no assistant token after truncation": len(dropped_rows)} if dropped_rows else {},
        "dropped_rows": {"no assistant token after truncation": dropped_rows} if dropped_rows else {},
    }
    assert report["kept"] + len(dropped_rows) == report["rows"], "rows were lost without being counted"
    return Dataset.from_list(rows), report


# --------------------------------------------------------------------------- label checks


def assistant_turn_ends(input_ids: list[int], tokenizer: Any) -> list[int]:
    """Positions of the end-of-turn token closing each assistant turn in a tokenized conversation."""
    fmt = turn_format_of(tokenizer)
    start_id = tokenizer.convert_tokens_to_ids(fmt.start)
    end_id = tokenizer.convert_tokens_to_ids(fmt.end)
    role_ids = tokenizer("assistant", add_special_tokens=False)["input_ids"]
    ends, in_assistant = [], False
    for position, token in enumerate(input_ids):
        if token == start_id:
            in_assistant = input_ids[position + 1 : position + 1 + len(role_ids)] == role_ids
        elif token == end_id and in_assistant:
            ends.append(position)
            in_assistant = False
    return ends


def check_labels(input_ids: list[int], labels: list[int], tokenizer: Any) -> None:
    """Raise if labels train nothing or leave an assistant turn's end-of-turn untrained."""
    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids ({len(input_ids)}) and labels ({len(labels)}) differ in length")
    if all(label == IGNORE_INDEX for label in labels):
        raise ValueError("all labels are -100: this row trains nothing")
    for position in assistant_turn_ends(input_ids, tokenizer):
        if labels[position] != input_ids[position]:
            raise ValueError(
                f"the end-of-turn token at position {position} is not trained: the model would not learn to stop"
            )


# --------------------------------------------------------------------------- inspection


@dataclass
class MaskView:
    """A tokenized conversation with its trained tokens highlighted (HTML in notebooks, text in terminals)."""

    tokens: list[str]
    trained: list[bool]

    @property
    def trained_fraction(self) -> float:
        return sum(self.trained) / max(len(self.trained), 1)

    def text(self, color: bool = False) -> str:
        """Terminal rendering: trained tokens in ``[[...]]`` (or green with `color`)."""
        out = []
        for token, trained in zip(self.tokens, self.trained):
            shown = token.replace("\n", "\\n\n")
            if trained:
                shown = f"\033[42m{shown}\033[0m" if color else f"[[{shown}]]"
            out.append(shown)
        return "".join(out)

    def _repr_html_(self) -> str:
        spans = []
        for token, trained in zip(self.tokens, self.trained):
            shown = html.escape(token).replace("\n", "\\n<br>")
            style = "background:#b7e4c7" if trained else "color:#888"
            spans.append(f'<span style="{style};border:1px solid #ddd;margin:1px">{shown}</span>')
        legend = (
            '<div><span style="background:#b7e4c7">trained (label = token)</span> '
            '<span style="color:#888">masked (-100)</span> '
            f"- {sum(self.trained)} of {len(self.trained)} tokens trained</div>"
        )
        return legend + '<div style="font-family:monospace;line-height:1.8">' + "".join(spans) + "</div>"

    def __str__(self) -> str:
        return self.text()


def inspect_mask(input_ids: list[int], labels: list[int], tokenizer: Any) -> MaskView:
    """A view of which tokens carry loss; raises on an all-masked row or an untrained end-of-turn."""
    check_labels(input_ids, labels, tokenizer)
    tokens = [tokenizer.decode([token]) for token in input_ids]
    return MaskView(tokens=tokens, trained=[label != IGNORE_INDEX for label in labels])


# --------------------------------------------------------------------------- padding statistics


def padding_efficiency(batches: Iterable[list[int]]) -> float:
    """Share of real tokens in padded batches: sum(lengths) / sum(len(batch) * max(batch)).

    `batches` is an iterable of lists of sequence lengths, one list per batch.
    """
    real = padded = 0
    for lengths in batches:
        if not lengths:
            continue
        real += sum(lengths)
        padded += len(lengths) * max(lengths)
    if padded == 0:
        raise ValueError("no tokens in the given batches")
    return real / padded


def batches_by_order(lengths: list[int], batch_size: int, order: list[int] | None = None) -> list[list[int]]:
    """Split sequence lengths into consecutive batches following `order` (default: as given)."""
    order = list(range(len(lengths))) if order is None else order
    return [[lengths[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
