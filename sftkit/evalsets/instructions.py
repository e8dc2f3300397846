"""Verifiable instruction following: prompts whose constraints a program can check.

Loss and ROUGE tell us whether a fine-tuned model *sounds* like its training data, not whether
it does what it is told. Following IFEval (Zhou et al. 2023, "Instruction-Following Evaluation
for Large Language Models", arXiv:2311.07911), this module scores a model on instructions whose
compliance is checked by code rather than by a judge model: "answer in at most 30 words",
"use exactly 4 bullet points", "reply only with a JSON object with the keys ...". The result is
cheap, deterministic and runs offline, so the same numbers can be produced before and after LoRA
fine-tuning on a laptop.

The prompts here are written for this project (everyday topics a 135M-500M model can handle),
not copied from IFEval, and the checks are deliberately simple re-implementations: pure
standard-library Python, no nltk and no langdetect. Where a check is a heuristic (sentence
splitting, language identification) its docstring says so and what it gets wrong.

Public API:

- `Check`, `InstructionPrompt`: frozen dataclasses describing one constraint / one prompt.
- `CHECKS`, `register_check`: the registry of check kinds, each a pure function
  ``(response: str, **params) -> bool``.
- `INSTRUCTION_PROMPTS`: the built-in evaluation set (44 prompts, every kind used at least twice),
  data shipped with the package (`sftkit/evalsets/instructions.jsonl`), read by
  `load_instruction_prompts`, which also reads a set of one's own in the same format.
- `run_check`, `check_response`, `score_instruction_following`: scoring.
- `as_messages`: turn a prompt into chat messages for generation.
- `detect_language`: the stopword-overlap language heuristic behind the ``language`` check.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import read_jsonl

__all__ = [
    "CHECKS",
    "Check",
    "INSTRUCTION_PROMPTS",
    "InstructionPrompt",
    "LANGUAGE_NAMES",
    "as_messages",
    "check_response",
    "load_instruction_prompts",
    "detect_language",
    "register_check",
    "run_check",
    "score_instruction_following",
]


# --------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One verifiable constraint: a registered check kind plus its keyword parameters.

    The kind is *not* validated here but when the check is run (`run_check`), so a check can
    be declared before a custom kind is registered, and an unknown kind is reported with its
    name at scoring time.
    """

    kind: str
    params: dict = field(default_factory=dict)

    # frozen=True makes the fields read-only, but `params` is a dict and therefore unhashable;
    # hashing on a canonical JSON form keeps checks (and prompts) usable as set members and
    # dict keys. Do not mutate `params` after construction.
    def __hash__(self) -> int:
        return hash((self.kind, json.dumps(self.params, sort_keys=True, default=str)))


@dataclass(frozen=True)
class InstructionPrompt:
    """A user prompt that states its constraints in words, plus the checks that verify them."""

    id: str
    prompt: str
    checks: tuple[Check, ...]

    def __post_init__(self) -> None:
        # Accept a list for convenience but store a tuple so the dataclass stays immutable.
        if not isinstance(self.checks, tuple):
            object.__setattr__(self, "checks", tuple(self.checks))
        if not self.checks:
            raise ValueError(f"prompt {self.id!r} has no checks")
        # `check_response` reports results keyed by kind, so a kind may appear only once per
        # prompt (put several keywords in one include_keywords check instead of two checks).
        kinds = [c.kind for c in self.checks]
        duplicated = sorted({k for k in kinds if kinds.count(k) > 1})
        if duplicated:
            raise ValueError(f"prompt {self.id!r} repeats check kind(s) {duplicated}")


# --------------------------------------------------------------------------------------
# Check registry
# --------------------------------------------------------------------------------------

CheckFn = Callable[..., bool]

#: kind name -> pure function ``(response, **params) -> bool``.
CHECKS: dict[str, CheckFn] = {}


def register_check(kind: str) -> Callable[[CheckFn], CheckFn]:
    """Decorator that adds a check function to `CHECKS` under ``kind``.

    Re-registering an existing kind is an error: silently replacing a check would change the
    meaning of stored results.
    """

    def decorator(fn: CheckFn) -> CheckFn:
        if kind in CHECKS:
            raise ValueError(f"check kind {kind!r} is already registered")
        CHECKS[kind] = fn
        return fn

    return decorator


