"""Instruction-following training rows in IFEval's families, built from written content.

Why: the cpu-demo model is scored on IFEval-format prompts with lm-eval's official checkers, and
the old distilled replies taught it little that was right. This module takes correct, hand-written
answers (``data/conversations/train/ifeval_content.jsonl``), reshapes each one so that it meets one
or two verifiable instructions (lowercase, a bullet count, JSON, a P.S., a word limit...), and keeps
a row only when lm-eval's own strict checker passes every instruction in it. So every reply is both
correct and provably compliant.

To measure generalisation rather than memorised wording, the prompts use our own paraphrases (never
8 consecutive words of lm-eval's canonical descriptions, which the evaluation prompts use), the
parameters avoid the values reserved for evaluation (word limits end in 5; 3/5/7 bullets; 2/4/6
sentences; 2/4 paragraphs; 1/3 highlights or placeholders; keyword frequencies 2/4), and the
held-out instruction ids are never used. The build is deterministic for a given seed.

    python3 scripts/ifeval_training.py        # rows per instruction id and drop counts
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTENT_PATH = Path(__file__).resolve().parents[1] / "data" / "conversations" / "train" / "ifeval_content.jsonl"
MAX_ROW_WORDS = 150  # data/README.md: a whole conversation fits the demo's 256 tokens
TWO_INSTRUCTION_SHARE = 0.36  # about a third of the rows carry two instructions
ROWS_PER_ITEM = 2

LOWER, UPPER = "change_case:english_lowercase", "change_case:english_capital"
PLACEHOLDERS, POSTSCRIPT = "detectable_content:number_placeholders", "detectable_content:postscript"
CONSTRAINED, JSON_FORMAT = "detectable_format:constrained_response", "detectable_format:json_format"
BULLETS, HIGHLIGHTS = "detectable_format:number_bullet_lists", "detectable_format:number_highlighted_sections"
TITLE = "detectable_format:title"
EXISTENCE, FORBIDDEN, FREQUENCY = "keywords:existence", "keywords:forbidden_words", "keywords:frequency"
NTH_PARAGRAPH, PARAGRAPHS = "length_constraints:nth_paragraph_first_word", "length_constraints:number_paragraphs"
SENTENCES, WORDS = "length_constraints:number_sentences", "length_constraints:number_words"
NO_COMMA, END, QUOTATION = "punctuation:no_comma", "startend:end_checker", "startend:quotation"

TRAINED_IDS: tuple[str, ...] = (
    UPPER, LOWER, PLACEHOLDERS, POSTSCRIPT, CONSTRAINED, JSON_FORMAT, BULLETS, HIGHLIGHTS, TITLE,
    EXISTENCE, FORBIDDEN, FREQUENCY, NTH_PARAGRAPH, PARAGRAPHS, SENTENCES, WORDS, NO_COMMA, END, QUOTATION,
)
# Held out to measure generalisation: never used in training rows.
HELD_OUT_IDS: tuple[str, ...] = (
    "combination:repeat_prompt", "combination:two_responses", "detectable_format:multiple_sections",
    "keywords:letter_frequency", "change_case:capital_word_frequency", "language:response_language",
)

# A row's reply has at most one "shape" (how the written content is laid out) ...
SHAPES = frozenset({BULLETS, PARAGRAPHS, NTH_PARAGRAPH, JSON_FORMAT, PLACEHOLDERS, NO_COMMA, HIGHLIGHTS, CONSTRAINED})
# ... then modifiers change it, and measured instructions take parameters the final reply meets.
MEASURED = frozenset({WORDS, SENTENCES, EXISTENCE, FORBIDDEN, FREQUENCY})

# Parameters (see the module docstring: values the evaluation set uses are avoided).
BULLET_COUNTS = (3, 5, 7)
SENTENCE_THRESHOLDS = (2, 4, 6)
WORD_THRESHOLDS = tuple(range(25, 100, 10))  # 25, 35, ... 95
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth"}
END_PHRASES: dict[str, tuple[str, ...]] = {
    "general": ("Hope this helps!", "Best of luck!", "That is all for now.", "Have a lovely day!", "Happy to help."),
    "story": ("The end.", "Thanks for reading."),
    "blurb": ("Order yours today.", "Try it for yourself."),
    "description": ("Thanks for reading.", "That is all for now."),
}
FILLER_WORDS = ("very", "really", "just", "basically", "actually", "simply", "things", "stuff", "always",
                "never", "obviously", "definitely", "literally", "easy", "important", "great")
STOPWORDS = frozenset("""a about after again all also an and any are as at be because been before being but by can
could did do does each even every for from get gets had has have how if in into is it its just keep like make
many more most much must my no not of on once one only or other our out over own same should so some such than
that the their them then there these they this those through to too under until up very was way we were what
when where which while who why will with would you your""".split())

# Our own phrasings of each instruction (3-5 per id), never lm-eval's canonical descriptions.
PHRASES: dict[str, tuple[str, ...]] = {
    LOWER: ("Please keep it all in lowercase.", "Write everything in small letters, with no capitals at all.",
            "Don't use any capital letters, not even at the start of sentences.",
            "My shift key is broken, so reply entirely in lower case.", "Use only lowercase letters in your reply."),
    UPPER: ("Write the whole reply in CAPITAL LETTERS.", "Please answer in all caps.",
            "Use uppercase letters only, from the first word to the last.", "Reply in block capitals throughout."),
    PLACEHOLDERS: ("Leave at least {n_word} {blank} in square brackets, like [name], that I can fill in later.",
                   "Turn it into a template with {n_word} or more fill-in fields in square brackets, such as [date].",
                   "Use square-bracket placeholders like [time] for the details, at least {n_word} of them."),
    POSTSCRIPT: ("Add a P.S. at the bottom.", "Finish with a short postscript that starts with P.S.",
                 "Tack on a P.S. with one extra thought at the end.", "Include a P.S. line after the main text."),
    CONSTRAINED: ("Respond with 'My answer is yes.' if so, 'My answer is no.' if not, "
                  "or 'My answer is maybe.' if it depends.",
                  "Just give me a set phrase: 'My answer is yes.' when it's true, otherwise 'My answer is no.', "
                  "and 'My answer is maybe.' if it really depends."),
    JSON_FORMAT: ("Format the whole reply as JSON.", "Give me the answer as a JSON object and nothing else.",
                  "Return valid JSON only, so I can paste it straight into my app."),
    BULLETS: ("Give exactly {n} bullet points.", "Use {n_word} markdown bullets, no more and no fewer.",
              "Keep it to a {n}-point bulleted list."),
    HIGHLIGHTS: ("Highlight at least {n_word} key {word} with single asterisks, like *this*.",
                 "Mark {n_word} or more important words in *italics* using asterisks.",
                 "Emphasise at least {n_word} of the main ideas by wrapping {them} in *asterisks*."),
    TITLE: ("Give it a title in double angle brackets, like <<My Title>>.", "Start with a title wrapped in << and >>.",
            "Put a short heading at the top inside double angle brackets.",
            "Include a title, formatted as <<title>>."),
    EXISTENCE: ("Make sure to mention {kws}.", "Use the {word} {kws} somewhere in your answer.",
                "Please include the {word} {kws}.", "Work {kws} into your reply."),
    FORBIDDEN: ("Don't use the {word} {ws}.", "Avoid the {word} {ws}.", "Please leave out {ws} entirely.",
                "Try not to use {ws} at all."),
    NTH_PARAGRAPH: ("Write {n_word} paragraphs separated by a blank line, "
                    "and begin paragraph {nth} with the word \"{w}\".",
                    "Use {n_word} paragraphs with an empty line between them; "
                    "the {ordinal} one should open with \"{w}\".",
                    "Split it into {n_word} paragraphs (blank line between each) "
                    "and start the {ordinal} paragraph with \"{w}\"."),
    PARAGRAPHS: ("Write {n_word} paragraphs and put *** between them.",
                 "Break it into {n_word} paragraphs, using *** as the divider.",
                 "I'd like {n} paragraphs separated by a line of three asterisks (***)."),
    NO_COMMA: ("Don't use any commas.", "Please write it without a single comma.",
               "No commas anywhere in the reply, please.", "Avoid commas completely."),
    END: ("End your reply with the exact phrase \"{p}\"", "Close with the words \"{p}\" and nothing after them.",
          "Make \"{p}\" the very last words of your answer.", "Sign off with exactly: {p}"),
    QUOTATION: ("Wrap the whole reply in double quotation marks.", "Put your entire answer inside double quotes.",
                "Enclose everything you write in double quotes."),
}
CONSTRAINED_WITH_REASON = (
    "Start with 'My answer is yes.' for yes, 'My answer is no.' for no, or 'My answer is maybe.' if it depends, "
    "then add one sentence explaining why.",
    "Begin your reply with 'My answer is yes.' if true, 'My answer is no.' if false, or 'My answer is maybe.' "
    "if unsure, followed by a short reason.",
)
JSON_FENCED = ("Put your response in a JSON code block.", "Reply with JSON inside a ```json code fence.")
BULLETS_DASH = "Make it a list of exactly {n_word} bullets, each starting with a dash."
BULLETS_STAR = "Format it as {n} bullet points that start with an asterisk (*)."
SENTENCES_LESS = ("Keep it under {n} sentences.", "Use fewer than {n} sentences.",
                  "No more than {m} {sentence}, please.")
SENTENCES_AT_LEAST = ("Write at least {n} sentences.", "Give me {n} sentences or more.",
                      "Make it no shorter than {n} sentences.")
WORDS_LESS = ("Keep it under {n} words.", "Answer in fewer than {n} words.", "Stay below {n} words, please.")
WORDS_AT_LEAST = ("Use at least {n} words.", "Write {n} words or more.", "Make it no shorter than {n} words.")
FREQUENCY_AT_LEAST = ("Use the word \"{w}\" at least {n_word} {times}.",
                      "Make sure \"{w}\" appears {n} or more {times}.",
                      "Mention \"{w}\" no fewer than {n} {times}.")
FREQUENCY_LESS = ("Don't use the word \"{w}\" more than three times.", "Mention \"{w}\" at most three times.",
                  "The word \"{w}\" may appear up to three times, but no more.")


class Skip(Exception):
    """A candidate row that cannot be built (its reason is counted as a drop)."""


@dataclass
class Draft:
    """A row under construction: the reply plus, per instruction, its kwargs and prompt phrase."""

    item: dict[str, Any]
    ids: list[str]
    prompt_task: str = ""
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    phrases: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- content


def load_content(path: Path) -> list[dict[str, Any]]:
    """The written items, one JSON object a line (blank lines skipped).

    Fields: ``topic``, ``task`` (the request), ``title``, ``answer`` (3-5 sentences),
    ``comma_free`` (the answer reworded without commas), ``items`` (5-7 list points; in story
    order when ``ordered``), ``paragraphs`` (2 or 4), ``keywords`` (words of ``answer``), ``ps``
    (an extra thought for a postscript); optional ``template`` (the reply with [placeholders]),
    ``yes_no`` (``question``, ``verdict`` yes/no/maybe, ``reason``) and ``form`` (letter, story,
    blurb or description; plain advice or explanation when absent).
    """
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _form(item: dict[str, Any]) -> str:
    return item.get("form") or "general"


def eligible(item: dict[str, Any], instruction_id: str) -> bool:
    """Whether the item's content can carry this instruction at all."""
    if instruction_id == CONSTRAINED:
        return "yes_no" in item
    if instruction_id == PLACEHOLDERS:
        return "template" in item
    if instruction_id == BULLETS:
        n = len(item.get("items", []))
        return n in BULLET_COUNTS if item.get("ordered") else n >= min(BULLET_COUNTS)
    if instruction_id in (PARAGRAPHS, NTH_PARAGRAPH):
        return len(item.get("paragraphs", [])) in (2, 4)
    if instruction_id == END:
        return _form(item) != "letter"  # a phrase after a letter's signature reads badly
    return True


