"""Short-answer facts: does fine-tuning keep (or surface) what the base model knows?

Supervised fine-tuning on a few hundred conversations teaches a format, not knowledge; what a
small model knows comes from pretraining. A model that learnt to chat but now answers "The
largest planet is Earth" has lost something the metrics of style (stop rate, ROUGE-L) do not
see. This set asks 150 common-knowledge questions with one clearly right short answer each
(``facts.jsonl``: ``id``, ``split`` dev/test, ``topic``, ``question``, ``answers``), written for
the project about the subjects reserved for evaluation (``data/eval_topics.txt``), so no
training row is about them.

Scoring is a transparent rule, as in open-domain QA's "answer containment" (TriviaQA-style
evaluation of free-form replies): a reply is correct when, lowercased and with punctuation
removed, its first `SCORED_WORDS` words contain one of the accepted answers as whole words.
The cut keeps a base model that rambles through many candidates from collecting credit for a
name it happens to list late. It is lenient on wording ("It is Saturn." and "Saturn" both
pass) and blind to a reply that names the right answer while asserting a wrong one first; the
accepted answers avoid common words so that a wrong reply rarely contains one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import read_jsonl

__all__ = ["FACTS_FILE", "MAX_NEW_TOKENS", "SCORED_WORDS", "SPLITS", "Fact", "load_facts", "normalise", "is_correct",
           "score_facts", "as_messages"]

FACTS_FILE = "facts.jsonl"
#: Only the first this many words of a reply are searched for an accepted answer.
SCORED_WORDS = 40
#: New tokens generated per question: enough for `SCORED_WORDS` words and an end-of-turn.
MAX_NEW_TOKENS = 64
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class Fact:
    """One question, the split it belongs to and its accepted answers."""

    id: str
    split: str
    topic: str
    question: str
    answers: tuple[str, ...]


def normalise(text: str) -> str:
    """Lowercase, punctuation to spaces, single spaces ("Neil  Armstrong!" -> "neil armstrong")."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def load_facts(split: str | None = None, text: str | None = None) -> list[Fact]:
    """The questions of `split` ("dev", "test", or None for both), in file order.

    Raises ValueError naming the line for a row without a question or answers, with an
    unknown split, or with an id used before.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    facts, seen = [], set()
    for number, row in read_jsonl(FACTS_FILE, text):
        where = f"{FACTS_FILE} line {number}"
        answers = row.get("answers")
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise ValueError(f"{where}: no question")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, str) and normalise(a) for a in answers)):
            raise ValueError(f"{where}: answers must be a non-empty list of non-empty strings")
        if row.get("split") not in SPLITS:
            raise ValueError(f"{where}: split must be one of {SPLITS}, got {row.get('split')!r}")
        if row.get("id") in seen or not row.get("id"):
            raise ValueError(f"{where}: missing or repeated id {row.get('id')!r}")
        seen.add(row["id"])
        if split is None or row["split"] == split:
            facts.append(Fact(row["id"], row["split"], row.get("topic", ""), row["question"], tuple(answers)))
    return facts


def is_correct(reply: str, answers: Sequence[str]) -> bool:
    """Does the start of `reply` (`SCORED_WORDS` words) contain an accepted answer as whole words?"""
    head = " " + " ".join(normalise(reply).split()[:SCORED_WORDS]) + " "
    return any(f" {normalise(answer)} " in head for answer in answers)


def as_messages(fact: Fact) -> list[dict[str, str]]:
    """The question as a single-turn chat (no system prompt)."""
    return [{"role": "user", "content": fact.question}]


def score_facts(facts: Sequence[Fact], replies: Sequence[str], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy with a bootstrap 95% interval, and the per-question flags (for paired differences)."""
    from ..metrics import bootstrap_ci

    if len(facts) != len(replies):
        raise ValueError(f"got {len(facts)} questions but {len(replies)} replies")
    if not facts:
        raise ValueError("nothing to score: no questions given")
    flags = [is_correct(reply, fact.answers) for fact, reply in zip(facts, replies)]
    return {"accuracy": bootstrap_ci([float(f) for f in flags], resamples, seed=seed), "n": len(flags),
            "correct_flags": flags, "rule": f"an accepted answer in the reply's first {SCORED_WORDS} words"}
