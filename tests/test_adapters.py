"""`sftkit.adapters`: evaluation with the adapter merged (and the model given back unmerged), and an adapter's
base found again.

An adapter committed from another machine names a base folder that does not exist here; when
that folder's name is an offline short name, every way of opening the adapter (`sftkit eval`'s
`load_named_model`, `sftkit export`, `sftkit chat`, the model card) must load that short name.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from sftkit.adapters import AdapterCheckError, AdapterConfigError, adapter_base_name, merged_adapter
from sftkit.chat import turn_token_ids
from sftkit.lora import build_lora_config


def _tuner_layers(model):
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert any("TrainableTokens" in type(m).__name__ for m in layers) and len(layers) > 2
    return layers


def test_merged_adapter_gives_the_same_logits_and_restores_the_unmerged_model(make_tiny_model, tokenizer):
    model = get_peft_model(make_tiny_model(), build_lora_config(
        make_tiny_model(), r=4, alpha=8, dropout=0.0, targets="all-linear",
        trainable_tokens=turn_token_ids(tokenizer)))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero LoRA update and changed turn-token rows
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    start, end = turn_token_ids(tokenizer)
    ids = torch.tensor([[1, start, 20, 30, end, 40, start, 7]])
    model.eval()
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with merged_adapter(model) as same:
            assert same is model
            merged = model(input_ids=ids).logits
            assert all(layer.merged for layer in _tuner_layers(model))
        after = model(input_ids=ids).logits
    assert (unmerged - base).abs().max() > 0.1, "the adapter must change the logits for the check to mean anything"
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert not any(layer.merged for layer in _tuner_layers(model)), "left merged"
    torch.testing.assert_close(after, unmerged, rtol=1e-4, atol=1e-4)


def test_merged_adapter_yields_a_plain_model_as_it_is(tiny_model):
    with merged_adapter(tiny_model) as same:
        assert same is tiny_model


def _moved_adapter(tmp_path, make_tiny_model, tokenizer, base: str | None):
    """A tiny adapter whose adapter_config.json names `base` (None: names no base) instead of its base folder."""
    from tiny_adapter import build_tiny_adapter

    adapter = build_tiny_adapter(tmp_path / "run", make_tiny_model, tokenizer)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(config))
    return adapter


def test_adapter_base_name_maps_a_missing_folder_named_like_an_offline_model(tmp_path, make_tiny_model, tokenizer):
    gone = str(tmp_path / "elsewhere" / "tiny-smollm2")  # the training machine's cache folder
    assert adapter_base_name(_moved_adapter(tmp_path / "a", make_tiny_model, tokenizer, gone)) == "tiny-smollm2"
    here = tmp_path / "b" / "run" / "base_model"  # an existing folder is kept as it is
    assert adapter_base_name(_moved_adapter(tmp_path / "b", make_tiny_model, tokenizer, str(here))) == str(here)
    with pytest.raises(AdapterConfigError, match="names no base_model_name_or_path"):
        adapter_base_name(_moved_adapter(tmp_path / "c", make_tiny_model, tokenizer, None))


def test_load_named_model_loads_an_adapter_whose_base_folder_is_gone_but_named_like_an_offline_model(
        tmp_path, make_tiny_model, tokenizer):
    from sftkit.config import resolve_preset
    from sftkit.runs import load_named_model

    adapter = _moved_adapter(tmp_path, make_tiny_model, tokenizer, str(tmp_path / "gone" / "tiny-smollm2"))
    model = load_named_model(str(adapter), resolve_preset("smoke"), tokenizer)
    assert type(model).__name__ == "PeftModelForCausalLM" and not model.training
    start, end = turn_token_ids(tokenizer)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, start, 20, 30, end]])).logits
    assert logits.shape[-1] >= len(tokenizer) and torch.isfinite(logits).all()


def _write_adapter_config(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(text)
    return folder


def test_adapter_base_name_keeps_existing_folders_and_names_it_cannot_map(tmp_path):
    # Only a *missing* folder named like an offline model becomes the short name: an existing folder of that
    # name is used as it is, and a missing folder or Hub id with another name is passed on unchanged.
    existing = tmp_path / "models" / "tiny-smollm2"
    existing.mkdir(parents=True)
    for base in (str(existing), "/nowhere/some-other-model", "HuggingFaceTB/SmolLM2-135M"):
        adapter = _write_adapter_config(tmp_path / "adapter", json.dumps({"base_model_name_or_path": base}))
        assert adapter_base_name(adapter) == base


def test_adapter_base_name_reports_a_config_that_is_not_json_or_not_an_object(tmp_path):
    adapter = _write_adapter_config(tmp_path / "bad", "{not json")
    with pytest.raises(AdapterConfigError, match=r"bad/adapter_config\.json is not valid JSON: Expecting"):
        adapter_base_name(adapter)
    adapter = _write_adapter_config(tmp_path / "list", json.dumps(["base_model_name_or_path"]))
    with pytest.raises(AdapterConfigError, match=r"list/adapter_config\.json names no base_model_name_or_path"):
        adapter_base_name(adapter)


class _Accelerator:
    def __init__(self, events, is_main_process):
        self.events, self.is_main_process = events, is_main_process

    def wait_for_everyone(self):
        self.events.append("wait")


class _Saves:
    """Stands in for a peft model and a tokenizer: `save_pretrained` writes what peft would (a config)."""

    def __init__(self, events, name):
        self.events, self.name = events, name

    def save_pretrained(self, folder):
        self.events.append(f"save {self.name}")
        folder.mkdir(parents=True, exist_ok=True)
        if self.name == "model":
            (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "trained/base",
                                                                    "r": 4}))


@pytest.mark.parametrize("main", [True, False])
def test_save_adapter_writes_on_the_main_process_only_and_points_at_the_base(tmp_path, main):
    from types import SimpleNamespace

    from sftkit.adapters import save_adapter

    events = []
    trainer = SimpleNamespace(accelerator=_Accelerator(events, main), model=_Saves(events, "model"))
    base = tmp_path / "run" / ".." / "base_model"  # a relative-looking path is written resolved
    assert save_adapter(trainer, _Saves(events, "tokenizer"), tmp_path / "adapter", base) == tmp_path / "adapter"
    if not main:
        assert events == ["wait", "wait"] and not (tmp_path / "adapter").exists()
        return
    assert events == ["wait", "save model", "save tokenizer", "wait"]
    expected = {"base_model_name_or_path": str((tmp_path / "base_model").resolve()), "r": 4}
    assert (tmp_path / "adapter" / "adapter_config.json").read_text() == json.dumps(expected, indent=2) + "\n"


def test_save_adapter_without_a_base_leaves_the_config_as_saved(tmp_path):
    from types import SimpleNamespace

    from sftkit.adapters import save_adapter

    events = []
    trainer = SimpleNamespace(accelerator=_Accelerator(events, True), model=_Saves(events, "model"))
    save_adapter(trainer, _Saves(events, "tokenizer"), tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config == {"base_model_name_or_path": "trained/base", "r": 4}


# --------------------------------------------------------------------------- fp32 upcast and the adapter check


def test_upcast_to_fp32_upcasts_floating_tensors_and_restores_their_dtypes_even_on_error():
    from sftkit.adapters import upcast_to_fp32

    model = torch.nn.Linear(2, 2).half()
    model.register_buffer("scale", torch.tensor([0.5, 1.5], dtype=torch.bfloat16))
    model.register_buffer("steps", torch.tensor([3, 4]))
    weight = model.weight.detach().clone()
    with upcast_to_fp32(model) as same:
        assert same is model
        assert model.weight.dtype == model.bias.dtype == model.scale.dtype == torch.float32
        assert model.steps.dtype == torch.int64, "integer buffers are left alone"
        assert torch.equal(model.weight, weight.float()), "fp16 values are exact in fp32"
    assert (model.weight.dtype, model.bias.dtype, model.scale.dtype) == (torch.float16, torch.float16, torch.bfloat16)
    assert torch.equal(model.weight, weight) and model.scale.tolist() == [0.5, 1.5]
    with pytest.raises(KeyError):
        with upcast_to_fp32(model):
            raise KeyError("inside")
    assert (model.weight.dtype, model.scale.dtype) == (torch.float16, torch.bfloat16)


class _FixedLogits:
    """A model stand-in whose forward returns fixed logits (to put each check exactly on either side of its bound)."""

    def __init__(self, logits, merged=None):
        self.logits, self.merged, self.weight = torch.tensor([logits]), merged, torch.zeros(1)
        self.evaluated = False

    def parameters(self):
        return iter([self.weight])

    def buffers(self):
        return iter([])

    def eval(self):
        self.evaluated = True
        return self

    def to(self, device=None, dtype=None):
        return self

    def __call__(self, input_ids):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits)

    def merge_and_unload(self):
        return self.merged


def _verify(monkeypatch, tuned, base, reloaded, merged):
    from peft import PeftModel

    from sftkit.adapters import verify_adapter

    reloaded_model = _FixedLogits(reloaded, merged=_FixedLogits(merged))
    monkeypatch.setattr(PeftModel, "from_pretrained", lambda model, path: reloaded_model)
    return verify_adapter(_FixedLogits(tuned), _FixedLogits(base), "adapter", torch.tensor([[1, 2]]))


def test_verify_adapter_returns_the_three_differences(monkeypatch):
    # Logits of scale 40: reload must agree to 1e-5, merge to 1e-5 of the scale (4e-4), and the base must differ.
    diffs = _verify(monkeypatch, tuned=[[0.0, 40.0]], base=[[0.0, 38.0]], reloaded=[[8e-6, 40.0]],
                    merged=[[3e-4, 40.0]])
    assert diffs == pytest.approx({"reload": 8e-6, "merge": 3e-4, "vs_base": 2.0}, rel=1e-6)


def test_verify_adapter_rejects_a_reload_beyond_its_tolerance(monkeypatch):
    with pytest.raises(AdapterCheckError, match=(
            r"^reloaded adapter differs from the trained one by 2e-05 \(tolerance 1e-05\): "
            r"the saved adapter is not the trained one$")):
        _verify(monkeypatch, tuned=[[0.0, 40.0]], base=[[0.0, 38.0]], reloaded=[[2e-5, 40.0]], merged=[[0.0, 40.0]])


def test_verify_adapter_scales_the_merge_tolerance_with_the_logits(monkeypatch):
    with pytest.raises(AdapterCheckError, match=(
            r"^merged model differs from the adapter model by 0\.0005 \(tolerance 0\.0004\)$")):
        _verify(monkeypatch, tuned=[[0.0, -40.0]], base=[[0.0, 38.0]], reloaded=[[0.0, -40.0]],
                merged=[[5e-4, -40.0]])
    # Small logits: the tolerance never drops below the reload tolerance (1e-5), not to 1e-5 * 0.5.
    diffs = _verify(monkeypatch, tuned=[[0.0, 0.5]], base=[[0.0, 0.25]], reloaded=[[0.0, 0.5]], merged=[[8e-6, 0.5]])
    assert diffs["merge"] == pytest.approx(8e-6, rel=1e-6)
    with pytest.raises(AdapterCheckError, match=r"by 1\.2e-05 \(tolerance 1e-05\)$"):
        _verify(monkeypatch, tuned=[[0.0, 0.5]], base=[[0.0, 0.25]], reloaded=[[0.0, 0.5]], merged=[[1.2e-5, 0.5]])


def test_verify_adapter_rejects_an_adapter_that_changes_nothing(monkeypatch):
    with pytest.raises(AdapterCheckError, match=(
            r"^the adapter does not change the model's logits: it was not trained or not loaded$")):
        _verify(monkeypatch, tuned=[[0.0, 40.0]], base=[[0.0, 40.0]], reloaded=[[0.0, 40.0]], merged=[[0.0, 40.0]])
    tiny_change = _verify(monkeypatch, tuned=[[0.0, 1.0]], base=[[0.0, 1.0 - 2**-20]], reloaded=[[0.0, 1.0]],
                          merged=[[0.0, 1.0]])
    assert tiny_change["vs_base"] == 2**-20, "any change at all passes"