def compatible(a: str, b: str, item: dict[str, Any]) -> bool:
    """Whether two instructions can share one natural reply built from this item."""
    if a == b or CONSTRAINED in (a, b):
        return False
    pair = {a, b}
    if JSON_FORMAT in pair:
        return bool(pair & {EXISTENCE, FORBIDDEN})
    if a in SHAPES and b in SHAPES:
        return False
    if pair in ({LOWER, UPPER}, {POSTSCRIPT, END}):
        return False
    if NTH_PARAGRAPH in pair and pair & {TITLE, POSTSCRIPT}:
        return False  # they would add a paragraph
    if BULLETS in pair and pair & {QUOTATION, SENTENCES}:
        return False  # a quote mark would hide the first bullet; bullets are not sentences
    if PLACEHOLDERS in pair and END in pair:
        return False
    if NO_COMMA in pair:
        if POSTSCRIPT in pair and "," in item["ps"]:
            return False
        if TITLE in pair and "," in item["title"]:
            return False
    return True


# --------------------------------------------------------------------------- reply shapes


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _quoted_list(words: list[str], joiner: str) -> str:
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" {joiner} " + quoted[-1]


def _first_word(paragraph: str) -> str:
    word = paragraph.split()[0].lstrip("'\"")
    return re.match(r"[^.,?!'\"]*", word).group(0)


