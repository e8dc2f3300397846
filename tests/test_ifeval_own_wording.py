"""scripts/ifeval_own_wording.py: which rows it scores (no model: the generation is the library's)."""

from __future__ import annotations

import json

import pytest
from repo_scripts import load_script

from sftkit.config import apply_overrides, get_preset
from sftkit.offline_conversations import RESOURCE, SOURCE_IFEVAL
from sftkit.run_data import load_run_data


def test_the_unseen_rows_are_the_training_splits_instruction_rows_the_sample_did_not_draw():
    script = load_script("ifeval_own_wording")
    cfg = get_preset("cpu-demo")
    unseen = script.unseen_instruction_rows(cfg)
    train, _ = load_run_data(cfg)
    drawn = {json.dumps(row["messages"]) for row in train}
    everything = [json.loads(line) for line in RESOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    instruction_rows = [r for r in everything if r["source"] == SOURCE_IFEVAL and r["split"] == "train"]
    drawn_instructions = [r for r in instruction_rows if json.dumps(r["messages"]) in drawn]
    assert 0 < len(drawn_instructions) < len(instruction_rows)
    assert len(unseen) == len(instruction_rows) - len(drawn_instructions)
    assert not any(json.dumps(r["messages"]) in drawn for r in unseen)
    assert all(r["instruction_id_list"] and r["messages"][-1]["role"] == "assistant" for r in unseen)
    # Another sample leaves other rows unseen.
    other = script.unseen_instruction_rows(apply_overrides(cfg, ["data.seed=1"]))
    assert {r["topic"] + r["messages"][0]["content"] for r in other} != {r["topic"] + r["messages"][0]["content"]
                                                                          for r in unseen}


def test_a_run_on_other_data_is_refused():
    script = load_script("ifeval_own_wording")
    with pytest.raises(SystemExit, match="not the offline conversations"):
        script.unseen_instruction_rows(get_preset("smoke"))
