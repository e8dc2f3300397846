"""Tests for sftkit.lora: the from-scratch layer against peft, injection, counts and target names."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from sftkit.lora import (
    LoRALinear,
    build_lora_config,
    copy_peft_weights_into,
    find_lora_targets,
    inject_lora,
    linear_module_names,
    lora_parameter_count,
    trainable_parameters,
)

ATTENTION = ["k_proj", "o_proj", "q_proj", "v_proj"]
MLP = ["down_proj", "gate_proj", "up_proj"]


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 10, bias=True)
        self.out = nn.Linear(10, 6, bias=False)

    def forward(self, x):
        return self.out(torch.tanh(self.proj(x)))


@pytest.fixture
def fresh_tiny(make_tiny_model):
    torch.manual_seed(0)
    return make_tiny_model()


def _ids(tokenizer):
    return torch.tensor([tokenizer("Hello there, how are you today?")["input_ids"]])


def test_lora_linear_equals_peft_layer():
    torch.manual_seed(0)
    base = TwoLayer()
    ours = LoRALinear(copy.deepcopy(base.proj), r=4, alpha=8)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["proj"], lora_dropout=0.0, init_lora_weights=False)
    )
    peft_layer = peft_model.base_model.model.proj
    assert peft_layer.lora_B["default"].weight.abs().sum() > 0, "B should be random for a meaningful comparison"
    copy_peft_weights_into(ours, peft_layer)
    x = torch.randn(5, 3, 12)
    with torch.no_grad():
        expected = peft_layer(x)
        got = ours(x)
        plain = peft_layer.base_layer(x)
    assert (expected - plain).abs().max() > 1e-3, "the LoRA update should change the output"
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert ours.scaling == pytest.approx(peft_layer.scaling["default"]) == 2.0


def test_lora_injected_tiny_llama_equals_peft(fresh_tiny, make_tiny_model, tokenizer):
    torch.manual_seed(1)
    peft_model = get_peft_model(
        make_tiny_model(),
        LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION, lora_dropout=0.0, init_lora_weights=False),
    )
    replaced = inject_lora(fresh_tiny, ATTENTION, r=4, alpha=8)
    assert len(replaced) == 8, replaced  # 4 projections x 2 layers
    peft_modules = dict(peft_model.base_model.model.named_modules())
    for name in replaced:
        copy_peft_weights_into(fresh_tiny.get_submodule(name), peft_modules[name])
    ids = _ids(tokenizer)
    with torch.no_grad():
        ours = fresh_tiny(input_ids=ids).logits
        theirs = peft_model(input_ids=ids).logits
        base = make_tiny_model()(input_ids=ids).logits
    assert (theirs - base).abs().max() > 1e-6, "the adapters should change the logits"
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_fresh_lora_linear_equals_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(7, 5)
    layer = LoRALinear(base, r=3, alpha=6)
    assert torch.all(layer.lora_B == 0), "B must start at zero"
    assert layer.lora_A.abs().sum() > 0, "A must start random"
    x = torch.randn(4, 7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), base(x), atol=0, rtol=0)
    assert not base.weight.requires_grad and not base.bias.requires_grad, "the base layer must be frozen"
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert layer.lora_A.shape == (3, 7) and layer.lora_B.shape == (5, 3)


def test_merged_weight_gives_the_layer_output():
    torch.manual_seed(0)
    base = nn.Linear(9, 6, bias=True)
    layer = LoRALinear(base, r=2, alpha=5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 9)
    merged = layer.merged_weight()
    assert (merged - base.weight).abs().max() > 1e-3, "the merged weight must include the update"
    with torch.no_grad():
        torch.testing.assert_close(nn.functional.linear(x, merged, base.bias), layer(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(merged, base.weight + 2.5 * layer.lora_B @ layer.lora_A)


def test_inject_lora_replaces_attention_and_freezes_the_rest(fresh_tiny, make_tiny_model):
    expected_count = lora_parameter_count(fresh_tiny, ATTENTION, r=4)
    replaced = inject_lora(fresh_tiny, ATTENTION, r=4, alpha=8)
    assert sorted(replaced) == sorted(f"model.layers.{i}.self_attn.{n}" for i in range(2) for n in ATTENTION)
    for name in replaced:
        assert isinstance(fresh_tiny.get_submodule(name), LoRALinear), name
    for i in range(2):
        for name in MLP:
            assert type(fresh_tiny.get_submodule(f"model.layers.{i}.mlp.{name}")) is nn.Linear
    trainable = {n for n, p in fresh_tiny.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable), sorted(trainable)
    assert len(trainable) == 2 * len(replaced)
    counts = trainable_parameters(fresh_tiny)
    assert counts["trainable"] == expected_count, (counts, expected_count)
    # By hand: per layer q 4*(8+8), k 4*(8+4), v 4*(8+4), o 4*(8+8) = 224; two layers.
    assert expected_count == 448

    peft_model = get_peft_model(
        make_tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION, lora_dropout=0.0)
    )
    peft_trainable, _ = peft_model.get_nb_trainable_parameters()
    assert peft_trainable == expected_count, f"peft trains {peft_trainable}, we count {expected_count}"


def test_lora_parameter_count_all_linear_matches_peft(tiny_model, make_tiny_model):
    targets = find_lora_targets(tiny_model, "all-linear")
    peft_model = get_peft_model(make_tiny_model(), LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    assert lora_parameter_count(tiny_model, targets, r=8) == peft_model.get_nb_trainable_parameters()[0]


def test_inject_lora_without_matching_layer_raises(fresh_tiny):
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_lora(fresh_tiny, ["not_a_layer"])


def test_find_lora_targets_on_tiny_llama(tiny_model):
    assert linear_module_names(tiny_model) == sorted(ATTENTION + MLP), "lm_head must be excluded"
    assert find_lora_targets(tiny_model, "attention") == ATTENTION
    assert find_lora_targets(tiny_model, "mlp") == MLP
    assert find_lora_targets(tiny_model, "all-linear") == sorted(ATTENTION + MLP)
    assert len(find_lora_targets(tiny_model, "all-linear")) == 7
    assert find_lora_targets(tiny_model, ["v_proj", "q_proj", "q_proj"]) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("which", [["q_proj", "qq_proj"], ["lm_head"]])
def test_find_lora_targets_rejects_unknown_names(tiny_model, which):
    with pytest.raises(ValueError, match="no linear layer named"):
        find_lora_targets(tiny_model, which)


@pytest.mark.parametrize("which", ["everything", "attn", "All-Linear"])
def test_find_lora_targets_rejects_unknown_choices(tiny_model, which):
    with pytest.raises(ValueError, match="targets must be"):
        find_lora_targets(tiny_model, which)


def test_find_lora_targets_raises_when_a_choice_matches_nothing():
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(4, 4))
    with pytest.raises(ValueError, match="matches none"):
        find_lora_targets(model, "attention")
    assert find_lora_targets(model, "mlp") == ["fc1"]


def test_build_lora_config_names_targets_explicitly(tiny_model):
    config = build_lora_config(tiny_model, r=4, alpha=8, dropout=0.0, targets="mlp")
    assert sorted(config.target_modules) == MLP
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 8, 0.0, "none")


def test_top_layers_only_adapts_the_upper_blocks(tiny_model, make_tiny_model):
    total = tiny_model.config.num_hidden_layers
    assert total >= 2, "the tiny model needs two blocks for this test"
    targets = find_lora_targets(tiny_model, "all-linear")
    config = build_lora_config(make_tiny_model(), r=4, alpha=8, dropout=0.0, targets=targets, layers=1)
    peft_model = get_peft_model(make_tiny_model(), config)
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in peft_model.named_parameters() if "lora_" in name}
    assert adapted == {str(total - 1)}, f"only the top block is adapted, got blocks {adapted}"
    trainable = peft_model.get_nb_trainable_parameters()[0]
    assert lora_parameter_count(tiny_model, targets, r=4, layers=1) == trainable
    assert trainable * total == lora_parameter_count(tiny_model, targets, r=4), "every block has the same shapes"
    assert build_lora_config(tiny_model, targets=targets).layers_to_transform is None, "default: every block"


@pytest.mark.parametrize("layers", [0, -1, 10_000])
def test_top_layers_out_of_range_raises(tiny_model, layers):
    with pytest.raises(ValueError, match="layers must be between 1 and"):
        build_lora_config(tiny_model, layers=layers)


@pytest.mark.parametrize("rank", [0, -4])
def test_lora_linear_rejects_a_rank_below_one(rank):
    with pytest.raises(ValueError, match="rank must be positive"):
        LoRALinear(torch.nn.Linear(4, 4), r=rank)
