"""The before/after harness: one fixed eval set, generations from each model, scores with intervals.

Everything is per example first (so any difference can be bootstrapped as a *paired*
difference on the same prompts) and aggregated second. A model is evaluated on:

- reference answers: exact match per task (built-in tasks) or ROUGE-L / BLEU (free text),
  and assistant-token perplexity of the reference replies;
- generation behaviour: stop rate (did it emit end-of-turn by itself?), length,
  distinct-1/2, the repeated-4-gram rate and the loop rate (replies whose repeated-4-gram rate
  exceeds `LOOP_THRESHOLD`);
- optionally (the suite) instruction following, IFEval scored by its official checkers
  (`sftkit.ifeval`), short-answer facts (`sftkit.evalsets.facts`) and refusal
  (`sftkit.evalsets.refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .data import BUILTIN_SOURCE
from .generate import Generation, generate_batch
from .masking import IGNORE_INDEX, NoTrainableTokensError, tokenize_conversation
from .report import markdown_table
from .run_data import OFFLINE_CONVERSATIONS
from .tasks import check_answer


#: A reply whose repeated-4-gram rate exceeds this loops ("1. Sleep. 2. Sleep. 3. Sleep."); a
#: fluent reply of a hundred words rarely repeats one 4-gram in five.
LOOP_THRESHOLD = 0.2


def loops(text: str) -> bool:
    """Whether a reply loops: its repeated-4-gram rate exceeds `LOOP_THRESHOLD`."""
    return metrics.repeated_ngram_rate(text, 4) > LOOP_THRESHOLD


@dataclass
class ModelEval:
    """One model's generations and scores on the eval set."""

    name: str
    generations: list[Generation]
    per_example: dict[str, list[float]]
    summary: dict[str, Any]
    per_task: dict[str, float] = field(default_factory=dict)


