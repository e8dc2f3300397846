"""Tests for sftkit.chapters.verifiable_preferences: training instruction prompts, sampled replies judged by
lm-eval's IFEval checkers, the chosen/rejected rule, the skip report, TRL's format, and the real sampling path."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from sftkit.chapters.preference import train_dpo
from sftkit.chapters.verifiable_preferences import (
    ALL_PASSED,
    LOOPED,
    NONE_PASSED,
    NOT_STOPPED,
    SAME_TEXT,
    build_verified_pairs,
    instruction_prompts,
    model_generator,
    sample_replies,
    verified_preference_pairs,
    verify_replies,
)
from sftkit.config import get_preset
from sftkit.generate import Generation
from sftkit.ifeval import offline_rows
from sftkit.offline_conversations import RESOURCE, load_offline_conversations

LOWER, NO_COMMA, FORBIDDEN = "change_case:english_lowercase", "punctuation:no_comma", "keywords:forbidden_words"

# Training prompts by line of conversations.jsonl, and their instructions (checked in the first test).
PROMPTS = {
    407: [LOWER],  # How do I look after a goldfish properly? ... no capitals at all.
    13: [NO_COMMA],  # How can I help my six-year-old with reading at home? Don't use any commas.
    573: [NO_COMMA, FORBIDDEN],  # How do I teach my dog to sit? ... without a single comma ... "simply" or "basically"
    873: [LOWER],  # Should I get a cat or a dog? Don't use any capital letters ...
    617: [LOWER],  # Describe a busy outdoor market on a Saturday morning. Don't use any capital letters ...
    994: [LOWER],  # How can I fit more walking into my day? Use only lowercase letters in your reply.
}

# Replies whose verdicts under lm-eval's checkers are known: the lowercase check also asks langdetect
# for English, so every reply is a full English sentence or more.
LOWER_LONG = ("keep the water clean and change a third of it every week. feed the fish a small pinch of flakes "
              "once a day and never more than it can eat in two minutes.")
LOWER_SHORT = "give your goldfish a big filtered tank and change some of the water every week."
CAPITALS = "Give your goldfish a big filtered tank. Change some of the water every week and feed it once a day."
NO_COMMAS = "Read together every evening and let your child choose the books. Talk about the pictures as you go."
COMMAS = "Read together every evening, let your child choose the books, and talk about the pictures as you go."
DOG_OK = "Hold a treat above the nose of your dog and move it back slowly. The dog sits as its head follows."
DOG_ONE = "Hold a treat above the nose of your dog and move it back slowly. Basically the dog sits as it follows."
DOG_BOTH = "Simply hold a treat above the nose of your dog, then basically reward it each time, and keep it short."
LOOPING = "a cat is a good pet and a dog is a good pet. " * 8  # lowercase English, but a loop

# Three replies per prompt, in the order drawn: Generation(text, new_tokens, stopped).
REPLIES = {
    407: [Generation(LOWER_LONG, 40, True), Generation(LOWER_SHORT, 18, True), Generation(CAPITALS, 24, True)],
    13: [Generation(COMMAS, 22, True), Generation(NO_COMMAS, 22, True), Generation(NO_COMMAS + " Ask", 30, False)],
    573: [Generation(DOG_ONE, 25, True), Generation(DOG_BOTH, 25, True), Generation(DOG_OK, 25, True)],
    873: [Generation(LOOPING, 90, True), Generation(CAPITALS, 24, True), Generation(LOWER_SHORT, 256, False)],
    617: [Generation(LOWER_LONG, 40, True), Generation(LOWER_SHORT, 18, True), Generation(LOWER_LONG, 40, True)],
    994: [Generation(LOWER_SHORT, 18, True), Generation(LOWER_SHORT, 18, False), Generation(LOWER_SHORT, 18, False)],
}


@pytest.fixture(scope="module")
def rows():
    return instruction_prompts()


@pytest.fixture(scope="module")
def chosen_rows(rows):
    by_id = {row.id: row for row in rows}
    return [by_id[f"conversations.jsonl:{line}"] for line in REPLIES]


def fake_generator(replies_by_prompt):
    """A `ReplyGenerator` returning written replies: the n-th request for a prompt gets its n-th reply."""
    served = {}

    def generate(conversations):
        out = []
        for messages in conversations:
            prompt = messages[-1]["content"]
            out.append(replies_by_prompt[prompt][served.get(prompt, 0)])
            served[prompt] = served.get(prompt, 0) + 1
        return out

    return generate


@pytest.fixture(scope="module")
def built(chosen_rows):
    generate = fake_generator({row.prompt: REPLIES[row.key] for row in chosen_rows})
    return verified_preference_pairs(chosen_rows, generate, k=3)


def test_prompts_are_the_training_instruction_rows(rows):
    lines = [json.loads(line) for line in RESOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    expected = {number: row for number, row in enumerate(lines, start=1)
                if row["split"] == "train" and row["kind"] == "ifeval"}
    assert [row.key for row in rows] == sorted(expected)
    for row in rows:
        record = expected[row.key]
        assert row.id == f"conversations.jsonl:{row.key}"
        assert row.prompt == record["messages"][0]["content"]
        assert list(row.instruction_id_list) == record["instruction_id_list"]
        assert row.extra["topic"] == record["topic"]
    by_key = {row.key: row for row in rows}
    assert {line: list(by_key[line].instruction_id_list) for line in PROMPTS} == PROMPTS
    assert by_key[573].kwargs[1] == {"forbidden_words": ["simply", "basically"]}
    # Disjoint from every evaluation prompt: IFEval's offline prompts and the held-out conversations' user turns.
    conversations = [c for split in ("dev", "test") for c in load_offline_conversations(split)["messages"]]
    held_out = {row.prompt for row in offline_rows()} | {
        message["content"] for conversation in conversations for message in conversation if message["role"] == "user"}
    assert not {row.prompt for row in rows} & held_out


def test_a_seeded_subset_is_reproducible_and_in_file_order(rows):
    first, again = instruction_prompts(12, seed=3), instruction_prompts(12, seed=3)
    assert [r.id for r in first] == [r.id for r in again]
    assert len(first) == 12 and len({r.id for r in first}) == 12
    assert [r.key for r in first] == sorted(r.key for r in first)
    assert {r.id for r in first} <= {r.id for r in rows}
    assert [r.id for r in instruction_prompts(12, seed=4)] != [r.id for r in first]
    for bad in (0, len(rows) + 1, True):
        with pytest.raises(ValueError, match=f"from 1 to {len(rows)}"):
            instruction_prompts(bad)


def test_only_train_rows_of_the_instruction_kind_are_read_and_bad_rows_are_named(tmp_path):
    def row(split, kind, roles=("user", "assistant"), ids=(NO_COMMA,), kwargs=({},)):
        return {"messages": [{"role": r, "content": f"{r} text"} for r in roles], "split": split, "kind": kind,
                "instruction_id_list": list(ids), "kwargs": list(kwargs), "topic": "t"}

    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (row("dev", "ifeval"), row("train", "howto"),
                                                        row("train", "ifeval"))) + "\n")
    assert [(r.id, r.prompt) for r in instruction_prompts(path=path)] == [("rows.jsonl:3", "user text")]
    bad_rows = (
        (row("train", "ifeval", roles=("user", "assistant", "user")),
         r"rows.jsonl:2: an instruction row must be one user turn and its reply, "
         r"got roles \['user', 'assistant', 'user'\]"),
        (row("train", "ifeval", kwargs=({}, {})), "rows.jsonl:2: .*1 instruction ids but 2 kwargs"),
        (row("train", "ifeval", ids=(LOWER, LOWER), kwargs=({}, {})), "rows.jsonl:2: .*more than once"),
    )
    for bad, message in bad_rows:
        path.write_text(json.dumps(row("train", "ifeval")) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=message):
            instruction_prompts(path=path)


def test_replies_are_verified_by_the_official_checker_and_stop_and_loop_flags(chosen_rows):
    scored = verify_replies(chosen_rows, [REPLIES[row.key] for row in chosen_rows])
    failures = {row.key: [reply.failures for reply in group] for row, group in zip(chosen_rows, scored)}
    assert failures == {
        407: [[], [], [LOWER]],
        13: [[NO_COMMA], [], [NOT_STOPPED]],
        573: [[FORBIDDEN], [NO_COMMA, FORBIDDEN], []],
        873: [[LOOPED], [LOWER], [NOT_STOPPED]],
        617: [[], [], []],
        994: [[], [NOT_STOPPED], [NOT_STOPPED]],
    }
    looping = scored[3][0]
    assert looping.checks == {LOWER: True}, "the checker alone accepts the loop: it is lowercase English"
    assert looping.repeated_4gram_rate > 0.5 and not looping.passed


def test_pairs_take_the_shortest_passing_and_the_most_failing_reply(built, chosen_rows):
    pairs, report = built
    assert report.pair_ids == ["conversations.jsonl:407", "conversations.jsonl:13", "conversations.jsonl:573"]
    by_id = {row.id: row for row in chosen_rows}
    expected = [(LOWER_SHORT, CAPITALS),  # two pass: the shorter is chosen
                (NO_COMMAS, COMMAS),  # two fail once each (a comma; not stopping): the first drawn is rejected
                (DOG_OK, DOG_BOTH)]  # fails both instructions rather than one
    for pair, prompt_id, (chosen, rejected) in zip(pairs, report.pair_ids, expected):
        assert pair == {"prompt": [{"role": "user", "content": by_id[prompt_id].prompt}],
                        "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}]}


def test_prompts_without_a_preference_are_counted_by_reason(built):
    _, report = built
    assert report.prompts == 6 and report.replies == 18 and report.pairs == 3
    assert report.skipped == {ALL_PASSED: 1, NONE_PASSED: 1, SAME_TEXT: 1}
    assert report.skipped_ids == {ALL_PASSED: ["conversations.jsonl:617"], NONE_PASSED: ["conversations.jsonl:873"],
                                  SAME_TEXT: ["conversations.jsonl:994"]}
    assert report.pairs + sum(report.skipped.values()) == report.prompts
    assert report.passing_replies == 2 + 1 + 1 + 0 + 3 + 1
    assert report.not_stopped == 4 and report.looped == 1
    # Strict checker verdicts only (stop and loop apart): lowercase on 407, 873, 617, 994 (12 replies, 2 fail).
    assert report.per_instruction == {
        LOWER: {"replies": 12, "passed": 10, "pass_rate": pytest.approx(10 / 12)},
        NO_COMMA: {"replies": 6, "passed": 4, "pass_rate": pytest.approx(4 / 6)},
        FORBIDDEN: {"replies": 3, "passed": 1, "pass_rate": pytest.approx(1 / 3)},
    }
    assert report.fallback_kinds == [] and "lm-eval" in report.protocol
    text = report.markdown()
    assert "| pairs | 3 |" in text and "| skipped: none_passed | 1 |" in text
    assert "| passing replies (every instruction, stopped, no loop) | 8 (44.4%) |" in text
    assert f"| {LOWER} | 12 | 10 | 0.83 |" in text


def test_the_generator_contract_is_enforced(chosen_rows):
    two = chosen_rows[:2]
    with pytest.raises(ValueError, match="returned 3 replies for 4 conversations"):
        sample_replies(two, lambda conversations: [Generation("x", 1, True)] * 3, k=2)
    with pytest.raises(TypeError, match="reply 1 to prompt conversations.jsonl:13 is a str"):
        sample_replies(two, lambda conversations: [Generation("x", 1, True)] * 3 + ["x"], k=2)
    with pytest.raises(ValueError, match="k .* must be a positive integer"):
        sample_replies(two, lambda conversations: [], k=0)
    with pytest.raises(ValueError, match="2 prompts, 1 lists"):
        build_verified_pairs(two, [[]])
    seen = []
    sample_replies(two, lambda conversations: seen.extend(conversations) or [Generation("x", 1, True)] * 4, k=2)
    assert [c[-1]["content"] for c in seen] == [two[0].prompt] * 2 + [two[1].prompt] * 2


def test_the_pairs_are_what_trl_and_train_dpo_consume(built, tokenizer, make_tiny_model, tmp_path):
    from trl.data_utils import apply_chat_template, is_conversational

    pairs, _ = built
    pair = pairs[0]
    assert is_conversational(pair)
    rendered = apply_chat_template(pair, tokenizer)
    assert rendered["prompt"] == tokenizer.apply_chat_template(pair["prompt"], tokenize=False,
                                                               add_generation_prompt=True)
    assert rendered["chosen"] == LOWER_SHORT + "<|im_end|>\n" and rendered["rejected"] == CAPITALS + "<|im_end|>\n"
    cfg = get_preset("smoke")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, per_device_train_batch_size=3))
    result = train_dpo(cfg, make_tiny_model(), tokenizer, pairs, tmp_path, max_steps=1, disable_tqdm=True)
    assert result.metrics["pairs"] == 3 and result.metrics["steps"] == 1
    # At the first step the policy is the reference (LoRA's B is zero): DPO's loss is log 2 exactly.
    assert result.metrics["first_loss"] == pytest.approx(math.log(2), abs=1e-3)


def test_sampling_from_a_tiny_model_end_to_end(tiny_model, tokenizer):
    rows = instruction_prompts(3, seed=1)
    generate = model_generator(tiny_model, tokenizer, max_new_tokens=4, batch_size=4, seed=7)
    replies = sample_replies(rows, generate, k=2)
    assert [len(group) for group in replies] == [2, 2, 2]
    assert all(g.new_tokens <= 4 for group in replies for g in group)
    assert any(a.text != b.text for a, b in replies), "k samples of one prompt differ: sampling, not greedy"
    again = sample_replies(rows, model_generator(tiny_model, tokenizer, max_new_tokens=4, batch_size=4, seed=7), k=2)
    assert [[g.text for g in group] for group in again] == [[g.text for g in group] for group in replies]
    pairs, report = build_verified_pairs(rows, verify_replies(rows, replies))
    assert report.prompts == 3 and report.replies == 6
    assert report.pairs == len(pairs) and report.pairs + sum(report.skipped.values()) == 3
    assert report.not_stopped == sum(not g.stopped for group in replies for g in group)