def _shape_reply(d: Draft, rng: random.Random) -> str:
    item = d.item
    ids = set(d.ids)
    if CONSTRAINED in ids:
        question = item["yes_no"]
        d.prompt_task = question["question"]
        with_reason = rng.random() < 0.5
        d.phrases[CONSTRAINED] = rng.choice(CONSTRAINED_WITH_REASON if with_reason else PHRASES[CONSTRAINED])
        d.kwargs[CONSTRAINED] = {}
        answer = f"My answer is {question['verdict']}."
        return f"{answer} {question['reason']}" if with_reason else answer
    if BULLETS in ids:
        items = item["items"]
        if item.get("ordered"):
            chosen = list(items)
        else:
            n = rng.choice([c for c in BULLET_COUNTS if c <= len(items)])
            chosen = [items[i] for i in sorted(rng.sample(range(len(items)), n))]
        n = len(chosen)
        style = rng.randrange(3)
        if style == 0:
            marker, phrase = "- ", BULLETS_DASH
        elif style == 1:
            marker, phrase = "* ", BULLETS_STAR
        else:
            marker, phrase = rng.choice(["- ", "* "]), rng.choice(PHRASES[BULLETS])
        d.phrases[BULLETS] = phrase.format(n=n, n_word=NUMBER_WORDS[n])
        d.kwargs[BULLETS] = {"num_bullets": n}
        return "\n".join(marker + text for text in chosen)
    if PARAGRAPHS in ids:
        paragraphs = item["paragraphs"]
        n = len(paragraphs)
        d.phrases[PARAGRAPHS] = rng.choice(PHRASES[PARAGRAPHS]).format(n=n, n_word=NUMBER_WORDS[n])
        d.kwargs[PARAGRAPHS] = {"num_paragraphs": n}
        return "\n\n***\n\n".join(paragraphs)
    if NTH_PARAGRAPH in ids:
        paragraphs = item["paragraphs"]
        n = len(paragraphs)
        nth = rng.randint(1, n)
        word = _first_word(paragraphs[nth - 1])
        d.phrases[NTH_PARAGRAPH] = rng.choice(PHRASES[NTH_PARAGRAPH]).format(
            n_word=NUMBER_WORDS[n], nth=nth, ordinal=ORDINALS[nth], w=word)
        d.kwargs[NTH_PARAGRAPH] = {"num_paragraphs": n, "nth_paragraph": nth, "first_word": word.lower()}
        return "\n\n".join(paragraphs)
    if JSON_FORMAT in ids:
        return _json_reply(d, rng)
    if PLACEHOLDERS in ids:
        template = item["template"]
        found = len(re.findall(r"\[.*?\]", template))
        n = 3 if found >= 3 and rng.random() < 0.6 else 1
        d.phrases[PLACEHOLDERS] = rng.choice(PHRASES[PLACEHOLDERS]).format(
            n=n, n_word=NUMBER_WORDS[n], blank=_plural(n, "blank", "blanks"), field=_plural(n, "field", "fields"))
        d.kwargs[PLACEHOLDERS] = {"num_placeholders": n}
        return template
    if NO_COMMA in ids:
        d.phrases[NO_COMMA] = rng.choice(PHRASES[NO_COMMA])
        d.kwargs[NO_COMMA] = {}
        return item["comma_free"]
    if HIGHLIGHTS in ids:
        text = item["answer"]
        keywords = [k for k in item["keywords"] if re.search(rf"\b{re.escape(k)}\b", text, re.IGNORECASE)]
        # First occurrence of each keyword, leaving out any that touch an earlier choice
        # (two highlights side by side read as "*save* *early*").
        spans = []
        for keyword in rng.sample(keywords, len(keywords)):
            match = re.search(rf"\b{re.escape(keyword)}\b", text, re.IGNORECASE)
            if all(match.end() + 1 < start or end + 1 < match.start() for start, end in spans):
                spans.append((match.start(), match.end()))
        n = 3 if len(spans) >= 3 and rng.random() < 0.6 else 1
        spans = sorted(spans[:3] if n == 3 else spans[:rng.choice([1, 2])])
        for start, end in reversed(spans):
            text = f"{text[:start]}*{text[start:end]}*{text[end:]}"
        d.phrases[HIGHLIGHTS] = rng.choice(PHRASES[HIGHLIGHTS]).format(
            n=n, n_word=NUMBER_WORDS[n], word=_plural(n, "word", "words"), them=_plural(n, "it", "them"))
        d.kwargs[HIGHLIGHTS] = {"num_highlights": n}
        return text
    # No shape instruction: the plain answer, or now and then its paragraphs.
    if len(item["paragraphs"]) == 2 and NO_COMMA not in ids and rng.random() < 0.25:
        return "\n\n".join(item["paragraphs"])
    return item["answer"]


