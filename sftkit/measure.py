"""Measurement of a training run: hardware peaks, tokens/s, MFU, peak memory, non-finite loss.

A run card's numbers must come from the run, with the hardware named, so the measuring
lives in one module every trainer shares (`sftkit.train.train_lora`, the DPO chapter, the
notebooks' full fine-tuning): the data-sheet peak of a card, or on a CPU the matrix-multiply
peak measured in the same run (`measure_matmul_peak`: a CPU has no data sheet that says what
two shared cores sustain); the model FLOPs of a trained token counted from the model's shapes
and what it actually trains (`training_flops_per_token`); a collator wrapper that counts real,
padded and labelled tokens; a callback that logs tokens/s, padding efficiency and MFU and
stops on a NaN loss; and per-run peak memory (GPU allocator and process RSS).
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from transformers import TrainerCallback

from .lm_head import head_tile

# Dense peak tensor throughput (TFLOP/s) for the precision each card trains in here (fp16 below
# compute capability 8, bf16 from 8), without 2:4 sparsity. Sources: NVIDIA data sheets --
# T4: 65 fp16 (Tesla T4 data sheet); V100: 125 fp16 (V100 SXM2 data sheet); A10/A10G: 125 bf16
# (A10 data sheet); L4: 121 bf16 (L4 data sheet: "242.5 with sparsity"); A100: 312 bf16 (A100
# data sheet, SXM and PCIe); L40S: 362 bf16 (L40S data sheet: 733 with sparsity); H100 SXM: 989
# bf16 and H100 PCIe: 756 bf16 (H100 data sheet: 1,979 / 1,513 with sparsity); H200: 989 bf16
# (H200 data sheet, SXM; the same tensor cores as the H100 SXM with more memory).
PEAK_TFLOPS = {
    "T4": 65.0,
    "V100": 125.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L4": 121.0,
    "A100": 312.0,
    "L40S": 362.0,
    "H100": 989.0,
    "H100 PCIE": 756.0,
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


def cpu_native_bf16(cpuinfo: str | None = None) -> list[str]:
    """The native bf16 matrix instructions this CPU lists in /proc/cpuinfo (avx512_bf16, amx_bf16), if any."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set(cpuinfo.split())
    return [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]


def model_matmul_shapes(model: nn.Module | None = None, tokens: int = 1024) -> list[tuple[int, int, int]]:
    """The (m, k, n) matrix products a training step of `model` spends its time in.

    (tokens x width) @ (width x MLP width), its transpose (the MLP's down projection),
    (tokens x width) @ (width x width), and the LM head as `head_loss_sum` runs it: the positions
    times one vocabulary tile of the head (`sftkit.lm_head.head_tile` columns), and the tile's
    softmax times its rows. Without a model: Gemma 3 270M's (width 640, MLP 2048, vocabulary
    262,144), the main job's.
    """
    hidden, intermediate, vocab = 640, 2048, 262_144
    if model is not None:
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = getattr(causal_lm.config, "text_config", None) or causal_lm.config
        hidden, vocab = config.hidden_size, config.vocab_size
        intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    tile = head_tile(tokens, vocab)
    return [(tokens, hidden, intermediate), (tokens, intermediate, hidden), (tokens, hidden, hidden),
            (tokens, hidden, tile), (tokens, tile, hidden)]


