"""`evaluate_model`: one model's generations scored per example, per task and in summary."""

from __future__ import annotations

import math

import pytest

from sftkit.evalsets.facts import is_correct
from sftkit.evaluation import evaluate_model, reference_rows
from sftkit.metrics import assistant_perplexity
from sftkit.tasks import make_task_examples


def test_evaluate_model_scores_every_prompt(tiny_model, tokenizer):
    from datasets import Dataset

    eval_set = Dataset.from_list(make_task_examples(12, "dev"))
    scored = evaluate_model("tiny", tiny_model, tokenizer, eval_set, max_new_tokens=6, batch_size=5, max_length=96)
    assert len(scored.generations) == 12
    assert set(scored.per_task) == {row["task"] for row in eval_set}
    for key, values in scored.per_example.items():
        assert len(values) == 12, key
        assert scored.summary[key] == pytest.approx(sum(values) / 12), key
    # The token-weighted NLL in the summary is the one `assistant_perplexity` gives on the
    # same reference rows (trials read it from here instead of scoring the rows twice).
    rows = reference_rows(eval_set, tokenizer, 96)
    direct = assistant_perplexity(tiny_model, rows, tokenizer.pad_token_id)
    assert scored.summary["assistant_token_nll"] == pytest.approx(direct["nll"], rel=1e-5)
    assert scored.summary["assistant_tokens"] == direct["tokens"] > 0
    assert scored.summary["assistant_ppl"] == pytest.approx(math.exp(direct["nll"]), rel=1e-5)
    assert scored.summary["exact_match"] == pytest.approx(sum(scored.per_example["exact_match"]) / 12)


def test_write_generations_scores_exact_match_on_the_task_rows_only(tmp_path):
    # Open-ended rows (task "") have no exact answer: exact_match lists only the task rows,
    # and each generations.jsonl row gets the verdict of its own task row.
    import json

    from datasets import Dataset

    from sftkit.demo import write_generations
    from sftkit.evaluation import ModelEval
    from sftkit.generate import Generation

    rows = [
        {"messages": [{"role": "user", "content": "Tell me about rain."}, {"role": "assistant", "content": "Rain."}],
         "task": "", "answer": ""},
        {"messages": [{"role": "user", "content": "Upper: hi"}, {"role": "assistant", "content": "HI"}],
         "task": "upper", "answer": "HI"},
    ]
    eval_set = Dataset.from_list(rows)
    evals = [ModelEval(name, [Generation(t, 1, True) for t in texts], {"exact_match": [score]}, {})
             for name, texts, score in (("before", ["x", "hi"], 0.0), ("after", ["Rain.", "HI"], 1.0))]
    lines = [json.loads(line)
             for line in write_generations(tmp_path / "g.jsonl", eval_set, *evals).read_text().splitlines()]
    assert "before_correct" not in lines[0] and "after_correct" not in lines[0]
    assert lines[1]["before_correct"] is False and lines[1]["after_correct"] is True


def test_evaluate_model_names_a_row_without_a_reference_reply(tiny_model, tokenizer):
    # A conversation that ends with the user's turn has nothing to score against: the error
    # names the row, before any generation is spent on the set.
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                        {"role": "user", "content": "And?"}]}
    with pytest.raises(ValueError, match=r"eval row 1: .* ends with 'user'"):
        evaluate_model("tiny", tiny_model, tokenizer, [good, bad], max_new_tokens=2)


def test_compare_writes_a_flipped_zero_as_zero_not_minus_zero():
    # A lower-is-better metric is compared with its sign flipped; a zero must come back as 0.0,
    # or reports print "-0.000" (they did for invented_turn).
    import math

    from sftkit.evaluation import ModelEval, compare

    zeros = {"invented_turn": [0.0] * 6, "rouge_l": [0.2, 0.4, 0.1, 0.3, 0.5, 0.2]}
    before = ModelEval("before", [], zeros, {}, {})
    after = ModelEval("after", [], {**zeros, "rouge_l": [0.3, 0.5, 0.2, 0.4, 0.6, 0.3]}, {}, {})
    table = compare(before, after, resamples=50)
    for field in ("before", "after", "diff", "low", "high"):
        assert table["invented_turn"][field] == 0.0 and math.copysign(1.0, table["invented_turn"][field]) == 1.0
    assert table["invented_turn"]["lower_is_better"] and not table["rouge_l"]["lower_is_better"]
    assert table["rouge_l"]["diff"] > 0.09 and table["rouge_l"]["low"] > 0


