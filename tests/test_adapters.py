"""`sftkit.adapters.merged_adapter`: evaluation with the adapter merged, and the model given back unmerged."""

from __future__ import annotations

import torch
from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from sftkit.adapters import merged_adapter
from sftkit.chat import turn_token_ids
from sftkit.lora import build_lora_config


def _tuner_layers(model):
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert any("TrainableTokens" in type(m).__name__ for m in layers) and len(layers) > 2
    return layers


def test_merged_adapter_gives_the_same_logits_and_restores_the_unmerged_model(make_tiny_model, tokenizer):
    model = get_peft_model(make_tiny_model(), build_lora_config(
        make_tiny_model(), r=4, alpha=8, dropout=0.0, targets="all-linear", trainable_tokens=turn_token_ids(tokenizer)))
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
