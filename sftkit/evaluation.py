"""The before/after harness: one fixed eval set, generations from each model, scores with intervals.

Everything is per example first (so any difference can be bootstrapped as a *paired*
difference on the same prompts) and aggregated second. A model is evaluated on:

- reference answers: exact match per task (built-in tasks) or ROUGE-L / BLEU (free text),
  and assistant-token perplexity of the reference replies;
- generation behaviour: stop rate (did it emit end-of-turn by itself?), length,
  distinct-1/2 and the repeated-4-gram rate;
- optionally instruction following (`sftkit.instructions`) and refusal (`sftkit.refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .generate import Generation, generate_batch
from .masking import NoTrainableTokensError, tokenize_conversation
from .tasks import check_answer


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
    for row in eval_set:
        messages = row["messages"]
        assert messages[-1]["role"] == "assistant", "each eval conversation must end with the reference reply"
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
        labels = [-100] * min(cut, len(full["labels"])) + full["labels"][cut:]
        if any(label != -100 for label in labels):
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
) -> ModelEval:
    """Generate for every prompt of `eval_set` and score it (see the module docstring)."""
    prompts, references = _prompts_and_references(eval_set)
    generations = generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    texts = [g.text for g in generations]
    per_example: dict[str, list[float]] = {
        "stopped": [float(g.stopped) for g in generations],
        "length": [float(g.new_tokens) for g in generations],
        "repeated_4gram_rate": [metrics.repeated_ngram_rate(t, 4) for t in texts],
    }
    per_task: dict[str, float] = {}
    columns = eval_set.column_names if hasattr(eval_set, "column_names") else list(eval_set[0].keys())
    if "task" in columns:
        correct = [float(check_answer(row["task"], text, row["answer"])) for row, text in zip(eval_set, texts)]
        per_example["exact_match"] = correct
        by_task: dict[str, list[float]] = {}
        for row, value in zip(eval_set, correct):
            by_task.setdefault(row["task"], []).append(value)
        per_task = {task: sum(v) / len(v) for task, v in sorted(by_task.items())}
    per_example["rouge_l"] = metrics.rouge_l(texts, references)
    per_example["bleu"] = metrics.sentence_bleu(texts, references)

    ppl = metrics.assistant_perplexity(model, reference_rows(eval_set, tokenizer, max_length), tokenizer.pad_token_id)
    per_example["assistant_nll"] = ppl["row_nll"]
    summary = {
        **{key: sum(values) / len(values) for key, values in per_example.items() if values},
        "stop_rate": metrics.stop_rate([g.stopped for g in generations]),
        "corpus_bleu": metrics.bleu(texts, references),
        "distinct_1": metrics.distinct_n(texts, 1),
        "distinct_2": metrics.distinct_n(texts, 2),
        "assistant_ppl": ppl["ppl"],
        "n": len(prompts),
    }
    return ModelEval(name, generations, per_example, summary, per_task)


# Metrics where lower is better; their paired differences are reported as "after - before"
# all the same, and the reader is told the direction.
LOWER_IS_BETTER = {"assistant_nll", "repeated_4gram_rate"}


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
        table[key] = {
            "before": sign * result["before"],
            "after": sign * result["after"],
            "diff": sign * result["diff"],
            "low": sign * (result["high"] if sign < 0 else result["low"]),
            "high": sign * (result["low"] if sign < 0 else result["high"]),
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