def _json_reply(d: Draft, rng: random.Random) -> str:
    item, form = d.item, _form(d.item)
    if form == "letter":
        obj: dict[str, Any] = {"subject": item["title"], "message": item["answer"]}
    elif form == "story":
        obj = rng.choice([{"title": item["title"], "story": item["answer"]},
                          {"title": item["title"], "events": item["items"]}])
    elif form in ("blurb", "description"):
        obj = {"name" if form == "blurb" else "title": item["title"], "description": item["answer"]}
    else:
        key = "steps" if item.get("ordered") else rng.choice(["tips", "points", "key_points"])
        obj = rng.choice([{"title": item["title"], "answer": item["answer"]},
                          {"topic": item["topic"], key: item["items"]}])
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    if rng.random() < 0.4:
        d.phrases[JSON_FORMAT] = rng.choice(JSON_FENCED)
        text = f"```json\n{text}\n```"
    else:
        d.phrases[JSON_FORMAT] = rng.choice(PHRASES[JSON_FORMAT])
    d.kwargs[JSON_FORMAT] = {}
    return text


# --------------------------------------------------------------------------- modifiers and measures


def _apply_modifiers(d: Draft, reply: str, rng: random.Random) -> str:
    item, ids = d.item, set(d.ids)
    if TITLE in ids:
        reply = f"<<{item['title']}>>\n\n{reply}"
        d.phrases[TITLE] = rng.choice(PHRASES[TITLE])
        d.kwargs[TITLE] = {}
    if POSTSCRIPT in ids:
        reply = f"{reply}\n\nP.S. {item['ps']}"
        d.phrases[POSTSCRIPT] = rng.choice(PHRASES[POSTSCRIPT])
        d.kwargs[POSTSCRIPT] = {"postscript_marker": "P.S."}
    if END in ids:
        phrase = rng.choice(END_PHRASES[_form(item)])
        if NO_COMMA in ids and "," in phrase:
            raise Skip("no comma-free end phrase")
        # Inside the last paragraph when paragraphs are counted, else on its own line.
        joiner = " " if ids & {NTH_PARAGRAPH, PARAGRAPHS} or "\n" not in reply else "\n\n"
        reply = f"{reply}{joiner}{phrase}"
        d.phrases[END] = rng.choice(PHRASES[END]).format(p=phrase)
        d.kwargs[END] = {"end_phrase": phrase}
    if LOWER in ids:
        reply = reply.lower()
        d.phrases[LOWER] = rng.choice(PHRASES[LOWER])
        d.kwargs[LOWER] = {}
    if UPPER in ids:
        reply = reply.upper()
        d.phrases[UPPER] = rng.choice(PHRASES[UPPER])
        d.kwargs[UPPER] = {}
    if QUOTATION in ids:
        reply = f'"{reply}"'
        d.phrases[QUOTATION] = rng.choice(PHRASES[QUOTATION])
        d.kwargs[QUOTATION] = {}
    return reply


