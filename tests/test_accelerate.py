"""`sftkit train` under `accelerate launch` with two CPU processes (data-parallel LoRA SFT)."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_train_under_accelerate_launch_with_two_processes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SFTKIT_PRESET": "smoke", "OMP_NUM_THREADS": "1"}
    command = [
        # --multi_gpu selects accelerate's torchrun launcher; without CUDA, sftkit's SFTConfig
        # sets use_cpu, so the two processes form a gloo (MULTI_CPU) data-parallel group.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "sftkit.cli", "train", "--preset", "smoke", "--out", str(out),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    card = json.loads((out / "run.json").read_text())
    assert card["train"]["processes"] == 2, card["train"]
    # Both processes' batches are counted: more real tokens than one process alone can see in these
    # steps, which is at most (steps + the one batch its dataloader fetches ahead) x rows per step x
    # max_length (3,840 here; a one-process smoke run counts 2,771 tokens, the two processes together 5,889).
    train, config = card["train"], card["config"]
    rows_per_step = config["train"]["per_device_train_batch_size"] * config["train"]["gradient_accumulation_steps"]
    one_process_at_most = (train["steps"] + 1) * rows_per_step * config["data"]["max_length"]
    assert train["tokens"] > one_process_at_most, (train["tokens"], one_process_at_most)
    assert train["padding_efficiency"] == round(train["tokens"] / train["padded_tokens"], 4)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert card["train"]["adapter_check"]["vs_base"] > 0