def measure_matmul_peak(shapes: list[tuple[int, int, int]], dtype: torch.dtype = torch.float32, repeats: int = 5,
                        device: str = "cpu") -> dict[str, Any]:
    """This machine's matrix-multiply throughput on the given (m, k, n) shapes, in GFLOP/s: best of `repeats`.

    A CPU has no data-sheet peak that holds for a shared 2-core slice of a server, so MFU on a
    CPU is measured against what torch's matmul reaches here, in the same process and with the
    same threads as the training, on the shapes the model multiplies (`model_matmul_shapes`).
    Each shape is run once to warm up, then `repeats` times; its rate is the fastest run
    (best-of-N, which discounts the moments another process took the cores), and the peak is
    the fastest shape. Under a second for Gemma 3 270M's shapes in fp32 on 2 EPYC cores.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    per_shape = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=generator, device=device).to(dtype)
        b = torch.randn(k, n, generator=generator, device=device).to(dtype)
        torch.matmul(a, b)  # warm-up: allocations, kernel selection
        best = math.inf
        for _ in range(repeats):
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            torch.matmul(a, b)
            if device != "cpu":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        per_shape[f"{m}x{k}x{n}"] = round(2.0 * m * k * n / best / 1e9, 1)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
    return {
        "gflops": max(per_shape.values()),
        "dtype": name,
        "per_shape_gflops": per_shape,
        "threads": torch.get_num_threads(),
        "method": f"torch.matmul {name}, shapes (m x k x n) {', '.join(per_shape)}; best of {repeats} timed runs "
                  f"per shape after one warm-up, peak = the fastest shape; {torch.get_num_threads()} threads",
    }


# The fastest peak measured in this process, per (precision, shapes). A CPU's peak does not fall
# between two trainings in one process (a notebook's trials), so a lower measurement later is a
# disturbed one, and an MFU against it would be too high (above 1, seen in a trial's live log).
_FASTEST_PEAKS: dict[tuple[str, tuple], dict[str, Any]] = {}


def cpu_matmul_peaks(model: nn.Module | None = None, repeats: int = 5, remember: bool = True) -> dict[str, Any]:
    """fp32 matmul peak on this CPU with `model`'s shapes, and bf16's where the CPU has native bf16.

    Returns ``{"fp32": measure_matmul_peak(...), "bf16": ... or None, "native_bf16": [flags]}``.
    bf16 is only measured where the CPU lists avx512_bf16 or amx_bf16: elsewhere torch emulates
    it and a bf16 "peak" would say nothing about the hardware. With `remember`, each precision's
    result is the faster of this measurement and the fastest one of the same shapes earlier in
    this process (its ``method`` says so when the earlier one is kept).
    """
    shapes = model_matmul_shapes(model)
    native = cpu_native_bf16()
    peaks = {
        "fp32": measure_matmul_peak(shapes, dtype=torch.float32, repeats=repeats),
        "bf16": measure_matmul_peak(shapes, dtype=torch.bfloat16, repeats=repeats) if native else None,
        "native_bf16": native,
    }
    if remember:
        for key in ("fp32", "bf16"):
            measured, earlier = peaks[key], _FASTEST_PEAKS.get((key, tuple(shapes)))
            if measured is None:
                continue
            if earlier is not None and earlier["gflops"] > measured["gflops"]:
                peaks[key] = {**earlier, "method": f"{earlier['method']}; measured earlier in this process, faster "
                                                  f"than now ({measured['gflops']} GFLOP/s)"}
            else:
                _FASTEST_PEAKS[(key, tuple(shapes))] = measured
    return peaks


def faster_peaks(first: dict[str, Any], second: dict[str, Any],
                 when: str = "before and after training") -> dict[str, Any]:
    """Two `cpu_matmul_peaks` results of one machine (``when`` they were taken) as one: each precision's faster.

    A peak measured while another process held the cores is too low, and every MFU against it too
    high (above 1 when the run itself had the cores to itself); measuring again after the run and
    keeping the faster of the two discounts one disturbed measurement. The kept measurement's
    ``method`` says that it is the faster of two.
    """
    merged: dict[str, Any] = {"native_bf16": first["native_bf16"]}
    for key in ("fp32", "bf16"):
        a, b = first.get(key), second.get(key)
        if a is None or b is None:
            merged[key] = a or b
            continue
        best = dict(a if a["gflops"] >= b["gflops"] else b)
        best["method"] = (f"{best['method']}; the faster of two measurements, {when} "
                          f"({a['gflops']} and {b['gflops']} GFLOP/s)")
        merged[key] = best
    return merged


# Leaf names of the projections that read a block's (normalised) input. In the lowest block
# the backward pass reaches, with nothing trainable below it, their input needs no gradient.
INPUT_PROJECTIONS = frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv"})


def decoder_blocks(causal_lm: nn.Module) -> nn.ModuleList:
    """The decoder's blocks (``model.layers`` of a transformers causal LM, or of its decoder), whose
    shapes the FLOP count and the estimates read; ValueError for a model without them."""
    decoder = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(causal_lm).__name__}: no decoder `.layers` to count FLOPs over")
    return layers


def _trains(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _trainable_token_rows(module: nn.Module | None) -> int:
    """Rows peft's `trainable_token_indices` adds to an embedding or a head (0 if none)."""
    layer = getattr(module, "token_adapter", module)
    deltas = getattr(layer, "trainable_tokens_delta", None)
    return sum(d.shape[0] for d in deltas.values()) if deltas else 0


