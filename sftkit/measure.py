"""Measurement of a training run: hardware peaks, tokens/s, MFU, peak memory, non-finite loss.

A run card's numbers must come from the run, with the hardware named, so the measuring
lives in one module every trainer shares (`sftkit.train.train_lora`, the DPO chapter, the
notebooks' full fine-tuning): the data-sheet peak of a card, the model FLOPs of a trained
token (LoRA costs about 4N, not 6N), a collator wrapper that counts real and padded tokens,
a callback that logs tokens/s, padding efficiency and MFU and stops on a NaN loss, and
per-run peak memory (GPU allocator and process RSS).
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

# Dense peak tensor throughput (TFLOP/s) for the precision each card trains in here.
# Sources: NVIDIA data sheets (T4: 65 fp16; A100: 312 bf16; H100 SXM: 989 bf16; L4: 121 bf16 ...).
PEAK_TFLOPS = {
    "T4": 65.0,
    "V100": 125.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L4": 121.0,
    "A100": 312.0,
    "L40S": 362.0,
    "H100": 989.0,
    "H200": 989.0,
}
# What a T4 sustains on real matmuls is far below the data-sheet peak (clocks drop under
# load at 70 W); we report MFU against this too, so T4 numbers are not misread.
T4_SUSTAINED_TFLOPS = 24.0


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def peak_tflops(device_name: str) -> float | None:
    """The data-sheet peak for a GPU name (longest matching key), None for CPUs/unknown cards."""
    if device_name.upper().startswith("CPU"):  # `hardware_name()`'s CPU format; "A10" is also an AMD APU
        return None
    matches = [key for key in PEAK_TFLOPS if key in device_name.upper()]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def training_flops_per_token(frozen: int, trainable: int) -> float:
    """Model FLOPs per trained token: forward 2N, backward through activations 2N, weight grads 2N_trainable.

    Full fine-tuning gives the familiar 6N; LoRA costs about 4N because frozen weights need
    no weight gradient. Attention-score FLOPs are left out (small at these lengths), and
    activation recomputation from gradient checkpointing is not counted (MFU convention).
    """
    return 4.0 * (frozen + trainable) + 2.0 * trainable


def model_flops_utilisation(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """MFU: the model FLOPs a run did per second over a peak of `peak` TFLOP/s, rounded to 4 places."""
    return round(tokens_per_s * flops_per_token / (peak * 1e12), 4)


def reset_peak_memory() -> bool:
    """Start a new peak-memory measurement; True if the CPU peak (peak RSS) was reset too.

    CUDA's allocator peak resets with torch. A process's peak RSS (``ru_maxrss``, VmHWM) is
    normally a high-water mark for its whole life, so several trainings in one process (a
    notebook, a grid of trials) would each report the largest so far. On Linux, writing "5"
    to /proc/self/clear_refs resets it to the current RSS, so the next reading is the peak
    of what ran since. Elsewhere the RSS peak stays cumulative and this returns False.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_mb() -> dict[str, float]:
    """Peak GPU memory allocated by torch (if CUDA) and the process's peak RSS, in MB.

    Both are peaks since the last `reset_peak_memory` (the RSS one only where it could reset).
    """
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class CountingCollator:
    """Wraps a collator and counts real (non-pad) and padded tokens of every batch it builds."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        self.real_tokens += sum(len(example["input_ids"]) for example in examples)
        self.padded_tokens += batch["input_ids"].numel()
        return batch

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else float("nan")


class ThroughputCallback(TrainerCallback):
    """Logs tokens/s (non-pad), padding efficiency and MFU; stops on a non-finite loss."""

    def __init__(self, counter: CountingCollator, flops_per_token: float, device_name: str):
        self.counter = counter
        self.flops_per_token = flops_per_token
        self.peak = peak_tflops(device_name)
        self.start = None
        self.peak_rss_is_per_run = False

    def on_train_begin(self, args, state, control, **kwargs):
        # The peaks a run card reports are those of this training (the loaded model included).
        self.peak_rss_is_per_run = reset_peak_memory()
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        for key in ("loss", "grad_norm"):
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"{key} became {value} at step {state.global_step}. With fp16 this is usually an overflow: "
                    "lower the learning rate, keep max_grad_norm at 1.0, or train in fp32/bf16."
                )
        if self.start is None or "loss" not in logs:
            return
        elapsed = time.perf_counter() - self.start
        tokens_per_s = self.counter.real_tokens / elapsed if elapsed > 0 else 0.0
        logs["tokens_per_s"] = round(tokens_per_s, 1)
        logs["padding_efficiency"] = round(self.counter.padding_efficiency, 4)
        if self.peak:
            logs["mfu"] = model_flops_utilisation(tokens_per_s, self.flops_per_token, self.peak)
        # Trainer appended a copy of `logs` to the history before calling us: complete that entry.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update({k: logs[k] for k in ("tokens_per_s", "padding_efficiency", "mfu") if k in logs})
