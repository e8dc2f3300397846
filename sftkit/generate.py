"""Batched generation that stops at the end-of-turn token, and a `chat()` helper.

Evaluations in this field are often slow because prompts are generated one at a time, and
misleading because a model that never stops is scored on whatever it rambled. Here prompts
are left-padded into batches (a decoder-only model continues from the *last* position, so
padding must sit on the left), decoding stops at the end-of-turn token, and every result says
whether the model stopped by itself or ran into `max_new_tokens`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .chat import TokenizerNotReadyError, end_of_turn_id, turn_format_of
from .metrics import invents_turn


@dataclass
class Generation:
    """One reply: its text, how many tokens it took, and whether it ended with end-of-turn."""

    text: str
    new_tokens: int
    stopped: bool
    # The reply with special tokens kept: shows invented turns ("<|im_start|>user ...").
    raw_text: str = ""
    # Did the model write another turn itself (a base-model habit; `sftkit.metrics.invents_turn`)?
    invented_turn: bool = False


def _prompt_ids(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(ids["input_ids"])


@contextlib.contextmanager
def contiguous_head_input(model: Any) -> Iterator[None]:
    """Hand the LM head a contiguous input while generating.

    The first step of `generate` gives the head ``hidden_states[:, -1:, :]``, a strided view.
    On a CPU in bf16 with a frozen head (any LoRA model), torch's ``linear`` does not fold that
    3-D view into one matrix product but takes its batched path, which copies the whole
    (width x vocabulary) weight once per row: for Gemma's 262k-row head at batch 32, 10 GB and
    several seconds per `generate` call instead of milliseconds (torch 2.13; in fp32, or with
    a trainable head, it folds). A contiguous copy of the (batch x 1 x width) input costs
    nothing and gives the same logits.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int = 128,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = 0,
    stop_id: int | None = None,
    streamer: Any = None,
) -> list[Generation]:
    """Continue each token-id prompt; the batched, left-padded core of `generate_batch`.

    Prompts are sorted by length before batching (less padding) and results returned in the
    input order. With greedy decoding the output equals one-at-a-time generation.
    `stop_id` defaults to the end-of-turn token. `streamer` (a transformers streamer, as
    `sftkit chat` uses) receives the new tokens while they are generated; it takes one prompt.
    """
    if streamer is not None and len(prompts) != 1:
        raise ValueError(f"a streamer follows one reply at a time; got {len(prompts)} prompts")
    eos_id = end_of_turn_id(tokenizer) if stop_id is None else stop_id
    start_token = turn_format_of(tokenizer).start
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id == eos_id:
        raise TokenizerNotReadyError("prepare the tokenizer first (sftkit.chat.prepare_tokenizer): "
                                     "generation needs a pad token that differs from the end-of-turn token")
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    if do_sample and seed is not None:  # None: sample from the generator's current state
        torch.manual_seed(seed)
    try:
        with contiguous_head_input(model):  # see there: bf16 on a CPU
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(prompts[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    ids = prompts[index]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention_mask[row, width - len(ids) :] = 1
                # do_sample itself is passed below: naming it here too made every sampled call a TypeError.
                sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                    do_sample=do_sample,
                    streamer=streamer,
                    **sampling,
                )
                for row, index in enumerate(batch):
                    new = output[row, width:].tolist()
                    stopped = eos_id in new
                    if stopped:
                        new = new[: new.index(eos_id)]
                    else:  # ran out of budget: drop trailing padding of finished rows, if any
                        while new and new[-1] == pad_id:
                            new.pop()
                    text = tokenizer.decode(new, skip_special_tokens=True)
                    raw = tokenizer.decode(new, skip_special_tokens=False)
                    results[index] = Generation(text=text.strip(), new_tokens=len(new), stopped=stopped, raw_text=raw,
                                                invented_turn=invents_turn(raw, start_token))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def generate_batch(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 128,
    batch_size: int = 16,
    **kwargs: Any,
) -> list[Generation]:
    """Replies to each conversation (which must end with a user turn), through the chat template."""
    prompts = [_prompt_ids(messages, tokenizer) for messages in conversations]
    return generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, **kwargs)


def generate_raw(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    **kwargs: Any,
) -> list[Generation]:
    """Continue plain text with no chat template, as pre-training taught (base-model behaviour, Alpaca prompts).

    Generation still stops at the end-of-turn token if the model emits it; a base model
    usually does not, which is the point of showing it.
    """
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, **kwargs)


def chat(
    model: Any,
    tokenizer: Any,
    message: str | list[dict[str, str]],
    system: str | None = None,
    max_new_tokens: int = 128,
    **kwargs: Any,
) -> str:
    """One reply to a user message (or a whole conversation), for interactive cells."""
    if isinstance(message, str):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    else:
        messages = message
    return generate_batch(model, tokenizer, [messages], max_new_tokens=max_new_tokens, batch_size=1, **kwargs)[0].text
