"""LoRA configuration trials: run a small grid of LoRA settings on the same data and compare them.

"Which rank? Which layers? Which learning rate?" has no answer in general, only on a given
model, data set and budget. This module answers it the honest way: every trial starts from
a fresh copy of the same base model, with the same seed, the same training rows and the same
held-out rows, and changes only the LoRA settings it names. Each finished trial is written at
once as one JSON line of ``trials.jsonl``, so

- a grid that dies half-way (a Colab disconnect, a CPU box rebooted) resumes where it
  stopped: trials whose name is already in the file are skipped;
- the numbers in a notebook's table come from that file, never from memory or by hand.

A grid file is JSON, either an explicit list of trials::

    [{"name": "r4-attn", "r": 4, "targets": "attention"}, {"name": "r16-all", "r": 16}]

or a base plus a grid expanded as a Cartesian product, with names derived from the values::

    {"base": {"dropout": 0.0}, "grid": {"r": [4, 16], "targets": ["attention", "mlp", "all-linear"]}}
    -> r4_attention, r4_mlp, r4_all-linear, r16_attention, r16_mlp, r16_all-linear

Settings a trial does not name come from the run's `RunConfig` (the preset). One exception,
stated because it changes results: when a trial sets ``r`` but not ``alpha``, alpha follows r
so that alpha / r (the scale of the LoRA update) stays the preset's; otherwise raising the
rank would also silently shrink the update's scale.

Each trial is scored twice: by the held-out assistant NLL of the adapter as trained, and by
how its own replies to the held-out prompts behave (generated with the adapter merged): the
stop rate, the loop rate and ROUGE-L, plus exact match on the built-in tasks. `best_trial` picks
a winner by a rule stated in words next to the answer (optionally behind a gate on the stop and
loop rates), so a reader can disagree with the rule rather than guess it; it lives in
`sftkit.chapters.trial_choice` with `trials_table`, and both are importable from here.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..config import RunConfig
from ..train import train_lora
from .trial_choice import ALL_BLOCKS, best_trial, format_value, trials_table

logger = logging.getLogger(__name__)

TRIALS_FILE = "trials.jsonl"
# What each trial's generated replies are scored on (`evaluate_model`'s summary keys): the stop rate,
# the loop rate (replies whose repeated-4-gram rate exceeds 0.2), ROUGE-L against the held-out replies,
# and exact match where the rows are built-in tasks (None otherwise).
BEHAVIOUR = {"stop_rate": "stop_rate", "loop_rate": "looped", "rouge_l": "rouge_l", "exact_match": "exact_match"}
TARGET_CHOICES = ("attention", "mlp", "all-linear")
# How grid keys appear in derived trial names; targets show their value alone ("mlp").
NAME_PARTS = {"r": "r", "alpha": "alpha", "dropout": "drop", "targets": "", "blocks": "blocks", "learning_rate": "lr"}


@dataclass
class TrialSpec:
    """One LoRA configuration to try. ``None`` means "the run config's value".

    name: unique within a grid; it names the trial's folder and its row in ``trials.jsonl``.
    r: LoRA rank (the preset's if None).
    alpha: LoRA alpha; if None and `r` is set, alpha = r * (preset alpha / preset r), so the
        update scale alpha / r is unchanged; if both are None, the preset's alpha.
    dropout: LoRA dropout on the adapter's input (the preset's if None).
    targets: "attention", "mlp", "all-linear" or a list of module names (the preset's if None).
    blocks: adapt only the top this many decoder blocks, or "all" (the preset's lora.layers if None).
    learning_rate: peak learning rate (the preset's if None).
    """

    name: str
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    targets: str | list[str] | None = None
    blocks: int | str | None = None
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the trial and the field when a value cannot work."""
        where = f"trial {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a trial needs a non-empty string name, got {self.name!r}")
        if any(ch in self.name for ch in "/\\") or self.name in (".", ".."):
            raise ValueError(f"{where}: the name becomes a folder name and may not contain '/' or '\\'")
        if self.r is not None and (isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1):
            raise ValueError(f"{where}: r must be a positive integer, got {self.r!r}")
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                                       or self.alpha <= 0):
            raise ValueError(f"{where}: alpha must be a positive number, got {self.alpha!r}")
        if self.dropout is not None and (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                                         or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"{where}: dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets is not None:
            if isinstance(self.targets, str):
                if self.targets not in TARGET_CHOICES:
                    raise ValueError(
                        f"{where}: targets must be one of {TARGET_CHOICES} or a list of module names, "
                        f"got {self.targets!r}"
                    )
            elif not (isinstance(self.targets, list) and self.targets
                      and all(isinstance(t, str) for t in self.targets)):
                raise ValueError(f"{where}: targets must be a non-empty list of module names, got {self.targets!r}")
        if self.blocks is not None and self.blocks != ALL_BLOCKS and (
            isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1
        ):
            raise ValueError(f"{where}: blocks must be a positive integer or {ALL_BLOCKS!r}, got {self.blocks!r}")
        if self.learning_rate is not None and (
            isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float))
            or not self.learning_rate > 0
        ):
            raise ValueError(f"{where}: learning_rate must be a positive number, got {self.learning_rate!r}")

    def resolve(self, cfg: RunConfig) -> dict[str, Any]:
        """The trial's full LoRA/optimiser settings, with the run config filling the gaps."""
        r = self.r if self.r is not None else cfg.lora.r
        if self.alpha is not None:
            alpha: float = self.alpha
        elif self.r is not None:
            alpha = r * cfg.lora.alpha / cfg.lora.r
        else:
            alpha = cfg.lora.alpha
        if float(alpha).is_integer():
            alpha = int(alpha)  # peft writes it to adapter_config.json; keep "32", not "32.0"
        return {
            "r": r,
            "alpha": alpha,
            "dropout": self.dropout if self.dropout is not None else cfg.lora.dropout,
            "targets": copy.deepcopy(self.targets if self.targets is not None else cfg.lora.targets),
            # None: every block (lora.layers' own meaning); "all" in a grid file says so explicitly.
            "blocks": cfg.lora.layers if self.blocks is None else None if self.blocks == ALL_BLOCKS else self.blocks,
            "learning_rate": self.learning_rate if self.learning_rate is not None else cfg.train.learning_rate,
        }

    def apply(self, cfg: RunConfig) -> RunConfig:
        """A deep copy of `cfg` with this trial's settings (the original is never changed)."""
        settings = self.resolve(cfg)
        trial_cfg = copy.deepcopy(cfg)
        trial_cfg.lora.r = settings["r"]
        trial_cfg.lora.alpha = settings["alpha"]
        trial_cfg.lora.dropout = settings["dropout"]
        trial_cfg.lora.targets = settings["targets"]
        trial_cfg.lora.layers = settings["blocks"]
        trial_cfg.train.learning_rate = settings["learning_rate"]
        return trial_cfg