def _relation(low: int, high: int, thresholds: Any, at_least: Any, less: Any, instruction_id: str,
              rng: random.Random) -> tuple[str, int, Any]:
    """A relation the reply meets ("at least" the largest threshold <= `low`, or "less than" the
    smallest > `high`), chosen at random, with its phrasings; Skip when no threshold fits."""
    options = []
    below = [t for t in thresholds if t <= low]
    above = [t for t in thresholds if t > high]
    if below:
        options.append(("at least", below[-1], at_least))
    if above:
        options.append(("less than", above[0], less))
    if not options:
        raise Skip(f"no valid parameters: {instruction_id}")
    return rng.choice(options)


def _measure(d: Draft, reply: str, rng: random.Random, util: Any) -> None:
    """Choose parameters for the measured instructions that the finished reply meets."""
    item, ids = d.item, set(d.ids)
    if WORDS in ids:
        counted, spaced = util.count_words(reply), len(reply.split())
        relation, n, phrases = _relation(min(counted, spaced), max(counted, spaced), WORD_THRESHOLDS,
                                         WORDS_AT_LEAST, WORDS_LESS, WORDS, rng)
        d.kwargs[WORDS] = {"num_words": n, "relation": relation}
        d.phrases[WORDS] = rng.choice(phrases).format(n=n)
    if SENTENCES in ids:
        count = util.count_sentences(reply)
        relation, n, phrases = _relation(count, count, SENTENCE_THRESHOLDS, SENTENCES_AT_LEAST, SENTENCES_LESS,
                                         SENTENCES, rng)
        d.kwargs[SENTENCES] = {"num_sentences": n, "relation": relation}
        d.phrases[SENTENCES] = rng.choice(phrases).format(n=n, m=n - 1,
                                                          sentence=_plural(n - 1, "sentence", "sentences"))
    if EXISTENCE in ids:
        present = [k for k in item["keywords"] if re.search(rf"\b{re.escape(k)}\b", reply, re.IGNORECASE)]
        if not present:
            present = _content_words(reply)[:3]
        if not present:
            raise Skip(f"no valid parameters: {EXISTENCE}")
        chosen = rng.sample(present, min(len(present), rng.choice([1, 2])))
        d.kwargs[EXISTENCE] = {"keywords": [k.lower() for k in chosen]}
        d.phrases[EXISTENCE] = rng.choice(PHRASES[EXISTENCE]).format(
            kws=_quoted_list([k.lower() for k in chosen], "and"), word=_plural(len(chosen), "word", "words"))
    if FORBIDDEN in ids:
        absent = [w for w in FILLER_WORDS if not re.search(rf"\b{w}\b", reply, re.IGNORECASE)]
        chosen = rng.sample(absent, min(len(absent), rng.choice([1, 2, 2, 3])))
        if not chosen:
            raise Skip(f"no valid parameters: {FORBIDDEN}")
        d.kwargs[FORBIDDEN] = {"forbidden_words": chosen}
        d.phrases[FORBIDDEN] = rng.choice(PHRASES[FORBIDDEN]).format(
            ws=_quoted_list(chosen, "or"), word=_plural(len(chosen), "word", "words"))
    if FREQUENCY in ids:
        _frequency(d, reply, rng)


