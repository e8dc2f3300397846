"""`sftkit chat`: a multi-turn terminal chat through the saved template, streamed, stopping at end-of-turn.

Driven through standard input as a user would: every reply is generated from the whole
conversation so far (the second prompt holds the first exchange), ``/reset`` forgets it,
``/exit`` and end of input quit, and the reply reaches the screen in pieces *while* `generate`
runs (the streaming contract: the callback is called between decoding steps, not after). The
smoke tests use a tiny adapter (tests/tiny_adapter.py); the slow one talks to the committed
demo adapter (Gemma 3 270M base).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_adapter import build_tiny_adapter

from sftkit.cli import main
from sftkit.talk import ChatSession, open_session, run_chat

ROOT = Path(__file__).resolve().parents[1]
DEMO_ADAPTER = ROOT / "results" / "cpu-demo-base" / "adapter"


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, make_tiny_model, tokenizer):
    return build_tiny_adapter(tmp_path_factory.mktemp("run"), make_tiny_model, tokenizer, seed=5)


def _talk(session: ChatSession, lines: str) -> str:
    out = io.StringIO()
    run_chat(session, stdin=io.StringIO(lines), stdout=out)
    return out.getvalue()


def test_chat_keeps_the_conversation_resets_and_exits(tiny_adapter):
    session = open_session(tiny_adapter, system="Answer briefly.", max_new_tokens=12, dtype="float32")
    shown = _talk(session, "hello there\nwhat did I say?\n/reset\nagain\n/exit\nnever read\n")
    first, second, third = session.turns  # /exit stopped before "never read"
    assert first.reply, "the tiny adapter's greedy reply is not empty"
    # The second prompt is the whole conversation: system, first exchange, then the new message.
    assert "Answer briefly." in second.prompt and "hello there" in second.prompt and first.reply in second.prompt
    assert (second.prompt.index("hello there") < second.prompt.index(first.reply)
            < second.prompt.index("what did I say?"))
    assert "hello there" not in third.prompt and "Answer briefly." in third.prompt, (
        "/reset keeps only the system prompt")
    assert session.messages[-1] == {"role": "assistant", "content": third.reply}
    assert shown.count("model> ") == 3 and "conversation reset" in shown and "never read" not in shown
    # The adapter's random turn-token rows make the tiny model close some turns: a reply ends
    # at the end-of-turn token or at the budget, and the screen says which.
    assert all(turn.stopped == (turn.new_tokens < 12) for turn in session.turns)
    assert any(turn.stopped for turn in session.turns)
    assert shown.count("[stopped at --max-new-tokens 12]") == sum(not turn.stopped for turn in session.turns)


def test_reply_streams_pieces_while_generate_runs(tiny_adapter):
    session = open_session(tiny_adapter, max_new_tokens=24, dtype="float32")
    forwards = []
    session.model.register_forward_hook(lambda *_: forwards.append(1))
    pieces: list[tuple[str, int]] = []  # each streamed piece, with the forward passes run before it arrived
    turn = session.reply("Tell me a story.", on_text=lambda text: pieces.append((text, len(forwards))))
    assert len(pieces) >= 3, pieces
    assert pieces[0][1] < len(forwards) - 1, "the first piece must arrive while generation still has steps to run"
    assert [n for _, n in pieces] == sorted(n for _, n in pieces)
    assert "".join(text for text, _ in pieces).strip() == turn.reply


def test_chat_on_a_merged_folder_replies_as_the_adapter_does(tiny_adapter, tmp_path):
    from sftkit.export import export_merged

    merged = export_merged(tiny_adapter, tmp_path / "merged").out_dir
    replies = {}
    for name, folder in (("adapter", tiny_adapter), ("merged", merged)):
        session = open_session(folder, max_new_tokens=10, dtype="float32")
        _talk(session, "hello\nand then?\n")  # ends by end of input
        replies[name] = [turn.reply for turn in session.turns]
    assert len(replies["adapter"]) == 2 and replies["adapter"] == replies["merged"]


def test_sftkit_chat_command_through_standard_input(tiny_adapter, tmp_path):
    command = [sys.executable, "-m", "sftkit.cli", "chat", "--model", str(tiny_adapter), "--max-new-tokens", "6"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, input="hi\n/exit\n", capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "you> hi\nmodel> " in done.stdout and "/reset" in done.stdout


def test_chat_command_refuses_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["chat", "--model", str(tmp_path)]) == 1
    assert "neither an adapter folder" in capsys.readouterr().err


@pytest.mark.slow
def test_sftkit_chat_with_the_committed_demo_adapter_two_turns(monkeypatch, capsys):
    import sftkit.talk

    sessions = []
    monkeypatch.setattr(sftkit.talk, "run_chat", lambda session, **kw: sessions.append(run_chat(session, **kw)))
    monkeypatch.setattr(sys, "stdin",
                        io.StringIO("What is the capital of France?\nGive me one word that rhymes with cat.\n"))
    assert main(["chat", "--model", str(DEMO_ADAPTER), "--max-new-tokens", "24", "--dtype", "float32"]) == 0
    shown = capsys.readouterr().out
    first, second = sessions[0].turns
    assert first.stopped and first.reply and first.new_tokens < 24, first
    assert f"{first.reply}<end_of_turn>" in second.prompt, "the second prompt holds the first exchange, closed"
    assert second.prompt.startswith("<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>")
    assert second.prompt.endswith("Give me one word that rhymes with cat.<end_of_turn>\n<start_of_turn>assistant\n")
    assert shown.count("model> ") == 2 and first.reply in shown