SPEC_FIELDS = tuple(f.name for f in fields(TrialSpec))
SETTING_FIELDS = tuple(name for name in SPEC_FIELDS if name != "name")


# --------------------------------------------------------------------------- grid files


def trial_name(values: dict[str, Any], prefix: str = "") -> str:
    """A deterministic name from the varied settings, in the grid's key order: 'r4_attention_lr0.001'."""
    parts = [NAME_PARTS[key] + format_value(value) for key, value in values.items()]
    return "_".join(([prefix] if prefix else []) + parts)


def _spec_from_dict(values: dict[str, Any], where: str) -> TrialSpec:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: a trial must be a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - set(SPEC_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; a trial may set {list(SPEC_FIELDS)}")
    try:
        return TrialSpec(**values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def expand_grid(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[TrialSpec]:
    """Every combination of the grid's values on top of `base`, in a fixed order.

    The order is the grid keys' order with the last key varying fastest
    (`itertools.product`), so the same file always gives the same trials in the same order.
    A ``"name"`` in `base` becomes a prefix of every derived name.
    """
    if not isinstance(base, dict):
        raise ValueError(f"grid file: 'base' must be an object, got {type(base).__name__}")
    if not isinstance(grid, dict) or not grid:
        raise ValueError("grid file: 'grid' must be a non-empty object of setting -> list of values")
    unknown = sorted(set(grid) - set(SETTING_FIELDS))
    if unknown:
        raise ValueError(f"grid file: cannot vary {unknown}; the grid may vary {list(SETTING_FIELDS)}")
    overlap = sorted(set(grid) & set(base))
    if overlap:
        raise ValueError(f"grid file: {overlap} appear in both 'base' and 'grid'; keep each setting in one place")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid file: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    prefix = base.get("name", "")
    shared = {k: v for k, v in base.items() if k != "name"}
    specs = []
    for combination in itertools.product(*grid.values()):
        varied = dict(zip(grid, combination))
        name = trial_name(varied, prefix)
        specs.append(_spec_from_dict({**shared, **varied, "name": name}, f"grid trial {name!r}"))
    return specs


def load_grid(path: str | Path) -> list[TrialSpec]:
    """Read a grid file (JSON: a list of trials, or {"base": {...}, "grid": {...}}); names are unique."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no grid file at {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{path}: the list of trials is empty")
        specs = []
        for index, values in enumerate(data):
            where = f"{path}: trial {index}"
            if isinstance(values, dict) and "name" not in values:
                # Unnamed explicit trials get a name from what they set, like grid trials.
                settings = {k: values[k] for k in SETTING_FIELDS if k in values}
                values = {**values, "name": trial_name(settings) or f"trial{index}"}
            specs.append(_spec_from_dict(values, where))
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {"base", "grid"})
        if unknown or "grid" not in data:
            raise ValueError(f"{path}: a grid object has keys 'base' (optional) and 'grid'; got {sorted(data)}")
        specs = expand_grid(data.get("base", {}), data["grid"])
    else:
        raise ValueError(f"{path}: expected a list of trials or a {{'base', 'grid'}} object, "
                         f"got {type(data).__name__}")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"{path}: two trials are named {spec.name!r}; names must be unique")
        seen.add(spec.name)
    return specs


# --------------------------------------------------------------------------- results file


def read_trials(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``out_dir/trials.jsonl`` (empty if there is none).

    A last line cut off mid-write (the process died while writing it) is dropped and the
    file rewritten without it, so the trial simply runs again; a broken line anywhere else
    is an error naming the line, because it means the file was edited or corrupted.
    """
    path = Path(out_dir) / TRIALS_FILE
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                path.write_text("".join(json.dumps(row) + "\n" for row in rows))
                break
            raise ValueError(f"{path}, line {number}: not valid JSON ({error}); fix or remove that line") from None
    return rows


def _append_row(out_dir: Path, row: dict[str, Any]) -> None:
    path = out_dir / TRIALS_FILE
    with path.open("a") as handle:
        handle.write(json.dumps(row, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())  # the row survives a crash right after this trial


# --------------------------------------------------------------------------- running


def _peak_memory(metrics: dict[str, Any]) -> tuple[float | None, str]:
    if metrics.get("peak_gpu_mb") is not None:
        return metrics["peak_gpu_mb"], "gpu allocated (reset at each trial's start)"
    # On Linux the RSS peak is reset when each trial's training begins (`reset_peak_memory`);
    # elsewhere it is the process's high-water mark and can only grow from trial to trial.
    if metrics.get("peak_rss_scope") == "this training":
        return metrics.get("peak_rss_mb"), "process peak RSS during each trial's training (reset at its start)"
    return metrics.get("peak_rss_mb"), "process peak RSS (cumulative over the trials run in this process)"


def run_trial(
    cfg: RunConfig,
    spec: TrialSpec,
    out_dir: str | Path,
    train_set: Any,
    eval_set: Any,
    load_model_fn: Callable[[], tuple[Any, Any]],
    **sft_overrides: Any,
) -> dict[str, Any]:
    """Train and evaluate one trial; returns its row (not written; `run_trials` writes it)."""
    from transformers import set_seed

    from ..evaluation import evaluate_model, reference_rows
    from ..metrics import assistant_perplexity

    trial_cfg = spec.apply(cfg)
    start = time.perf_counter()
    # The same seed before every load: LoRA's A matrices and the data order are then
    # identical across trials, so differences come from the settings, not the dice.
    set_seed(trial_cfg.train.seed)
    model, tokenizer = load_model_fn()
    try:
        result = train_lora(trial_cfg, model, tokenizer, train_set, Path(out_dir) / "runs" / spec.name,
                            **sft_overrides)
    except Exception as error:
        raise RuntimeError(f"trial {spec.name!r} failed while training: {type(error).__name__}: {error}") from error
    tuned = result.model
    rows = reference_rows(eval_set, tokenizer, trial_cfg.data.max_length)
    if not rows:
        raise ValueError(f"trial {spec.name!r}: no eval row has a scorable reply after tokenization")
    # The ranking metric on the trained adapter as it is (unmerged, exact)...
    ppl = assistant_perplexity(tuned, rows, tokenizer.pad_token_id, batch_size=trial_cfg.eval.batch_size)
    # ...and the behaviour of its replies, generated with the adapter merged (as `sftkit eval` does:
    # decoding through unmerged LoRA layers costs several times more per token on a CPU). The trial's
    # model is thrown away afterwards, so merging in place is safe.
    if hasattr(tuned, "merge_and_unload"):
        tuned = tuned.merge_and_unload()
    scored = evaluate_model(spec.name, tuned, tokenizer, eval_set, trial_cfg.eval.max_new_tokens,
                            trial_cfg.eval.batch_size, trial_cfg.data.max_length, score_nll=False)
    behaviour = {key: scored.summary.get(summary_key) for key, summary_key in BEHAVIOUR.items()}
    m = result.metrics
    peak, peak_kind = _peak_memory(m)
    row = {
        "name": spec.name,
        "config": spec.resolve(cfg),
        "lora_targets": m["lora_targets"],
        "trainable_params": m["trainable_params"],
        "total_params": m["total_params"],
        "tokens_per_s": m["tokens_per_s"],
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,
        "final_loss": m["final_loss"],
        "train_loss": m["train_loss"],
        "steps": m["steps"],
        "eval_nll": ppl["nll"],
        "eval_ppl": ppl["ppl"],
        "eval_tokens": ppl["tokens"],
        "eval_rows": len(rows),
        **behaviour,
        "train_wall_s": m["wall_s"],
        "wall_s": round(time.perf_counter() - start, 2),
        "hardware": m["hardware"],
        "precision": m["precision"],
        "seed": trial_cfg.train.seed,
        "preset": cfg.preset,
    }
    del tuned, model, result
    if torch.cuda.is_available():
        # Free this trial's GPU memory before the next model loads. Not on a CPU, where a
        # full collection costs about half a second per trial and frees nothing `del` did not.
        gc.collect()
        torch.cuda.empty_cache()
    return row


def _messages(rows: Any) -> list:
    return list(rows["messages"]) if hasattr(rows, "column_names") else [row["messages"] for row in rows]


def run_context(cfg: RunConfig, train_set: Any, eval_set: Any) -> dict[str, Any]:
    """What every trial of a grid shares besides its LoRA settings: model, data and budget.

    Stored in each row, so that resuming a grid in a folder whose rows came from another model,
    other data (compared by a digest of the conversations) or another step budget is refused
    instead of mixing two experiments in one table.
    """
    def digest(rows: Any) -> str:
        text = json.dumps(_messages(rows), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    t = cfg.train
    return {
        "model": cfg.model.name,
        "max_length": cfg.data.max_length,
        "max_steps": t.max_steps,
        "num_train_epochs": t.num_train_epochs,
        "batch": [t.per_device_train_batch_size, t.gradient_accumulation_steps],
        "seed": t.seed,
        "eval_max_new_tokens": cfg.eval.max_new_tokens,
        "train_rows": len(train_set),
        "train_digest": digest(train_set),
        "eval_rows": len(eval_set),
        "eval_digest": digest(eval_set),
    }


def run_trials(
    cfg: RunConfig,
    specs: Iterable[TrialSpec],
    out_dir: str | Path,
    train_set: Any,
    eval_set: Any,
    load_model_fn: Callable[[], tuple[Any, Any]],
    **sft_overrides: Any,
) -> list[dict[str, Any]]:
    """Run every trial not yet in ``out_dir/trials.jsonl``; returns the rows of `specs`, in order.

    `load_model_fn()` returns a fresh ``(model, prepared tokenizer)`` each call (for a preset,
    ``lambda: sftkit.runs.load_for(cfg)``). `train_set` / `eval_set` are ``messages``
    datasets; with a ``task`` column (the built-in tasks) exact match is scored too.
    `sft_overrides` go to `SFTConfig` (e.g. ``disable_tqdm=True``).

    Resuming: a trial whose name already has a row is skipped, unless its settings or the
    run's context (`run_context`: model, data, budget) differ from the row's, which raises,
    because a table mixing two meanings of one name, or two experiments, would lie.
    """
    specs = list(specs)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"trial names must be unique; repeated: {duplicates}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {row["name"]: row for row in read_trials(out_dir)}
    context = run_context(cfg, train_set, eval_set)
    results = []
    for index, spec in enumerate(specs, start=1):
        settings = spec.resolve(cfg)
        if spec.name in done:
            recorded = done[spec.name].get("config")
            if recorded != json.loads(json.dumps(settings)):
                raise ValueError(
                    f"trial {spec.name!r} is already in {out_dir / TRIALS_FILE} with settings {recorded}, "
                    f"but the grid now asks for {settings}; rename the trial or use another output folder"
                )
            recorded_context = done[spec.name].get("context") or {}
            changed = sorted(key for key in context
                             if recorded_context.get(key) != json.loads(json.dumps(context[key])))
            if changed:
                was_now = ", ".join(f"{key} was {recorded_context.get(key)!r}, now {context[key]!r}"
                                    for key in changed)
                raise ValueError(
                    f"trial {spec.name!r} is already in {out_dir / TRIALS_FILE}, but from a different run: "
                    f"{was_now}; "
                    f"use another output folder for a changed model, data or budget"
                )
            logger.info(f"trial {index}/{len(specs)} {spec.name}: already done, skipped")
            results.append(done[spec.name])
            continue
        logger.info(f"trial {index}/{len(specs)} {spec.name}: {settings}")
        row = {**run_trial(cfg, spec, out_dir, train_set, eval_set, load_model_fn, **sft_overrides),
               "context": context}
        _append_row(out_dir, row)
        done[spec.name] = row
        results.append(row)
    return results


def run_trials_cli(grid_path: str | Path, preset: str | None = None, out: str | Path | None = None) -> list[dict]:
    """`sftkit trials --grid FILE [--preset NAME] [--out DIR]`: run (or resume) a grid, report the best.

    Writes ``trials.jsonl`` (one row per trial), ``trials.md`` (the table and the winner with
    its rule) and the resolved ``config.json`` into `out` (default ``<preset output>/trials``).
    """
    from ..config import resolve_preset
    from ..run_data import load_run_data as load_demo_data
    from ..models import hardware_name
    from ..runs import load_for

    cfg = resolve_preset(preset)
    specs = load_grid(grid_path)  # fail on a bad grid before loading any model
    out = Path(out or Path(cfg.output_dir) / "trials")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)
    logger.info(f"{len(specs)} trials from {grid_path}, preset {cfg.preset}, on {hardware_name()} -> {out}")
    train_set, eval_set = load_demo_data(cfg)
    rows = run_trials(cfg, specs, out, train_set, eval_set, lambda: load_for(cfg))
    winner, sentence = best_trial(rows)
    lines = [f"# LoRA trials: {cfg.preset} preset on {rows[0]['hardware']}", "",
             f"{len(train_set)} training and {len(eval_set)} held-out conversations, seed {cfg.train.seed}, "
             "every trial from a fresh base model.", "", trials_table(rows), "", sentence, ""]
    (out / "trials.md").write_text("\n".join(lines))
    print(trials_table(rows))
    print(sentence)
    return rows


__all__ = [
    "TrialSpec",
    "trial_name",
    "expand_grid",
    "load_grid",
    "read_trials",
    "run_trial",
    "run_trials",
    "best_trial",
    "trials_table",
    "run_trials_cli",
]
