"""Choosing among LoRA trials: the stated rule, its behaviour gate, and the table of every trial.

`sftkit.chapters.trials` runs the trials and writes one row per trial; this module reads such
rows. `best_trial` picks a winner by a rule stated in words next to the answer (lowest held-out
NLL, or highest exact match), optionally only among trials whose replies behave (stop and loop
rates within a margin of the grid's best), so a reader can disagree with the rule rather than
guess it. `trials_table` renders the rows as Markdown for ``trials.md`` and notebooks.
"""

from __future__ import annotations

import math
from typing import Any

from ..report import markdown_table

ALL_BLOCKS = "all"  # a trial's ``blocks``: adapt every decoder block (the preset's lora.layers = None)


def format_value(value: Any) -> str:
    """A setting as it appears in trial names and tables: lists joined by '+', floats in short form."""
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


RULES = {
    "eval_nll": "lowest held-out assistant NLL",
    "exact_match": "highest held-out exact match",
}


def _behaviour_gate(rows: list[dict[str, Any]], margin: float) -> tuple[list[dict[str, Any]], str]:
    """The rows whose stop rate is within `margin` of the best and loop rate within `margin` of the lowest."""
    stops = [row["stop_rate"] for row in rows if _finite(row.get("stop_rate"))]
    loops = [row["loop_rate"] for row in rows if _finite(row.get("loop_rate"))]
    floor = max(stops) - margin if stops else -math.inf
    ceiling = min(loops) + margin if loops else math.inf
    kept = [row for row in rows
            if (not _finite(row.get("stop_rate")) or row["stop_rate"] >= floor - 1e-9)
            and (not _finite(row.get("loop_rate")) or row["loop_rate"] <= ceiling + 1e-9)]
    text = (f"eligible: stop rate >= {floor:.3f} (best {max(stops):.3f} - {margin:g}) and loop rate <= "
            f"{ceiling:.3f} (lowest {min(loops):.3f} + {margin:g}), {len(kept)} of {len(rows)} trials"
            if stops and loops else "")
    return kept, text


def best_trial(rows: list[dict[str, Any]], rule: str = "eval_nll", tolerance: float = 0.0,
               behaviour_margin: float | None = None) -> tuple[dict[str, Any], str]:
    """The winning row by a stated rule, and a sentence that states the rule and the margin.

    Rules:
    - ``"eval_nll"`` (default): lowest held-out assistant NLL; ties go to fewer trainable
      parameters (the cheaper adapter), then to the lower NLL.
    - ``"exact_match"``: highest exact match; ties go to lower NLL, then fewer parameters.

    Two values tie when they differ by at most `tolerance` (0 by default: exactly equal). On a
    small eval set NLL differences of a few hundredths are noise, and a notebook may say so
    by passing e.g. ``tolerance=0.02``. Rows without a finite value for the rule's metric
    (a diverged trial, or no exact match without a task column) cannot win and are named.

    `behaviour_margin` adds a gate on how the trials' replies behave: only a trial whose stop
    rate is within the margin of the best trial's, and whose loop rate is within the margin of
    the lowest, may win (a low NLL bought with replies that never stop, or loop, does not count).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(RULES)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not rows:
        raise ValueError("best_trial needs at least one trial row")
    if behaviour_margin is not None and not behaviour_margin >= 0:
        raise ValueError(f"behaviour_margin must be >= 0 or None, got {behaviour_margin}")
    usable = [row for row in rows if _finite(row.get(rule))]
    excluded = [row.get("name", "?") for row in rows if not _finite(row.get(rule))]
    if not usable:
        raise ValueError(f"no trial has a finite {rule!r}; rows: {[row.get('name') for row in rows]}")
    gate_text = ""
    if behaviour_margin is not None:
        ranked = usable
        usable, gate_text = _behaviour_gate(usable, behaviour_margin)
        eligible = {id(row) for row in usable}  # by identity: two trials' rows may hold equal values
        gated = [row.get("name", "?") for row in ranked if id(row) not in eligible]
        if gated:
            gate_text += f" (not eligible: {', '.join(map(str, gated))})"
    if rule == "eval_nll":
        best_value = min(row["eval_nll"] for row in usable)
        tied = [row for row in usable if row["eval_nll"] <= best_value + tolerance]
        winner = min(tied, key=lambda row: (row["trainable_params"], row["eval_nll"]))
        tie_text = "fewer trainable parameters"
        unit = "nats"
    else:
        best_value = max(row["exact_match"] for row in usable)
        tied = [row for row in usable if row["exact_match"] >= best_value - tolerance]
        winner = min(tied, key=lambda row: (row["eval_nll"] if _finite(row.get("eval_nll")) else math.inf,
                                            row["trainable_params"]))
        tie_text = "lower held-out NLL, then fewer trainable parameters"
        unit = "exact-match points"
    tie_scope = "exactly equal" if tolerance == 0 else f"within {tolerance:g} {unit}"
    sentence = (
        f"Rule: {RULES[rule]}; ties ({tie_scope}) go to {tie_text}. "
        + (f"Behaviour gate: {gate_text}. " if gate_text else "") +
        f"Winner: {winner['name']!r} with {rule} {winner[rule]:.4f} "
        f"and {winner['trainable_params']:,} trainable parameters"
    )
    others = sorted((row for row in usable if row is not winner), key=lambda row: row[rule],
                    reverse=rule != "eval_nll")
    if others:
        runner = others[0]
        sentence += f"; next: {runner['name']!r} with {rule} {runner[rule]:.4f}"
    if len(tied) > 1:
        sentence += f"; {len(tied)} trials tied on {rule}"
    if excluded:
        sentence += f"; not ranked (no finite {rule}): {', '.join(map(str, excluded))}"
    return winner, sentence + "."


def trials_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of trial rows, for ``trials.md`` and notebooks.

    The exact-match column appears only when some trial has one (the built-in tasks).
    """
    def number(value: Any, spec: str) -> str:
        return format(value, spec) if _finite(value) else "n/a"

    with_exact = any(_finite(row.get("exact_match")) for row in rows)
    header = ("trial", "r", "alpha", "targets", "blocks", "lr", "trainable params", "tokens/s", "peak MB",
              "final loss", "eval NLL", "eval ppl", "stop rate", "loop rate", "ROUGE-L",
              *(("exact match",) if with_exact else ()), "wall s")
    table_rows = []
    for row in rows:
        c = row["config"]
        blocks = c.get("blocks", "n/a")
        table_rows.append([
            row["name"], c["r"], c["alpha"], format_value(c["targets"]), ALL_BLOCKS if blocks is None else blocks,
            f"{c['learning_rate']:g}", f"{row['trainable_params']:,}", row["tokens_per_s"],
            number(row.get("peak_memory_mb"), ".0f"), number(row.get("final_loss"), ".4f"),
            f"{row['eval_nll']:.4f}", f"{row['eval_ppl']:.2f}", number(row.get("stop_rate"), ".3f"),
            number(row.get("loop_rate"), ".3f"), number(row.get("rouge_l"), ".3f"),
            *((number(row.get("exact_match"), ".3f"),) if with_exact else ()), row["wall_s"],
        ])
    return "\n".join(markdown_table(header, table_rows))


__all__ = ["ALL_BLOCKS", "RULES", "best_trial", "format_value", "trials_table"]
