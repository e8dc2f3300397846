"""Smoke runs of the benchmarks that print performance figures, so they cannot rot unnoticed.

Each runs as a user runs it (a subprocess, from the repository root) in its ``--smoke`` mode:
a tiny random model for two steps on the CPU. The figures they print are not checked (they
are timings of a tiny model); the shape of the output is: every table row, and the last line
that the lead's scripts parse.

The peer comparison's expert peer is also checked without training (fast): its `SFTConfig` and
`LoraConfig` equal sftkit's where both must do the same work, and the labels TRL builds from
its configuration equal `sftkit.masking`'s on the same rows -- the proof that both do one job.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_peer_comparison_smoke():
    out = run_benchmark("peer_comparison.py", "--smoke")
    lines = [line for line in out.splitlines() if line.strip()]
    assert re.fullmatch(r"speedup_vs_peer=\d+\.\d{2} speedup_vs_expert=\d+\.\d{2} mfu_cpu=(\d+\.\d{3}|n/a)",
                        lines[-1]), lines[-1]
    assert "fp32 matmul peak:" in out and "best of 2" in out, out
    assert re.search(r"^\s+default peer\s+sftkit preset\s+expert peer\s+sftkit, no rows$", out, re.M), out
    for row in ("tokens/s (non-pad)", "s per step", "peak RSS (MB)", "held-out NLL after",
                "s to the pair's common NLL", "s to the other's final NLL", "last logged grad norm"):
        assert re.search(rf"^{re.escape(row)}.*\d", out, re.M), f"row {row!r} missing:\n{out}"
    tokens_per_s = re.search(r"^tokens/s \(non-pad\)" + r"\s+([\d.]+)" * 4 + "$", out, re.M)
    assert tokens_per_s and all(float(x) > 0 for x in tokens_per_s.groups()), out
    # Every training row's labels from TRL's assistant_only_loss equal sftkit's; the limits are said.
    labels = re.search(r"^labels = sftkit's\s.*?(\d+)/(\d+) rows", out, re.M)
    assert labels and labels.group(1) == labels.group(2), out
    assert re.search(r"^grad\. checkpointing\s+on\s+off\s+off\s+off$", out, re.M), out
    assert re.search(r"^turn-token rows\s+frozen\s+trained\s+frozen\s+frozen$", out, re.M), out
    for limit in ("turn-token rows: off on BOTH", "padding_free", "Liger", "LM head: TRL's fused head"):
        assert limit in out, f"{limit!r} not explained:\n{out}"


@pytest.mark.slow
def test_gpu_card_smoke():
    out = run_benchmark("gpu_card.py", "--smoke")
    assert "SmolLM2-360M architecture" in out, out
    for variant in ("preset", "model-forward loss", "TRL fused head"):
        row = re.search(rf"^{re.escape(variant)}.*?\s([\d.]+)\s+[\d.]+\s+\S+\s+n/a \(CPU\)\s+[\d.]+$", out, re.M)
        assert row and float(row.group(1)) > 0, f"variant {variant!r}:\n{out}"
    assert re.search(r"^Liger kernels.*(skipped|\d)", out, re.M), out
    assert re.search(r"^padding-free \(FlashAttention 2\)\s+skipped: ", out, re.M), out
    assert re.search(r"batched greedy generation .* [\d.]+ tokens/s", out), out
    assert "T4 fit: not measured (no GPU)" in out, out


# --------------------------------------------------------------------------- the expert peer, without training


@pytest.fixture(scope="module")
def peer():
    return load_script("peer_comparison", folder="benchmarks")


def _blocks_model(make_tiny_model, blocks: int):
    """The tiny model's architecture with `blocks` transformer blocks (random weights): the cpu-demo's 18."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(make_tiny_model().config)
    config.num_hidden_layers = blocks
    return AutoModelForCausalLM.from_config(config)


