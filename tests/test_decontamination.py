"""Training rows and evaluation prompts stay apart: n-gram overlap, reserved topics, a rebuildable set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from repo_scripts import load_script

from sftkit import decontamination as dc
from sftkit import offline_conversations as oc
from sftkit.evalsets.facts import load_facts
from sftkit.ifeval import offline_rows

ROOT = Path(__file__).resolve().parents[1]


def test_ngrams_and_overlaps_find_shared_word_runs():
    assert dc.words("Don't STOP, now!") == ["don't", "stop", "now"]
    assert dc.ngrams("a b c", 2) == {("a", "b"), ("b", "c")} and dc.ngrams("a b", 3) == set()
    evaluation = [("eval:1", "Tell me, in short, why the sky looks blue on a clear day.")]
    copied = [("train:1", "Why the sky looks blue on a clear day is simple.")]
    found = dc.overlaps(copied, evaluation)
    # Two 8-word runs are shared; the first in sorted order names the pair.
    assert found == [("train:1", "eval:1", "the sky looks blue on a clear day")]
    assert dc.overlaps([("train:2", "The sky is blue.")], evaluation) == []
    # Allowed wording (an instruction's standard text) is removed from the evaluation side.
    assert dc.overlaps(copied, evaluation, boilerplate=["why the sky looks blue on a clear day"]) == []
    with pytest.raises(ValueError, match="n must be"):
        dc.overlaps(copied, evaluation, n=0)


def _shipped_texts():
    rows = [json.loads(line) for line in oc.RESOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    written = [r for r in rows if not r["source"].startswith(oc.SOURCE_TASKS)]
    train = [(f"train:{i}", " ".join(m["content"] for m in r["messages"])) for i, r in enumerate(written)
             if r["split"] == "train"]
    held_out = [(f"{r['split']}:{i}", " ".join(m["content"] for m in r["messages"])) for i, r in enumerate(written)
                if r["split"] != "train"]
    return rows, train, held_out


def test_no_training_row_shares_eight_words_with_any_evaluation_prompt():
    from lm_eval.tasks.ifeval import instructions_registry

    rows, train, held_out = _shipped_texts()
    evaluation = held_out + [(f"ifeval:{r.id}", r.prompt) for r in offline_rows()]
    evaluation += [(f"facts:{f.id}", f.question) for f in load_facts()]
    # The listed boilerplate: IFEval's canonical instruction wording, which the evaluation
    # prompts use verbatim (repeat_prompt's description quotes the task, so it is not listed).
    boilerplate = [instructions_registry.INSTRUCTION_DICT[i](i).build_description(**k)
                   for r in offline_rows() for i, k in zip(r.instruction_id_list, r.kwargs)
                   if i != "combination:repeat_prompt"]
    assert len(train) > 500 and len(evaluation) > 500
    assert dc.overlaps(train, evaluation, boilerplate) == []
    # The check can fail: a training row quoting 8 words of a test prompt is caught.
    quoted = " ".join(dc.words(offline_rows("test")[0].prompt)[:8])
    assert dc.overlaps(train + [("planted", f"Here is a reply: {quoted}.")], evaluation, boilerplate)


def test_no_training_row_mentions_a_reserved_evaluation_topic():
    checker = load_script("check_written_rows")
    rows, _, _ = _shipped_texts()
    for row in rows:
        text = " ".join(m["content"] for m in row["messages"])
        hit = checker._RESERVED.search(text)
        if row["split"] == "train":
            assert hit is None, (row["topic"], hit.group(0))
    # ... while every held-out written conversation is about one (the point of reserving them).
    held_out = [r for r in rows if r["split"] != "train" and r["source"] == oc.SOURCE_WRITTEN]
    topics = {t.strip() for t in (ROOT / "data" / "eval_topics.txt").read_text().splitlines()
              if t.strip() and not t.startswith("#")}
    assert held_out and len(topics) == 40


def test_the_shipped_set_is_exactly_what_the_build_script_makes():
    result = subprocess.run([sys.executable, "scripts/build_conversations.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