def _prompts_and_references(eval_set: Any) -> tuple[list[list[dict]], list[str]]:
    prompts, references = [], []
    for index, row in enumerate(eval_set):
        messages = row["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            last = messages[-1]["role"] if messages else "nothing"
            raise ValueError(f"eval row {index}: a conversation must end with the reference (assistant) reply, "
                             f"it ends with {last!r}")
        prompts.append(messages[:-1])
        references.append(messages[-1]["content"])
    return prompts, references


def reference_rows(eval_set: Any, tokenizer: Any, max_length: int | None = None) -> list[dict]:
    """Tokenized eval conversations whose labels cover only the *final* assistant reply.

    Perplexity is measured on the reply the model is asked to produce, the same tokens the
    generation is scored against; earlier assistant turns are context.
    """
    rows = []
    for row in eval_set:
        messages = row["messages"]
        prefix = tokenize_conversation(messages[:-1] + [{"role": "assistant", "content": ""}], tokenizer)
        try:
            full = tokenize_conversation(messages, tokenizer, max_length)
        except NoTrainableTokensError:
            continue
        # Everything the prefix trains (earlier turns, and the empty reply's end token) is context here.
        cut = len(prefix["input_ids"]) - 1
        labels = [IGNORE_INDEX] * min(cut, len(full["labels"])) + full["labels"][cut:]
        if any(label != IGNORE_INDEX for label in labels):
            rows.append({"input_ids": full["input_ids"], "labels": labels})
    return rows


def evaluate_model(
    name: str,
    model: Any,
    tokenizer: Any,
    eval_set: Any,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    max_length: int | None = None,
    ifeval_cfg: Any = None,
    score_nll: bool = True,
) -> ModelEval:
    """Generate for every prompt of `eval_set` and score it (see the module docstring).

    `score_nll=False` leaves out the assistant NLL of the reference replies (a caller that
    scored it on another copy of the model, e.g. before merging an adapter, saves the pass).

    With `ifeval_cfg` (a run config), IFEval too (`ifeval_for_model`): its result without the
    per-prompt rows is ``summary["ifeval"]`` (the demo's metrics.json and report).
    """
    prompts, references = _prompts_and_references(eval_set)
    generations = generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = [g.text for g in generations]
    per_example: dict[str, list[float]] = {
        "stopped": [float(g.stopped) for g in generations],
        "invented_turn": [float(g.invented_turn) for g in generations],
        "echoed_prompt": [float(metrics.echoes_prompt(g.text, p[-1]["content"]))
                          for g, p in zip(generations, prompts)],
        "length": [float(g.new_tokens) for g in generations],
        "repeated_4gram_rate": [metrics.repeated_ngram_rate(t, 4) for t in texts],
    }
    per_example["looped"] = [float(rate > LOOP_THRESHOLD) for rate in per_example["repeated_4gram_rate"]]
    per_task: dict[str, float] = {}
    columns = eval_set.column_names if hasattr(eval_set, "column_names") else list(eval_set[0].keys())
    if "task" in columns:
        # Rows without a task (open-ended conversations) have no exact answer to match.
        checked = [(row, text) for row, text in zip(eval_set, texts) if row["task"]]
        correct = [float(check_answer(row["task"], text, row["answer"])) for row, text in checked]
        per_example["exact_match"] = correct
        by_task: dict[str, list[float]] = {}
        for (row, _), value in zip(checked, correct):
            by_task.setdefault(row["task"], []).append(value)
        per_task = {task: sum(v) / len(v) for task, v in sorted(by_task.items())}
    per_example["rouge_l"], rouge_backend = metrics.rouge_l_scores(texts, references)
    per_example["bleu"] = metrics.sentence_bleu(texts, references)

    ppl = None
    if score_nll:
        ppl = metrics.assistant_perplexity(model, reference_rows(eval_set, tokenizer, max_length),
                                          tokenizer.pad_token_id)
        per_example["assistant_nll"] = ppl["row_nll"]
    summary = {
        **{key: sum(values) / len(values) for key, values in per_example.items() if values},
        "stop_rate": metrics.stop_rate([g.stopped for g in generations]),
        "invented_turn_rate": sum(g.invented_turn for g in generations) / len(generations),
        # Reply length against the reference's, both in whitespace words (tokenizer-independent).
        "length_ratio": sum(metrics.response_lengths(texts)) / max(sum(metrics.response_lengths(references)), 1),
        "corpus_bleu": metrics.bleu(texts, references),
        "distinct_1": metrics.distinct_n(texts, 1),
        "distinct_2": metrics.distinct_n(texts, 2),
        "n": len(prompts),
        # Which library computed ROUGE-L (`metrics.rouge_backend`): "evaluate" or "rouge-score".
        "rouge_backend": rouge_backend,
    }
    if ppl is not None:
        # Token-weighted (as training loss is); `assistant_nll` above is the mean of row means.
        summary.update(assistant_ppl=ppl["ppl"], assistant_token_nll=ppl["nll"], assistant_tokens=ppl["tokens"])
    if ifeval_cfg is not None:
        from .ifeval import summary as ifeval_summary

        summary["ifeval"] = ifeval_summary(ifeval_for_model(model, tokenizer, ifeval_cfg))
    return ModelEval(name, generations, per_example, summary, per_task)


# Metrics where lower is better; their paired differences are reported as "after - before"
# all the same, and the reader is told the direction.
LOWER_IS_BETTER = {"assistant_nll", "repeated_4gram_rate", "looped", "invented_turn", "echoed_prompt"}


def compare(before: ModelEval, after: ModelEval, resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap 95% intervals of after - before for every per-example metric."""
    table = {}
    for key in before.per_example:
        if key not in after.per_example or len(before.per_example[key]) != len(after.per_example[key]):
            continue
        a, b = before.per_example[key], after.per_example[key]
        # p_not_better assumes higher is better; flip the sign for lower-is-better metrics.
        sign = -1.0 if key in LOWER_IS_BETTER else 1.0
        result = metrics.paired_bootstrap_diff([sign * x for x in a], [sign * x for x in b], resamples, seed=seed)
        # `+ 0.0` turns the -0.0 of a flipped zero into 0.0 (reports printed "-0.000").
        table[key] = {
            "before": sign * result["before"] + 0.0,
            "after": sign * result["after"] + 0.0,
            "diff": sign * result["diff"] + 0.0,
            "low": sign * (result["high"] if sign < 0 else result["low"]) + 0.0,
            "high": sign * (result["low"] if sign < 0 else result["high"]) + 0.0,
            "p_not_better": result["p_not_better"],
            "lower_is_better": key in LOWER_IS_BETTER,
        }
    return table


def intervals(model_eval: ModelEval, resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Bootstrap 95% intervals of each per-example metric's mean for one model."""
    return {
        key: metrics.bootstrap_ci(values, resamples, seed=seed)
        for key, values in model_eval.per_example.items()
        if values
    }


def side_by_side(eval_set: Any, evals: list[ModelEval], indices: list[int]) -> list[dict]:
    """Prompt, reference and each model's answer for the chosen examples."""
    prompts, references = _prompts_and_references(eval_set)
    rows = []
    for index in indices:
        row = {"prompt": prompts[index][-1]["content"], "reference": references[index]}
        for model_eval in evals:
            row[model_eval.name] = model_eval.generations[index].text
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the offline suite


@dataclass
class SuiteResult:
    """One model on every part of the evaluation set."""

    name: str
    reference: ModelEval
    # `sftkit.ifeval.score_ifeval`'s result (prompt/instruction strict and loose, per_prompt,
    # per_kind, protocol, fallback kinds, and `families` when the training set's instruction
    # ids are known); named `instructions` for the notebook's cells.
    instructions: dict[str, Any]
    refusal: dict[str, Any]
    open_generations: list[Generation]
    # The open prompts' texts and their parts ("instruction", "harmful", "harmless"), in the
    # order of `open_generations`; the reference part's prompts in `task_prompts`.
    open_prompts: list[str] = field(default_factory=list)
    open_parts: list[str] = field(default_factory=list)
    task_prompts: list[str] = field(default_factory=list)
    # `sftkit.evalsets.facts.score_facts`'s result and the replies, in the questions' order.
    facts: dict[str, Any] = field(default_factory=dict)
    fact_generations: list[Generation] = field(default_factory=list)


def ifeval_for_model(model: Any, tokenizer: Any, cfg: Any, behaviour: bool = False) -> dict[str, Any]:
    """IFEval alone for one model (`sftkit.ifeval`, prompts from ``eval.ifeval_source``): for the
    demo, which evaluates its models with `evaluate_model` rather than the whole suite.

    `behaviour=True` adds how the replies end: ``stop_rate`` and ``loop_rate`` (replies whose
    repeated-4-gram rate exceeds `LOOP_THRESHOLD`), for choosing settings on these prompts alone.
    """
    from .ifeval import as_messages, rows_for, score_ifeval

    e = cfg.eval
    rows, protocol = rows_for(cfg)
    generations = generate_batch(model, tokenizer, [as_messages(r) for r in rows], e.ifeval_max_new_tokens,
                                 e.batch_size)
    result = score_ifeval(rows, [g.text for g in generations], protocol, e.bootstrap_resamples)
    if behaviour:
        result["stop_rate"] = metrics.stop_rate([g.stopped for g in generations])
        result["loop_rate"] = sum(loops(g.text) for g in generations) / len(generations)
    return result


def trained_instruction_ids(cfg: Any) -> frozenset[str] | None:
    """The IFEval ids the run's training rows contain (offline conversations), or None when unknown."""
    if cfg.data.source != OFFLINE_CONVERSATIONS:
        return None
    from .offline_conversations import trained_instruction_ids as ids

    return ids()


def evaluate_suite(name: str, model: Any, tokenizer: Any, cfg: Any) -> SuiteResult:
    """Reference answers (the run's held-out split), IFEval (official checkers), short-answer
    facts (offline runs) and refusal, all on the held-out split ``data.eval_split`` names."""
    from .evalsets import facts as fact_set
    from .evalsets.refusal import refusal_eval_messages, score_refusals
    from .ifeval import as_messages, by_family, rows_for, score_ifeval
    from .tasks import make_task_splits

    e = cfg.eval
    if cfg.data.source == BUILTIN_SOURCE:
        _, test = make_task_splits(0, e.n_examples, seed=cfg.data.seed)
    else:  # the held-out split of the run's data (offline conversations, smol-smoltalk on Colab)
        from .run_data import load_run_data

        _, test = load_run_data(cfg)
        test = test.select(range(min(e.n_examples, len(test))))
    reference = evaluate_model(name, model, tokenizer, test, e.max_new_tokens, e.batch_size, cfg.data.max_length)
    ifeval_rows, protocol = rows_for(cfg)
    ifeval_generations = generate_batch(model, tokenizer, [as_messages(r) for r in ifeval_rows],
                                        e.ifeval_max_new_tokens, e.batch_size)
    instructions = score_ifeval(ifeval_rows, [g.text for g in ifeval_generations], protocol, e.bootstrap_resamples)
    trained = trained_instruction_ids(cfg)
    if trained is not None:
        instructions["families"] = by_family(instructions, trained, e.bootstrap_resamples)
    refusal_items = refusal_eval_messages()
    refusal_generations = generate_batch(model, tokenizer, [messages for _, messages in refusal_items],
                                         e.open_max_new_tokens, e.batch_size)
    refusal_texts = [g.text for g in refusal_generations]
    harmful = [t for (kind, _), t in zip(refusal_items, refusal_texts) if kind == "harmful"]
    harmless = [t for (kind, _), t in zip(refusal_items, refusal_texts) if kind == "harmless"]
    refusal = score_refusals(harmful, harmless)
    facts, fact_generations = {}, []
    if cfg.data.source in (OFFLINE_CONVERSATIONS, BUILTIN_SOURCE):  # offline runs; Colab's has no fact set
        questions = fact_set.load_facts(cfg.data.eval_split if cfg.data.eval_split in fact_set.SPLITS else "test")
        fact_generations = generate_batch(model, tokenizer, [fact_set.as_messages(q) for q in questions],
                                          fact_set.MAX_NEW_TOKENS, e.batch_size)
        facts = fact_set.score_facts(questions, [g.text for g in fact_generations], e.bootstrap_resamples)
        reference.per_example["fact_correct"] = [float(f) for f in facts["correct_flags"]]
    # Per-prompt instruction results and refusal flags join the per-example table so that
    # they get intervals and paired differences like every other metric.
    reference.per_example["instruction_strict"] = [float(p["passed"]) for p in instructions["per_prompt"]]
    reference.per_example["instruction_loose"] = [float(p["passed_loose"]) for p in instructions["per_prompt"]]
    reference.per_example["refused_harmful"] = [float(f) for f in refusal["harmful_flags"]]
    reference.per_example["refused_harmless"] = [float(f) for f in refusal["harmless_flags"]]
    open_generations = ifeval_generations + refusal_generations
    reference.per_example["open_stopped"] = [float(g.stopped) for g in open_generations]
    reference.per_example["open_looped"] = [float(loops(g.text)) for g in open_generations]
    prompts, _ = _prompts_and_references(test)
    return SuiteResult(
        name, reference, instructions, refusal, open_generations,
        open_prompts=[r.prompt for r in ifeval_rows] + [messages[-1]["content"] for _, messages in refusal_items],
        open_parts=["instruction"] * len(ifeval_rows) + [kind for kind, _ in refusal_items],
        task_prompts=[p[-1]["content"] for p in prompts],
        facts=facts, fact_generations=fact_generations,
    )


SUITE_HEADLINE = (
    ("exact_match", "task exact match"),
    ("rouge_l", "ROUGE-L vs reference"),
    ("stopped", "stop rate (conversations)"),
    ("open_stopped", "stop rate (open prompts)"),
    ("looped", "loop rate (conversations)"),
    ("open_looped", "loop rate (open prompts)"),
    ("instruction_strict", "instruction following (IFEval prompt-level strict)"),
    ("instruction_loose", "instruction following (IFEval prompt-level loose)"),
    ("fact_correct", "short-answer facts (accuracy)"),
    ("refused_harmful", "refusal rate (harmful)"),
    ("refused_harmless", "over-refusal rate (harmless)"),
    ("repeated_4gram_rate", "repeated 4-gram rate"),
    ("assistant_nll", "assistant NLL"),
)


def _per_model_results(suites: dict[str, SuiteResult], resamples: int) -> dict[str, dict[str, Any]]:
    """Each model's `eval.json` entry: summary, per-task scores, intervals, IFEval, refusal, facts."""
    from . import ifeval

    per_model = {}
    for name, suite in suites.items():
        per_model[name] = {
            "summary": suite.reference.summary,
            "per_task": suite.reference.per_task,
            "intervals": intervals(suite.reference, resamples),
            "ifeval": ifeval.summary(suite.instructions),
            "refusal": {k: v for k, v in suite.refusal.items() if not k.endswith("_flags")},
            "facts": {k: v for k, v in suite.facts.items() if k != "correct_flags"},
        }
    return per_model


def _headline_lines(names: list[str], per_model: dict[str, dict[str, Any]], preset: str, hardware: str,
                    wall_s: float) -> list[str]:
    """`eval.md`'s title and its table of headline means with bootstrap intervals, one column per model."""
    rows = []
    for key, label in SUITE_HEADLINE:
        cells = [label]
        for name in names:
            ci = per_model[name]["intervals"].get(key)
            cells.append(f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else "n/a")
        rows.append(cells)
    return [f"# Evaluation ({preset} preset) on {hardware}, {wall_s} s", "",
            "Means with bootstrap 95% intervals.", "", *markdown_table(["metric", *names], rows)]


def _difference_lines(baseline: str, differences: dict[str, dict[str, Any]]) -> list[str]:
    """One table per model of its paired differences from the baseline."""
    lines: list[str] = []
    for name, table in differences.items():
        rows = [(label, f"{table[key]['diff']:+.3f}", f"[{table[key]['low']:+.3f}, {table[key]['high']:+.3f}]")
                for key, label in SUITE_HEADLINE if key in table]
        lines += ["", f"## {name} - {baseline} (paired bootstrap 95% CI)", "",
                  *markdown_table(("metric", "difference", "interval"), rows)]
    return lines


def _ifeval_lines(suites: dict[str, SuiteResult], per_model: dict[str, dict[str, Any]], names: list[str],
                  baseline: str) -> list[str]:
    """IFEval's section: the official summary and strict accuracy per instruction id, one column per model."""
    from . import ifeval

    rows = [(kind, counts["n"], *(f"{per_model[n]['ifeval']['per_kind'][kind]:.2f}" for n in names))
            for kind, counts in per_model[baseline]["ifeval"]["per_instruction"].items()]
    return ["", "## IFEval (official checkers)", "", *ifeval.markdown({n: suites[n].instructions for n in names}),
            "", "Instruction-level strict accuracy per IFEval instruction id:", "",
            *markdown_table(["instruction id", "n", *names], rows)]


def _side_by_side_lines(suites: dict[str, SuiteResult], names: list[str], baseline: str) -> list[str]:
    """Every model's reply to the first prompt of each part (not hand-picked ones)."""
    lines = ["", "## Side by side (the first prompt of each part)", ""]
    base_suite = suites[baseline]
    picks = [("task", 0)] + [(part, base_suite.open_parts.index(part)) for part in
                                      ("instruction", "harmful", "harmless") if part in base_suite.open_parts]
    for part, index in picks:
        if part == "task":
            prompt = base_suite.task_prompts[index]
            answers = {name: suites[name].reference.generations[index].text for name in names}
        else:
            prompt = base_suite.open_prompts[index]
            answers = {name: suites[name].open_generations[index].text for name in names}
        lines += [f"**{part}:** {prompt}", ""]
        lines += [f"- {name}: `{answer[:300]}`" for name, answer in answers.items()]
        lines.append("")
    return lines


def _write_eval_figures(out: Any, suites: dict[str, SuiteResult], per_model: dict[str, dict[str, Any]],
                        note: str) -> None:
    """`eval_metrics.png`, `eval_lengths.png` and `eval_rates.png` (closed once written)."""
    import matplotlib.pyplot as plt

    from . import viz

    table = {name: per_model[name]["intervals"] for name in suites}
    figures = [
        viz.plot_metric_bars(table, ["exact_match", "instruction_strict", "stopped"], out / "eval_metrics.png",
                             note=note),
        viz.plot_length_histograms({n: [g.new_tokens for g in s.open_generations] for n, s in suites.items()},
                                   out / "eval_lengths.png", title="Reply length on open prompts", note=note),
        viz.plot_rate_bars({n: {"stop rate": per_model[n]["summary"]["stop_rate"],
                                "refusal (harmful)": s.refusal["refusal_rate"],
                                "over-refusal (harmless)": s.refusal["over_refusal_rate"],
                                "repeated 4-gram": per_model[n]["summary"]["repeated_4gram_rate"]}
                            for n, s in suites.items()}, out / "eval_rates.png", note=note),
    ]
    for figure in figures:
        plt.close(figure)


def write_eval_outputs(out: Any, suites: dict[str, SuiteResult], cfg: Any, hardware: str, wall_s: float) -> dict:
    """`eval.json`, `eval.md` and figures for a set of evaluated models (the first is the baseline)."""
    import json
    from pathlib import Path

    out = Path(out)
    names = list(suites)
    resamples = cfg.eval.bootstrap_resamples
    per_model = _per_model_results(suites, resamples)
    baseline = names[0]
    differences = {
        name: compare(suites[baseline].reference, suites[name].reference, resamples) for name in names[1:]
    }
    results = {"hardware": hardware, "wall_s": wall_s, "preset": cfg.preset, "models": per_model,
               "differences_vs_" + baseline: differences}
    (out / "eval.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    lines = [*_headline_lines(names, per_model, cfg.preset, hardware, wall_s),
             *_difference_lines(baseline, differences),
             *_ifeval_lines(suites, per_model, names, baseline),
             *_side_by_side_lines(suites, names, baseline)]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    _write_eval_figures(out, suites, per_model, note=f"{cfg.preset} preset, {hardware}")
    return results