def test_expert_peer_configuration_does_sftkits_work(peer, make_tiny_model, tokenizer, tmp_path):
    from sftkit.config import get_preset
    from sftkit.train import run_lora_config, build_sft_config

    # The preset as the benchmark sets it up: fp32 on both sides whatever `auto` picks on this CPU.
    cfg = peer.equal_work_config(peer.config_for("gemma3-270m-base", argparse.Namespace(smoke=False, steps=10,
                                                                                         batch_size=8)))
    assert get_preset("cpu-demo").train.cpu_amp == "auto" and cfg.train.cpu_amp == "off"
    model = _blocks_model(make_tiny_model, 18)
    args, lora = peer.expert_peer_config(cfg, model, tmp_path)
    ours, our_lora = build_sft_config(cfg, tmp_path), run_lora_config(cfg, model, tokenizer)

    # The preset's blocks, targets and LoRA shape, no token rows (TRL's fused head cannot train them).
    assert lora.layers_to_transform == list(range(9, 18)) == our_lora.layers_to_transform
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert lora.target_modules == our_lora.target_modules
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 32, 0.0)
    assert lora.trainable_token_indices is None and our_lora.trainable_token_indices is None
    # TRL builds assistant-only labels itself; sftkit passes them pre-built (equal: test below).
    assert args.assistant_only_loss is True and ours.assistant_only_loss is False
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert args.train_sampling_strategy == "group_by_length" == ours.train_sampling_strategy
    assert (args.learning_rate, str(args.lr_scheduler_type.value), args.warmup_steps) == (1e-3, "cosine", 0.05)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.max_length) == (8, 1, 256)
    assert (args.bf16, args.fp16, args.padding_free, args.packing, args.use_liger_kernel) == (False,) * 5
    for name in peer.SHARED_SFT_FIELDS:
        assert getattr(args, name) == getattr(ours, name), name
    peer.check_expert_matches_sftkit(cfg, model, tokenizer, args, lora)  # the run-time check agrees

    # A drift the run-time check must catch.
    args.learning_rate = 2e-4
    with pytest.raises(ValueError, match="learning_rate"):
        peer.check_expert_matches_sftkit(cfg, model, tokenizer, args, lora)


def test_expert_peer_refuses_turn_token_rows(peer, tiny_model, tmp_path):
    from sftkit.config import get_preset

    cfg = get_preset("smoke")
    assert cfg.lora.train_turn_tokens, "the presets train the turn-token rows"
    with pytest.raises(ValueError, match="turn-token rows"):
        peer.expert_peer_config(cfg, tiny_model, tmp_path)


def _as_gemma(tokenizer):
    from sftkit.chat import prepare_tokenizer

    gemma = copy.deepcopy(tokenizer)
    gemma.chat_template = None
    return prepare_tokenizer(gemma, turn_format="gemma")


@pytest.mark.parametrize("turn_format", ["chatml", "gemma"])
def test_expert_peer_labels_equal_sftkit_masking(peer, make_tiny_model, tokenizer, tmp_path, turn_format):
    # The expert's SFTConfig makes TRL tokenize the conversations itself (assistant_only_loss with
    # the template's generation markers); sftkit tokenizes them with sftkit.masking. Same rows,
    # same max_length (short here, so truncation and the drop of a reply-less row are compared too).
    from datasets import Dataset
    from trl import SFTTrainer

    from sftkit.config import get_preset
    from sftkit.masking import tokenize_dataset

    tok = copy.deepcopy(tokenizer) if turn_format == "chatml" else _as_gemma(tokenizer)
    cfg = peer.equal_work_config(get_preset("smoke"))
    cfg.data.max_length = 40
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
         {"role": "assistant", "content": "6"}],
        [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " ".join(["one", "two"] * 20)}],
        [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "late reply"}],
    ]
    rows = Dataset.from_list([{"messages": m} for m in conversations])
    model = make_tiny_model()
    args, lora = peer.expert_peer_config(cfg, model, tmp_path)
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok, peft_config=lora)
    ours, report = tokenize_dataset(rows, tok, cfg.data.max_length)
    assert report["kept"] == 3, report  # the last row's reply is cut off
    theirs = list(trainer.train_dataset)
    assert peer.labels_agree(theirs, list(ours)) == (3, 3)
    for mine, trl in zip(ours, theirs):
        assert mine["labels"] == trl["labels"] and mine["input_ids"] == trl["input_ids"]
    assert peer.labels_agree(theirs[:2], list(ours)) == (0, 3), "a missing row is a disagreement"


def test_trl_fused_head_still_cannot_train_token_rows(make_tiny_model, tokenizer, tmp_path):
    # The reason the expert comparison turns the turn-token rows off on both sides. If TRL learns
    # to train them, this fails: give the expert peer the rows back (peer_comparison.cpu_limits).
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from sftkit.chat import turn_token_ids

    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=1, bf16=False,
                     use_cpu=True, report_to="none", save_strategy="no", activation_checkpointing=False,
                     assistant_only_loss=True, disable_tqdm=True)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM",
                      trainable_token_indices=turn_token_ids(tokenizer))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rows = Dataset.from_list([{"messages": messages}])
    trainer = SFTTrainer(model=make_tiny_model(), args=args, train_dataset=rows,
                         processing_class=copy.deepcopy(tokenizer), peft_config=lora)
    with pytest.raises(AttributeError, match="bias"):
        trainer.train()


