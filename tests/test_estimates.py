"""`sftkit.estimates`: FLOPs from the shapes as `training_flops_per_token` counts them, time and memory trends,
labels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sftkit.config import get_preset
from sftkit.estimates import CARDS, KNOWN_ARCHITECTURES, Card, estimate, format_estimate
from sftkit.standins import SMOLLM2_360M_CONFIG

# SmolLM2-360M's config values at a tenth of the depth and an eighth of the width: built for real in a second.
TINY = dict(SMOLLM2_360M_CONFIG, num_hidden_layers=3, hidden_size=120, intermediate_size=320)


def tiny_estimate(tmp_path, **changes):
    cfg = get_preset("t4")
    for section_key, value in changes.items():
        section, key = section_key.split("__")
        setattr(getattr(cfg, section), key, value)
    return estimate(cfg, "T4", model_config=dict(TINY, model_type="llama"), tokens_per_conversation=200,
                    measured_path=tmp_path / "none.json")


def test_flops_equal_training_flops_per_token_of_the_real_model(tmp_path):
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftkit.lora import build_lora_config
    from sftkit.measure import training_flops_per_token

    cfg = get_preset("t4")
    est = estimate(cfg, "T4", model_config=dict(TINY, model_type="llama"), tokens_per_conversation=300,
                   labelled_fraction=0.4, measured_path=tmp_path / "none.json")

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))  # real weights, as train_lora wraps it
    vocab = TINY["vocab_size"]
    lora = build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                             trainable_tokens=[vocab - 2, vocab - 1])
    peft_model = get_peft_model(model, lora)
    context = (300 + 1) / 2
    per_token = training_flops_per_token(peft_model, 0.4, context)

    assert est.training_tokens == cfg.data.train_size * 300
    assert est.flops_per_token == pytest.approx(per_token, rel=1e-12)
    assert est.training_flops == pytest.approx(est.training_tokens * per_token, rel=1e-12)
    # Gradient checkpointing recomputes each block's forward: 2 x its linear weights + 4 x context x width.
    linear = sum(m.weight.numel() for name, m in peft_model.named_modules()
                 if isinstance(m, nn.Linear) and ".layers." in name)
    forward = 2.0 * linear + TINY["num_hidden_layers"] * 4.0 * context * TINY["hidden_size"]
    assert est.recompute_flops == pytest.approx(est.training_tokens * forward, rel=1e-12)
    minutes = (est.training_flops + est.recompute_flops) / (CARDS["T4"].sustained_tflops * 1e12) / 60
    assert est.training_minutes == pytest.approx(minutes)
    assert est.parameters == sum(p.numel() for p in peft_model.parameters() if not p.requires_grad)
    assert est.trainable_parameters == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_minutes_scale_inversely_with_sustained_tflops(tmp_path):
    cfg = get_preset("t4")
    slow = estimate(cfg, sustained_tflops=10.0, measured_path=tmp_path / "none.json")
    fast = estimate(cfg, sustained_tflops=20.0, measured_path=tmp_path / "none.json")
    assert slow.training_flops == fast.training_flops > 0
    assert slow.training_minutes == pytest.approx(2 * fast.training_minutes)
    assert "10 TFLOP/s" in slow.label and "20 TFLOP/s" in fast.label


def test_memory_grows_with_batch_and_length_and_falls_with_checkpointing(tmp_path):
    base = tiny_estimate(tmp_path)
    assert base.gradient_checkpointing and base.batch_size == 8 and base.max_length == 1024
    bigger_batch = tiny_estimate(tmp_path, train__per_device_train_batch_size=16)
    longer = tiny_estimate(tmp_path, data__max_length=2048)
    no_checkpointing = tiny_estimate(tmp_path, train__gradient_checkpointing=False)
    for larger in (bigger_batch, longer, no_checkpointing):
        assert larger.memory_gib["activations"] > base.memory_gib["activations"]
        assert larger.peak_memory_gib > base.peak_memory_gib
    assert bigger_batch.memory_gib["weights"] == base.memory_gib["weights"]
    # Without checkpointing every block keeps its activations: about depth x one block's, plus nothing else.
    assert no_checkpointing.memory_gib["activations"] == pytest.approx(
        TINY["num_hidden_layers"] * base.memory_gib["workspace"])


def test_t4_preset_estimate_and_its_label(tmp_path):
    est = estimate(get_preset("t4"), "T4", measured_path=tmp_path / "none.json")
    assert est.model in KNOWN_ARCHITECTURES and est.dtype == "float16"
    assert 3.5e8 < est.parameters < 3.7e8  # SmolLM2-360M
    assert est.generation_steps == math.ceil(200 / 32) * 256
    assert est.measured is None
    assert est.label.startswith("estimate (FLOPs at 10 TFLOP/s sustained") and est.label.endswith("not measured")
    assert "500 tokens per conversation" in est.label
    line = format_estimate(est)
    assert "estimate" in line and "T4" in line and "GiB" in line and "min" in line


def test_a_committed_measurement_replaces_the_estimate_label(tmp_path):
    measured = tmp_path / "t4_measured.json"
    measured.write_text(json.dumps({"card": "Tesla T4", "preset": "t4", "training_minutes": 11.5,
                                    "peak_memory_gib": 3.25, "settings": {"data.train_size": 4000}}))
    cfg = get_preset("t4")
    est = estimate(cfg, "T4", measured_path=measured)
    assert est.measured["training_minutes"] == 11.5
    assert est.label == "measured on Tesla T4"
    line = format_estimate(est)
    assert "measured on Tesla T4" in line and "11.5 min" in line and "3.2 GiB" in line
    # Another card, or settings the measurement was not made with: the estimate stays an estimate.
    assert estimate(cfg, "A100", measured_path=measured).measured is None
    cfg.data.train_size = 1000
    assert "not measured" in estimate(cfg, "T4", measured_path=measured).label


def test_unknown_card_and_unknown_model_raise_naming_the_known_ones(tmp_path):
    cfg = get_preset("t4")
    with pytest.raises(ValueError) as error:
        estimate(cfg, "RTX 9090")
    assert all(name in str(error.value) for name in CARDS)
    cfg.model.name = "someone/unknown-model"
    with pytest.raises(ValueError, match="SmolLM2-360M"):
        estimate(cfg, "T4", measured_path=tmp_path / "none.json")


def test_card_names_and_custom_cards(tmp_path):
    cfg = get_preset("t4")
    assert estimate(cfg, "Tesla T4", measured_path=tmp_path / "none.json").card == "T4"
    narrow = Card("test card", 10.0, 15.0, 160.0, "float16")
    wide = estimate(cfg, "T4", measured_path=tmp_path / "none.json")
    assert estimate(cfg, narrow, measured_path=tmp_path / "none.json").generation_minutes_floor == pytest.approx(
        2 * wide.generation_minutes_floor)
