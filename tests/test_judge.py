"""`sftkit.judge`: pairwise model-judged comparison in both orders, with deterministic fake judges.

A judge that always prefers the first reply (pure position bias) must come out as all ties; a
judge that prefers the tuned reply wherever it is shown must give all wins; one that prefers the
longer reply decides by content and so agrees in both orders. The real judge's parser and its
offline skip are tested without the Hub.
"""

from __future__ import annotations

import pytest
import torch

from sftkit.judge import (DEFAULT_JUDGE, JUDGE_PROMPT, JudgeError, hf_judge, judge_evaluations, judge_pairs,
                          load_judge, parse_verdict)

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


class ScriptedModel:
    """Stands in for an instruct model: `generate` appends the tokens of a fixed answer to the prompt, as HF's does."""

    device = torch.device("cpu")

    def __init__(self, tokenizer, answer: str):
        self.new_ids = tokenizer.encode(answer, add_special_tokens=False)
        self.calls = []

    def generate(self, input_ids, attention_mask=None, **kwargs):
        self.calls.append({"input_ids": input_ids, **kwargs})
        new = torch.tensor([self.new_ids[: kwargs["max_new_tokens"]]], dtype=input_ids.dtype)
        return torch.cat([input_ids, new], dim=1)


@pytest.mark.parametrize(("answer", "verdict"), [
    ("B", "B"), ("A. Reply A answers the question", "A"), ("tie", "tie"), ("[[B]]", "B"), ("Reply A", None),
])
def test_hf_judge_reads_the_verdict_from_the_new_tokens_only(tokenizer, answer, verdict):
    model = ScriptedModel(tokenizer, answer)
    judge = hf_judge(model, tokenizer, max_new_tokens=4)
    assert judge("What is 2+2?", "4", "5") == verdict
    (call,) = model.calls
    assert call["do_sample"] is False and call["max_new_tokens"] == 4  # greedy, a one-word budget
    shown = tokenizer.decode(call["input_ids"][0])
    assert JUDGE_PROMPT.format(prompt="What is 2+2?", a="4", b="5") in shown
    assert shown.endswith(tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                        add_generation_prompt=True).split("x")[-1])


def test_hf_judge_with_a_real_model_parses_its_greedy_continuation(tiny_model, tokenizer, monkeypatch):
    import sftkit.judge

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": JUDGE_PROMPT.format(prompt="What is 2+2?", a="4", b="5")}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = tiny_model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.strip(), "the tiny model should say something for this check to compare"
    parsed = []
    monkeypatch.setattr(sftkit.judge, "parse_verdict", lambda text: parsed.append(text) or "tie")
    assert hf_judge(tiny_model, tokenizer, max_new_tokens=3)("What is 2+2?", "4", "5") == "tie"
    assert parsed == [answer]  # the judge parses exactly the model's three greedy new tokens


def test_hf_judge_hands_generate_the_tokenizers_pad_id_even_when_it_is_0(tokenizer):
    # The prepared SmolLM2 tokenizer pads with <|endoftext|>, id 0: `pad_token_id or eos_token_id` made it EOS.
    assert tokenizer.pad_token_id == 0 != tokenizer.eos_token_id
    model = ScriptedModel(tokenizer, "B")
    assert hf_judge(model, tokenizer)("What is 2+2?", "4", "5") == "B"
    (call,) = model.calls
    assert call["pad_token_id"] == 0


def _fresh_tiny():
    """The raw tiny-smollm2 tokenizer (its pad is its EOS, <|im_end|>) and a tiny model, not prepared."""
    from sftkit.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("tiny-smollm2")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id, "the case under test: a judge whose pad is its EOS"
    return load_model("tiny-smollm2", dtype="float32", device="cpu").eval(), tokenizer


def test_hf_judge_pads_a_tokenizer_whose_pad_is_eos_with_its_unk_token(monkeypatch):
    import sftkit.judge

    model, tokenizer = _fresh_tiny()
    rows, size = model.get_input_embeddings().weight.shape[0], len(tokenizer)
    judge = hf_judge(model, tokenizer, max_new_tokens=3)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.pad_token == tokenizer.unk_token
    assert len(tokenizer) == size and model.get_input_embeddings().weight.shape[0] == rows  # nothing added
    parsed = []
    monkeypatch.setattr(sftkit.judge, "parse_verdict", lambda text: parsed.append(text) or "tie")
    assert judge("What is 2+2?", "4", "5") == "tie" and len(parsed) == 1  # the tiny model still judges


def test_hf_judge_adds_a_pad_token_when_unk_is_eos_too(monkeypatch):
    import sftkit.judge

    model, tokenizer = _fresh_tiny()
    tokenizer.unk_token = tokenizer.eos_token
    eos_id = tokenizer.eos_token_id
    judge = hf_judge(model, tokenizer, max_new_tokens=3)
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id not in (None, eos_id)
    assert tokenizer.eos_token_id == eos_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer) > tokenizer.pad_token_id
    parsed = []
    monkeypatch.setattr(sftkit.judge, "parse_verdict", lambda text: parsed.append(text) or "tie")
    assert judge("What is 2+2?", "4", "5") == "tie" and len(parsed) == 1


def _sftkit_lines(caplog) -> list[str]:
    """The messages sftkit's loggers gave (a notebook shows each as one "[sftkit] ..." line), then forget them."""
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("sftkit")]
    caplog.clear()
    return lines


def test_the_real_judge_offline_says_which_one_and_skips(caplog):
    assert load_judge(require_gpu=False) is None
    (line,) = _sftkit_lines(caplog)
    assert len(line.splitlines()) == 1 and DEFAULT_JUDGE in line and "unreachable" in line
    assert load_judge("HuggingFaceTB/SmolLM2-1.7B-Instruct") is None  # this machine has no GPU either
    (line,) = _sftkit_lines(caplog)
    assert len(line.splitlines()) == 1 and "SmolLM2-1.7B-Instruct" in line and "skipped" in line


def test_judge_evaluations_shows_the_judge_the_whole_conversation():
    seen = []
    conversations = [[{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
                      {"role": "user", "content": "What is my name?"}]]
    result = judge_evaluations(conversations, ["Bob."], ["Ada."], lambda p, a, b: seen.append(p) or "tie")
    assert seen == ["User: My name is Ada.\n\nAssistant: Hello Ada.\n\nUser: What is my name?"] * 2
    assert result.outcomes == ["tie"] and result.judge == DEFAULT_JUDGE