def test_suite_writes_an_ifeval_section_per_model(tiny_model, tokenizer, tmp_path, monkeypatch):
    """`sftkit eval`'s path: IFEval by the official checkers, per model, in eval.json and eval.md."""
    import json

    from sftkit.config import get_preset
    from sftkit.evaluation import evaluate_suite, ifeval_for_model, write_eval_outputs
    from sftkit.ifeval import lm_eval_version

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = get_preset("smoke")
    suite = evaluate_suite("tiny", tiny_model, tokenizer, cfg)
    result = suite.instructions
    from sftkit.evalsets.facts import load_facts
    from sftkit.ifeval import offline_rows

    assert result["protocol"] == (f"IFEval, official checkers via lm-eval {lm_eval_version()}, "
                                  "offline prompts, test split")
    assert result["n_prompts"] == len(offline_rows("test")) == len(suite.reference.per_example["instruction_loose"])
    assert "families" not in result  # the smoke run trains on built-in tasks: no instruction rows
    # Short-answer facts of the test split, each reply scored by the containment rule.
    questions = load_facts("test")
    assert suite.facts["n"] == len(questions) == len(suite.fact_generations)
    assert suite.facts["correct_flags"] == [is_correct(g.text, q.answers) for g, q in zip(suite.fact_generations,
                                                                                         questions)]
    assert suite.reference.per_example["fact_correct"] == [float(f) for f in suite.facts["correct_flags"]]
    assert suite.reference.per_example["instruction_strict"] == [float(p["passed"]) for p in result["per_prompt"]]
    assert suite.reference.summary["rouge_backend"] == "rouge-score"
    # The demo's helper scores the same prompts the same way (greedy decoding).
    alone = ifeval_for_model(tiny_model, tokenizer, cfg, behaviour=True)
    assert alone["per_prompt"] == result["per_prompt"]
    # How its replies end, as the suite counts them over the same replies (the open prompts start with IFEval's).
    n = result["n_prompts"]
    assert alone["stop_rate"] == pytest.approx(sum(suite.reference.per_example["open_stopped"][:n]) / n)
    assert alone["loop_rate"] == pytest.approx(sum(suite.reference.per_example["open_looped"][:n]) / n)
    assert "stop_rate" not in ifeval_for_model(tiny_model, tokenizer, cfg), "only when asked"
    # ... and so does evaluate_model for the demo, into its summary (metrics.json), without per_prompt.
    from datasets import Dataset

    scored = evaluate_model("tiny", tiny_model, tokenizer, Dataset.from_list(make_task_examples(2, "dev")),
                            max_new_tokens=4, batch_size=2, max_length=96, ifeval_cfg=cfg)
    assert scored.summary["ifeval"]["prompt_strict"] == result["prompt_strict"]
    assert "per_prompt" not in scored.summary["ifeval"]

    written = write_eval_outputs(tmp_path, {"tiny": suite}, cfg, "test machine", 1.0)
    section = json.loads((tmp_path / "eval.json").read_text())["models"]["tiny"]["ifeval"]
    assert section == json.loads(json.dumps(written["models"]["tiny"]["ifeval"]))
    for key in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"):
        assert set(section[key]) == {"mean", "low", "high"}
    assert section["fallback_kinds"] == {} and "per_prompt" not in section
    report = (tmp_path / "eval.md").read_text()
    assert "## IFEval (official checkers)" in report and f"lm-eval {lm_eval_version()}, offline prompts" in report
    assert "| short-answer facts (accuracy) |" in report and "| loop rate (conversations) |" in report
    assert "Fallback kinds (not official): none" in report
