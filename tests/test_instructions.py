"""Tests for sftkit.evalsets.instructions: every check kind, the built-in prompt set, and scoring."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import pytest

from sftkit.evalsets.instructions import (
    CHECKS,
    INSTRUCTION_PROMPTS,
    LANGUAGE_NAMES,
    Check,
    PROMPTS_FILE,
    InstructionPrompt,
    as_messages,
    check_response,
    detect_language,
    load_instruction_prompts,
    register_check,
    run_check,
    score_instruction_following,
)

EN = "The weather is nice today and we are going to the park with our dog because it is sunny."
FR = "Le temps est beau aujourd'hui et nous allons au parc avec notre chien parce qu'il fait soleil."
ES = "El tiempo está muy bien hoy y vamos al parque con el perro porque hace sol para todos."
DE = "Das Wetter ist heute schön und wir gehen mit dem Hund in den Park, weil die Sonne scheint."

# (kind, params, a response that passes, a response that fails). Several kinds have more than
# one row to pin down the edge the check's docstring promises.
CASES: list[tuple[str, dict, str, str]] = [
    ("max_words", {"n": 5}, "Boil water, then add pasta.", "Boil plenty of salted water, then add the pasta."),
    ("max_words", {"n": 3}, "- Don't panic!", "Do not panic now."),  # "don't" is one word, "-" none
    ("max_words", {"n": 3}, "Yes.", " - "),  # no words at all fails
    ("min_words", {"n": 6}, "Cats like to sleep all day long.", "Cats sleep a lot."),
    ("max_sentences", {"n": 2}, "Pets need food. They need love too!", "Pets need food. They need love. And walks?"),
    ("max_sentences", {"n": 1}, "It costs 3.5 euros.", ""),  # decimals do not split; empty fails
    ("exact_bullets", {"n": 3}, "Pack:\n- towel\n* sunscreen\n  • hat", "Pack:\n- towel\n- sunscreen"),
    ("exact_bullets", {"n": 1}, "**Tip**\n- drink water", "**Tip**\n1. drink water\n2. rest"),
    ("json_keys", {"keys": ["city", "temp"]}, '{"city": "Oslo", "temp": 3}', '{"city": "Oslo"}'),
    ("json_keys", {"keys": ["a"]}, '```json\n{"a": 1}\n```', 'Sure! Here it is: {"a": 1}'),
    ("json_keys", {"keys": ["a"]}, '```\n{"a": [1, 2]}\n```', '[{"a": 1}]'),  # a list is not an object
    ("all_upper", {}, "WATER THEM IN THE MORNING, 2 TIMES A WEEK!", "WATER them IN THE MORNING."),
    ("all_upper", {}, "OK", "123 !!!"),  # no letters at all fails
    ("all_lower", {}, "brush your teeth, then read for 10 minutes.", "brush your teeth, then Read."),
    ("include_keywords", {"words": ["grind", "water"]}, "GRIND the beans; heat the water.", "Grind the beans."),
    ("include_keywords", {"words": ["cat"]}, "My cat, Tom, sleeps.", "My cats sleep."),  # whole words only
    ("exclude_keywords", {"words": ["gym"]}, "Do push-ups in your gymnastics-free living room.", "Go to the Gym."),
    ("exclude_keywords", {"words": ["soda", "cola"]}, "Drink water.", "Skip the cola."),
    ("exclude_keywords", {"words": ["soda"]}, "Drink water.", ""),
    ("ends_with", {"phrase": "Happy travels!"}, "Pack light. happy travels!  \n", "Happy travels! Enjoy."),
    ("ends_with", {"phrase": "You've got this!"}, "Plan ahead. You\u2019ve got this!", "Plan ahead. You've got this"),
    ("starts_with", {"phrase": "Good question"}, "\n good question! Light scatters.", "That is a good question."),
    ("language", {"lang": "en"}, EN, FR),
    ("language", {"lang": "fr"}, FR, ES),
    ("language", {"lang": "es"}, ES, DE),
    ("language", {"lang": "de"}, DE, EN),
    ("language", {"lang": "fr"}, FR, "Bonjour."),  # too short to decide: fails
    ("no_commas", {}, "Read a book and drink tea.", "Read a book, then drink tea."),
    ("no_commas", {}, "Rest.", "   "),
    ("num_paragraphs", {"n": 2}, "First part.\n\n  \nSecond part.", "First part.\nStill first part."),
    ("num_paragraphs", {"n": 3}, "A.\n\nB.\n\nC.", "A.\n\nB."),
    ("quoted", {}, '  "Learning never exhausts the mind."\n', 'Learning "never" stops.'),
    ("quoted", {}, "\u201cKeep going.\u201d", '""'),
    ("placeholder_count", {"n": 2}, "Hi [name], come on [date] at [time].", "Hi [name], come soon."),
    ("placeholder_count", {"n": 1}, "Dear [friend]", "See [the docs](https://example.com) and []."),
    ("title", {}, "<<Morning Rain>>\nDrops on the glass.", "<Morning Rain>\nDrops on the glass."),
    ("title", {}, "A poem: <<rain>>", "<<   >> no title here"),
]


@pytest.mark.parametrize(("kind", "params", "passing", "failing"), CASES)
def test_check_passes_and_fails(kind: str, params: dict, passing: str, failing: str) -> None:
    check = Check(kind, params)
    assert run_check(check, passing) is True
    assert run_check(check, failing) is False


def test_every_registered_kind_has_cases() -> None:
    assert {kind for kind, *_ in CASES} == set(CHECKS)


REQUIRED_KINDS = {
    "max_words", "min_words", "max_sentences", "exact_bullets", "json_keys", "all_upper",
    "all_lower", "include_keywords", "exclude_keywords", "ends_with", "starts_with", "language",
    "no_commas", "num_paragraphs", "quoted", "placeholder_count", "title",
}


def test_registry_has_required_kinds() -> None:
    assert REQUIRED_KINDS <= set(CHECKS)


# One hand-written compliant response per check kind, written for a built-in prompt that uses
# that kind (prompt id, response): shows that what the prompt set asks for can be met and that
# the check recognises it. Several rows satisfy both checks of a two-check prompt.
COMPLIANT: dict[str, tuple[str, str]] = {
    "max_words": ("cooking_pasta_short", "Boil salted water, add the pasta and taste it a minute early."),
    "min_words": ("study_history_advice", " ".join(["Make a study schedule and review a little every day."] * 9)),
    "max_sentences": ("pets_new_cat", "Keep the cat in one quiet room first. Let it explore the rest slowly."),
    "exact_bullets": ("travel_beach_bullets", "- towel\n- sunscreen\n- hat\n- water bottle"),
    "json_keys": ("weather_city_json", '{"city": "Brightvale", "temperature": "21 C", "conditions": "sunny"}'),
    "all_upper": ("garden_tomatoes_upper", "WATER THE SOIL, NOT THE LEAVES, EARLY IN THE MORNING."),
    "all_lower": ("autumn_haiku_lower", "<<falling>>\nred leaves drift and spin\nthe path turns gold\nwind hums low"),
    "include_keywords": ("coffee_at_home_keywords", "Grind the beans fresh and pour water just off the boil."),
    "exclude_keywords": ("morning_workout_exclude", "Do twenty squats and ten push-ups, then stretch."),
    "ends_with": ("fire_drill_upper", "THE FIRE DRILL IS AT 10 AM. WALK, DO NOT RUN. THANK YOU"),
    "starts_with": ("fruit_smoothie_starts", "Here is a quick one: blend a banana, berries and milk."),
    "language": ("breakfast_french", "Le matin, je mange du pain avec du beurre et je bois un café avec mes parents."),
    "no_commas": ("bake_bread_german", "Mische Mehl und Wasser mit Hefe. Lass den Teig eine Stunde ruhen und backe ihn dann."),
    "num_paragraphs": ("library_book_spanish", "Primero hay que ir a la biblioteca con tu tarjeta.\n\n"
                       "Luego puedes elegir un libro y llevarlo al mostrador para el préstamo."),
    "quoted": ("ideal_weekend_quoted", '"A long walk, a good book and pancakes with friends."'),
    "placeholder_count": ("dinner_invite_placeholders", "Hi [name], join me for dinner on [date] at [place]!"),
    "title": ("lost_umbrella_story", "<<The Umbrella>>\n" + " ".join(["The red umbrella waited by the door all day."] * 7)),
}


@pytest.mark.parametrize("kind", sorted(REQUIRED_KINDS))
def test_compliant_response_passes_builtin_prompt(kind: str) -> None:
    prompt_id, response = COMPLIANT[kind]
    prompt = next(p for p in INSTRUCTION_PROMPTS if p.id == prompt_id)
    results = check_response(prompt, response)
    assert kind in results, (prompt_id, kind)
    assert all(results.values()), (prompt_id, results)


def test_prompt_set_size_ids_and_coverage() -> None:
    assert len(INSTRUCTION_PROMPTS) >= 40
    ids = [p.id for p in INSTRUCTION_PROMPTS]
    assert len(set(ids)) == len(ids)
    uses = {kind: 0 for kind in REQUIRED_KINDS}
    for prompt in INSTRUCTION_PROMPTS:
        assert 1 <= len(prompt.checks) <= 2, prompt.id
        assert isinstance(prompt.checks, tuple)
        for check in prompt.checks:
            uses[check.kind] = uses.get(check.kind, 0) + 1
    assert all(count >= 2 for count in uses.values()), uses


@pytest.mark.parametrize("prompt", INSTRUCTION_PROMPTS, ids=lambda p: p.id)
def test_builtin_prompt_checks_are_valid_and_stated(prompt: InstructionPrompt) -> None:
    # Valid: known kinds, parameters that bind (check_response raises otherwise).
    results = check_response(prompt, "")
    assert list(results) == [c.kind for c in prompt.checks]
    # Stated: the prompt's wording carries each constraint's parameters and a cue word, so the
    # model is never graded on a constraint it was not told about.
    text = prompt.prompt
    cues = {
        "max_words": r"at most|no more than", "min_words": r"at least", "max_sentences": r"sentences",
        "exact_bullets": r"exactly \d+ bullet points", "json_keys": r"JSON object",
        "all_upper": r"capital letters", "all_lower": r"lowercase", "include_keywords": r"[Ii]nclude|use the word",
        "exclude_keywords": r"[Dd]o not (?:use|mention)", "ends_with": r"[Ee]nd", "starts_with": r"[Ss]tart",
        "language": r"Respond only in|in \w+ only", "no_commas": r"commas", "num_paragraphs": r"paragraphs",
        "quoted": r"double quotation marks", "placeholder_count": r"placeholders in square brackets",
        "title": r"double angular brackets",
    }
    for check in prompt.checks:
        assert re.search(cues[check.kind], text), (prompt.id, check.kind)
        params = check.params
        if "n" in params:
            assert re.search(rf"\b{params['n']}\b", text), (prompt.id, check.kind)
        for word in params.get("words", []) + params.get("keys", []):
            assert f'"{word}"' in text, (prompt.id, word)
        if "phrase" in params:
            assert f'"{params["phrase"]}"' in text, (prompt.id, params["phrase"])
        if "lang" in params:
            assert LANGUAGE_NAMES[params["lang"]] in text, prompt.id


def test_check_response_maps_kinds() -> None:
    prompt = InstructionPrompt("p", "Answer in at most 3 words, without commas.",
                               (Check("max_words", {"n": 3}), Check("no_commas")))
    assert check_response(prompt, "Yes, indeed.") == {"max_words": True, "no_commas": False}
    assert check_response(prompt, "Yes indeed friend sure") == {"max_words": False, "no_commas": True}


def test_score_aggregates_hand_computed_case() -> None:
    prompts = [
        InstructionPrompt("p1", "...", (Check("max_words", {"n": 5}), Check("no_commas"))),
        InstructionPrompt("p2", "...", (Check("all_upper"),)),
        InstructionPrompt("p3", "...", (Check("include_keywords", {"words": ["cat"]}), Check("max_words", {"n": 2}))),
    ]
    responses = [
        "Short answer, here.",  # max_words pass, no_commas fail -> prompt fails
        "HELLO THERE",  # all_upper pass -> prompt passes
        "I love my cat.",  # include pass, max_words(2) fail (4 words) -> prompt fails
    ]
    score = score_instruction_following(prompts, responses)
    assert score["strict_accuracy"] == pytest.approx(1 / 3)
    assert score["check_accuracy"] == pytest.approx(3 / 5)
    assert score["per_kind"] == {
        "all_upper": 1.0, "include_keywords": 1.0, "max_words": 0.5, "no_commas": 0.0,
    }
    assert score["n_prompts"] == 3 and score["n_checks"] == 5
    assert [(p["id"], p["passed"]) for p in score["per_prompt"]] == [("p1", False), ("p2", True), ("p3", False)]
    assert score["per_prompt"][2]["checks"] == {"include_keywords": True, "max_words": False}


def test_score_all_pass_and_builtin_run() -> None:
    prompts = [InstructionPrompt("only", "...", (Check("title"),))]
    assert score_instruction_following(prompts, ["<<T>> x"])["strict_accuracy"] == 1.0
    # The whole built-in set scores without error, and an empty answer passes no prompt.
    score = score_instruction_following(INSTRUCTION_PROMPTS, [""] * len(INSTRUCTION_PROMPTS))
    assert score["n_prompts"] == len(INSTRUCTION_PROMPTS)
    assert score["strict_accuracy"] == 0.0


def test_unknown_kind_raises_with_name() -> None:
    prompt = InstructionPrompt("bad", "...", (Check("bogus_kind", {}),))
    with pytest.raises(ValueError, match="bogus_kind"):
        check_response(prompt, "anything")
    with pytest.raises(ValueError, match="bogus_kind"):
        score_instruction_following([prompt], ["anything"])
    with pytest.raises(ValueError, match="bogus_kind"):
        run_check(Check("bogus_kind"), "anything")


def test_bad_inputs_raise() -> None:
    prompt = INSTRUCTION_PROMPTS[0]
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        score_instruction_following([prompt], ["a", "b"])
    with pytest.raises(ValueError):
        score_instruction_following([], [])
    with pytest.raises(ValueError, match="max_words"):
        run_check(Check("max_words", {"m": 3}), "x")  # misspelt parameter
    with pytest.raises(ValueError, match="'it'"):
        run_check(Check("language", {"lang": "it"}), EN)
    with pytest.raises(ValueError, match="repeats"):
        InstructionPrompt("dup", "...", (Check("title"), Check("title")))
    with pytest.raises(ValueError, match="no checks"):
        InstructionPrompt("none", "...", ())
    with pytest.raises(ValueError, match="already registered"):
        register_check("max_words")(lambda response: True)


def test_detect_language_heuristic() -> None:
    assert [detect_language(t) for t in (EN, FR, ES, DE)] == ["en", "fr", "es", "de"]
    assert detect_language("") is None
    assert detect_language("Pizza!") is None


def test_as_messages_and_dataclasses() -> None:
    prompt = INSTRUCTION_PROMPTS[0]
    assert as_messages(prompt) == [{"role": "user", "content": prompt.prompt}]
    with pytest.raises(AttributeError):
        prompt.id = "changed"  # type: ignore[misc]
    # Hashable despite the dict field, and equal checks hash equally.
    assert len({Check("max_words", {"n": 3}), Check("max_words", {"n": 3}), Check("max_words", {"n": 4})}) == 2
    assert len(set(INSTRUCTION_PROMPTS)) == len(INSTRUCTION_PROMPTS)


# The set as it was when the prompts were Python literals in sftkit/instructions.py (before
# they moved to sftkit/evalsets/instructions.jsonl): the ids in order, and a SHA-256 of the
# prompts' canonical JSON (id, prompt, checks' kinds and parameters), so the move changed nothing.
PROMPT_IDS_BEFORE_THE_MOVE = [
    "cooking_pasta_short",
    "travel_beach_bullets",
    "study_history_advice",
    "pets_new_cat",
    "weather_city_json",
    "garden_tomatoes_upper",
    "sleep_routine_lower",
    "coffee_at_home_keywords",
    "morning_workout_exclude",
    "first_trip_abroad_ends",
    "sky_blue_starts",
    "breakfast_french",
    "hot_day_spanish",
    "tea_german",
    "sunday_afternoon_no_commas",
    "walking_to_school_paragraphs",
    "learning_motivation_quoted",
    "dinner_invite_placeholders",
    "rain_poem_title",
    "recycling_bottles_short",
    "puppy_lead_training",
    "student_food_budget",
    "easy_houseplants_bullets",
    "pancake_recipe_json",
    "fire_drill_upper",
    "autumn_haiku_lower",
    "flat_tyre_keywords",
    "picnic_food_exclude",
    "homework_extension_email",
    "fruit_smoothie_starts",
    "rainy_day_museum_french",
    "library_book_spanish",
    "bake_bread_german",
    "new_apartment_no_commas",
    "volunteering_paragraphs",
    "ideal_weekend_quoted",
    "birthday_text_placeholders",
    "lost_umbrella_story",
    "drinking_water_min_words",
    "laundry_bullets",
    "family_movie_json",
    "time_management_ends",
    "camping_safety_keywords",
    "reply_in_english",
]
PROMPTS_SHA256_BEFORE_THE_MOVE = "0483237b59a21b87bd34f726aca830be28db839b9da4006f5058532edeeebb2e"


def _canonical_sha256(prompts) -> str:
    rows = [{"id": p.id, "prompt": p.prompt, "checks": [{"kind": c.kind, "params": c.params} for c in p.checks]}
            for p in prompts]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_shipped_prompts_are_the_set_from_before_the_move():
    assert len(INSTRUCTION_PROMPTS) == 44
    assert [p.id for p in INSTRUCTION_PROMPTS] == PROMPT_IDS_BEFORE_THE_MOVE
    assert _canonical_sha256(INSTRUCTION_PROMPTS) == PROMPTS_SHA256_BEFORE_THE_MOVE


def test_the_prompt_file_is_package_data():
    text = resources.files("sftkit.evalsets").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    assert load_instruction_prompts(text) == INSTRUCTION_PROMPTS


def test_load_instruction_prompts_names_the_bad_line():
    good = json.dumps({"id": "a", "prompt": "Say hi in at most 3 words.", "checks": [{"kind": "max_words", "params": {"n": 3}}]})
    assert [p.id for p in load_instruction_prompts(good + "\n\n")] == ["a"]
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        load_instruction_prompts(good + "\n{not json")
    with pytest.raises(ValueError, match="line 2 is not an instruction prompt"):
        load_instruction_prompts(good + "\n" + json.dumps({"id": "b", "prompt": "no checks"}))
    with pytest.raises(ValueError, match="more than once"):
        load_instruction_prompts(good + "\n" + good)