def training_flops_per_token(model: nn.Module, labelled_fraction: float = 1.0, context: float = 0.0) -> float:
    """Matrix-multiply FLOPs of one trained (non-pad) token, counted from the model's shapes.

    `model` is a causal LM as it trains (a peft model, or a plain model for full fine-tuning);
    what trains is read from its parameters' ``requires_grad``. Per token:

    - **forward**: every block's linear layers (2 x weight size; LoRA's A and B included) and
      its attention scores and weighted sum (4 x `context` x heads x head_dim);
    - **backward, activation gradients**: only from the top down to the lowest block the
      gradient must reach -- the lowest block with a trainable parameter, or block 0 when the
      embedding trains (peft's trainable token rows: then the gradient reaches the bottom of
      the network, LoRA or not -- in every batch that contains one of those tokens, as every
      chat row contains the turn tokens). Each linear's input gradient costs 2 x weight size,
      attention 8 x context x heads x head_dim. In that lowest block, with nothing trainable below it,
      the projections that read the block input (`INPUT_PROJECTIONS`, LoRA's A included) need
      no input gradient and are not counted;
    - **backward, weight gradients**: 2 x size of every trainable linear weight (LoRA's A and
      B; all weights in full fine-tuning);
    - **LM head** at a `labelled_fraction` of the tokens (the positions where it is computed:
      the labelled ones for `sftkit.train.labelled_head_loss`, all for a plain forward): its
      forward and its input gradient (2 + 2) x vocabulary x hidden, plus the weight gradient
      if the head itself trains, plus 6 x hidden per trainable token row (peft's delta columns).

    `context` is the mean number of positions a token attends to (causal: (T+1)/2 for a row of
    T tokens; `CountingCollator.mean_context`). Not counted: norms, activations, softmax, RoPE,
    embedding lookups (no matmul), sliding-window limits (longer than the rows here), and the
    recomputation of gradient checkpointing (MFU convention: model FLOPs, not hardware FLOPs).
    tests/test_measure.py checks the count against a hand count and against torch's
    `FlopCounterMode` on a real step.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config
    config = getattr(config, "text_config", None) or config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = heads * head_dim
    blocks = list(decoder_blocks(causal_lm))
    embedding = causal_lm.get_input_embeddings()
    trainable = [i for i, block in enumerate(blocks) if _trains(block)]
    if _trains(embedding):
        lowest, anything_below = 0, True
    elif trainable:
        lowest, anything_below = trainable[0], False
    else:
        lowest, anything_below = len(blocks), False  # nothing trains below the head

    total = 0.0
    for index, block in enumerate(blocks):
        backward = index >= lowest
        # In the lowest block, with nothing trainable below, a frozen attention (LoRA on the MLP
        # only) gets no gradient at all: its inputs and weights need none.
        attention_module = getattr(block, "self_attn", None) or getattr(block, "attn", None)
        attention_backward = backward and (anything_below or index > lowest or _trains(attention_module))
        total += 4.0 * context * attention + (8.0 * context * attention if attention_backward else 0.0)
        for name, module in block.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            size = module.weight.numel()
            total += 2.0 * size  # forward
            if not backward:
                continue
            parts = name.split(".")
            projection = next((p for p in reversed(parts) if p not in ("base_layer", "lora_A", "lora_B", "default")
                               and not p.isdigit()), "")
            reads_block_input = projection in INPUT_PROJECTIONS and "lora_B" not in parts
            in_attention = attention_module is not None and name.startswith(
                next(n for n, m in block.named_children() if m is attention_module) + ".")
            if (anything_below or index > lowest
                    or not (reads_block_input or (in_attention and not attention_backward))):
                total += 2.0 * size  # the gradient of its input
            if module.weight.requires_grad:
                total += 2.0 * size  # the gradient of its weight

    head = causal_lm.get_output_embeddings()
    head_base = getattr(getattr(head, "token_adapter", head), "base_layer", head)
    vocab, hidden = head_base.weight.shape
    head_flops = 4.0 * vocab * hidden + (2.0 * vocab * hidden if head_base.weight.requires_grad else 0.0)
    head_flops += 6.0 * hidden * _trainable_token_rows(head)
    return total + labelled_fraction * head_flops


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


def _peak_rss_mb() -> float:
    """The process's peak RSS in MB: Linux's VmHWM where /proc has it, else ``ru_maxrss``.

    VmHWM is the high-water mark that /proc/self/clear_refs resets (`reset_peak_memory`).
    ``ru_maxrss`` is the larger of it and a maximum the kernel keeps per process apart from the
    memory map, which clear_refs does not reset, so after a reset it may still report an earlier peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_memory_mb() -> dict[str, float]:
    """Peak GPU memory allocated by torch (if CUDA) and the process's peak RSS, in MB.

    Both are peaks since the last `reset_peak_memory` (the RSS one only where it could reset).
    """
    out = {"peak_rss_mb": _peak_rss_mb()}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class CountingCollator:
    """Wraps a collator and counts the real (non-pad), padded and labelled tokens of every batch.

    Also the positions attended to, for the attention part of `training_flops_per_token`:
    a causal row of T tokens attends to T(T+1)/2 positions in all.
    """

    def __init__(self, collator: Any):
        self.collator = collator
        self.real_tokens = 0
        self.padded_tokens = 0
        self.labelled_tokens = 0
        self.attended_positions = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        lengths = [len(example["input_ids"]) for example in examples]
        self.real_tokens += sum(lengths)
        self.attended_positions += sum(n * (n + 1) // 2 for n in lengths)
        self.padded_tokens += batch["input_ids"].numel()
        labels = batch.get("labels") if hasattr(batch, "get") else None
        if isinstance(labels, torch.Tensor):
            # Positions whose *next* token has a label: where the loss needs the head's logits.
            self.labelled_tokens += int((labels[..., 1:] != -100).sum())
        return batch

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else float("nan")

    @property
    def labelled_fraction(self) -> float:
        """Labelled positions per real token (1.0 before any batch with labels)."""
        return self.labelled_tokens / self.real_tokens if self.real_tokens and self.labelled_tokens else 1.0

    @property
    def mean_context(self) -> float:
        """Mean positions a real token attends to (causal attention within its row)."""
        return self.attended_positions / self.real_tokens if self.real_tokens else 0.0


class ThroughputCallback(TrainerCallback):
    """Logs tokens/s (non-pad), padding efficiency and MFU; stops on a non-finite loss.

    `flops_per_token` is a number or a function of the counter (the labelled fraction and the
    context length are only known from the batches). `peak` (TFLOP/s) overrides the data-sheet
    peak of `device_name`: on a CPU it is the matmul peak measured in the same run.
    """

    def __init__(self, counter: CountingCollator, flops_per_token: float | Callable[[CountingCollator], float],
                 device_name: str, peak: float | None = None):
        self.counter = counter
        self._flops_per_token = flops_per_token
        self.peak = peak if peak is not None else peak_tflops(device_name)
        self.start = None
        self.peak_rss_is_per_run = False

    @property
    def flops_per_token(self) -> float:
        """FLOPs per real token for the batches counted so far."""
        if callable(self._flops_per_token):
            return self._flops_per_token(self.counter)
        return self._flops_per_token

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
            state.log_history[-1].update({k: logs[k] for k in ("tokens_per_s", "padding_efficiency", "mfu")
                                          if k in logs})
