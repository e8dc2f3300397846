"""`sftkit demo`: the whole idea on real weights, measured before and after.

1. load a pretrained model and make its tokenizer ready for assistant-only SFT;
2. baseline: generate on the held-out split (batched, greedy, stop at end-of-turn) and score;
3. LoRA SFT with TRL's `SFTTrainer`;
4. the same evaluation on the same prompts;
5. write ``metrics.json``, ``report.md``, the run card and figures into the output folder.

On a CPU the ``cpu-demo`` preset tunes Gemma 3 270M *base* offline on the offline
conversational set (``offline-conversations``) and sets the published SmolLM2-135M-Instruct
beside it as the reference; on a GPU the ``t4`` preset uses SmolLM2-360M base and
smol-smoltalk from the Hub. ``smoke`` runs the same path with a tiny model in seconds.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .adapters import merged_adapter
from .config import RunConfig, resolve_preset
from .evaluation import ModelEval, compare, evaluate_model, intervals, side_by_side
from .measure import peak_memory_mb
from .models import hardware_name
from .report import markdown_table
from .run_data import load_run_data, load_run_data_with_report
from .runs import load_for, train_and_record

logger = logging.getLogger(__name__)

HEADLINE = ("exact_match", "rouge_l", "stopped", "looped", "assistant_nll", "repeated_4gram_rate")


def load_demo_data(cfg: RunConfig, with_report: bool = False):
    """Train and eval `messages` datasets for a run config (`sftkit.run_data.load_run_data`);
    with `with_report`, also where they came from (`sftkit.run_data.load_run_data_with_report`)."""
    return load_run_data_with_report(cfg) if with_report else load_run_data(cfg)


def _summary_table(before: ModelEval, after: ModelEval, diffs: dict[str, dict]) -> list[str]:
    rows = []
    for key in ("exact_match", "stopped", "looped", "invented_turn", "rouge_l", "bleu", "assistant_nll", "length",
                "repeated_4gram_rate"):
        if key not in diffs:
            continue
        d = diffs[key]
        arrow = " (lower is better)" if d["lower_is_better"] else ""
        rows.append((f"{key}{arrow}", f"{d['before']:.3f}", f"{d['after']:.3f}",
                     f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"))
    rows.append(("assistant perplexity", f"{before.summary['assistant_ppl']:.2f}",
                 f"{after.summary['assistant_ppl']:.2f}", ""))
    return markdown_table(("metric", "before", "after", "after - before (95% CI)"), rows)


def write_report(out: Path, cfg: RunConfig, results: dict[str, Any], before: ModelEval, after: ModelEval,
                 eval_set: Any) -> Path:
    """`report.md`: the table with intervals, per-task results and side-by-side answers."""
    stages = cfg.data.curriculum
    train = (f"{cfg.data.train_size} train" if not stages else
             f"{cfg.data.train_rows} train: "
             + ", ".join(f"{rows} {task}" for task, rows in stages.items())
             + f" first, then {cfg.data.train_size} mixed")
    lines = [
        f"# sftkit demo: {cfg.preset}",
        "",
        f"Model `{cfg.model.name}`, data `{cfg.data.source}` ({train} / {len(eval_set)} held-out), "
        f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {', '.join(results['train']['lora_targets'])} "
        f"in {results['train']['lora_blocks']} blocks.",
        f"Hardware: {results['train']['hardware']}. Training {results['train']['wall_s']} s, "
        f"{results['train']['tokens_per_s']} tokens/s (non-pad), "
        f"padding efficiency {results['train']['padding_efficiency']}; "
        f"whole run {results['wall_s']} s.",
        "",
        "## Before vs after (paired bootstrap, 95% intervals)",
        "",
        *_summary_table(before, after, results["paired_differences"]),
    ]
    if before.per_task:
        lines += ["", "## Exact match per task", "",
                  *markdown_table(("task", "before", "after"), [
                      (t, f"{before.per_task[t]:.2f}", f"{after.per_task[t]:.2f}") for t in before.per_task])]
        hard = [t for t in after.per_task if after.per_task[t] < 0.8]
        if hard:
            lines += ["", f"Still hard after training (exact match < 0.80): {', '.join(hard)}."]
    if "ifeval" in before.summary:
        from .ifeval import markdown as ifeval_markdown

        evals = {"before": before.summary["ifeval"], "after": after.summary["ifeval"]}
        if results.get("reference") and "ifeval" in results["reference"]:
            evals[cfg.model.reference_name] = results["reference"]["ifeval"]
        lines += ["", "## IFEval (official checkers, 95% intervals)", "", *ifeval_markdown(evals)]
    lines += ["", "## Side by side", ""]
    for row in results["side_by_side"]:
        lines += [
            f"**Prompt:** {row['prompt']}",
            "",
            f"- reference: `{row['reference']}`",
            f"- before: `{row['before']}`",
            f"- after: `{row['after']}`",
            *([f"- {cfg.model.reference_name}: `{row['instruct']}`"] if "instruct" in row else []),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def pick_side_by_side(eval_set: Any, n: int) -> list[int]:
    """The first example of each task (or the first n rows), so the examples are not hand-picked."""
    columns = eval_set.column_names
    if "task" not in columns:
        return list(range(min(n, len(eval_set))))
    chosen, seen = [], set()
    for index, task in enumerate(eval_set["task"]):
        if task not in seen:
            seen.add(task)
            chosen.append(index)
    return chosen[:n]


def run_demo(preset: str | None = None, out: str | Path | None = None, cfg: RunConfig | None = None,
             eval_split: str | None = None) -> dict[str, Any]:
    """Run the demo end to end; returns what `metrics.json` holds.

    `eval_split` ("test" or "dev") overrides the preset's held-out split of the built-in tasks.
    """
    start = time.perf_counter()
    cfg = cfg or resolve_preset(preset)
    if eval_split is not None:
        cfg.data.eval_split = eval_split
    out = Path(out or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.output_dir = str(out)
    cfg.save(out)
    logger.info(f"preset {cfg.preset} on {hardware_name()} -> {out}")

    model, tokenizer = load_for(cfg)
    train_set, eval_set, data_report = load_demo_data(cfg, with_report=True)
    eval_set = eval_set.select(range(min(cfg.eval.n_examples, len(eval_set))))
    e = cfg.eval

    logger.info(f"baseline on {len(eval_set)} held-out prompts")
    ifeval_cfg = cfg if e.demo_ifeval else None  # IFEval per model: summary["ifeval"] (sftkit.ifeval)
    before = evaluate_model("before", model, tokenizer, eval_set, e.max_new_tokens, e.batch_size, cfg.data.max_length,
                            ifeval_cfg=ifeval_cfg)
    logger.info(f"training on {len(train_set)} conversations")
    result = train_and_record(cfg, model, tokenizer, train_set, out, data_report=data_report)
    logger.info("evaluation after training")
    with merged_adapter(result.model):  # the base model's decoding speed; equal to rounding (verify_adapter)
        after = evaluate_model("after", result.model, tokenizer, eval_set, e.max_new_tokens, e.batch_size,
                               cfg.data.max_length, ifeval_cfg=ifeval_cfg)

    reference = evaluate_reference(cfg, eval_set)
    diffs = compare(before, after, e.bootstrap_resamples)
    results = {
        "preset": cfg.preset,
        "model": cfg.model.name,
        "hardware": hardware_name(),
        "before": {**before.summary, "per_task": before.per_task,
                   "intervals": intervals(before, e.bootstrap_resamples)},
        "after": {**after.summary, "per_task": after.per_task, "intervals": intervals(after, e.bootstrap_resamples)},
        "paired_differences": diffs,
        # The published instruct model on the same prompts, through its own tokenizer (so its
        # NLL counts other tokens and is not comparable; the generation metrics are).
        "reference": None if reference is None else {
            "model": cfg.model.reference_name, **reference.summary, "per_task": reference.per_task,
            "intervals": intervals(reference, e.bootstrap_resamples),
            "paired_vs_after": compare(reference, after, e.bootstrap_resamples),
        },
        "train": {**result.metrics, "tokenization": result.tokenize_report},
        "data": data_report,  # the splits the rows came from, rows per source
        "side_by_side": side_by_side(eval_set, [before, after] + ([reference] if reference else []),
                                     pick_side_by_side(eval_set, e.n_side_by_side)),
        "wall_s": None,
    }
    write_generations(out / "generations.jsonl", eval_set, before, after)
    write_figures(out, result.log_history, before, after, cfg, results["hardware"],
                  result.metrics.get("stage_end_steps"))
    results["wall_s"] = round(time.perf_counter() - start, 1)
    results["peak_memory"] = peak_memory_mb()
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_report(out, cfg, results, before, after, eval_set)
    print_summary(results)
    return results


def evaluate_reference(cfg: RunConfig, eval_set: Any) -> ModelEval | None:
    """The preset's published instruct model (`ModelConfig.reference_name`) on the same prompts, or None."""
    if not cfg.model.reference_name:
        return None
    from .chat import prepare_tokenizer
    from .models import load_model, load_tokenizer
    from .precision import load_dtype

    name = cfg.model.reference_name
    logger.info(f"reference model {name} on the same prompts")
    tokenizer = prepare_tokenizer(load_tokenizer(name))
    model = load_model(name, dtype=load_dtype(cfg.model.dtype, cfg.train.cpu_amp))
    e = cfg.eval
    result = evaluate_model("instruct", model, tokenizer, eval_set, e.max_new_tokens, e.batch_size,
                            cfg.data.max_length, ifeval_cfg=cfg if e.demo_ifeval else None)
    del model
    return result


