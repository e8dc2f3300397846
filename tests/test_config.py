"""`sftkit.config.apply_overrides` (``--set key=value``): every guard a user relies on, with a failing case.

Each bad override must raise `ValueError` naming the key the user typed, and leave the setting
it names unchanged; good overrides of every field type must land with that type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import pytest

from sftkit.config import (
    PRESETS, SECTIONS, DataConfig, EvalSettings, LoraSettings, ModelConfig, RunConfig, TrainSettings, apply_overrides,
    env_overrides, format_value, get_preset, settings,
)


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


# --------------------------------------------------------------------------- declared settings: help, types, rules

def _leaf_fields(obj, prefix=""):
    """(dotted key, dataclasses.Field) for every setting `--set` takes, recursing into the sections."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


def test_every_field_of_every_settings_dataclass_has_help():
    for cls in (RunConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            text = f.metadata.get("help")
            assert isinstance(text, str) and text.strip(), f"{cls.__name__}.{f.name} has no help"
            assert "\n" not in text, f"{cls.__name__}.{f.name}: help is printed on one line"


def test_config_command_lists_every_key_with_its_type_value_and_help(capsys):
    from sftkit.cli import main

    assert main(["config", "--preset", "t4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# preset t4") and lines[1].split() == ["KEY", "TYPE", "VALUE", "HELP"]
    by_key = {line.split()[0]: line for line in lines[2:]}
    cfg = get_preset("t4")
    expected = dict(_leaf_fields(cfg))
    assert list(by_key) == list(expected), "one line per key, in declaration order"
    rows = {row.key: row for row in settings(cfg)}
    for key, f in expected.items():
        line, value = by_key[key], functools.reduce(getattr, key.split("."), cfg)
        assert line.endswith("  " + f.metadata["help"]), key
        assert f"  {rows[key].type}  " in line and f"  {format_value(value)} " in line, line


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_survive_config_json(name):
    cfg = get_preset(name)
    cfg.validate()
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_listed_value_reads_back_through_set(name):
    # What `sftkit config` prints is what `--set` takes: setting each key to its listed value changes nothing.
    preset = get_preset(name).to_dict()
    for row in settings(get_preset(name)):
        assert apply_overrides(get_preset(name), [f"{row.key}={row.value}"]).to_dict() == preset, row


# One rule per case: a value that cannot work is refused when it is set, with a message naming its key.
RULES = [
    ("train.per_device_train_batch_size=0", "train.per_device_train_batch_size must be >= 1, got 0"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps must be >= 1, got 0"),
    ("train.learning_rate=0", "train.learning_rate must be > 0, got 0.0"),
    ("train.learning_rate=-1e-4", "train.learning_rate must be > 0, got -0.0001"),
    ("train.num_train_epochs=0", "train.num_train_epochs must be > 0"),
    ("train.max_steps=0", "train.max_steps must be >= 1, or -1 for epochs, got 0"),
    ("train.max_steps=-2", "train.max_steps must be >= 1, or -1 for epochs, got -2"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio must be in [0, 1), got 1.5"),  # warmup_steps reads >= 1 as steps
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    ("train.max_grad_norm=-1", "train.max_grad_norm must be >= 0"),
    ("train.logging_steps=0", "train.logging_steps must be >= 1"),
    ("train.save_steps=-1", "train.save_steps must be >= 0"),
    ("train.lr_scheduler_type=", "train.lr_scheduler_type must name a schedule"),
    ("train.cpu_amp=fp32", "train.cpu_amp must be one of off|bf16|fp16, got 'fp32'"),
    ("train.batching=packed", "train.batching must be one of group|pack|pad, got 'packed'"),
    ("model.dtype=float64", "model.dtype must be one of auto|float32|float16|bfloat16, got 'float64'"),
    ("model.turn_format=llama", "model.turn_format must be one of auto|chatml|gemma, got 'llama'"),
    ("data.eval_split=train", "data.eval_split must be one of test|dev, got 'train'"),
    ("data.train_size=-1", "data.train_size must be >= 0, got -1"),
    ("data.eval_size=-5", "data.eval_size must be >= 0, got -5"),
    ("data.max_length=0", "data.max_length must be >= 1"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer must be >= 1"),
    ('data.curriculum={"add": -1}', "data.curriculum rows must be >= 0"),
    ('data.curriculum={"add": "8"}', "data.curriculum must be dict[str, int], got {'add': '8'}"),
    ("lora.r=0", "lora.r must be >= 1, got 0"),
    ("lora.alpha=0", "lora.alpha must be > 0, got 0"),
    ("lora.dropout=1", "lora.dropout must be in [0, 1), got 1.0"),
    ("lora.dropout=-0.1", "lora.dropout must be in [0, 1), got -0.1"),
    ("lora.layers=0", "lora.layers must be >= 1 or none, got 0"),
    ("lora.targets=mpl", "lora.targets must be one of all-linear|attention|mlp or list[str], got 'mpl'"),
    ("lora.targets=[]", "lora.targets must name at least one module, got []"),
    ("lora.targets=[1, 2]", "lora.targets must be one of all-linear|attention|mlp or list[str], got [1, 2]"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens must be >= 1"),
    ("eval.open_max_new_tokens=0", "eval.open_max_new_tokens must be >= 1"),
    ("eval.ifeval_max_new_tokens=0", "eval.ifeval_max_new_tokens must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("eval.n_examples=0", "eval.n_examples must be >= 1"),
    ("eval.bootstrap_resamples=0", "eval.bootstrap_resamples must be >= 1"),
    ("eval.n_side_by_side=-1", "eval.n_side_by_side must be >= 0"),
    ("eval.ifeval_subset=-1", "eval.ifeval_subset must be >= 0"),
    # rules between sections, as sftkit.train checks them at their point of use (smoke has a curriculum
    # and trains the turn-token rows)
    ("train.fused_lm_head=true", "train.fused_lm_head=true cannot train the turn-token rows"),
    ("train.batching=pack", "train.batching=pack cannot keep data.curriculum's stages in order"),
]


@pytest.mark.parametrize(("override", "message"), RULES, ids=[o for o, _ in RULES])
def test_a_value_that_cannot_work_is_refused_naming_its_key(override, message):
    cfg = get_preset("smoke")
    before = cfg.to_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(cfg, [override])
    assert cfg.to_dict() == before


def test_packing_needs_flash_attention():
    cfg = get_preset("smoke")
    with pytest.raises(ValueError, match=re.escape("train.batching=pack needs a FlashAttention "
                                                   "model.attn_implementation (flash_attention_2)")):
        apply_overrides(cfg, ["train.batching=pack", "data.curriculum={}"])
    apply_overrides(cfg, ["train.batching=pack", "data.curriculum={}", "model.attn_implementation=flash_attention_2"])
    assert cfg.train.batching == "pack"


def test_the_rules_hold_for_the_whole_set_of_overrides_in_any_order():
    # Checked once all overrides are in: pack is refused with smoke's curriculum alone, not with it emptied after.
    for overrides in (["train.batching=pack", "data.curriculum={}", "model.attn_implementation=flash_attention_2"],
                      ["model.attn_implementation=flash_attention_2", "data.curriculum={}", "train.batching=pack"]):
        assert apply_overrides(get_preset("smoke"), overrides).train.batching == "pack"
    # ... and a refused set changes nothing, not even the good overrides before the bad one
    cfg = get_preset("smoke")
    with pytest.raises(ValueError, match="train.learning_rate must be > 0"):
        apply_overrides(cfg, ["train.max_steps=7", "train.learning_rate=0"])
    assert cfg.train.max_steps == get_preset("smoke").train.max_steps


@pytest.mark.parametrize(("section", "values", "message"), [
    (TrainSettings, {"per_device_train_batch_size": 0}, "train.per_device_train_batch_size must be >= 1, got 0"),
    (TrainSettings, {"cpu_amp": "fp32"}, "train.cpu_amp must be one of off|bf16|fp16, got 'fp32'"),
    (TrainSettings, {"learning_rate": "fast"}, "train.learning_rate must be float, got 'fast'"),
    (TrainSettings, {"resume": "yes"}, "train.resume must be bool, got 'yes'"),
    (DataConfig, {"eval_split": "train"}, "data.eval_split must be one of test|dev, got 'train'"),
    (LoraSettings, {"targets": "q_proj"}, "lora.targets must be one of all-linear|attention|mlp or list[str]"),
    (LoraSettings, {"r": 2.5}, "lora.r must be int, got 2.5"),
    (EvalSettings, {"batch_size": 0}, "eval.batch_size must be >= 1, got 0"),
    (ModelConfig, {"dtype": "half"}, "model.dtype must be one of auto|float32|float16|bfloat16, got 'half'"),
])
def test_a_section_checks_its_values_when_it_is_made(section, values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        section(**values)


def test_from_dict_checks_sections_and_still_reads_old_config_files():
    values = get_preset("cpu-demo").to_dict()
    values["train"]["cpu_bf16_autocast"] = values["train"].pop("cpu_amp") != "off"  # written before cpu_amp
    assert RunConfig.from_dict(values) == get_preset("cpu-demo")
    values["data"]["eval_split"] = "validation"
    with pytest.raises(ValueError, match=re.escape("data.eval_split must be one of test|dev")):
        RunConfig.from_dict(values)


def test_a_setting_is_read_as_its_declared_type():
    def set_one(override):
        return apply_overrides(get_preset("smoke"), [override])

    # int | None: a number or none, nothing else (any text used to be accepted)
    with pytest.raises(ValueError, match=re.escape("--set lora.layers: cannot read 'abc' as int or none")):
        set_one("lora.layers=abc")
    with pytest.raises(ValueError, match=re.escape("--set lora.layers: cannot read '2.5' as int or none")):
        set_one("lora.layers=2.5")
    assert set_one("lora.layers=3").lora.layers == 3 and set_one("lora.layers=null").lora.layers is None
    # a list where the type allows one: comma-separated or JSON; the choices stay strings
    assert set_one("lora.targets=q_proj,v_proj").lora.targets == ["q_proj", "v_proj"]
    assert set_one("lora.targets= q_proj , v_proj ,").lora.targets == ["q_proj", "v_proj"]
    assert set_one('lora.targets=["q_proj"]').lora.targets == ["q_proj"]
    assert set_one("lora.targets=all-linear").lora.targets == "all-linear"
    assert set_one("lora.targets=attention").lora.targets == "attention"
    # bool | None
    assert set_one("train.fused_lm_head=none").train.fused_lm_head is None
    assert set_one("train.fused_lm_head=false").train.fused_lm_head is False
    with pytest.raises(ValueError, match=re.escape("--set train.fused_lm_head: cannot read 'maybe' as bool or none")):
        set_one("train.fused_lm_head=maybe")
    # int | float: a whole number stays an int (adapter_config.json says 16, not 16.0)
    assert type(set_one("lora.alpha=16").lora.alpha) is int and set_one("lora.alpha=12.5").lora.alpha == 12.5
    # a float setting takes an integer's text as a float
    assert type(set_one("train.num_train_epochs=2").train.num_train_epochs) is float
    # a plain str setting keeps "none" as text: only `X | None` settings read it as None
    assert set_one("data.source=none").data.source == "none"
