"""Where addition scratchpads go wrong: digit reading, column sums, carries, or the final answer.

Reads the generation files of the addition probes (`session4_generations/*.json`,
`session5_generations/*.json`: the task, the reference answer and the model's reply for each
dev prompt) and checks every step of each reply against the model's own earlier steps,
whatever the format:
- a named digit ("848: ones 8, tens 4, hundreds 8") must be that digit of the number;
- every sum written out ("8 + 4 = 12", "8 + 4 + 1 = 13", "12 + 1 = 13") must be true;
- a carry ("= 13, write 3, carry 1") must be the tens digit of the column total before it;
- the answer after "Answer:" must be the right total.
Run from the repository root: `python results/cpu-demo/design_runs/addition_steps_errors.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).parent
NAMED = re.compile(r"(\d+): ones (\d), tens (\d), hundreds (\d)")
SUM = re.compile(r"((?:\d+ \+ )+\d+) = (\d+)")
CARRY = re.compile(r"= (\d+), write \d+, carry (\d+)")


def step_errors(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """{step: (wrong, checked)} over the ``add`` rows."""
    counts = {"digit read": [0, 0], "sum written": [0, 0], "carry": [0, 0], "answer": [0, 0]}
    for row in rows:
        if row["task"] != "add":
            continue
        for number, *digits in NAMED.findall(row["out"]):
            for place, digit in enumerate(digits):
                counts["digit read"][0] += int(digit) != int(number) // 10 ** place % 10
                counts["digit read"][1] += 1
        for terms, total in SUM.findall(row["out"]):
            counts["sum written"][0] += sum(int(t) for t in terms.split(" + ")) != int(total)
            counts["sum written"][1] += 1
        for total, carry in CARRY.findall(row["out"]):
            counts["carry"][0] += int(carry) != int(total) // 10
            counts["carry"][1] += 1
        counts["answer"][0] += row["out"].rsplit("Answer:", 1)[-1].strip() != row["ref"]
        counts["answer"][1] += 1
    return {step: (wrong, checked) for step, (wrong, checked) in counts.items()}


def main() -> None:
    print("| probe | digits read wrong | sums written wrong | carries wrong | answers wrong |")
    print("| --- | --- | --- | --- | --- |")
    for path in sorted(HERE.glob("session*_generations/*.json")):
        errors = step_errors(json.loads(path.read_text()))
        cells = [f"{w}/{n} ({w / n:.0%})" if n else "-" for w, n in errors.values()]
        print(f"| {path.stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
