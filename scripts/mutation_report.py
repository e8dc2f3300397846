"""Summarise a `mutmut run` of the core modules into dev/mutation.md and one summary line.

`make mutation` runs mutmut (configured in pyproject's ``[tool.mutmut]``: the modules whose
silent errors would corrupt results, against their fast tests) and then this script. It reads
mutmut's results, shows every mutant that no test killed with its diff, and marks those
explained as equivalent in ``dev/mutation_equivalents.toml`` (a mutant that changes nothing a
caller can observe, with the reason); a survivor that is not equivalent but is left alive on
purpose carries its reason there too (``[not_killed]``) and still counts as surviving. A mutant
that no selected test executes ("no tests") is counted as surviving: nothing would catch it.

The last line printed is ``mutants_killed=<k> mutants_survived=<s> mutants_timeout=<t>``, where
survived counts the unexplained survivors only; the report also gives the score over the
non-equivalent mutants.

Usage: python scripts/mutation_report.py [--out dev/mutation.md] [--wall-s SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "dev" / "mutation_equivalents.toml"
# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1/3 killed, 0 survived, 5/33 no tests, 36 timeout.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
          None: "not checked"}


def _hardware() -> str:
    try:
        from sftkit.models import hardware_name

        return hardware_name()
    except ImportError:
        return platform.machine()


def read_results(mutants: Path) -> dict[str, str]:
    """Mutant name -> status, from the ``.meta`` files mutmut writes beside each mutated module."""
    results = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            results[name] = STATUS.get(code, "suspicious")
    return results


def module_of(name: str) -> str:
    """``sftkit.metrics.x_bootstrap_ci__mutmut_3`` -> ``sftkit/metrics.py``."""
    dotted = name.rsplit(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
    return dotted.replace(".", "/") + ".py"


def function_of(name: str) -> str:
    return name.rsplit(".", 1)[1].removeprefix("x").rsplit("__mutmut_", 1)[0].replace("ǁ", ".").strip("_.")


def diff_of(name: str) -> str:
    """The mutant's diff against the source, through mutmut's own function (pinned version)."""
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        return get_diff_for_mutant(name, path=Path(module_of(name))).strip()
    except Exception as error:  # noqa: BLE001 (a report line, not a crash, for a diff mutmut cannot rebuild)
        return f"(diff unavailable: {error})"
    finally:
        os.chdir(here)


def load_explanations(path: Path = EQUIVALENTS) -> tuple[dict[str, str], dict[str, str]]:
    """The ``[equivalent]`` and ``[not_killed]`` tables: mutant name -> reason."""
    if not path.is_file():
        return {}, {}
    data = tomllib.loads(path.read_text())
    return ({str(k): str(v) for k, v in data.get("equivalent", {}).items()},
            {str(k): str(v) for k, v in data.get("not_killed", {}).items()})


def summarise(results: dict[str, str], equivalents: dict[str, str]) -> dict[str, Counter]:
    by_module: dict[str, Counter] = {}
    for name, status in results.items():
        counts = by_module.setdefault(module_of(name), Counter())
        counts["mutants"] += 1
        if status in ("survived", "no tests") and name in equivalents:
            counts["equivalent"] += 1
        else:
            counts[status] += 1
    return dict(sorted(by_module.items()))


def write_report(results: dict[str, str], equivalents: dict[str, str], not_killed: dict[str, str], out: Path,
                 wall_s: float | None, note: str = "") -> Counter:
    by_module = summarise(results, equivalents)
    total = sum(by_module.values(), Counter())
    scored = total["mutants"] - total["equivalent"]
    lines = [
        "# Mutation testing of the core modules",
        "",
        "`make mutation` runs [mutmut](https://github.com/boxed/mutmut) over the modules whose silent",
        "errors would corrupt results (pyproject's `[tool.mutmut]`), each mutant against the fast tests",
        "that execute the mutated function, then `scripts/mutation_report.py` writes this file.",
        "A mutant that no selected test executes (\"no tests\") counts as surviving. Survivors that",
        "change nothing a caller can observe are explained in `dev/mutation_equivalents.toml`.",
        "",
        f"Machine: {_hardware()}, mutmut 3.8.1"
        + (f"; the run took {wall_s / 60:.0f} minutes with two workers." if wall_s else ".")
        + (f" {note}" if note else ""),
        "",
        "| module | mutants | killed | survived | no tests | timeout | not checked | equivalent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, c in [*by_module.items(), ("**all**", total)]:
        lines.append(f"| {module} | {c['mutants']} | {c['killed']} | {c['survived']} | {c['no tests']} | "
                     f"{c['timeout']} | {c['not checked']} | {c['equivalent']} |")
    if scored:
        lines += ["", f"Killed {total['killed']} of {scored} non-equivalent mutants "
                      f"({100 * total['killed'] / scored:.1f}%; timeouts count as not killed)."]
    open_names = [n for n, s in results.items() if s in ("survived", "no tests") and n not in equivalents]
    equivalent_names = [n for n, s in results.items() if s in ("survived", "no tests") and n in equivalents]
    lines += ["", f"## Surviving mutants ({len(open_names)})", ""]
    for name in open_names:
        lines += [f"### `{name}` ({results[name]})", ""]
        if name in not_killed:
            lines += [f"Not killed: {not_killed[name]}", ""]
        lines += ["```diff", diff_of(name), "```", ""]
    lines += [f"## Equivalent mutants ({len(equivalent_names)})", ""]
    for name in equivalent_names:
        lines += [f"- `{name}`: {equivalents[name]}"]
    stale = sorted((set(equivalents) - set(equivalent_names)) | (set(not_killed) - set(open_names)))
    if stale:
        lines += ["", "Explanations in dev/mutation_equivalents.toml that match no surviving mutant "
                      "(killed now, or renamed):", *[f"- `{n}`" for n in stale]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    total["open"] = len(open_names)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--out", type=Path, default=ROOT / "dev" / "mutation.md")
    parser.add_argument("--wall-s", type=float, default=None)
    parser.add_argument("--note", default="", help="a sentence added after the machine line")
    args = parser.parse_args(argv)
    results = read_results(args.mutants)
    if not results:
        raise SystemExit(f"no mutmut results under {args.mutants}: run `make mutation` (mutmut run) first")
    equivalents, not_killed = load_explanations()
    total = write_report(results, equivalents, not_killed, args.out, args.wall_s, args.note)
    print(f"report: {args.out}")
    print(f"mutants_killed={total['killed']} mutants_survived={total['open']} mutants_timeout={total['timeout']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