# Small text helpers shared by several checks ------------------------------------------

# A word is a run of letters/digits, optionally joined by an apostrophe or hyphen, so
# "don't" and "well-known" count once and a bullet marker "-" or an emoji counts zero times.
# IFEval uses nltk's tokenizer; this is close enough for short answers and needs nothing.
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")

# Curly quotes and apostrophes are what chat models often emit; string-matching checks
# compare after mapping them to their ASCII forms so "You’ve" matches "You've".
_QUOTE_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def _norm(text: str) -> str:
    """Map curly quotes to straight ones and case-fold, for case-insensitive matching."""
    return text.translate(_QUOTE_MAP).casefold()


def _sentences(text: str) -> list[str]:
    """Split text into sentences. A heuristic.

    Each non-empty line is split after ``.``, ``!`` or ``?`` followed by whitespace; a line
    without terminal punctuation (a bullet, a heading) counts as one sentence. Decimals such as
    "3.5" are not split (no whitespace after the dot), but abbreviations such as "e.g. this"
    are, so they over-count by one. Segments with no letter or digit (a lone "...") are dropped.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        for part in re.split(r"(?<=[.!?])\s+", line.strip()):
            if re.search(r"[^\W_]", part):
                sentences.append(part)
    return sentences


def _keyword_pattern(word: str) -> re.Pattern[str]:
    # Whole-word: the keyword may not be glued to other letters/digits on either side, so
    # "cat" matches "cat," and "Cat" but not "cats" or "concatenate". Phrases work too.
    return re.compile(r"(?<![^\W_])" + re.escape(_norm(word)) + r"(?![^\W_])")


# The checks ----------------------------------------------------------------------------


@register_check("max_words")
def max_words(response: str, n: int) -> bool:
    """At most ``n`` words, and at least one.

    Upper-bound and negative checks (`max_words`, `max_sentences`, `exclude_keywords`,
    `no_commas`) fail an empty response: otherwise a model that stops at once would score on
    them while following no instruction at all.
    """
    return 1 <= len(_words(response)) <= n


@register_check("min_words")
def min_words(response: str, n: int) -> bool:
    """At least ``n`` words."""
    return len(_words(response)) >= n


@register_check("max_sentences")
def max_sentences(response: str, n: int) -> bool:
    """At most ``n`` sentences (see `_sentences` for the splitting heuristic); at least one."""
    # An empty answer trivially has "at most n" sentences but follows no instruction; fail it.
    return 1 <= len(_sentences(response)) <= n


@register_check("exact_bullets")
def exact_bullets(response: str, n: int) -> bool:
    """Exactly ``n`` lines that start (after indentation) with ``- ``, ``* `` or ``• ``.

    Numbered lists do not count, and neither does ``**bold**`` (no space after the star).
    Nested bullets count like top-level ones, as in IFEval.
    """
    bullets = [line for line in response.splitlines() if line.lstrip().startswith(("- ", "* ", "\u2022 "))]
    return len(bullets) == n


_FENCE_RE = re.compile(r"^```(?:json)?[ \t]*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


@register_check("json_keys")
def json_keys(response: str, keys: list[str]) -> bool:
    """The whole response is a JSON object containing every key in ``keys``.

    One optional Markdown fence (```` ```json ... ``` ```` or a bare ```` ``` ````) around the
    object is allowed, because chat models add it by habit; any prose before or after fails.
    """
    text = response.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text)
    except ValueError:  # json.JSONDecodeError is a ValueError subclass
        return False
    return isinstance(obj, dict) and all(key in obj for key in keys)


@register_check("all_upper")
def all_upper(response: str) -> bool:
    """Has at least one letter and no lowercase letter."""
    return any(c.isalpha() for c in response) and not any(c.islower() for c in response)


@register_check("all_lower")
def all_lower(response: str) -> bool:
    """Has at least one letter and no uppercase letter."""
    return any(c.isalpha() for c in response) and not any(c.isupper() for c in response)


@register_check("include_keywords")
def include_keywords(response: str, words: list[str]) -> bool:
    """Every word (or phrase) in ``words`` occurs, case-insensitively, as a whole word.

    Whole-word matching is strict about inflection: asking for "patch" is not satisfied by
    "patches". Prompts therefore quote the exact word they want.
    """
    text = _norm(response)
    return all(_keyword_pattern(w).search(text) for w in words)


@register_check("exclude_keywords")
def exclude_keywords(response: str, words: list[str]) -> bool:
    """No word (or phrase) in ``words`` occurs, case-insensitively, as a whole word.

    The mirror image of `include_keywords`, with the same limitation: forbidding "sandwich"
    does not forbid "sandwiches", so prompts forbid words that are rarely inflected. A response
    without any word fails (see `max_words`).
    """
    text = _norm(response)
    return bool(_words(text)) and not any(_keyword_pattern(w).search(text) for w in words)


@register_check("ends_with")
def ends_with(response: str, phrase: str) -> bool:
    """After stripping trailing whitespace, the response ends with ``phrase``.

    Case-insensitive and curly-quote tolerant (as IFEval's end checker is case-insensitive);
    anything after the phrase, even a closing ``**`` or an extra "!", fails.
    """
    return _norm(response.rstrip()).endswith(_norm(phrase.strip()))


@register_check("starts_with")
def starts_with(response: str, phrase: str) -> bool:
    """After stripping leading whitespace, the response starts with ``phrase`` (case-insensitive)."""
    return _norm(response.lstrip()).startswith(_norm(phrase.strip()))


@register_check("no_commas")
def no_commas(response: str) -> bool:
    """No comma anywhere (ASCII or full-width). An empty response fails: it did not answer."""
    return bool(response.strip()) and "," not in response and "\uff0c" not in response


@register_check("num_paragraphs")
def num_paragraphs(response: str, n: int) -> bool:
    """Exactly ``n`` non-empty paragraphs, paragraphs being separated by blank lines.

    IFEval separates paragraphs with ``***``; blank lines are what small chat models naturally
    produce, so prompts here ask for those. A single newline does not start a paragraph.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", response.strip()) if p.strip()]
    return len(paragraphs) == n


@register_check("quoted")
def quoted(response: str) -> bool:
    """The whole (stripped) response is wrapped in double quotes, straight or curly.

    Like IFEval it only looks at the first and last character, so ``"a" and "b"`` passes.
    """
    text = response.strip()
    for opening, closing in (('"', '"'), ("\u201c", "\u201d")):
        if len(text) >= 2 and text.startswith(opening) and text.endswith(closing):
            return bool(text[1:-1].strip())
    return False


# A placeholder is square brackets around some text on one line, e.g. [name]. A Markdown
# link "[text](url)" is not a placeholder, hence the negative look-ahead for "(".
_PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]*[^\W_][^\[\]\n]*\](?!\()")


@register_check("placeholder_count")
def placeholder_count(response: str, n: int) -> bool:
    """At least ``n`` placeholders such as ``[name]`` (repeats count, as in IFEval)."""
    return len(_PLACEHOLDER_RE.findall(response)) >= n


_TITLE_RE = re.compile(r"<<[^<>\n]*[^\W_][^<>\n]*>>")


@register_check("title")
def title(response: str) -> bool:
    """Contains a title wrapped in double angular brackets, e.g. ``<<Morning Rain>>``."""
    return bool(_TITLE_RE.search(response))


# Language identification ---------------------------------------------------------------

#: Language codes the ``language`` check understands, with the names prompts use.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "fr": "French", "es": "Spanish", "de": "German"}

# A HEURISTIC, not a language identifier: count how many of the response's words are common
# function words ("stopwords") of each language and pick the language with the most. Function
# words are frequent in any running text and differ between these four languages, so a few
# sentences are enough. Words shared by two of the languages ("de", "la", "en", "que", "se",
# "y", "entre", "in", "was", "a", "so", "no", "un", "tu", "du", "des", "es") and German words
# that are also common English words ("man", "hat", "war", "um") are left out so that they
# cannot decide between them. It will not recognise any other language, is unreliable on very
# short answers (hence `_MIN_STOPWORD_HITS`), and a mixed-language answer is labelled by its
# majority language.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the and is are of to it that this with for you your be have has not at by from or but "
        "they we i my what which will can do if there their would should about when how on as "
        "just our them these those been were also more some any into than then because very all "
        "its he she his her".split()
    ),
    "fr": frozenset(
        "le les une et est sont qui pour dans sur avec pas ne il elle ils nous vous je au aux ce "
        "cette ces mais ou leur très aussi comme être avoir été peut faire votre vos notre nos "
        "mon ma mes sa ses qu l c j sans chez donc".split()
    ),
    "es": frozenset(
        "el los las del está están por para con una su sus al lo como más pero muy también "
        "este esta estos estas hay ser tiene puede hacer cuando donde porque sin sobre yo "
        "usted nosotros ellos mi ya todo todos cada otro desde hasta".split()
    ),
    "de": frozenset(
        "der die das und ist nicht ein eine einen einem einer mit von zu den dem auf für sich "
        "auch ich sie wir er wie aber oder wenn dass sind werden wird bei nach noch nur kann "
        "mein dein ihr im zum zur über sehr haben sein durch diese dieser dieses eines sollte "
        "gibt".split()
    ),
}

# Fewer hits than this and the text is too short or too odd to call.
_MIN_STOPWORD_HITS = 2

_LETTERS_RE = re.compile(r"[^\W\d_]+")


def detect_language(text: str) -> str | None:
    """Guess whether ``text`` is English, French, Spanish or German. A heuristic.

    Returns the code ("en", "fr", "es", "de") of the language whose stopword list overlaps the
    text most, or None when fewer than two stopwords are found or two languages tie. Apostrophes
    split words, so French "l'eau" contributes "l" and "eau".
    """
    tokens = [t.casefold() for t in _LETTERS_RE.findall(text)]
    hits = {lang: sum(t in words for t in tokens) for lang, words in _STOPWORDS.items()}
    ranked = sorted(hits.items(), key=lambda item: item[1], reverse=True)
    (best, best_hits), (_, runner_up_hits) = ranked[0], ranked[1]
    if best_hits < _MIN_STOPWORD_HITS or best_hits == runner_up_hits:
        return None
    return best


@register_check("language")
def language(response: str, lang: str) -> bool:
    """The response is (heuristically) written in ``lang``, one of en/fr/es/de.

    See `detect_language`; an undecidable response fails.
    """
    if lang not in LANGUAGE_NAMES:
        raise ValueError(f"language check supports {sorted(LANGUAGE_NAMES)}, got {lang!r}")
    return detect_language(response) == lang


# --------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------


def _check_fn(check: Check) -> CheckFn:
    """Look up a check's function and verify its parameters, raising ValueError if either fails."""
    fn = CHECKS.get(check.kind)
    if fn is None:
        raise ValueError(f"unknown check kind {check.kind!r}; known kinds: {sorted(CHECKS)}")
    try:
        # Bind against the signature first so a typo in a parameter name is reported as a
        # bad check, instead of being confused with a TypeError raised inside the check.
        inspect.signature(fn).bind("", **check.params)
    except TypeError as err:
        raise ValueError(f"bad parameters {check.params!r} for check kind {check.kind!r}: {err}") from None
    return fn


def run_check(check: Check, response: str) -> bool:
    """Run one check on one response. Raises ValueError for an unknown kind or bad parameters."""
    return bool(_check_fn(check)(response, **check.params))


def check_response(prompt: InstructionPrompt, response: str) -> dict[str, bool]:
    """Run every check of ``prompt`` on ``response``: ``{kind: passed}``, in the prompt's order."""
    # Validate all checks before running any, so a bad prompt fails loudly and consistently.
    for check in prompt.checks:
        _check_fn(check)
    return {check.kind: run_check(check, response) for check in prompt.checks}


def score_instruction_following(
    prompts: Sequence[InstructionPrompt], responses: Sequence[str]
) -> dict[str, Any]:
    """Score responses against their prompts' checks.

    Returns a dict with

    - ``strict_accuracy``: fraction of prompts whose checks *all* pass (IFEval's "prompt-level
      strict accuracy");
    - ``check_accuracy``: fraction of all individual checks that pass ("instruction-level");
    - ``per_kind``: ``{kind: fraction of that kind's checks that pass}``, for kinds present;
    - ``per_prompt``: one ``{"id", "passed", "checks": {kind: bool}}`` dict per prompt;
    - ``n_prompts``, ``n_checks``: the denominators.

    Raises ValueError if the two sequences differ in length, are empty, or a check has an
    unknown kind or bad parameters.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        # An accuracy over nothing is undefined; returning 0.0 or 1.0 would be a silent lie.
        raise ValueError("nothing to score: no prompts given")

    per_prompt: list[dict[str, Any]] = []
    kind_totals: dict[str, list[int]] = {}  # kind -> [passed, total]
    for prompt, response in zip(prompts, responses):
        results = check_response(prompt, response)
        per_prompt.append({"id": prompt.id, "passed": all(results.values()), "checks": results})
        for kind, passed in results.items():
            tally = kind_totals.setdefault(kind, [0, 0])
            tally[0] += int(passed)
            tally[1] += 1

    n_checks = sum(total for _, total in kind_totals.values())
    n_checks_passed = sum(passed for passed, _ in kind_totals.values())
    return {
        "strict_accuracy": sum(p["passed"] for p in per_prompt) / len(per_prompt),
        "check_accuracy": n_checks_passed / n_checks,
        "per_kind": {kind: passed / total for kind, (passed, total) in sorted(kind_totals.items())},
        "per_prompt": per_prompt,
        "n_prompts": len(per_prompt),
        "n_checks": n_checks,
    }


def as_messages(prompt: InstructionPrompt) -> list[dict[str, str]]:
    """The prompt as a single-turn chat, ready for a tokenizer's chat template.

    No system message: the constraint must be followed from the user turn alone, and some
    small models' templates inject their own system prompt anyway.
    """
    return [{"role": "user", "content": prompt.prompt}]


# --------------------------------------------------------------------------------------
# The built-in prompt set
# --------------------------------------------------------------------------------------

#: The package-data file of the built-in prompts, one JSON object a line:
#: ``{"id": ..., "prompt": ..., "checks": [{"kind": ..., "params": {...}}, ...]}``.
PROMPTS_FILE = "instructions.jsonl"


def load_instruction_prompts(text: str | None = None) -> tuple[InstructionPrompt, ...]:
    """Prompts from JSON lines (`text`), by default the built-in set shipped in `PROMPTS_FILE`.

    Raises ValueError naming the line when a line is not a prompt object (malformed JSON,
    a missing field, a prompt without checks or repeating a check kind) or an id repeats.
    """
    prompts: list[InstructionPrompt] = []
    for number, row in read_jsonl(PROMPTS_FILE, text):
        try:
            prompt = InstructionPrompt(
                id=row["id"],
                prompt=row["prompt"],
                checks=tuple(Check(kind=c["kind"], params=c.get("params", {})) for c in row["checks"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"{PROMPTS_FILE} line {number} is not an instruction prompt: {err}") from None
        prompts.append(prompt)
    ids = [p.id for p in prompts]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"prompt id(s) {repeated} appear more than once")
    return tuple(prompts)


# Written for sftkit (`instructions.jsonl`: the first 19 prompts take one constraint each, a
# first pass over every kind; the rest a second pass, several with two compatible
# constraints). Rules followed when writing them:
# - everyday topics a small model can answer without special knowledge;
# - every constraint is stated in plain words in the prompt, with numbers as digits and
#   required/forbidden words and phrases in double quotes (tests assert this);
# - at most 2 checks per prompt, and the two never contradict each other (no "no commas" with
#   JSON, no starts_with phrase in the wrong case for an all-caps answer);
# - every check kind is used at least twice, so per-kind accuracy is not a single coin flip.
INSTRUCTION_PROMPTS: tuple[InstructionPrompt, ...] = load_instruction_prompts()
