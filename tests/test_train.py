"""Tests for sftkit.train, .measure, .adapters and .run_card: a real (tiny) LoRA SFT run, its measurements,
run card, adapter and resume.

One training run of the smoke preset (4 steps, checkpoint every 2) is shared by the module;
the resume test continues it from step 2 in a fresh model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerState

from sftkit.adapters import AdapterCheckError, verify_adapter
from sftkit.chat import IM_END, turn_token_ids
from sftkit.config import get_preset
from sftkit.lora import build_lora_config, describe_blocks, find_lora_targets, lora_parameter_count
from sftkit.masking import tokenize_dataset
from sftkit.measure import (
    CountingCollator,
    NonFiniteLossError,
    ThroughputCallback,
    peak_tflops,
    training_flops_per_token,
)
from sftkit.models import hardware_name
from sftkit.run_card import write_run_card
from sftkit.tasks import make_task_splits
from sftkit.train import (
    build_sft_config,
    sft_trainer_class,
    stage_end_steps,
    staged_order,
    train_lora,
    wants_fused_lm_head,
)


def smoke_config(learning_rate: float = 1e-2):
    cfg = get_preset("smoke")
    # A copy of the preset with a higher learning rate, so the adapter clearly moves the logits.
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=learning_rate))


@pytest.fixture(scope="module")
def data():
    cfg = get_preset("smoke")
    return make_task_splits(cfg.data.train_size, cfg.data.eval_size, seed=cfg.data.seed)


@pytest.fixture(scope="module")
def smoke_run(make_tiny_model, tokenizer, data, tmp_path_factory):
    cfg = smoke_config()
    out = tmp_path_factory.mktemp("smoke-run")
    result = train_lora(
        cfg, make_tiny_model(), tokenizer, data[0], out, save_strategy="steps", save_steps=2, disable_tqdm=True
    )
    return SimpleNamespace(cfg=cfg, result=result, out=out)


@pytest.fixture(scope="module")
def probe_ids(tokenizer, data):
    messages = data[1][0]["messages"]
    return torch.tensor([tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]])


def _losses_by_step(log_history):
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


# --------------------------------------------------------------------------- the run


def test_train_lora_runs_and_measures(smoke_run, make_tiny_model, tokenizer):
    m = smoke_run.result.metrics
    assert m["steps"] == smoke_run.cfg.train.max_steps == 4, m
    assert m["tokens_per_s"] > 0, m
    assert m["tokens"] > 0 and m["padded_tokens"] >= m["tokens"], m
    assert 0 < m["padding_efficiency"] <= 1, m
    assert m["padding_efficiency"] == pytest.approx(m["tokens"] / m["padded_tokens"], abs=1e-4)
    assert isinstance(m["hardware"], str) and m["hardware"] == hardware_name(), m["hardware"]
    assert m["peak_rss_mb"] > 0, m
    assert m["precision"] == "fp32", "a CPU trains in fp32"
    if not torch.cuda.is_available():
        assert m["loss"] == "head on labelled positions", "a CPU takes the loss from the model, not TRL's fused head"
    if not torch.cuda.is_available():
        # MFU on a CPU: against the fp32 matmul peak measured in the same run, with the method recorded.
        assert m["cpu_matmul_gflops"]["fp32"] > 0 and "best of" in m["mfu_peak"], m
        expected = m["tokens_per_s"] * m["flops_per_token"] / (m["cpu_matmul_gflops"]["fp32"] * 1e9)
        assert m["mfu"] == pytest.approx(expected, rel=0.01, abs=2e-4) and m["mfu"] > 0, m
        assert 0 < m["labelled_fraction"] < 1, "assistant-only labels: the head runs at a minority of positions"
    assert math.isfinite(m["final_loss"]) and math.isfinite(m["train_loss"]), m
    targets = find_lora_targets(make_tiny_model(), "all-linear")
    assert m["lora_targets"] == targets
    assert m["lora_blocks"] == f"all {make_tiny_model().config.num_hidden_layers}", m["lora_blocks"]
    # LoRA's matrices plus the two turn-token rows of the tied embedding (peft's trainable tokens).
    hidden = make_tiny_model().config.hidden_size
    assert m["trainable_token_ids"] == sorted(turn_token_ids(tokenizer)), m["trainable_token_ids"]
    assert m["trainable_params"] == (lora_parameter_count(make_tiny_model(), targets, smoke_run.cfg.lora.r)
                                     + 2 * hidden), m
    assert m["trainable_params"] < m["total_params"]
    report = smoke_run.result.tokenize_report
    assert report["rows"] == smoke_run.cfg.data.train_size and report["kept"] > 0, report


def test_training_logs_throughput_every_step(smoke_run):
    logged = [entry for entry in smoke_run.result.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4], logged
    # ThroughputCallback "logs tokens/s, padding efficiency and MFU": they must reach the
    # run's log history (what TrainResult returns and the loss plots read), not only a dict
    # that the Trainer has already copied.
    for entry in logged:
        assert "tokens_per_s" in entry and "padding_efficiency" in entry, f"throughput not logged: {entry}"
        assert entry["tokens_per_s"] > 0 and 0 < entry["padding_efficiency"] <= 1, entry


def test_write_run_card(smoke_run):
    json_path, md_path = write_run_card(smoke_run.cfg, smoke_run.result, smoke_run.out)
    assert json_path == smoke_run.out / "run.json" and md_path == smoke_run.out / "run.md"
    card = json.loads(json_path.read_text())
    assert set(card) == {"config", "versions", "train", "tokenization", "adapter_dir"}, set(card)
    assert card["config"]["preset"] == "smoke"
    assert card["config"]["train"]["learning_rate"] == smoke_run.cfg.train.learning_rate
    for key in ("tokens_per_s", "padding_efficiency", "hardware", "peak_rss_mb", "steps", "final_loss"):
        assert card["train"][key] == smoke_run.result.metrics[key], key
    assert {"torch", "transformers", "trl", "peft"} <= set(card["versions"])
    assert Path(card["adapter_dir"]) == smoke_run.result.adapter_dir
    assert card["train"]["mfu"] == smoke_run.result.metrics["mfu"] is not None
    md = md_path.read_text()
    m = smoke_run.result.metrics
    assert md.startswith("# Run card: smoke")
    for row in (
        f"| hardware | {m['hardware']} |",
        f"| steps | {m['steps']} |",
        f"| tokens/s (non-pad) | {m['tokens_per_s']} |",
        f"| padding efficiency | {m['padding_efficiency']} |",
        f"| MFU | {m['mfu']} |",
        f"| MFU against | {m['mfu_peak']} |",
        f"| peak memory (MB) | {m['peak_rss_mb']} |",
    ):
        assert row in md, f"missing {row!r} in run.md"


def test_saved_adapter_has_config_and_tokenizer(smoke_run):
    adapter_dir = smoke_run.result.adapter_dir
    assert adapter_dir == smoke_run.out / "adapter"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == smoke_run.cfg.lora.r and config["lora_alpha"] == smoke_run.cfg.lora.alpha
    assert sorted(config["target_modules"]) == smoke_run.result.metrics["lora_targets"]
    base = Path(config["base_model_name_or_path"])
    assert (base / "config.json").is_file(), f"the base model {base} must load offline"
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert (adapter_dir / "tokenizer.json").is_file() and (adapter_dir / "tokenizer_config.json").is_file()
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(adapter_dir)
    assert saved.eos_token == IM_END and saved.pad_token_id != saved.eos_token_id
    assert "generation" in saved.chat_template, "the training template must travel with the adapter"


def test_verify_adapter_passes_on_the_trained_model(smoke_run, make_tiny_model, probe_ids):
    diffs = verify_adapter(smoke_run.result.model, make_tiny_model(), smoke_run.result.adapter_dir, probe_ids)
    assert diffs["reload"] == 0, diffs
    assert diffs["merge"] <= 1e-5, diffs
    assert diffs["vs_base"] > 1e-4, diffs


def test_verify_adapter_rejects_an_untrained_adapter(make_tiny_model, tmp_path, probe_ids):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        make_tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    peft_model.save_pretrained(tmp_path / "untrained")
    with pytest.raises(AdapterCheckError, match="does not change the model"):
        verify_adapter(peft_model, make_tiny_model(), tmp_path / "untrained", probe_ids)


def test_sft_lowers_the_held_out_assistant_nll(make_tiny_model, tokenizer, data, tmp_path):
    # Four steps of the smoke preset at lr 5e-2 (the shared run's 1e-2 moves the tiny model's NLL by
    # only 0.01 nat): the held-out conversations' assistant-token NLL falls from ~10.79 by ~0.05 nat,
    # on every row. A step that does not train (learning rate 0, labels that reach no loss, the
    # untrained model returned) leaves it where it was to float rounding (~1e-6).
    from sftkit.metrics import assistant_perplexity

    held_out, _ = tokenize_dataset(data[1], tokenizer, get_preset("smoke").data.max_length)
    rows = [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in held_out]
    before = assistant_perplexity(make_tiny_model(), rows, tokenizer.pad_token_id)
    result = train_lora(smoke_config(learning_rate=5e-2), make_tiny_model(), tokenizer, data[0], tmp_path,
                        disable_tqdm=True)
    after = assistant_perplexity(result.model, rows, tokenizer.pad_token_id)
    assert after["tokens"] == before["tokens"] and len(rows) == len(data[1])
    assert before["nll"] - after["nll"] > 0.025, (before["nll"], after["nll"])
    assert all(a < b for a, b in zip(after["row_nll"], before["row_nll"])), (before["row_nll"], after["row_nll"])


def test_train_resume_continues_from_the_newest_checkpoint_as_if_never_interrupted(smoke_run, make_tiny_model,
                                                                                   tokenizer, data, tmp_path):
    """A Colab runtime can disconnect mid-run: `--set train.resume=true` continues from the newest checkpoint
    in <output_dir>/checkpoints (optimizer, scheduler and RNG states) and reproduces the uninterrupted run."""
    saved = sorted(p.name for p in (smoke_run.out / "checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-2", "checkpoint-4"], saved  # every save_steps, the last two kept
    # A run cut off after step 2: only its first checkpoint was written.
    shutil.copytree(smoke_run.out / "checkpoints" / "checkpoint-2", tmp_path / "checkpoints" / "checkpoint-2")
    cfg = dataclasses.replace(smoke_run.cfg, train=dataclasses.replace(smoke_run.cfg.train, resume=True))
    resumed = train_lora(cfg, make_tiny_model(), tokenizer, data[0], tmp_path, save_strategy="steps", save_steps=2,
                         disable_tqdm=True)
    assert resumed.metrics["steps"] == 4
    full = _losses_by_step(smoke_run.result.log_history)
    again = _losses_by_step(resumed.log_history)
    assert sorted(again) == [1, 2, 3, 4] and full[3] != full[1], "losses should move at lr 1e-2"
    # Steps 1-2 come back from the checkpoint's trainer state (not trained again); 3-4 are trained as before.
    assert all(again[step] == full[step] for step in (1, 2))
    for step in (3, 4):
        assert again[step] == pytest.approx(full[step], abs=1e-4), (
            f"step {step}: resumed loss {again[step]} vs uninterrupted {full[step]}"
        )
    assert resumed.metrics["tokens"] < smoke_run.result.metrics["tokens"]  # only steps 3-4 were trained


# --------------------------------------------------------------------------- measurement helpers


def test_counting_collator_counts_real_and_padded_tokens():
    def pad(examples):
        width = max(len(e["input_ids"]) for e in examples)
        return {"input_ids": torch.zeros(len(examples), width, dtype=torch.long)}

    counter = CountingCollator(pad)
    assert math.isnan(counter.padding_efficiency)
    counter([{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2, 3, 4, 5]}])
    counter([{"input_ids": [1, 2]}, {"input_ids": [1, 2]}])
    assert (counter.real_tokens, counter.padded_tokens) == (12, 14)
    assert counter.padding_efficiency == pytest.approx(12 / 14)


@pytest.mark.parametrize("logs", [{"loss": float("nan")}, {"loss": float("inf")},
                                  {"loss": 1.0, "grad_norm": float("nan")}])
def test_throughput_callback_stops_on_non_finite_values(logs):
    callback = ThroughputCallback(CountingCollator(lambda e: e), 6.0, "CPU: test")
    with pytest.raises(NonFiniteLossError, match="step 7"):
        callback.on_log(None, TrainerState(global_step=7), None, logs=logs)


def test_throughput_callback_adds_rates_to_logs():
    counter = CountingCollator(lambda e: e)
    counter.real_tokens, counter.padded_tokens = 800, 1000
    callback = ThroughputCallback(counter, 6.0e6, "Tesla T4")
    callback.on_train_begin(None, None, None)
    logs = {"loss": 2.5}
    # Trainer appends a copy of the logs to the history before the callbacks run.
    state = TrainerState(global_step=3, log_history=[{"loss": 2.5, "step": 3}])
    callback.on_log(None, state, None, logs=logs)
    assert logs["tokens_per_s"] > 0 and logs["padding_efficiency"] == 0.8, logs
    assert "mfu" in logs and logs["mfu"] >= 0
    assert state.log_history == [{"loss": 2.5, "step": 3, "tokens_per_s": logs["tokens_per_s"],
                                  "padding_efficiency": 0.8, "mfu": logs["mfu"]}], "the history entry is completed"


def test_reset_peak_memory_measures_from_the_reset():
    """In a fresh process: what earlier tests left in this one (freed but still mapped memory) would
    decide where the peak sits, not the buffer."""
    script = """
