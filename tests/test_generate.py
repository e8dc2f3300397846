"""Tests for sftkit.generate: batched greedy decoding equals one-at-a-time, order, stopping."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sftkit.chat import IM_END, TokenizerNotReadyError
from sftkit.generate import Generation, chat, generate_batch

PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling slowly past the window.",
    "2+2?",
    "Tell me a long story about a dragon who lived in a castle high in the mountains and ate only cheese.",
    "Name three colors.",
]
CONVERSATIONS = [[{"role": "user", "content": p}] for p in PROMPTS]


@pytest.fixture(scope="module")
def scrambled_model(make_tiny_model):
    """The tiny model with N(0, 1) weights: its greedy output depends on the prompt.

    (With its small initial weights the tiny model says the same thing to every prompt,
    which would make batched-vs-single comparisons vacuous.)
    """
    model = make_tiny_model().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


def test_batched_greedy_equals_one_at_a_time(scrambled_model, tokenizer):
    batched = generate_batch(scrambled_model, tokenizer, CONVERSATIONS, max_new_tokens=10, batch_size=6)
    single = [generate_batch(scrambled_model, tokenizer, [c], max_new_tokens=10, batch_size=1)[0]
              for c in CONVERSATIONS]
    assert len({g.text for g in single}) >= 4, f"outputs should depend on the prompt: {single}"
    for prompt, b, s in zip(PROMPTS, batched, single):
        assert b == s, f"batched and single generation differ for {prompt!r}:\n{b}\n{s}"


def test_results_come_back_in_input_order(scrambled_model, tokenizer):
    # Prompts are sorted by length inside; the results must follow the caller's order.
    forward = generate_batch(scrambled_model, tokenizer, CONVERSATIONS, max_new_tokens=6, batch_size=4)
    backward = generate_batch(scrambled_model, tokenizer, CONVERSATIONS[::-1], max_new_tokens=6, batch_size=4)
    assert [g.text for g in backward] == [g.text for g in forward][::-1]
    assert len({g.text for g in forward}) > 1


def test_generation_does_not_change_training_mode(scrambled_model, tokenizer):
    scrambled_model.train()
    try:
        generate_batch(scrambled_model, tokenizer, CONVERSATIONS[:1], max_new_tokens=2)
        assert scrambled_model.training, "generate_batch must restore training mode"
    finally:
        scrambled_model.eval()


def test_not_stopped_when_max_new_tokens_is_hit(tiny_model, tokenizer):
    results = generate_batch(tiny_model, tokenizer, CONVERSATIONS[:3], max_new_tokens=5)
    for result in results:
        assert isinstance(result, Generation)
        assert result.stopped is False, result
        assert result.new_tokens == 5, result
        assert result.text, result


class ScriptedModel(nn.Module):
    """A stand-in whose `generate` appends fixed continuations (to test the post-processing)."""

    def __init__(self, continuations):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.continuations = continuations
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **kwargs):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, "pad": pad_token_id})
        rows = [self.continuations[tuple(row[mask.bool()].tolist())] for row, mask in zip(input_ids, attention_mask)]
        width = max(len(r) for r in rows)
        new = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            new[i, : len(r)] = torch.tensor(r)
        return torch.cat([input_ids, new], dim=1)


def test_stop_detection_and_trimming(tokenizer):
    from sftkit.generate import _prompt_ids

    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.pad_token_id
    hello = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    more = tokenizer(" and more", add_special_tokens=False)["input_ids"]
    short, long = CONVERSATIONS[0], CONVERSATIONS[4]
    model = ScriptedModel(
        {
            tuple(_prompt_ids(short, tokenizer)): hello + [eos] + more,  # stops, then keeps going
            tuple(_prompt_ids(long, tokenizer)): hello + more,  # runs out of budget
        }
    )
    stopped, running = generate_batch(model, tokenizer, [short, long], max_new_tokens=8)
    assert stopped == Generation(text="Hello", new_tokens=len(hello), stopped=True, raw_text="Hello"), stopped
    assert running == Generation(text="Hello and more", new_tokens=len(hello + more), stopped=False,
                                 raw_text="Hello and more"), running
    assert not stopped.invented_turn
    # Prompts are left-padded with the pad token (the model continues from the last position).
    [call] = model.calls
    mask = call["attention_mask"]
    assert mask[:, -1].tolist() == [1, 1], "the last prompt position must be real for every row"
    assert mask[0, 0] == 0 and call["input_ids"][0, 0] == pad, "the shorter prompt is padded on the left"


def test_seeded_sampling_repeats_and_differs_from_greedy(scrambled_model, tokenizer):
    def sample(seed):
        return [g.text for g in generate_batch(scrambled_model, tokenizer, CONVERSATIONS[:3] * 2, max_new_tokens=6,
                                               do_sample=True, temperature=1.0, top_p=1.0, seed=seed)]

    first = sample(3)
    assert sample(3) == first, "the same seed gives the same samples"
    assert first[:3] != first[3:], "each row samples on its own: a repeated prompt gets another reply"
    greedy = [g.text for g in generate_batch(scrambled_model, tokenizer, CONVERSATIONS[:3], max_new_tokens=6)]
    assert first[:3] != greedy


def test_chat_returns_a_string(tiny_model, tokenizer):
    reply = chat(tiny_model, tokenizer, "Hello!", system="Be brief.", max_new_tokens=4)
    assert isinstance(reply, str) and reply, repr(reply)
    same = generate_batch(
        tiny_model,
        tokenizer,
        [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]],
        max_new_tokens=4,
    )[0].text
    assert reply == same


def test_pad_equal_to_eos_raises(tiny_model, tokenizer):
    broken = copy.deepcopy(tokenizer)
    broken.pad_token = broken.eos_token
    with pytest.raises(TokenizerNotReadyError, match="pad token that differs"):
        generate_batch(tiny_model, broken, CONVERSATIONS[:1], max_new_tokens=2)


@pytest.mark.slow
def test_real_model_batched_equals_one_at_a_time(real_model, tokenizer):
    batched = generate_batch(real_model, tokenizer, CONVERSATIONS, max_new_tokens=16, batch_size=6)
    single = generate_batch(real_model, tokenizer, CONVERSATIONS, max_new_tokens=16, batch_size=1)
    for prompt, b, s in zip(PROMPTS, batched, single):
        assert b == s, f"batched and single generation differ for {prompt!r}:\n{b}\n{s}"
    assert "paris" in batched[1].text.lower(), batched[1]
    assert any(g.stopped for g in batched) and not all(g.stopped for g in batched), batched


def test_raw_text_keeps_invented_turns_and_generate_raw_skips_the_template(tokenizer):
    from sftkit.chat import IM_START
    from sftkit.generate import generate_raw

    turn = tokenizer(f"Sure.{IM_START}user\nAnd", add_special_tokens=False)["input_ids"]
    prompt = tokenizer("Question: hi", add_special_tokens=False)["input_ids"]
    model = ScriptedModel({tuple(prompt): turn})
    [result] = generate_raw(model, tokenizer, ["Question: hi"], max_new_tokens=len(turn))
    assert result.invented_turn and IM_START in result.raw_text, result
    assert IM_START not in result.text and not result.stopped
    [call] = model.calls
    assert call["input_ids"][0].tolist() == prompt, "generate_raw must not apply the chat template"


def test_the_head_gets_a_contiguous_input_and_the_same_replies(scrambled_model, tokenizer):
    # A frozen bf16 head is where torch's linear takes its slow batched path on a strided input
    # (`contiguous_head_input`); the hook must reach the head at every step, and change no reply.
    model = copy.deepcopy(scrambled_model).to(torch.bfloat16).requires_grad_(False)
    seen = []
    spy = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(args[0].is_contiguous()))
    try:
        replies = generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=4, batch_size=6)
    finally:
        spy.remove()
    assert seen and all(seen), f"the head saw a strided input in {seen.count(False)} of {len(seen)} calls"
    handles = model.get_output_embeddings()._forward_pre_hooks
    assert not handles, "the hook must be removed after generation"
    with torch.no_grad():  # the same greedy replies through the plain, strided path
        plain = []
        for conversation in CONVERSATIONS:
            ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.convert_tokens_to_ids(IM_END))
            plain.append(out[0, ids["input_ids"].shape[1]:].tolist())
    for reply, tokens in zip(replies, plain):
        if IM_END in tokenizer.convert_ids_to_tokens(tokens):
            tokens = tokens[: tokenizer.convert_ids_to_tokens(tokens).index(IM_END)]
        assert reply.new_tokens == len(tokens)
        assert reply.text == tokenizer.decode(tokens, skip_special_tokens=True).strip()