def _content_words(reply: str) -> list[str]:
    """Distinct words of the reply worth naming, most frequent first (ties in order of appearance)."""
    words = [w for w in re.findall(r"[a-z]+", reply.lower()) if len(w) >= 4 and w not in STOPWORDS]
    counts = Counter(words)
    return sorted(dict.fromkeys(words), key=lambda w: -counts[w])


def _frequency(d: Draft, reply: str, rng: random.Random) -> None:
    def occurrences(word: str) -> tuple[int, int]:
        return (len(re.findall(word, reply, re.IGNORECASE)),
                len(re.findall(rf"\b{re.escape(word)}\b", reply, re.IGNORECASE)))

    # The item's own keywords, or a word of the subject that the reply repeats; never a word that
    # keywords:existence already names in the same prompt. Only words whose substring count
    # (what the checker counts) equals their whole-word count, so the prompt means what it says.
    named = set(d.kwargs.get(EXISTENCE, {}).get("keywords", []))
    keywords = [k.lower() for k in d.item["keywords"]]
    options = []
    about = f"{d.item['topic']} {d.prompt_task}".lower()
    repeated = [w for w in _content_words(reply)[:8] if len(w) >= 4 and w[:4] in about]  # on the subject
    for word in dict.fromkeys(keywords + repeated):
        substrings, whole = occurrences(word)
        if word in named or substrings != whole or whole == 0:
            continue
        if whole >= 2:
            options.append((word, "at least", 4 if whole >= 4 else 2))
        if word in keywords and whole <= 3:
            options.append((word, "less than", 4))
    if not options:
        raise Skip(f"no valid parameters: {FREQUENCY}")
    # Prefer "at least" (the word is used on purpose) when the reply allows it.
    strong = [o for o in options if o[1] == "at least"]
    word, relation, n = rng.choice(strong if strong and rng.random() < 0.7 else options)
    d.kwargs[FREQUENCY] = {"keyword": word, "frequency": n, "relation": relation}
    phrases = FREQUENCY_LESS if relation == "less than" else FREQUENCY_AT_LEAST
    d.phrases[FREQUENCY] = rng.choice(phrases).format(w=word, n=n, n_word=NUMBER_WORDS[n],
                                                      times=_plural(n, "time", "times"))


