"""`sftkit.config.apply_overrides` (``--set key=value``): every guard a user relies on, with a failing case.

Each bad override must raise `ValueError` naming the key the user typed, and leave the setting
it names unchanged; good overrides of every field type must land with that type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

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
    ("train.cpu_amp=fp32", "train.cpu_amp must be one of auto|off|bf16|fp16, got 'fp32'"),
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
    ('data.kind_rows={"ifeval": -1}', "data.kind_rows rows must be >= 0"),
    ('data.kind_rows={"ifeval": 5000}', "data.kind_rows asks for more rows than data.train_size="),
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
    (TrainSettings, {"cpu_amp": "fp32"}, "train.cpu_amp must be one of auto|off|bf16|fp16, got 'fp32'"),
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
    values = get_preset("smoke").to_dict()  # cpu_amp "off": a choice files written before cpu_amp could hold
    values["train"]["cpu_bf16_autocast"] = values["train"].pop("cpu_amp") != "off"  # written before cpu_amp
    assert RunConfig.from_dict(values) == get_preset("smoke")
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


# --------------------------------------------------------------------------- boundaries, messages, files

# The smallest value each rule allows must pass (the RULES above check the first value past it fails).
BOUNDARIES = [
    "data.train_size=0", "data.eval_size=0", "data.max_length=1", "data.shuffle_buffer=1",
    'data.curriculum={"add": 0}',
    "lora.r=1", "lora.alpha=1", "lora.alpha=0.5", "lora.dropout=0", "lora.layers=1",
    "train.max_steps=1", "train.max_steps=-1", "train.per_device_train_batch_size=1",
    "train.gradient_accumulation_steps=1", "train.warmup_ratio=0", "train.warmup_ratio=0.99", "train.weight_decay=0",
    "train.max_grad_norm=0", "train.logging_steps=1", "train.save_steps=0", "train.learning_rate=1e-9",
    "eval.max_new_tokens=1", "eval.open_max_new_tokens=1", "eval.ifeval_max_new_tokens=1", "eval.batch_size=1",
    "eval.n_examples=1", "eval.bootstrap_resamples=1", "eval.n_side_by_side=0", "eval.ifeval_subset=0",
]


@pytest.mark.parametrize("override", BOUNDARIES)
def test_the_edge_of_each_rule_is_allowed(override):
    key, _, text = override.partition("=")
    cfg = apply_overrides(get_preset("smoke"), [override])
    assert functools.reduce(getattr, key.split("."), cfg) == json.loads(text)


def test_a_warmup_ratio_of_one_is_refused():
    # transformers reads a warmup value >= 1 as a number of steps: 1.0 would mean one step, not the whole run.
    with pytest.raises(ValueError, match=re.escape("train.warmup_ratio must be in [0, 1), got 1.0")):
        apply_overrides(get_preset("smoke"), ["train.warmup_ratio=1"])


def _exactly(message):
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.fused_lm_head=true"],
     "train.fused_lm_head=true cannot train the turn-token rows (peft wraps the LM head); "
     "set lora.train_turn_tokens=false or leave train.fused_lm_head unset"),
    (["train.batching=pack"],
     "train.batching=pack cannot keep data.curriculum's stages in order (packing reorders rows across stages); "
     "use train.batching=group or data.curriculum={}"),
    (["train.batching=pack", "data.curriculum={}"],
     "train.batching=pack needs a FlashAttention model.attn_implementation (flash_attention_2) to keep packed "
     "examples apart; it is 'sdpa', where they attend to each other. Use train.batching=group (length grouping) "
     "instead"),
    # the text of a failed read: the reader's own reason in brackets, none where a union has no single reason
    (["lora.layers=abc"], "--set lora.layers: cannot read 'abc' as int or none"),
    (["data.curriculum=[1]"], "--set data.curriculum: cannot read '[1]' as dict[str, int] (not a JSON object)"),
    (["train.max_steps=x"], "--set train.max_steps: cannot read 'x' as int (invalid literal for int() with base 10: "
                            "'x')"),
    # below a section, a setting has no fields to list
    (["train.max_steps.x=3"], "--set train.max_steps.x: unknown key"),
])
def test_the_whole_message_of_a_refused_override(overrides, message):
    # The whole line the user reads, not just its start: the rules between sections name the fix.
    with pytest.raises(ValueError, match=_exactly(message)):
        apply_overrides(get_preset("smoke"), overrides)


def test_a_top_level_field_of_the_wrong_type_is_named_without_a_section():
    cfg = RunConfig(output_dir=3)
    with pytest.raises(ValueError, match=_exactly("output_dir must be str, got 3")):
        cfg.validate()


def test_a_section_replaced_by_a_plain_value_is_named():
    section = "(a section of the configuration)"
    with pytest.raises(ValueError, match=_exactly(f"model must be a ModelConfig {section}, got 'x'")):
        RunConfig(model="x").validate()
    with pytest.raises(ValueError, match=_exactly(f"lora must be a LoraSettings {section}, got None")):
        RunConfig(lora=None).validate()


def test_an_unknown_preset_is_refused_naming_the_presets():
    with pytest.raises(ValueError, match=_exactly("unknown preset 't5'; choose one of ['cpu-demo', 'smoke', 't4']")):
        get_preset("t5")


def test_overrides_reach_code_that_holds_a_section():
    # The notebooks keep `cfg.train` etc. in variables; overrides must change those objects, not replace them.
    cfg = get_preset("smoke")
    train, lora = cfg.train, cfg.lora
    apply_overrides(cfg, ["train.max_steps=7", "lora.r=2"])
    assert cfg.train is train and cfg.lora is lora
    assert train.max_steps == 7 and lora.r == 2


# --------------------------------------------------------------------------- choosing a preset

@pytest.mark.parametrize(("env", "cuda", "expected"), [
    (None, True, "t4"), (None, False, "cpu-demo"), ("", True, "t4"), ("smoke", True, "smoke"),
    ("smoke", False, "smoke"),
])
def test_the_default_preset_follows_the_environment_then_the_hardware(monkeypatch, env, cuda, expected):
    import torch

    from sftkit.config import default_preset_name, resolve_preset

    if env is None:
        monkeypatch.delenv("SFTKIT_PRESET", raising=False)
    else:
        monkeypatch.setenv("SFTKIT_PRESET", env)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_preset_name() == expected
    assert resolve_preset() == get_preset(expected)
    # an explicit name wins over the environment and the hardware
    assert resolve_preset("smoke").preset == "smoke"


# --------------------------------------------------------------------------- config.json

# The repository's root: the first folder above this file with the README (mutmut runs the tests from a copy in
# mutants/, which holds the package and the tests but not the committed results and documents).
ROOT = next(folder for folder in Path(__file__).resolve().parents if (folder / "README.md").is_file())
COMMITTED = ROOT / "results" / "cpu-demo-base" / "config.json"


def test_the_cpu_demo_preset_is_the_configuration_of_the_committed_results():
    # results/cpu-demo-base (README's headline numbers) was made by this config: a preset that differs
    # no longer describes them.
    committed = RunConfig.from_dict(json.loads(COMMITTED.read_text()))
    preset = get_preset("cpu-demo")
    assert dataclasses.replace(preset, output_dir=committed.output_dir) == committed, (
        "the cpu-demo preset differs from results/cpu-demo-base/config.json: rerun `make demo` and commit its "
        "results, or restore the preset")


def test_save_writes_config_json_as_committed_runs_have_it(tmp_path):
    # The file format tools and people read (2-space JSON, one trailing newline): the committed run's file
    # read and saved again is the same bytes, and the folder is made on the way.
    text = COMMITTED.read_text()
    cfg = RunConfig.from_dict(json.loads(text))
    path = cfg.save(tmp_path / "runs" / "new")
    assert path == tmp_path / "runs" / "new" / "config.json"
    assert path.read_text() == text
    # saving again over an existing run folder replaces the file
    cfg.output_dir = "elsewhere"
    assert cfg.save(tmp_path / "runs" / "new") == path
    assert RunConfig.from_dict(json.loads(path.read_text())) == cfg


def test_from_dict_reads_old_bf16_autocast_and_missing_sections_as_defaults():
    values = get_preset("smoke").to_dict()
    values["train"]["cpu_bf16_autocast"] = True  # written before train.cpu_amp: on meant bf16 autocast
    del values["train"]["cpu_amp"]
    assert RunConfig.from_dict(values).train.cpu_amp == "bf16"
    # a config.json that names only some sections: the others are their defaults
    assert RunConfig.from_dict({"preset": "x", "lora": {"r": 2}}) == RunConfig(preset="x", lora=LoraSettings(r=2))


# --------------------------------------------------------------------------- sftkit.config_types

@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False),
])
@pytest.mark.parametrize("hint", [bool, bool | None], ids=["bool", "bool|None"])
def test_parse_value_reads_every_spelling_of_a_bool(hint, text, expected):
    from sftkit.config_types import parse_value

    assert parse_value(text, hint, "k") is expected


def test_parse_value_reads_a_choice_beside_other_types_and_names_what_it_cannot_read():
    # A Literal beside other types (like "auto" or a number): a choice is kept as text, a list needs its comma,
    # a bare word that is no choice is left for validation to name the choices.
    from sftkit.config_types import parse_value

    hint = Literal["all"] | list[str] | int
    assert parse_value("all", hint, "k") == "all"
    assert parse_value("3", hint, "k") == 3
    assert parse_value("a,b", hint, "k") == ["a", "b"]
    assert parse_value("al", hint, "k") == "al"
    assert parse_value("auto", Literal["auto"] | int, "k") == "auto"
    with pytest.raises(ValueError, match=_exactly("--set k: cannot read 'x' as tuple (no reader for tuple[int])")):
        parse_value("x", tuple[int], "k")


@pytest.mark.parametrize(("value", "text"), [
    (None, "none"), (True, "true"), (False, "false"), (["q_proj", "v_proj"], "q_proj,v_proj"),
    # one name stays JSON: "q_proj" alone would read back as a (misspelt) choice of lora.targets
    (["q_proj"], '["q_proj"]'), ([], "[]"), ({"add": 8}, '{"add": 8}'), (3, "3"), (2e-4, "0.0002"), ("sdpa", "sdpa"),
])
def test_format_value_writes_what_set_reads(value, text):
    assert format_value(value) == text


def test_settings_show_each_declared_type():
    rows = {row.key: row for row in settings(get_preset("t4"))}
    assert [rows[key][:3] for key in ("lora.layers", "lora.alpha", "lora.targets", "train.batching",
                                      "data.curriculum", "model.reference_name", "train.fused_lm_head")] == [
        ("lora.layers", "int or none", "none"),
        ("lora.alpha", "int or float", "32"),
        ("lora.targets", "all-linear|attention|mlp or list[str]", "all-linear"),
        ("train.batching", "group|pack|pad", "group"),
        ("data.curriculum", "dict[str, int]", "{}"),
        ("model.reference_name", "str or none", "HuggingFaceTB/SmolLM2-360M-Instruct"),
        ("train.fused_lm_head", "bool or none", "none"),
    ]


def test_type_text_shows_an_annotation_without_a_name_as_its_text():
    from sftkit.config_types import type_text

    assert type_text("Path") == "Path"


@dataclasses.dataclass
class _Anything:
    value: Any = None


def test_any_takes_every_value():
    from sftkit.config_types import check_types

    for value in (None, 1, "x", [1], {"a": object()}):
        check_types(_Anything(value), "x")


# --------------------------------------------------------------------------- the t4 preset and its documentation

def test_the_t4_preset_is_the_one_the_readme_describes():
    readme = ROOT.joinpath("README.md").read_text()
    cfg = get_preset("t4")
    model, source, rows = re.search(r"^\| `t4` \| `([^`]+)` \(base\) \| `([^`]+)`, ([\d,]+) conversations \|",
                                    readme, re.M).groups()
    assert (cfg.model.name, cfg.data.source, cfg.data.train_size) == (model, source, int(rows.replace(",", "")))
    assert cfg.train.save_steps == int(re.search(r"The `t4` preset saves a checkpoint every (\d+) steps", readme)[1])
    subset, source = re.search(r"on Colab on\s+(\d+) seeded `([^`]+)` prompts", readme).groups()
    assert (cfg.eval.ifeval_subset, cfg.eval.ifeval_source) == (int(subset), source)


def test_the_t4_preset_names_the_hub_ids_its_help_and_stand_ins_name(tmp_path):
    # Each setting's help quotes its t4 value (t4: "..."), and `sftkit standins` replaces the t4 preset's Hub
    # ids with folders named like them: a preset that names another id would run CI on the wrong stand-in.
    from sftkit.standins.paths import standin_paths

    cfg = get_preset("t4")
    quoted = {}
    for key, f in _leaf_fields(cfg):
        match = re.search(r't4: "([^"]+)"', f.metadata["help"])
        if match:
            quoted[key] = match[1]
    assert len(quoted) == 5, quoted
    paths = standin_paths(tmp_path)
    for override in paths.overrides():
        key, _, path = override.partition("=")
        assert Path(path).relative_to(paths.root).as_posix() == functools.reduce(getattr, key.split("."), cfg), key
        assert quoted.get(key, functools.reduce(getattr, key.split("."), cfg)) == Path(path).relative_to(
            paths.root).as_posix(), key



@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_writes_to_runs_under_its_name(name):
    # README: "Outputs land in `runs/<preset>/`"; results and estimates name the preset a config came from.
    cfg = get_preset(name)
    assert (cfg.preset, cfg.output_dir) == (name, f"runs/{name}")


def test_the_smoke_preset_is_the_one_the_readme_describes():
    # README: "tiny random Llama with the real tokenizer | built-in tasks | CI and notebook checks, seconds";
    # `tiny-smollm2` is that model (`sftkit.models`), and a curriculum stage sends CI through the staged path.
    from sftkit.models import OFFLINE_MODELS

    cfg = get_preset("smoke")
    readme = ROOT.joinpath("README.md").read_text()
    assert "| `smoke` | tiny random Llama with the real tokenizer | built-in tasks |" in readme
    assert cfg.model.name == "tiny-smollm2" and cfg.model.name in OFFLINE_MODELS
    assert cfg.data.source == "builtin-tasks" and cfg.data.curriculum and cfg.train.batching == "group"
