"""Talking to a tuned model: a multi-turn chat that streams its reply as it is generated.

`sftkit chat --model DIR` opens an adapter folder (base + adapter, merged for speed) or a merged
folder from `sftkit export`, and holds a conversation through the chat template saved with it,
the template training used, so the model sees turns exactly as it learned them. Each reply is
generated from the *whole* conversation so far (the model has no memory of its own: the prompt
carries every earlier turn), is printed word by word while it is generated (a `TextStreamer`
whose text goes to a callback, called from inside `generate`), and ends at the end-of-turn
token, the EOS that training taught. ``/reset`` starts a new conversation (keeping the system
prompt), ``/exit`` or end of input (Ctrl-D) quits.

(Not to be confused with `sftkit.chat`, which builds the chat *templates*.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from .chat import end_of_turn_id


def _streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A `transformers.TextStreamer` that hands each finished piece of text to `on_text`.

    TextStreamer decodes the new tokens as `generate` produces them and releases text at word
    boundaries, so a word or a multi-byte character split over tokens never shows half-way. Its
    hook runs inside `generate`, between decoding steps: no thread is needed.
    """
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:  # noqa: D401 - library hook
            if text:
                on_text(text)

    # skip_prompt: the prompt is already on the screen; skip_special_tokens: the end-of-turn
    # token ends generation and is not shown.
    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


@dataclass
class Turn:
    """One exchange as generated: the prompt the model saw (rendered text), its reply, and how it ended."""

    prompt: str
    reply: str
    new_tokens: int
    stopped: bool  # ended with the end-of-turn token (else it ran into max_new_tokens)


@dataclass
class ChatSession:
    """A conversation with a model through its saved chat template.

    `messages` holds the conversation (system prompt first, if any); `turns` records what each
    reply was generated from. Greedy decoding by default; `temperature` > 0 samples.
    """

    model: Any
    tokenizer: Any
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the conversation; keep the system prompt."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    @torch.no_grad()
    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """Add a user message, generate the reply (streamed to `on_text` piece by piece), and add it."""
        messages = self.messages + [{"role": "user", "content": text}]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template writes BOS itself where the family needs it: no special tokens added again.
        encoded = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(self.model.device)
        eos_id = end_of_turn_id(self.tokenizer)
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} if self.temperature > 0 else {
            "do_sample": False}
        streamer = _streamer(self.tokenizer, on_text) if on_text is not None else None
        output = self.model.generate(**encoded, max_new_tokens=self.max_new_tokens, eos_token_id=eos_id,
                                     pad_token_id=self.tokenizer.pad_token_id, streamer=streamer, **sampling)
        new = output[0, encoded["input_ids"].shape[1]:].tolist()
        stopped = eos_id in new
        if stopped:
            new = new[: new.index(eos_id)]
        answer = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages = messages + [{"role": "assistant", "content": answer}]
        turn = Turn(prompt=prompt, reply=answer, new_tokens=len(new), stopped=stopped)
        self.turns.append(turn)
        return turn


def run_chat(session: ChatSession, stdin: TextIO | None = None, stdout: TextIO | None = None,
             banner: str | None = None) -> ChatSession:
    """The terminal loop: read a line, stream the reply; ``/reset``, ``/exit`` and end of input handled."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    # A person at a terminal gets input() with line editing and history (readline); piped or
    # scripted input is read line by line and echoed, so the transcript reads like a typed one.
    interactive = stdin is sys.stdin and stdin.isatty() and stdout is sys.stdout
    if interactive:
        try:
            import readline  # noqa: F401  (imported for its effect on input())
        except ImportError:
            pass

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()  # each streamed piece appears at once

    if banner:
        write(banner + "\n")
    write("[sftkit] /reset starts a new conversation, /exit (or Ctrl-D) quits\n")
    while True:
        if interactive:
            try:
                text = input("you> ").strip()
            except EOFError:  # Ctrl-D
                write("\n")
                break
        else:
            write("you> ")
            line = stdin.readline()
            if not line:  # end of input
                break
            text = line.strip()
            write(text + "\n")
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            session.reset()
            write("[sftkit] conversation reset\n")
            continue
        write("model> ")
        turn = session.reply(text, on_text=write)
        write("\n" if turn.stopped else f" [stopped at --max-new-tokens {session.max_new_tokens}]\n")
    return session


def open_session(model_dir: str | Path, system: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, dtype: str = "auto") -> ChatSession:
    """A `ChatSession` on an adapter folder or a merged folder (`sftkit.export.load_saved_model`)."""
    from .export import load_saved_model

    model, tokenizer = load_saved_model(model_dir, dtype=dtype)
    return ChatSession(model, tokenizer, system=system, max_new_tokens=max_new_tokens, temperature=temperature)