# --------------------------------------------------------------------------- checking


def _official() -> tuple[Any, Any, Any]:
    """lm-eval's ifeval modules (utils, registry, util), imported once the nltk data is in place."""
    from sftkit.ifeval import ensure_punkt_tab

    ensure_punkt_tab()
    import langdetect
    from lm_eval.tasks.ifeval import instructions_registry, instructions_util, utils

    langdetect.DetectorFactory.seed = 0  # the case checkers call langdetect; keep the build reproducible
    return utils, instructions_registry, instructions_util


def _ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def copies_canonical(prompt: str, ids: list[str], kwargs: list[dict[str, Any]], registry: Any) -> bool:
    """Whether the prompt repeats 8 consecutive words of lm-eval's description of any of its instructions."""
    grams = _ngrams(prompt)
    for instruction_id, kw in zip(ids, kwargs):
        description = registry.INSTRUCTION_DICT[instruction_id](instruction_id).build_description(**kw)
        if grams & _ngrams(description):
            return True
    return False


def passes(utils: Any, ids: list[str], kwargs: list[dict[str, Any]], prompt: str, reply: str) -> list[bool]:
    """lm-eval's official strict verdict for each instruction."""
    example = utils.InputExample(key=0, instruction_id_list=ids, prompt=prompt, kwargs=kwargs)
    return utils.test_instruction_following_strict(example, reply).follow_instruction_list


# --------------------------------------------------------------------------- build


def _pick(candidates: list[str], counts: Counter, rng: random.Random) -> str:
    low = min(counts[c] for c in candidates)
    return rng.choice(sorted(c for c in candidates if counts[c] == low))


