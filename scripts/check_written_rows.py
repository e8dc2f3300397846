"""Check files of written conversations (data/README.md's row format) before they are built.

    python scripts/check_written_rows.py data/conversations/train/everyday.jsonl [...]

Prints one line per problem (file, line, reason) and a count per kind; exits 1 on any problem.
Training files (under ``train/``) must not mention a reserved evaluation topic
(``data/eval_topics.txt``); evaluation files must be about one.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from sftkit.data import validate_conversation

KINDS = ("everyday", "system", "fact", "howto", "list", "rewrite", "summary", "extract", "refusal", "no-refusal",
         "ifeval")
MAX_WORDS = 150
TOPICS_FILE = Path(__file__).resolve().parents[1] / "data" / "eval_topics.txt"

# Words that identify a reserved topic in a training row (a training row about any of these is
# a leak into evaluation). Matched as whole words, case-insensitively.
RESERVED_WORDS = (
    "volcano", "volcanoes", "volcanic", "lava", "magma", "octopus", "octopuses", "apollo", "chess", "honeybee",
    "honeybees", "beehive", "lighthouse", "lighthouses", "eiffel", "penguin", "penguins", "espresso", "bicycle",
    "bicycles", "origami", "everest", "amazon", "photosynthesis", "mars", "martian", "sourdough", "tide", "tides",
    "rainbow", "rainbows", "great wall", "dolphin", "dolphins", "guitar", "guitars", "marathon", "compost",
    "composting", "shark", "sharks", "piano", "pianos", "saturn", "glacier", "glaciers", "sushi", "hot-air balloon",
    "antarctica", "antarctic", "owl", "owls", "printing press", "gutenberg", "earthquake", "earthquakes",
    "chocolate", "cocoa", "sahara", "kite", "kites", "whale", "whales", "violin", "violins", "lightning",
    "thunderstorm", "thunderstorms", "moon landing", "armstrong",
)
_RESERVED = re.compile(r"\b(" + "|".join(re.escape(w) for w in RESERVED_WORDS) + r")\b", re.IGNORECASE)


def row_problems(row: object, training: bool) -> list[str]:
    """Every reason a written row breaks data/README.md's rules (empty when it is fine)."""
    reason = validate_conversation(row)
    if reason is not None:
        return [reason]
    problems = []
    messages = row["messages"]
    roles = [m["role"] for m in messages if m["role"] != "system"]
    if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
        problems.append("turns must alternate user/assistant and end with assistant")
    if row.get("kind") not in KINDS:
        problems.append(f"kind must be one of {KINDS}, got {row.get('kind')!r}")
    if not isinstance(row.get("topic"), str) or not row["topic"].strip():
        problems.append("no topic")
    words = sum(len(m["content"].split()) for m in messages)
    if words > MAX_WORDS:
        problems.append(f"{words} words (at most {MAX_WORDS})")
    text = " ".join(m["content"] for m in messages)
    hit = _RESERVED.search(text)
    if training and hit:
        problems.append(f"mentions the reserved evaluation topic word {hit.group(0)!r}")
    return problems


def check_file(path: Path) -> tuple[list[str], Counter]:
    training = "train" in path.parts
    problems, kinds = [], Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{path}:{number}: invalid JSON ({error})")
            continue
        for reason in row_problems(row, training):
            problems.append(f"{path}:{number}: {reason}")
        kinds[row.get("kind")] += 1
    return problems, kinds


def main(argv: list[str]) -> int:
    bad = 0
    for name in argv:
        problems, kinds = check_file(Path(name))
        for problem in problems:
            print(problem)
        bad += len(problems)
        print(f"{name}: {sum(kinds.values())} rows " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
