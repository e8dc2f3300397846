"""`sftkit.judge`: pairwise model-judged comparison in both orders, with deterministic fake judges.

A judge that always prefers the first reply (pure position bias) must come out as all ties; a
judge that prefers the tuned reply wherever it is shown must give all wins; one that prefers the
longer reply decides by content and so agrees in both orders. The real judge's parser and its
offline skip are tested without the Hub.
"""

from __future__ import annotations

import pytest

from sftkit.judge import (DEFAULT_JUDGE, JudgeError, hf_judge, judge_evaluations, judge_pairs, load_judge,
                          parse_verdict)

PROMPTS = [f"question {i}" for i in range(12)]
BASE = [f"base reply {i} " + "x " * (i % 5) for i in range(12)]
TUNED = [f"tuned reply {i} " + "y " * ((i * 7) % 6) for i in range(12)]


def always_first(prompt, a, b):
    return "A"


def prefers_tuned(prompt, a, b):
    return "A" if a.startswith("tuned") else "B"


def prefers_longer(prompt, a, b):
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"


def test_a_judge_with_only_a_position_bias_gives_ties():
    result = judge_pairs(PROMPTS, BASE, TUNED, always_first)
    assert result.outcomes == ["tie"] * 12
    assert result.rates["tie"]["mean"] == 1.0 and result.rates["win"]["mean"] == 0.0
    assert result.first_position_rate == 1.0 and result.position_consistency == 0.0
    assert result.verdicts == [("A", "A")] * 12  # (tuned shown second, tuned shown first)


def test_a_judge_that_prefers_the_tuned_reply_in_both_orders_gives_wins():
    result = judge_pairs(PROMPTS, BASE, TUNED, prefers_tuned)
    assert result.outcomes == ["win"] * 12 and result.rates["win"]["mean"] == 1.0
    assert result.position_consistency == 1.0 and result.first_position_rate == 0.5
    # swapping the models turns every win into a loss
    swapped = judge_pairs(PROMPTS, TUNED, BASE, prefers_tuned)
    assert swapped.outcomes == ["loss"] * 12


def test_outcomes_follow_content_and_intervals_cover_the_rate():
    result = judge_pairs(PROMPTS, BASE, TUNED, prefers_longer, n_resamples=500)
    expected = ["win" if len(t) > len(b) else "loss" if len(b) > len(t) else "tie" for b, t in zip(BASE, TUNED)]
    assert result.outcomes == expected and len(set(expected)) > 1
    for outcome in ("win", "tie", "loss"):
        ci = result.rates[outcome]
        assert ci["mean"] == pytest.approx(expected.count(outcome) / 12)
        assert ci["low"] <= ci["mean"] <= ci["high"]
    wins = expected.count("win") + 0.5 * expected.count("tie")
    assert result.rates["win + tie/2"]["mean"] == pytest.approx(wins / 12)
    assert result.label == "model-judged" and result.table()["win"].startswith(f"{expected.count('win') / 12:.3f} [")


def test_one_order_decisive_and_the_other_a_tie_leans_that_way():
    verdicts = iter(["B", "tie", "tie", "A", "A", "A", "A", "B"])  # per prompt: (tuned second, tuned first)
    result = judge_pairs(PROMPTS[:4], BASE[:4], TUNED[:4], lambda p, a, b: next(verdicts))
    # 0: tuned preferred once, a tie once -> win; 1: a tie, then tuned preferred -> win;
    # 2: the first reply both times (position bias) -> tie; 3: base preferred in both orders -> loss
    assert result.outcomes == ["win", "win", "tie", "loss"]
    assert result.position_consistency == 0.25 and result.first_position_rate == pytest.approx(4 / 6)


def test_unparsable_verdicts_count_as_ties_and_bad_input_is_refused():
    result = judge_pairs(PROMPTS[:2], BASE[:2], TUNED[:2], lambda p, a, b: None)
    assert result.outcomes == ["tie", "tie"] and result.unparsable == 4
    with pytest.raises(JudgeError, match="one of each"):
        judge_pairs(PROMPTS, BASE[:3], TUNED, always_first)
    with pytest.raises(JudgeError, match="prompt 0: the judge answered 'maybe'"):
        judge_pairs(PROMPTS, BASE, TUNED, lambda p, a, b: "maybe")


@pytest.mark.parametrize(("answer", "verdict"), [
    ("A", "A"), ("B.", "B"), (" [[B]]", "B"), ("Tie", "tie"), ("tie - both fine", "tie"), ("Both are equal", "tie"),
    ("Reply A is better", None), ("", None), ("A: it is better", "A"),
])
def test_parse_verdict(answer, verdict):
    assert parse_verdict(answer) == verdict


def test_hf_judge_runs_an_instruct_model_and_returns_a_verdict(tiny_model, tokenizer):
    judge = hf_judge(tiny_model, tokenizer, max_new_tokens=3)
    assert judge("What is 2+2?", "4", "5") in ("A", "B", "tie", None)


def test_the_real_judge_offline_says_which_one_and_skips(capsys):
    assert load_judge(require_gpu=False) is None
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and DEFAULT_JUDGE in line and "unreachable" in line
    assert load_judge("HuggingFaceTB/SmolLM2-1.7B-Instruct") is None  # this machine has no GPU either
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "SmolLM2-1.7B-Instruct" in line and "skipped" in line


def test_judge_evaluations_shows_the_judge_the_whole_conversation():
    seen = []
    conversations = [[{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
                      {"role": "user", "content": "What is my name?"}]]
    result = judge_evaluations(conversations, ["Bob."], ["Ada."], lambda p, a, b: seen.append(p) or "tie")
    assert seen == ["User: My name is Ada.\n\nAssistant: Hello Ada.\n\nUser: What is my name?"] * 2
    assert result.outcomes == ["tie"] and result.judge == DEFAULT_JUDGE