def write_generations(path: Path, eval_set: Any, before: ModelEval, after: ModelEval) -> Path:
    """Every held-out prompt with the reference and both answers, one JSON object per line."""
    every = side_by_side(eval_set, [before, after], list(range(len(eval_set))))
    columns = eval_set.column_names
    tasks = list(eval_set["task"]) if "task" in columns else []
    checked = {row: position for position, row in enumerate(i for i, task in enumerate(tasks) if task)}
    with path.open("w") as handle:
        for index, row in enumerate(every):
            if "task" in columns:
                row["task"] = eval_set[index]["task"]
            for model_eval in (before, after):
                row[f"{model_eval.name}_stopped"] = model_eval.generations[index].stopped
                row[f"{model_eval.name}_invented_turn"] = model_eval.generations[index].invented_turn
                if index in checked:  # exact match is scored on the rows with a task only
                    row[f"{model_eval.name}_correct"] = bool(model_eval.per_example["exact_match"][checked[index]])
            handle.write(json.dumps(row) + "\n")
    return path


def write_figures(out: Path, log_history: list[dict], before: ModelEval, after: ModelEval, cfg: RunConfig,
                  hardware: str, stage_end_steps: dict[str, int] | None = None) -> list[Path]:
    """Loss curve, before/after bars per task (or per metric) and generation-behaviour bars."""
    import matplotlib.pyplot as plt

    from . import viz

    note = f"{cfg.preset} preset, {hardware}"
    paths = [out / "loss.png", out / "before_after.png", out / "behaviour.png"]
    figures = [viz.plot_loss_curves(log_history, paths[0], note=note, stage_end_steps=stage_end_steps)]
    if before.per_task:
        figures.append(viz.plot_task_bars({"before": before.per_task, "after": after.per_task}, paths[1], note=note))
    else:
        table = {m.name: intervals(m, cfg.eval.bootstrap_resamples) for m in (before, after)}
        figures.append(viz.plot_metric_bars(table, ["rouge_l", "bleu"], paths[1], note=note))
    rates = {
        m.name: {"stop rate": m.summary["stop_rate"], "repeated 4-gram rate": m.summary["repeated_4gram_rate"]}
        for m in (before, after)
    }
    figures.append(viz.plot_rate_bars(rates, paths[2], note=note))
    for figure in figures:
        plt.close(figure)
    return paths


def print_summary(results: dict[str, Any]) -> None:
    """The before/after table on the terminal."""
    b, a, t = results["before"], results["after"], results["train"]
    print()
    print(f"{'metric':<24}{'before':>10}{'after':>10}")
    for key in ("exact_match", "stop_rate", "looped", "invented_turn_rate", "rouge_l", "bleu", "assistant_ppl"):
        if key in b and key in a:
            print(f"{key:<24}{b[key]:>10.3f}{a[key]:>10.3f}")
    for task in b.get("per_task", {}):
        print(f"  {task:<22}{b['per_task'][task]:>10.2f}{a['per_task'][task]:>10.2f}")
    print(
        f"\ntrain: {t['wall_s']} s, {t['tokens_per_s']} tokens/s, padding efficiency {t['padding_efficiency']}, "
        f"peak RSS {t['peak_rss_mb']} MB; total {results['wall_s']} s on {results['hardware']}"
    )
