"""Training precision: the card's mixed precision on a GPU, and the same numerics emulated on a CPU.

A free Colab T4 trains in **fp16**: half-precision weights, matmuls under fp16 autocast, and a
loss scaler (`torch.amp.GradScaler`) that multiplies the loss before the backward pass so small
gradients do not flush to zero in fp16, unscales them before clipping, and skips a step (halving
its scale) when a gradient overflowed. Ampere and later cards train in bf16 (autocast, no scaler).
Most of what can go wrong with those numerics (fp16 gradients that cannot be unscaled, a loss
path outside autocast, a merge check that forgets fp16's resolution) shows up on a CPU too, if
the CPU runs the same numerics. accelerate does not let it: with ``fp16=True`` on a CPU it leaves
autocast and the scaler off, silently. So:

- `precision_flags` turns a run's settings into `TrainingArguments`' ``fp16``/``bf16``: on a GPU
  by compute capability (fp16 below 8.0, bf16 from 8.0), on a CPU by ``train.cpu_amp``
  (``auto``, ``off``, ``bf16`` or ``fp16``);
- `resolve_cpu_amp` reads ``auto``: bf16 where the CPU computes it natively (AVX512-BF16 or AMX
  in /proc/cpuinfo: about twice the fp32 matmul rate), fp32 elsewhere (AVX2-only CPUs emulate
  bf16 and would run slower than in fp32);
- `load_dtype` is the dtype a run loads its models in: ``model.dtype`` as given, and for
  ``auto`` on a CPU the run's precision, as ``auto`` on a card follows the card. A bf16 run
  then holds the frozen base and its LM head in bf16 once, instead of autocast casting every
  fp32 weight again in every forward (the 262k-row head tile by tile), while peft keeps
  the LoRA weights, the trainable token rows and so the optimiser state in fp32;
- `CpuAmpTrainerMixin` puts a trainer's CPU fp16 run under fp16 autocast with a CPU
  ``GradScaler``, through accelerate's own machinery (its autocast wrapper of the forward, its
  scaled backward, unscale-before-clip and skipped-step bookkeeping), so the training loop is
  the one a T4 runs;
- `lora_inputs_uncast` skips peft's cast of each LoRA input to fp32 under autocast (autocast casts
  it straight back);
- `LossScalerCallback` counts the steps the scaler skipped, and `precision_record` writes what
  the run computed in (weights, autocast, scaler) for the run card.

With ``--set model.dtype=float16 --set train.cpu_amp=fp16`` a CPU runs a T4's numerics; with
``bfloat16``/``bf16`` an Ampere-or-later card's; ``--set train.cpu_amp=auto`` (the ``cpu-demo``
preset's) the best the CPU has natively.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from transformers import TrainerCallback

from .measure import cpu_native_bf16
from .models import pick_dtype

CPU_AMP_CHOICES = ("auto", "off", "bf16", "fp16")
# The weights' dtype under `load_dtype` for model.dtype "auto" on a CPU, by the run's precision.
_CPU_WEIGHTS = {"off": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_cpu_amp(cpu_amp: str, cpuinfo: str | None = None) -> str:
    """``train.cpu_amp`` with ``auto`` decided: ``bf16`` where the CPU lists native bf16 matrix
    instructions (avx512_bf16, amx_bf16; `sftkit.measure.cpu_native_bf16`), else ``off``."""
    if cpu_amp not in CPU_AMP_CHOICES:
        raise ValueError(f"train.cpu_amp must be one of {', '.join(CPU_AMP_CHOICES)}; got {cpu_amp!r}")
    if cpu_amp != "auto":
        return cpu_amp
    return "bf16" if cpu_native_bf16(cpuinfo) else "off"


def load_dtype(model_dtype: str, cpu_amp: str = "off", device: str | torch.device | None = None) -> str:
    """The dtype a run loads its models in (``model.dtype``, ``train.cpu_amp``).

    A named dtype is kept. ``auto`` follows the hardware: on a GPU `pick_dtype` (fp16 on a T4,
    bf16 from Ampere); on a CPU the run's precision (`resolve_cpu_amp`): bf16 weights for a bf16
    run, fp16 for an fp16 one, fp32 otherwise. Every model of a run (the one trained, the base
    it is compared with, the reference, the base an adapter is checked against) loads in it,
    so before and after differ by training, not by numerics.
    """
    if model_dtype != "auto":
        return model_dtype
    if pick_dtype(device) != torch.float32:  # a GPU
        return "auto"
    return _CPU_WEIGHTS[resolve_cpu_amp(cpu_amp)]


def precision_flags(device: str | None = None, cpu_amp: str = "off") -> dict[str, bool]:
    """`fp16`/`bf16` flags for `TrainingArguments`: by compute capability, never by `is_bf16_supported()`.

    On a GPU: fp16 on compute capability < 8 (T4, V100), bf16 from 8 (A100, L4, H100);
    `cpu_amp` is ignored there. On a CPU: `cpu_amp` (``off``: fp32; ``bf16``: bf16 autocast, native
    on AVX512-BF16/AMX CPUs, emulated and slower elsewhere; ``fp16``: fp16 autocast with a loss
    scaler, as a T4 trains, through `CpuAmpTrainerMixin`; ``auto``: `resolve_cpu_amp`). The
    weights keep the dtype they were loaded in (`load_dtype`): mixed precision changes what the
    matmuls compute in.
    """
    cpu_amp = resolve_cpu_amp(cpu_amp)
    dtype = pick_dtype(device)
    if dtype == torch.float32:  # a CPU
        return {"fp16": cpu_amp == "fp16", "bf16": cpu_amp == "bf16"}
    return {"fp16": dtype == torch.float16, "bf16": dtype == torch.bfloat16}


def enable_cpu_fp16(accelerator: Any) -> bool:
    """Give a CPU accelerator in fp16 mode the autocast and loss scaler it would have on a GPU.

    accelerate turns fp16 on only for accelerator devices (`Accelerator.native_amp` stays False
    on a CPU, and no scaler is made). Setting both before the model and optimizer are prepared
    makes `prepare` wrap the forward in ``torch.autocast("cpu", torch.float16)``, hand the scaler
    to the optimizer (scaled steps, skipped on overflow), scale `backward` and unscale before
    clipping: the GPU code path, unchanged. Returns True when it enabled them.
    """
    if accelerator.device.type != "cpu" or accelerator.state.mixed_precision != "fp16" or accelerator.scaler:
        return False
    handler = getattr(accelerator, "scaler_handler", None)
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", **(handler.to_kwargs() if handler is not None else {}))
    return True


class CpuAmpTrainerMixin:
    """Mix into a `transformers.Trainer` subclass (first in the bases) so ``fp16=True`` on a CPU trains as on a T4."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()  # type: ignore[misc]
        enable_cpu_fp16(self.accelerator)  # type: ignore[attr-defined]