import json
from sftkit.measure import peak_memory_mb, reset_peak_memory
buffer = bytearray(300 * 2**20)
buffer[:: 4096] = b"x" * len(buffer[:: 4096])  # touch every page so it is resident
high = peak_memory_mb()["peak_rss_mb"]
del buffer
reset = reset_peak_memory()
print(json.dumps({"high": high, "reset": reset, "after": peak_memory_mb()["peak_rss_mb"]}))
"""
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if not result["reset"]:
        pytest.skip("this system cannot reset the peak RSS (no writable /proc/self/clear_refs)")
    assert result["after"] < result["high"] - 200, f"peak RSS {result['after']:.0f} MB after the reset, " \
                                                   f"{result['high']:.0f} MB before"


def test_peak_tflops():
    assert peak_tflops("Tesla T4") == 65
    assert peak_tflops("NVIDIA A100-SXM4-40GB") == 312, "the longest match (A100, not A10) wins"
    assert peak_tflops("NVIDIA A10G") == 125
    assert peak_tflops("NVIDIA L40S") == 362
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert peak_tflops("NVIDIA H100 PCIe") == 756, "the PCIe card's own peak, not the SXM's"
    assert peak_tflops("NVIDIA H200") == 989 and peak_tflops("NVIDIA L4") == 121
    assert peak_tflops("NVIDIA GeForce RTX 4090") is None
    assert peak_tflops("CPU: Intel(R) Xeon(R) CPU @ 2.20GHz (2 cores)") is None
    assert peak_tflops("CPU: AMD EPYC 7B13 (16 cores)") is None


def test_peak_tflops_is_none_for_this_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peak_tflops(hardware_name()) is None


@pytest.mark.parametrize(
    "cpu",
    [
        "CPU: AMD A10-7850K Radeon R7, 12 Compute Cores 4C+8G (4 cores)",
        "CPU: AMD A10-9700 RADEON R7, 10 COMPUTE CORES 4C+6G (4 cores)",
    ],
)
def test_peak_tflops_never_matches_a_cpu_name(cpu):
    # hardware_name() reports CPUs as "CPU: <model>". A CPU model containing a GPU key
    # (AMD's A10 APUs contain "A10") must not be given a GPU's peak: MFU would be invented.
    assert peak_tflops(cpu) is None, f"{cpu!r} was matched to a GPU peak"


def test_training_flops_per_token_of_the_smoke_run(smoke_run, make_tiny_model):
    # The run's count is the trained model's (tests/test_measure.py checks the count itself) at
    # the labelled fraction and context its batches had, the head only at labelled positions.
    m = smoke_run.result.metrics
    assert m["mean_context"] > 1 and 0 < m["labelled_fraction"] < 1, m
    expected = training_flops_per_token(smoke_run.result.model, m["labelled_fraction"], m["mean_context"])
    assert m["flops_per_token"] == pytest.approx(expected, rel=1e-3), m
    assert m["flops_per_token"] < training_flops_per_token(smoke_run.result.model, 1.0, m["mean_context"])


# --------------------------------------------------------------------------- SFTConfig


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_describe_blocks():
    assert describe_blocks(None, 30) == "all 30"
    assert describe_blocks(list(range(15, 30)), 30) == "top 15 of 30 (15-29)"


def test_wants_fused_lm_head(no_cuda):
    assert wants_fused_lm_head(None) is False, "TRL's fused head has no Triton kernel on a CPU"
    assert wants_fused_lm_head(True) is True and wants_fused_lm_head(False) is False
    assert wants_fused_lm_head(None, "cpu") is False


def _loss_and_grads(fused: bool, make_tiny_model, tokenizer, rows, tmp_path, num_items_in_batch, labelled=False,
                    tokens=False):
    """One batch's loss and LoRA gradients through the trainer class `sft_trainer_class(fused, labelled)` picks."""
    cfg = get_preset("smoke")
    model = make_tiny_model()
    trainer = sft_trainer_class(fused, labelled)(
        model=model,
        args=build_sft_config(cfg, tmp_path / f"fused-{fused}-{labelled}", disable_tqdm=True),
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=build_lora_config(model, r=4, alpha=8, dropout=0.0, targets="all-linear",
                                      trainable_tokens=turn_token_ids(tokenizer) if tokens else None),
    )
    # LoRA's B starts at zero; give every adapter weight the same non-zero values in both runs
    # so the gradients of A and B both depend on the loss path.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sorted(trainer.model.named_parameters()):
            if param.requires_grad:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    batch = trainer.data_collator([rows[i] for i in range(len(rows))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items_in_batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("num_items_in_batch", [None, 40])
def test_model_loss_trainer_matches_trls_fused_head(make_tiny_model, tokenizer, data, tmp_path, num_items_in_batch):
    # The CPU path takes its loss from the model's forward instead of TRL's fused LM head: the
    # loss and every LoRA gradient must be the same, with and without a token count from the loop.
    rows, _ = tokenize_dataset(data[0].select(range(6)), tokenizer, get_preset("smoke").data.max_length)
    rows = rows.remove_columns("messages")
    assert sft_trainer_class(False) is not sft_trainer_class(True)
    fused_loss, fused_grads = _loss_and_grads(True, make_tiny_model, tokenizer, rows, tmp_path, num_items_in_batch)
    model_loss, model_grads = _loss_and_grads(False, make_tiny_model, tokenizer, rows, tmp_path, num_items_in_batch)
    assert torch.isfinite(fused_loss) and fused_loss > 0
    torch.testing.assert_close(model_loss, fused_loss, rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == model_grads.keys() and fused_grads
    for name in fused_grads:
        assert fused_grads[name].abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(model_grads[name], fused_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_build_sft_config_on_cpu(tmp_path, no_cuda):
    cfg = get_preset("smoke")
    args = build_sft_config(cfg, tmp_path, save_steps=7)
    assert args.fp16 is False and args.bf16 is False
    assert args.train_sampling_strategy == "group_by_length", "'group' batching sorts by length"
    assert args.max_length == cfg.data.max_length and args.max_steps == 4
    assert args.learning_rate == cfg.train.learning_rate
    assert args.assistant_only_loss is False, "labels come pre-built from sftkit.masking"
    assert args.save_steps == 7, "overrides are applied"
    assert args.packing is False
    cfg.train.warmup_ratio = 0.1
    args = build_sft_config(cfg, tmp_path)
    assert args.get_warmup_steps(100) == 10, "warmup_ratio must act as a ratio of the total steps"


def test_build_sft_config_batching_strategies(tmp_path, no_cuda):
    cfg = get_preset("smoke")
    cfg.train.batching = "pad"
    args = build_sft_config(cfg, tmp_path)
    assert args.train_sampling_strategy != "group_by_length" and args.packing is False
    cfg.train.batching = "pack"
    args = build_sft_config(cfg, tmp_path)
    assert args.packing is True and args.padding_free is True
    cfg.train.batching = "sorted"
    with pytest.raises(ValueError, match="batching must be one of"):
        build_sft_config(cfg, tmp_path)


# --------------------------------------------------------------------------- curriculum


def test_staged_order_keeps_stages_in_order_and_groups_lengths():
    stages = [1, 0, 1, 0, 1, 1, 0, 1, 0, 1] * 8
    lengths = [(7 * i) % 50 + 5 for i in range(len(stages))]
    order = staged_order(stages, lengths, batch_size=4, seed=0)
    assert sorted(order) == list(range(len(stages))), "every row exactly once"
    assert [stages[i] for i in order] == sorted(stages), "all of stage 0 before any of stage 1"
    # Grouped by length inside a stage (transformers sorts each "megabatch" of a shuffle, here
    # a quarter of a stage): less padding than a plain shuffle of the same stages.
    def padded(o):
        batches = [o[i:i + 4] for i in range(0, len(o), 4)]
        return sum(4 * max(lengths[j] for j in b) for b in batches)
    shuffled = staged_order(stages, lengths, batch_size=4, seed=0, group_by_length=False)
    assert [stages[i] for i in shuffled] == sorted(stages)
    assert padded(order) < padded(shuffled), (padded(order), padded(shuffled))
    assert order == staged_order(stages, lengths, batch_size=4, seed=0), "deterministic by seed"
    assert order != staged_order(stages, lengths, batch_size=4, seed=1)


def test_stage_end_steps_mark_the_step_with_each_stages_last_row():
    assert stage_end_steps({"0": 240, "1": 1300}, 8) == {"0": 30}
    # 12 rows at 8 per step: the stage's last rows share step 2 with the next stage's first.
    assert stage_end_steps({"0": 12, "1": 5, "2": 30}, 8) == {"0": 2, "1": 3}
    assert stage_end_steps({"0": 100}, 8) == {}, "one stage has no seam"


def test_train_lora_trains_a_curriculum_stage_first(make_tiny_model, tokenizer, tmp_path, monkeypatch):
    cfg = smoke_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3))  # one pass over 24 rows
    # The stage holds the *shortest* rows (upper case) and the mix the longest (sums, reversals):
    # a length-grouped shuffle would start with the longest, so only the staged order starts short.
    train, _ = make_task_splits(16, 4, seed=0, tasks=("add", "reverse"), curriculum={"upper": 8})
    seen = []
    count = CountingCollator.__call__

    def record(self, examples):  # the rows of every batch, in the order the trainer asks for them
        seen.append([tokenizer.decode(e["input_ids"]) for e in examples])
        return count(self, examples)

    monkeypatch.setattr(CountingCollator, "__call__", record)
    result = train_lora(cfg, make_tiny_model(), tokenizer, train, tmp_path, disable_tqdm=True)
    assert result.metrics["stages"] == {"0": 8, "1": 16}, result.metrics["stages"]
    assert result.metrics["stage_end_steps"] == {"0": 1}, result.metrics["stage_end_steps"]
    assert result.metrics["steps"] == 3 and len(seen) == 3, len(seen)
    def worked(text):  # a sum's or a reversal's working: a row of the mix
        return "Ones:" in text or "Backwards:" in text

    # Batch size 8: the first batch is the upper-case stage, whole; then only the mix.
    assert not any(worked(text) for text in seen[0]), seen[0]
    assert all(worked(text) for batch in seen[1:] for text in batch)
    card = json.loads(write_run_card(cfg, result, tmp_path)[0].read_text())
    assert card["train"]["stages"] == {"0": 8, "1": 16}
    assert "stage 0: 8, stage 1: 16" in (tmp_path / "run.md").read_text()


def test_a_curriculum_cannot_be_packed(make_tiny_model, tokenizer, tmp_path):
    cfg = smoke_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batching="pack"))
    train, _ = make_task_splits(8, 4, seed=0, curriculum={"add": 4})
    with pytest.raises(ValueError, match="packing|pack"):
        train_lora(cfg, make_tiny_model(), tokenizer, train, tmp_path, disable_tqdm=True)


@pytest.mark.parametrize("num_items_in_batch", [None, 40])
def test_labelled_head_loss_equals_the_full_head(make_tiny_model, tokenizer, data, tmp_path, num_items_in_batch):
    # Logits only where labels are set: the same loss and the same gradients (LoRA weights and
    # the trainable turn-token rows) as the model's own loss over every position.
    rows, _ = tokenize_dataset(data[0].select(range(6)), tokenizer, get_preset("smoke").data.max_length)
    rows = rows.remove_columns("messages")
    full_loss, full_grads = _loss_and_grads(False, make_tiny_model, tokenizer, rows, tmp_path, num_items_in_batch,
                                            tokens=True)
    part_loss, part_grads = _loss_and_grads(False, make_tiny_model, tokenizer, rows, tmp_path, num_items_in_batch,
                                            labelled=True, tokens=True)
    assert torch.isfinite(full_loss) and full_loss > 0
    torch.testing.assert_close(part_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert full_grads.keys() == part_grads.keys()
    assert any("trainable_tokens" in name for name in full_grads), sorted(full_grads)
    for name in full_grads:
        assert full_grads[name].abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(part_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)
