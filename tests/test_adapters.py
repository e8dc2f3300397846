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

from sftkit.adapters import AdapterConfigError, adapter_base_name, merged_adapter
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