def with_cpu_amp(trainer_class: type) -> type:
    """`trainer_class` with `CpuAmpTrainerMixin` in front (a TRL trainer, e.g. `DPOTrainer`)."""
    return type(trainer_class.__name__, (CpuAmpTrainerMixin, trainer_class), {"__doc__": trainer_class.__doc__})


@contextlib.contextmanager
def lora_inputs_uncast(model: Any, accelerator: Any, checkpointing: bool = False) -> Iterator[None]:
    """Under autocast, let peft's LoRA layers take their input in the autocast dtype.

    peft casts each LoRA layer's input to the adapter's dtype (fp32 here) and autocast casts it
    straight back to bf16 or fp16 for the adapter's first matmul: two copies of every activation
    that enters a LoRA layer, and the same numbers in the end (bf16 -> fp32 -> bf16 is exact).
    Outside autocast (fp32 runs, generation) peft's cast stays on: there it is needed. This is
    `peft.helpers.disable_input_dtype_casting`, which fails on models with trainable token rows
    (their `TrainableTokensLayer` has no such switch), so only the layers that have it are set.
    Not with activation `checkpointing`: its backward recomputes the blocks' forward after this
    context has closed, peft casts again there, and torch refuses recomputed tensors whose dtype
    differs from the saved ones.
    """
    autocast = accelerator.native_amp and str(accelerator.mixed_precision) in ("fp16", "bf16")
    active = autocast and not checkpointing
    layers = [m for m in model.modules() if getattr(m, "cast_input_dtype_enabled", None) is True] if active else []
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.cast_input_dtype_enabled = True


class LossScalerCallback(TrainerCallback):
    """Counts the optimizer steps a loss scaler skipped (an fp16 gradient overflowed)."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.skipped_steps = 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.accelerator.scaler is not None and self.accelerator.optimizer_step_was_skipped:
            self.skipped_steps += 1


def precision_record(model: Any, args: Any, accelerator: Any,
                     scaler_steps: LossScalerCallback | None) -> dict[str, Any]:
    """What a run computed in, for the run card: weights, autocast, and the loss scaler if one ran."""
    weights = next((p.dtype for p in model.parameters() if not p.requires_grad), None) or model.dtype
    trainable = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    autocast = "float16" if args.fp16 else "bfloat16" if args.bf16 else None
    scaler = accelerator.scaler
    return {
        "precision": "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32",
        "weights_dtype": str(weights).removeprefix("torch."),
        "trainable_dtype": ", ".join(trainable),
        # accelerate applies autocast only where `native_amp` is on (on a CPU: bf16, or fp16 via enable_cpu_fp16).
        "autocast_dtype": autocast if accelerator.native_amp else None,
        "loss_scaler": (
            {"final_scale": float(scaler.get_scale()),
             "skipped_steps": scaler_steps.skipped_steps if scaler_steps is not None else None}
            if scaler is not None else None
        ),
    }
