"""Tests for sftkit.chapters.preference: on-policy pair building, the DPO config, and a 2-step LoRA DPO run."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from sftkit.config import get_preset
from sftkit.data import DataSourceError
from sftkit.generate import Generation
from sftkit.chapters.preference import (
    ALREADY_RIGHT,
    NOT_STOPPED,
    SAME_AS_CHOSEN,
    WRONG,
    WRONG_NOT_STOPPED,
    build_dpo_config,
    build_preference_pairs,
    generate_on_policy,
    load_hub_preferences,
    train_dpo,
)
from sftkit.tasks import check_answer, make_task_examples


@pytest.fixture(scope="module")
def examples():
    return make_task_examples(6, "test", seed=3, tasks=("add", "reverse", "recall"))


def reference(example):
    return example["messages"][-1]["content"]


def test_pairs_prefer_the_reference_over_wrong_or_unstopped_replies(examples):
    # The tasks cycle add, reverse, recall: rows 0 and 3 are additions, 1 and 4 reversals, 2 and 5 recalls.
    generations = [
        Generation(reference(examples[0]), 10, True),                 # right and stopped: no preference
        Generation("a b c", 3, True),                                 # wrong
        Generation(reference(examples[2]) + " and then", 12, False),  # wrong (recall is exact) and never stopped
        Generation("x y z", 16, False),                               # wrong and never stopped
        Generation(reference(examples[4]), 9, False),                 # cut exactly at the reference: no signal
        Generation("", 0, True),                                      # empty, so wrong
    ]
    pairs, report = build_preference_pairs(examples, generations)

    assert report["examples"] == 6 and report["pairs"] == 4
    assert report["skipped"] == {ALREADY_RIGHT: 1, SAME_AS_CHOSEN: 1}
    assert report["skipped_rows"] == {ALREADY_RIGHT: [0], SAME_AS_CHOSEN: [4]}
    assert report["pair_reasons"] == [WRONG, WRONG_NOT_STOPPED, WRONG_NOT_STOPPED, WRONG]
    assert sum(report["reasons"].values()) == 4
    assert report["pair_rows"][WRONG] == [1, 5]

    for pair, index in zip(pairs, (1, 2, 3, 5)):
        assert set(pair) == {"prompt", "chosen", "rejected"}
        assert pair["prompt"] == examples[index]["messages"][:-1], "the prompt is the conversation minus the reply"
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"] == [{"role": "assistant", "content": reference(examples[index])}]
        assert pair["rejected"] == [{"role": "assistant", "content": generations[index].text}]
        assert check_answer(examples[index]["task"], pair["chosen"][0]["content"], examples[index]["answer"])
    multi_turn = [pair for pair, index in zip(pairs, (1, 2, 3, 5)) if examples[index]["task"] == "recall"]
    assert multi_turn and len(multi_turn[0]["prompt"]) == 3, "earlier turns of a recall task stay in the prompt"


def test_a_correct_reply_that_does_not_stop_is_rejected_for_not_stopping():
    example = make_task_examples(2, "test", seed=0, tasks=("add",))[1]
    # `add` is checked by the last integer of the reply: this rambling reply is right but never stopped.
    rambling = reference(example) + " The sum is " + example["answer"]
    assert check_answer("add", rambling, example["answer"])
    pairs, report = build_preference_pairs([example], [Generation(rambling, 64, False)])
    assert report["reasons"] == {NOT_STOPPED: 1} and report["pair_reasons"] == [NOT_STOPPED]
    assert pairs[0]["rejected"][0]["content"] == rambling


def test_pair_building_names_the_bad_row(examples):
    with pytest.raises(ValueError, match="6 examples, 5 generations"):
        build_preference_pairs(examples, [Generation("", 0, True)] * 5)
    broken = [dict(examples[0]), {"messages": examples[1]["messages"]}]
    with pytest.raises(ValueError, match="example 1 has no 'task' field"):
        build_preference_pairs(broken, [Generation("no", 1, True)] * 2)


def test_dpo_config_on_cpu_is_fp32_and_follows_the_run_config(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = get_preset("smoke")
    args = build_dpo_config(cfg, tmp_path, beta=0.2, learning_rate=1e-5, logging_steps=3)
    assert args.fp16 is False and args.bf16 is False, "TRL would default to bf16=True; a CPU trains in fp32"
    assert args.activation_checkpointing is False, "TRL defaults checkpointing on; the preset says off"
    assert args.beta == 0.2 and args.learning_rate == 1e-5
    assert args.max_length == cfg.data.max_length and args.max_steps == cfg.train.max_steps
    assert args.logging_steps == 3, "overrides win"
    with pytest.raises(ValueError, match="beta must be positive"):
        build_dpo_config(cfg, tmp_path, beta=0.0)


def test_hub_preferences_fail_in_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError) as info:
        load_hub_preferences(limit=10)
    message = str(info.value)
    assert "trl-lib/ultrafeedback_binarized" in message and "\n" not in message
    assert "build_preference_pairs" in message, "the error names the offline alternative"


def test_two_step_dpo_run_on_the_tiny_model(make_tiny_model, tokenizer, tmp_path):
    cfg = get_preset("smoke")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, per_device_train_batch_size=2))
    examples = make_task_examples(4, "train", seed=1, tasks=("add", "upper"))
    policy = make_tiny_model()
    generations = generate_on_policy(policy, tokenizer, examples, max_new_tokens=4, batch_size=4)
    pairs, report = build_preference_pairs(examples, generations)
    assert report["pairs"] == 4, f"a random tiny model is wrong on every task: {report}"

    result = train_dpo(cfg, policy, tokenizer, pairs, tmp_path, beta=0.1, learning_rate=1e-2, max_steps=2,
                       disable_tqdm=True)
    m = result.metrics
    assert m["steps"] == 2 and m["precision"] == "fp32"
    assert math.isfinite(m["final_loss"]) and math.isfinite(m["train_loss"]), m
    # LoRA's B starts at zero, so at step 1 the policy *is* the reference: the DPO loss is
    # -log sigmoid(0) = log 2 exactly. Anything else means the reference is not the start model.
    assert m["first_loss"] == pytest.approx(math.log(2), abs=1e-3), result.log_history
    assert m["trainable_params"] < m["total_params"]

    adapter = result.adapter_dir
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == cfg.lora.r and sorted(config["target_modules"]) == m["lora_targets"]
    # The saved adapter is trained: it changes the base model's logits.
    from peft import PeftModel

    probe = torch.tensor([tokenizer("What is 2 + 2?")["input_ids"]])
    base = make_tiny_model().eval()
    with torch.no_grad():
        before = base(input_ids=probe).logits
        after = PeftModel.from_pretrained(base, str(adapter)).eval()(input_ids=probe).logits
    assert (after - before).abs().max().item() > 0, "the DPO adapter did not change the model"


def test_dpo_on_an_sft_adapter_names_the_merged_policy_as_its_base(make_tiny_model, tokenizer, tmp_path):
    from peft import AutoPeftModelForCausalLM, get_peft_model

    from sftkit.lora import build_lora_config

    cfg = get_preset("smoke")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, per_device_train_batch_size=2))
    sft = make_tiny_model()
    sft = get_peft_model(sft, build_lora_config(sft, r=2, alpha=4, dropout=0.0))
    with torch.no_grad():  # a non-trivial "SFT" adapter, so merging changes the weights
        for name, parameter in sft.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    examples = make_task_examples(4, "train", seed=1, tasks=("add", "upper"))
    pairs, _ = build_preference_pairs(examples, generate_on_policy(sft, tokenizer, examples, max_new_tokens=4))
    probe = torch.tensor([tokenizer("What is 2 + 2?")["input_ids"]])
    result = train_dpo(cfg, sft, tokenizer, pairs, tmp_path, beta=0.1, learning_rate=1e-2, max_steps=2,
                       disable_tqdm=True)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "policy_base").resolve())
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(result.adapter_dir)).eval()
    with torch.no_grad():
        expected = result.model.eval()(input_ids=probe).logits
        got = reloaded(input_ids=probe).logits
    assert (got - expected).abs().max().item() < 1e-5, "the reloaded DPO model is not the trained one"
