"""`sftkit.config.apply_overrides` (``--set key=value``): every guard a user relies on, with a failing case.

Each bad override must raise `ValueError` naming the key the user typed, and leave the setting
it names unchanged; good overrides of every field type must land with that type.
"""

from __future__ import annotations

import re

import pytest

from sftkit.config import apply_overrides, env_overrides, get_preset


@pytest.mark.parametrize(("override", "message"), [
    # a misspelt section: silently ignoring it would train with the preset's max_steps
    ("trian.max_steps=99", "--set trian.max_steps: unknown key (sections: model, data, lora, train, eval)"),
    ("train.max_stepz=3", "--set train.max_stepz: unknown key (known here: learning_rate, "),
    ("train.max_steps.x=3", "--set train.max_steps.x: unknown key"),
    ("max_steps=3", "--set max_steps: unknown key (known here: preset, model, "),
    # a section is not a setting: `model=x` replaced the whole ModelConfig with the string "x"
    ("model=tiny-smollm2", "--set model: is a section, not a setting"),
    ("train=3", "--set train: is a section, not a setting"),
    ("train.max_steps=abc", "--set train.max_steps: cannot read 'abc' as int"),
    ("train.max_steps=1.5", "--set train.max_steps: cannot read '1.5' as int"),
    ("train.learning_rate=fast", "--set train.learning_rate: cannot read 'fast' as float"),
    ("lora.train_turn_tokens=maybe", "--set lora.train_turn_tokens: expected true or false, got 'maybe'"),
    ("data.curriculum=add:8", "--set data.curriculum: cannot read 'add:8' as dict"),
    ("train.max_steps", "--set 'train.max_steps': expected key=value, e.g. train.max_steps=3"),
    ("train.max_steps 3", "--set 'train.max_steps 3': expected key=value"),
])
def test_a_bad_override_raises_naming_its_key_and_changes_nothing(override, message):
    cfg = get_preset("smoke")
    before = cfg.to_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(cfg, [override])
    assert cfg.to_dict() == before


def test_good_overrides_land_with_the_fields_type():
    cfg = apply_overrides(get_preset("smoke"), [
        "train.max_steps=7", "train.learning_rate=3e-4", "lora.train_turn_tokens=no", "train.resume=TRUE",
        'data.curriculum={"add": 2, "upper": 1}', "lora.layers=4",
        "model.reference_name=none", " data.source = my_data.jsonl ", "output_dir=runs/x",
    ])
    assert cfg.train.max_steps == 7 and type(cfg.train.max_steps) is int
    assert cfg.train.learning_rate == 3e-4 and type(cfg.train.learning_rate) is float
    assert cfg.lora.train_turn_tokens is False and cfg.train.resume is True
    assert cfg.data.curriculum == {"add": 2, "upper": 1}
    assert cfg.lora.layers == 4 and cfg.model.reference_name is None
    assert cfg.data.source == "my_data.jsonl" and cfg.output_dir == "runs/x"
    # the value is split at the first "=" only
    assert apply_overrides(get_preset("smoke"), ["data.source=a=b"]).data.source == "a=b"


def test_env_overrides_split_on_semicolons(monkeypatch):
    monkeypatch.setenv("SFTKIT_SET", " train.max_steps=3 ;; lora.r=2;")
    assert env_overrides() == ["train.max_steps=3", "lora.r=2"]
    monkeypatch.delenv("SFTKIT_SET")
    assert env_overrides() == []
