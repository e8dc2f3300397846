"""The short-answer fact set: its file, its containment rule and its scores (no model)."""

from __future__ import annotations

import json

import pytest

from sftkit.evalsets import facts


def test_the_rule_wants_an_accepted_answer_as_whole_words_near_the_start():
    assert facts.is_correct("It is Saturn, the sixth planet.", ["Saturn"])
    assert facts.is_correct("saturn", ["Saturn"])
    assert facts.is_correct("A violin has 4 strings.", ["4", "four"])
    assert facts.is_correct("Neil Armstrong, in 1969.", ["Neil Armstrong", "Armstrong"])
    assert not facts.is_correct("Saturnine moods are common.", ["Saturn"])  # not a whole word
    assert not facts.is_correct("It has 14 strings.", ["4"])
    assert not facts.is_correct("", ["Saturn"])
    late = "word " * facts.SCORED_WORDS + "Saturn"
    assert not facts.is_correct(late, ["Saturn"]), "an answer after the scored words does not count"
    assert facts.is_correct("word " * (facts.SCORED_WORDS - 1) + "Saturn", ["Saturn"])
    assert facts.normalise("  Neil   ARMSTRONG! ") == "neil armstrong"


def test_the_shipped_set_has_two_splits_and_questions_that_do_not_give_the_answer_away():
    dev, test = facts.load_facts("dev"), facts.load_facts("test")
    assert len(dev) >= 40 and len(test) >= 100
    every = facts.load_facts()
    assert len(every) == len(dev) + len(test) and len({f.id for f in every}) == len(every)
    for fact in every:
        # A model that only echoes the question must not score: no answer is inside it.
        assert not facts.is_correct(fact.question, fact.answers), fact.id
        # No one-letter answer ("a" is in most replies); a one-digit number is fine.
        assert all(len(facts.normalise(a)) >= 2 or a.isdigit() for a in fact.answers), fact.id


def test_bad_rows_raise_naming_the_line():
    good = {"id": "a", "split": "dev", "topic": "t", "question": "q?", "answers": ["x"]}
    lines = [json.dumps(good), json.dumps({**good, "id": "b", "answers": []})]
    with pytest.raises(ValueError, match="line 2: answers"):
        facts.load_facts(text="\n".join(lines))
    with pytest.raises(ValueError, match="line 2: missing or repeated id"):
        facts.load_facts(text="\n".join([json.dumps(good), json.dumps(good)]))
    with pytest.raises(ValueError, match="line 1: split"):
        facts.load_facts(text=json.dumps({**good, "split": "train"}))
    with pytest.raises(ValueError, match="split must be one of"):
        facts.load_facts("train")


def test_scores_are_means_of_the_flags_with_an_interval():
    questions = facts.load_facts(text="\n".join(json.dumps(
        {"id": str(i), "split": "test", "topic": "t", "question": f"q{i}?", "answers": ["Paris"]}) for i in range(4)))
    result = facts.score_facts(questions, ["Paris.", "It is Paris", "Rome", "London"], resamples=200)
    assert result["correct_flags"] == [True, True, False, False]
    assert result["accuracy"]["mean"] == 0.5 and result["accuracy"]["low"] < 0.5 < result["accuracy"]["high"]
    assert result["n"] == 4
    with pytest.raises(ValueError, match="4 questions but 3 replies"):
        facts.score_facts(questions, ["a", "b", "c"])