def _draft(item: dict[str, Any], ids: list[str], rng: random.Random,
           util: Any) -> tuple[str, str, list[dict[str, Any]]]:
    d = Draft(item=item, ids=ids, prompt_task=item["task"])
    reply = _shape_reply(d, rng)
    reply = _apply_modifiers(d, reply, rng)
    _measure(d, reply, rng, util)
    phrases = [d.phrases[i] for i in ids]
    if len(ids) == 1 and CONSTRAINED not in ids and rng.random() < 0.2:
        prompt = f"{phrases[0]} {d.prompt_task}"
    else:
        prompt = " ".join([d.prompt_task, *phrases])
    return prompt, reply, [d.kwargs[i] for i in ids]


def build_rows(content_path: Path = CONTENT_PATH, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows ``{"kind": "ifeval", "topic", "instruction_id_list", "kwargs", "messages"}`` and drops per reason.

    Each item yields ``ROWS_PER_ITEM`` candidates; each candidate gets the least-used eligible
    instruction (and, for about a third, a compatible second one), a reply reshaped from the written
    content, and parameters the reply meets. A candidate is kept only if lm-eval's strict checker
    passes every instruction, the whole row is at most ``MAX_ROW_WORDS`` words, and the prompt does
    not repeat lm-eval's canonical wording.
    """
    utils, registry, util = _official()
    rng = random.Random(seed)
    items = load_content(Path(content_path))
    rng.shuffle(items)  # spread the rarer kinds of item (letters, yes/no questions) through the build
    counts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    drops: Counter = Counter()
    for item in items:
        used: set[str] = set()
        for _ in range(ROWS_PER_ITEM):
            primary_options = [i for i in TRAINED_IDS if i not in used and eligible(item, i)]
            primary = _pick(primary_options, counts, rng)
            ids = [primary]
            if rng.random() < TWO_INSTRUCTION_SHARE:
                second = [i for i in TRAINED_IDS
                          if i not in used and eligible(item, i) and compatible(primary, i, item)]
                if second:
                    ids.append(_pick(second, counts, rng))
            # Shapes first, so the prompt reads task, layout, then the rest.
            ids.sort(key=lambda i: (i not in SHAPES, i in MEASURED))
            used.update(ids)
            counts.update(ids)  # counted when planned, so a failing id is not retried forever
            try:
                prompt, reply, kwargs = _draft(item, ids, rng, util)
            except Skip as reason:
                drops[str(reason)] += 1
                continue
            verdicts = passes(utils, ids, kwargs, prompt, reply)
            if not all(verdicts):
                for instruction_id, ok in zip(ids, verdicts):
                    if not ok:
                        drops[f"failed lm-eval check: {instruction_id}"] += 1
                continue
            if len(prompt.split()) + len(reply.split()) > MAX_ROW_WORDS:
                drops[f"over {MAX_ROW_WORDS} words"] += 1
                continue
            if copies_canonical(prompt, ids, kwargs, registry):
                drops["copies lm-eval's canonical wording"] += 1
                continue
            rows.append({
                "kind": "ifeval", "topic": item["topic"], "instruction_id_list": ids, "kwargs": kwargs,
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
            })
    return rows, dict(sorted(drops.items()))


def main() -> int:
    rows, drops = build_rows(CONTENT_PATH)
    per_id = Counter(i for row in rows for i in row["instruction_id_list"])
    two = sum(len(row["instruction_id_list"]) == 2 for row in rows)
    print(f"{len(rows)} rows kept ({two} with two instructions)")
    for instruction_id in TRAINED_IDS:
        print(f"  {per_id[instruction_id]:4d}  {instruction_id}")
    print("dropped:", drops if drops else "none")
    leaked = sorted(set(per_id) & set(HELD_OUT_IDS))
    short = [i for i in TRAINED_IDS if per_id[i] < 8]
    if leaked or short:
        print("PROBLEM:", {"held-out ids used": leaked, "ids with < 8 rows": short})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
