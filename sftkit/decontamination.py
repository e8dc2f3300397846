"""Word n-gram overlap between training rows and evaluation prompts: is a test set still held out?

A model evaluated on prompts it was trained on measures memory, not skill. The usual check
(GPT-3's and Llama's contamination studies use 8- to 13-grams) is a shared run of words: here,
any 8 consecutive words (lowercased, punctuation dropped) that occur in a training row and in
an evaluation prompt. Some runs are shared on purpose and listed: an instruction's standard
wording (IFEval's canonical descriptions, "Your entire response should be in English, and in
all lowercase letters") is the *instruction*, not the content, and is removed from the
evaluation side before comparing. `scripts/build_conversations.py` refuses to write a
training set that overlaps, and ``tests/test_decontamination.py`` checks the shipped files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["NGRAM", "words", "ngrams", "overlaps"]

#: The n of the shared word runs that count as contamination.
NGRAM = 8

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lowercased words and numbers, punctuation and markup dropped ("Don't!" -> ["don't"])."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Every run of `n` consecutive words of `text` (none when it has fewer than `n` words)."""
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def overlaps(
    training: Iterable[tuple[str, str]],
    evaluation: Iterable[tuple[str, str]],
    boilerplate: Iterable[str] = (),
    n: int = NGRAM,
) -> list[tuple[str, str, str]]:
    """Shared `n`-grams between (name, text) pairs: ``[(training name, evaluation name, shared words)]``.

    `boilerplate` texts are instruction wordings allowed on both sides: their n-grams are
    removed from the evaluation texts before comparing. One entry per (training row,
    evaluation prompt) pair, naming the first shared run, so a report stays readable.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    allowed = set().union(*(ngrams(text, n) for text in boilerplate)) if boilerplate else set()
    index: dict[tuple[str, ...], list[str]] = {}
    for name, text in evaluation:
        for gram in ngrams(text, n) - allowed:
            index.setdefault(gram, []).append(name)
    found: dict[tuple[str, str], str] = {}
    for train_name, text in training:
        for gram in sorted(ngrams(text, n)):
            for eval_name in index.get(gram, ()):
                found.setdefault((train_name, eval_name), " ".join(gram))
    return [(a, b, shared) for (a, b), shared in sorted(found.items())]