@pytest.mark.parametrize("mfus, mfu_text", [([0.4, 0.5], "0.450"), ([], "n/a")])
def test_peer_comparison_final_line_parses(peer, mfus, mfu_text):
    line = peer.final_line([3.9, 4.1], [1.5, 1.8], mfus)
    assert line == f"speedup_vs_peer=4.00 speedup_vs_expert=1.65 mfu_cpu={mfu_text}"
    match = peer.FINAL_LINE.fullmatch(line)
    assert match and float(match.group(1)) == 4.0 and float(match.group(2)) == 1.65


def test_step_profile_splits_each_traced_step_into_its_parts():
    # A real torch.profiler trace of steps shaped like a training step: the blocks' and head's
    # ranges (the names sftkit.train.labelled_head_loss gives them), a backward, an optimizer step
    # and some time in Python; each part lands where the table says, and nothing is counted twice.
    import time

    import torch

    profile = load_script("step_profile", folder="benchmarks")
    weight = torch.randn(256, 256, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                      schedule=torch.profiler.schedule(wait=0, warmup=1, active=2, repeat=1))
    with profiler:
        for _ in range(4):
            with torch.profiler.record_function("sftkit::blocks_forward"):
                hidden = torch.randn(128, 256) @ weight
            with torch.profiler.record_function("sftkit::head_loss"):
                loss = (hidden @ torch.randn(256, 512)).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            time.sleep(0.02)  # the trainer's Python between torch calls
            profiler.step()
    steps, matmul = profile.step_breakdown(list(profiler.events()))
    assert len(steps) == 2, steps
    for seconds, matmul_seconds in zip(steps, matmul):
        for part in ("embedding + blocks, forward", "LM head loss and its gradient", "backward", "optimizer"):
            assert seconds.get(part, 0.0) > 0, (part, seconds)
        assert seconds["outside torch ops"] >= 0.015, seconds
        assert abs(sum(seconds[p] for p in profile.PARTS if p in seconds) - seconds["total"]) < 1e-6, seconds
        assert 0 < matmul_seconds < seconds["total"], (matmul_seconds, seconds)


@pytest.mark.slow
def test_step_profile_smoke_run_prints_its_table_and_last_line(tmp_path):
    out = run_benchmark("step_profile.py", "--preset", "smoke", "--steps", "1", "--out", str(tmp_path / "profile.md"))
    assert re.search(r"^step_s=\d+\.\d{3} matmul_share=0\.\d{3} precision=fp32$", out.splitlines()[-1], re.M), out
    table = (tmp_path / "profile.md").read_text()
    for part in ("data", "embedding + blocks, forward", "LM head loss and its gradient", "backward", "optimizer",
                 "outside torch ops", "step (wall)"):
        assert re.search(rf"^\| {re.escape(part)} \| \d+\.\d{{3}} \| \d+\.\d%", table, re.M), (part, table)
    # The operators table: twelve rows of (operator, seconds, share, calls), the matmul among them.
    operators = re.findall(r"^\| `([^`]+)` \| \d+\.\d{3} \| \d+\.\d% \| \d+ \|$", table, re.M)
    assert len(operators) == 12 and "aten::mm" in operators, table
    assert "Made by `python benchmarks/step_profile.py --preset smoke" in table


@pytest.mark.slow
def test_generation_speed_prints_each_repeat_and_the_median():
    # The tiny random model with the real tokenizer: the output's shape, not its speed.
    out = run_benchmark("generation_speed.py", "--model", "tiny-smollm2", "--n", "3", "--batch-size", "3",
                        "--max-new-tokens", "3", "--repeats", "2")
    lines = out.strip().splitlines()
    repeats = [line for line in lines if line.startswith("repeat ")]
    assert len(repeats) == 2, out
    for line in repeats:
        assert re.search(r"one at a time \d+\.\d\d s .* batch of 3 \d+\.\d\d s .*: \d+\.\d\dx, "
                         r"identical outputs [0-3]/3$", line), line
    speedups = sorted(float(re.search(r"(\d+\.\d\d)x,", line).group(1)) for line in repeats)
    last = re.fullmatch(r"speedup=(\d+\.\d\d) identical=([0-3])/3", lines[-1])
    assert last, lines[-1]
    # The median of two repeats is their mean (to the printed rounding).
    assert float(last.group(1)) == pytest.approx(sum(speedups) / 2, abs=0.011), out
