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

from .generate import generate_batch


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

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> Turn:
        """Add a user message, generate the reply (streamed to `on_text` piece by piece), and add it."""
        messages = self.messages + [{"role": "user", "content": text}]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        streamer = _streamer(self.tokenizer, on_text) if on_text is not None else None
        # The batched generator with one prompt: it cuts the reply at the end-of-turn token.
        [generation] = generate_batch(self.model, self.tokenizer, [messages], self.max_new_tokens, batch_size=1,
                                      do_sample=self.temperature > 0, temperature=self.temperature,
                                      top_p=self.top_p, seed=None, streamer=streamer)
        answer = generation.text
        self.messages = messages + [{"role": "assistant", "content": answer}]
        turn = Turn(prompt=prompt, reply=answer, new_tokens=generation.new_tokens, stopped=generation.stopped)
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
