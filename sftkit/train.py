"""LoRA SFT with TRL's `SFTTrainer`, built for the hardware, measured, and verified.

`train_lora` is the one training path shared by the notebooks, `sftkit demo` and
`sftkit train`. It:

- builds an `SFTConfig` for the hardware: fp16 mixed precision with a loss scaler on compute
  capability < 8 (T4), bf16 on >= 8, on a CPU fp32 or the card's numerics emulated
  (`train.cpu_amp`, `sftkit.precision`); SDPA attention; length-grouped batches by default;
- trains on rows tokenized by `sftkit.masking` (assistant-only labels, identical to TRL's
  own, plus control-string sanitising and counted drops); TRL pads them and runs the loop;
- measures what a run card needs (`sftkit.measure`): tokens/s over non-pad tokens, padding
  efficiency, model FLOPs utilisation against the card's peak, peak memory, and stops on a
  non-finite loss;
- saves the adapter with the tokenizer (`sftkit.adapters`, which also reloads, merges and
  verifies it); `sftkit.run_card` writes `run.json` + `run.md` from the `TrainResult`.

A curriculum (rows with a `stage`) trains stage by stage (`staged_order`), and the steps
where a stage ends are recorded for the loss curve (`stage_end_steps`).

Loss: on CUDA, TRL's fused LM head computes the "nll" loss in chunks, so a large vocabulary
(Qwen2.5's 152k) never materialises full-precision logits for the whole batch at once. Its
fallback for devices without Triton is slow (every position, many fp32 passes over the
vocabulary), so on a CPU the loss comes from the model's own forward instead; see
`TrainSettings.fused_lm_head` and `sft_trainer_class`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import save_adapter
from .chat import turn_token_ids
from .config import RunConfig
from .lm_head import head_loss_sum, labelled_hidden
from .lora import build_lora_config, describe_blocks, trainable_parameters
from .measure import (
    T4_SUSTAINED_TFLOPS,
    CountingCollator,
    ThroughputCallback,
    cpu_matmul_peaks,
    faster_peaks,
    model_flops_utilisation,
    peak_memory_mb,
    peak_tflops,
    training_flops_per_token,
)
from .models import hardware_name
from .precision import LossScalerCallback, lora_inputs_uncast, precision_flags, precision_record, with_cpu_amp

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- configuration


def trainer_arguments(cfg: RunConfig, output_dir: str | Path) -> dict[str, Any]:
    """The `TrainingArguments` fields every sftkit trainer shares (SFT, DPO), for this hardware."""
    t = cfg.train
    return dict(
        output_dir=str(output_dir),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        seed=t.seed,
        data_seed=t.seed,
        activation_checkpointing=t.gradient_checkpointing,
        # Reentrant checkpointing needs inputs that require grad, which frozen embeddings under
        # LoRA do not provide; the non-reentrant variant works with LoRA as is.
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        # Checkpoints for resuming (`train.save_steps`, `train.resume`): the last two are kept.
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=t.save_steps if t.save_steps > 0 else 500,
        save_total_limit=2,
        report_to="none",
        dataloader_num_workers=0,
        # Without CUDA, say so explicitly: under `accelerate launch`/torchrun this makes the
        # processes form a gloo (MULTI_CPU) group instead of each training alone.
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(cpu_amp=t.cpu_amp),
    )


def build_sft_config(cfg: RunConfig, output_dir: str | Path, **overrides: Any):
    """A TRL `SFTConfig` from a `RunConfig`, for this machine's hardware."""
    from trl import SFTConfig

    batching = {
        "group": {"train_sampling_strategy": "group_by_length"},
        "pad": {},
        "pack": {"packing": True, "packing_strategy": "bfd", "padding_free": True},
    }
    if cfg.train.batching not in batching:
        raise ValueError(f"batching must be one of {sorted(batching)}, got {cfg.train.batching!r}")
    values = trainer_arguments(cfg, output_dir)
    values.update(
        # The rows arrive tokenized with assistant-only labels from `sftkit.masking` (equal to
        # what assistant_only_loss=True would build; tests/test_chat_masking.py checks it), so
        # TRL must not rebuild them: it pads `labels` as given.
        assistant_only_loss=False,
        max_length=cfg.data.max_length,
        disable_tqdm=False,
        **batching[cfg.train.batching],
    )
    values.update(overrides)
    return SFTConfig(**values)


def wants_fused_lm_head(setting: bool | None, device: str | torch.device | None = None) -> bool:
    """Resolve `TrainSettings.fused_lm_head`: None means "where Triton runs it" (CUDA, XPU)."""
    if setting is not None:
        return setting
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from trl.kernels.chunked_logprob import _use_triton  # TRL's own rule, where it has one
    except ImportError:
        import importlib.util

        return importlib.util.find_spec("triton") is not None and torch.device(device).type in ("cuda", "xpu")
    return _use_triton(torch.device(device))


def labelled_head_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """The causal-LM loss with LM-head logits computed only where a label is set.

    Assistant-only SFT masks most positions (system and user turns, padding), yet a plain
    forward multiplies every position's hidden state by the whole head: with Gemma's
    262,144-row vocabulary that is more work than all 18 blocks. Here the decoder runs as
    usual, the hidden states at positions whose *next* token has a label are gathered, and
    only they go through the head, a tile of the vocabulary at a time, with the gradient
    computed on the way (`sftkit.lm_head.labelled_hidden`, `head_loss_sum`; peft's trainable token rows
    are computed without copying the embedding). The loss is
    the model's own: summed over labelled tokens and divided by `num_items_in_batch` when
    the training loop counts them (gradient accumulation), else their mean; equal loss and
    gradients to the full computation (tests/test_train.py).
    """
    # The two ranges name the step's parts in a torch.profiler trace (benchmarks/step_profile.py).
    with torch.profiler.record_function("sftkit::blocks_forward"):
        hidden, targets, _ = labelled_hidden(model, inputs["input_ids"], inputs.get("attention_mask"),
                                             inputs["labels"])
    with torch.profiler.record_function("sftkit::head_loss"):
        total = head_loss_sum(model, hidden, targets)  # tiled: the logits are never all held
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count


@functools.cache
def sft_trainer_class(fused_lm_head: bool, labelled_head: bool = False):
    """TRL's `SFTTrainer`, or a subclass whose loss is the model's own (`fused_lm_head=False`).

    Both run fp16 on a CPU as a T4 does (`sftkit.precision.CpuAmpTrainerMixin`). The loss subclass
    changes one more thing: `compute_loss` is `transformers.Trainer`'s, i.e. the
    model's forward with `labels`, the same token-mean cross-entropy over labelled positions
    (tests/test_train.py checks loss and gradients against TRL's on one batch), or, with
    `labelled_head`, the same loss with head logits only where labels are (`labelled_head_loss`).
    TRL's entropy and token-accuracy logs are not computed then.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    cpu_amp_sft_trainer = with_cpu_amp(SFTTrainer)
    if fused_lm_head:
        return cpu_amp_sft_trainer

    class ModelLossSFTTrainer(cpu_amp_sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            # Under DDP the forward must go through the wrapper (it syncs gradients), so the
            # labelled-head shortcut is for a single process; several fall back to the model loss.
            if labelled_head and not return_outputs and not hasattr(model, "module"):
                # The decoder is called directly here, not through the forward that accelerate
                # wrapped in autocast: enter the same autocast, or mixed precision silently
                # computes this loss in the weights' dtype.
                checkpointing = bool(self.args.activation_checkpointing or self.args.gradient_checkpointing)
                with self.accelerator.autocast(), lora_inputs_uncast(model, self.accelerator, checkpointing):
                    loss = labelled_head_loss(model, inputs, num_items_in_batch)
                if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                    loss = loss * self.accelerator.num_processes
                return loss
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return ModelLossSFTTrainer


def check_packing_is_safe(batching: str, model: Any) -> None:
    """Refuse packing unless the attention kernel keeps packed examples apart.

    TRL's padding-free packing passes sequence boundaries as `position_ids`/`cu_seq_lens`,
    which only the FlashAttention kernels honour. With SDPA or eager attention (the only
    choices on a T4 or a CPU) each packed example attends to the ones before it:
    tests/test_packing.py measures that leak. Length grouping gets most of packing's
    padding savings without it.
    """
    if batching != "pack":
        return
    implementation = str(getattr(model.config, "_attn_implementation", "")).lower()
    if "flash" not in implementation:
        raise ValueError(
            f"batching='pack' needs FlashAttention to keep packed examples apart; this model uses "
            f"{implementation or 'an unknown'} attention, where packed examples attend to each other. "
            "Use batching='group' (length grouping) instead."
        )


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    model: Any
    adapter_dir: Path
    log_history: list[dict]
    metrics: dict[str, Any]
    tokenize_report: dict[str, Any] = field(default_factory=dict)


def staged_order(stages: list[int], lengths: list[int], batch_size: int, seed: int,
                 group_by_length: bool = True) -> list[int]:
    """Row order for a curriculum: every row of stage 0, then of stage 1, and so on.

    Inside a stage the rows are shuffled by `seed` and, with `group_by_length`, grouped into
    batches of similar length by the same function transformers' ``group_by_length`` sampler
    uses, so a staged run pads as little as a shuffled one.
    """
    from transformers.trainer_pt_utils import get_length_grouped_indices

    if len(stages) != len(lengths):
        raise ValueError(f"{len(stages)} stages for {len(lengths)} rows")
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for stage in sorted(set(stages)):
        rows = [i for i, s in enumerate(stages) if s == stage]
        if group_by_length:
            local = get_length_grouped_indices([lengths[i] for i in rows], batch_size, generator=generator)
        else:
            local = torch.randperm(len(rows), generator=generator).tolist()
        order.extend(rows[i] for i in local)
    return order


def stage_end_steps(rows_per_stage: dict[str, int], rows_per_step: int) -> dict[str, int]:
    """{stage: the optimizer step that takes its last row} for every stage but the last.

    For marking the seams of a curriculum on the loss curve. A stage whose rows do not fill
    its last batch shares that step with the next stage's first rows.
    """
    if rows_per_step <= 0:
        raise ValueError(f"rows per optimizer step must be positive, got {rows_per_step}")
    rows_so_far = itertools.accumulate(rows_per_stage.values())
    return {stage: math.ceil(rows / rows_per_step) for stage, rows in zip(list(rows_per_stage)[:-1], rows_so_far)}


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder `Trainer` saved in `folder`, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if Path(folder).is_dir() else None


def _tokenize_train(train_dataset: Any, tokenizer: Any, max_length: int) -> tuple[Any, dict[str, Any]]:
    """The training rows tokenized with assistant-only labels, with a ``length`` column for batching."""
    from .masking import tokenize_dataset

    tokenized, tokenize_report = tokenize_dataset(train_dataset, tokenizer, max_length)
    if len(tokenized) == 0:
        raise ValueError(f"no trainable rows after tokenization: {tokenize_report}")
    tokenized = tokenized.map(lambda row: {"length": len(row["input_ids"])}).remove_columns("messages")
    return tokenized, tokenize_report


def _tokenize_eval(eval_dataset: Any | None, tokenizer: Any, max_length: int) -> Any | None:
    """The evaluation rows tokenized like the training rows (None when there are none)."""
    from .masking import tokenize_dataset

    if eval_dataset is None:
        return None
    eval_tokenized, _ = tokenize_dataset(eval_dataset, tokenizer, max_length)
    return eval_tokenized.remove_columns("messages")


def _curriculum_order(cfg: RunConfig, train_dataset: Any, tokenized: Any,
                      tokenize_report: dict[str, Any]) -> tuple[Any, dict[str, int] | None]:
    """Put a curriculum's rows in stage order; returns the rows and {stage: rows kept} (None: no curriculum).

    A curriculum (`sftkit.tasks.make_task_splits`) has a ``stage`` column: the rows go in stage by
    stage, so the trainer must read them in the order given instead of shuffling them.
    """
    if "stage" not in train_dataset.column_names:
        return tokenized, None
    if cfg.train.batching == "pack":
        raise ValueError("a staged (curriculum) dataset cannot be packed: packing reorders rows across stages")
    dropped = {i for rows in tokenize_report["dropped_rows"].values() for i in rows}
    kept_stages = [s for i, s in enumerate(train_dataset["stage"]) if i not in dropped]
    tokenized = tokenized.select(staged_order(kept_stages, tokenized["length"],
                                              cfg.train.per_device_train_batch_size, cfg.train.seed,
                                              group_by_length=cfg.train.batching == "group"))
    return tokenized, {str(s): kept_stages.count(s) for s in sorted(set(kept_stages))}


def run_lora_config(cfg: RunConfig, model: Any, tokenizer: Any) -> Any:
    """The peft `LoraConfig` a run trains with: `cfg.lora`, with the turn tokens' rows trainable when asked.

    Public so that a comparison (``benchmarks/peer_comparison.py``) can give another trainer the same adapter."""
    return build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                             layers=cfg.lora.layers,
                             trainable_tokens=turn_token_ids(tokenizer) if cfg.lora.train_turn_tokens else None)


def _loss_choice(cfg: RunConfig) -> tuple[bool, bool]:
    """(fused_lm_head, labelled_head): how the loss is computed (see `sft_trainer_class`)."""
    fused_lm_head = wants_fused_lm_head(cfg.train.fused_lm_head)
    if fused_lm_head and cfg.lora.train_turn_tokens:
        # TRL's fused head reads `lm_head.weight`/`.bias` directly, which peft's trainable-token
        # wrapper of a tied head does not expose; the labelled-head loss goes through the wrapper.
        if cfg.train.fused_lm_head:
            raise ValueError("train.fused_lm_head=true cannot train the turn-token rows (peft wraps the LM head); "
                             "set lora.train_turn_tokens=false or leave train.fused_lm_head unset")
        fused_lm_head = False
    return fused_lm_head, not fused_lm_head and cfg.train.labelled_head


def _loss_name(fused_lm_head: bool, labelled_head: bool) -> str:
    return "TRL fused LM head" if fused_lm_head else "head on labelled positions" if labelled_head else "model forward"


@dataclass
class _Probes:
    """What measures a run: the token-counting collator, the throughput and loss-scaler callbacks,
    and on a CPU the matmul peaks that MFU is computed against."""

    counter: CountingCollator
    throughput: ThroughputCallback
    scaler_steps: LossScalerCallback
    cpu_peaks: dict[str, Any] | None
    cpu_peak: dict[str, Any] | None


def _cpu_mfu_peak(model: Any, args: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(all CPU matmul peaks, the one MFU uses), both None on a GPU.

    MFU's denominator: a GPU's data-sheet peak; on a CPU the matmul peak measured now, in this
    process and with its threads (a few seconds), in the precision the run computes in.
    """
    cpu_peaks = None if torch.cuda.is_available() else cpu_matmul_peaks(model)
    return cpu_peaks, _peak_in_precision(cpu_peaks, args.bf16)


def _peak_in_precision(cpu_peaks: dict[str, Any] | None, bf16: bool) -> dict[str, Any] | None:
    """The CPU peak of the precision the run computes in: bf16's where it runs bf16 natively, else fp32's."""
    if cpu_peaks is None:
        return None
    return cpu_peaks["bf16"] if bf16 and cpu_peaks["bf16"] else cpu_peaks["fp32"]


def _attach_probes(trainer: Any, args: Any, device: str, head_everywhere: bool) -> _Probes:
    """Count tokens in the collator and add the throughput (with MFU) and loss-scaler callbacks.

    FLOPs per real token come from the model's shapes, with the head where the loss computes it:
    every position (`head_everywhere`: model forward, fused head) or the labelled ones.
    """
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    cpu_peaks, cpu_peak = _cpu_mfu_peak(trainer.model, args)

    def flops_per_token(counted: CountingCollator) -> float:
        return training_flops_per_token(trainer.model, 1.0 if head_everywhere else counted.labelled_fraction,
                                        counted.mean_context)

    throughput = ThroughputCallback(counter, flops_per_token, device,
                                    peak=cpu_peak["gflops"] / 1000 if cpu_peak else None)
    # First in line, so the printing and progress callbacks see the numbers it adds.
    trainer.callback_handler.callbacks.insert(0, throughput)
    scaler_steps = LossScalerCallback(trainer.accelerator)
    trainer.add_callback(scaler_steps)
    return _Probes(counter, throughput, scaler_steps, cpu_peaks, cpu_peak)


def _stage_ends(stages: dict[str, int] | None, args: Any, trainer: Any) -> dict[str, int] | None:
    """{stage: the last optimizer step with rows of that stage} for a curriculum, else None."""
    if not stages:
        return None
    rows_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                     * trainer.accelerator.num_processes)
    return stage_end_steps(stages, rows_per_step)


def _resume_target(cfg: RunConfig, args: Any, resume_from_checkpoint: str | bool | None) -> str | bool | None:
    """The checkpoint to resume from: the one asked for, else with `train.resume` the newest one saved."""
    if resume_from_checkpoint is None and cfg.train.resume:
        resume_from_checkpoint = last_checkpoint(args.output_dir)
        if resume_from_checkpoint:
            logger.info(f"resuming from {resume_from_checkpoint}")
        else:
            logger.warning(f"no checkpoint in {args.output_dir} to resume from: starting afresh")
    return resume_from_checkpoint


def _save_and_unwrap(trainer: Any, tokenizer: Any, output_dir: Path) -> tuple[Path, Any]:
    """Save the adapter with the tokenizer; return its folder and the trained `PeftModel` in eval mode."""
    adapter_dir = save_adapter(trainer, tokenizer, output_dir / "adapter")
    # With mixed precision, accelerate wraps the model's forward in autocast; unwrap it so
    # evaluation after training runs in the same precision as before it.
    peft_model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    peft_model.eval()
    return adapter_dir, peft_model


def _loop_metrics(trainer: Any, train_output: Any, wall: float, device: str) -> dict[str, Any]:
    """Where and how long the loop ran, and its losses."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "hardware": device,
        "processes": trainer.accelerator.num_processes,
        "is_main_process": trainer.accelerator.is_main_process,
        "wall_s": round(wall, 2),
        "steps": trainer.state.global_step,
        "train_loss": train_output.training_loss,
        "final_loss": losses[-1] if losses else None,
    }


def _throughput_metrics(trainer: Any, probes: _Probes, wall: float, device: str) -> dict[str, Any]:
    """Tokens, padding, FLOPs and model FLOPs utilisation of the run (summed over its processes)."""
    counter, throughput, cpu_peaks, cpu_peak = probes.counter, probes.throughput, probes.cpu_peaks, probes.cpu_peak
    if cpu_peaks is not None:  # measured again now: a peak taken while the cores were shared would inflate MFU
        cpu_peaks = faster_peaks(cpu_peaks, cpu_matmul_peaks(trainer.model))
        cpu_peak = _peak_in_precision(cpu_peaks, trainer.args.bf16)
    # Each process counted its own batches; the run's throughput is their sum.
    counts = trainer.accelerator.reduce(torch.tensor([counter.real_tokens, counter.padded_tokens]), "sum")
    real_tokens, padded_tokens = (int(x) for x in counts.tolist())
    tokens_per_s = real_tokens / wall if wall > 0 else 0.0
    peak = cpu_peak["gflops"] / 1000 if cpu_peak else throughput.peak
    mfu = model_flops_utilisation(tokens_per_s, throughput.flops_per_token, peak) if peak else None
    if mfu is not None and mfu > 1:
        logger.warning(f"MFU {mfu:.2f} > 1: the peak it is measured against is too low (on a CPU: both matmul "
                       "measurements were taken while other work held the cores); this run's MFU means nothing")
    return {
        "tokens": real_tokens,
        "padded_tokens": padded_tokens,
        "tokens_per_s": round(tokens_per_s, 1),
        "padding_efficiency": round(real_tokens / padded_tokens, 4),
        # Against the card's data-sheet peak, or on a CPU against the matmul peak measured in this run.
        "mfu": mfu,
        "mfu_peak": (f"{peak_tflops(device)} TFLOP/s data-sheet dense peak" if cpu_peak is None and peak
                     else f"{cpu_peak['gflops']} GFLOP/s measured: {cpu_peak['method']}" if cpu_peak else None),
        "flops_per_token": round(throughput.flops_per_token),
        "labelled_fraction": round(counter.labelled_fraction, 4),
        "mean_context": round(counter.mean_context, 2),
        "cpu_matmul_gflops": ({k: cpu_peaks[k]["gflops"] if cpu_peaks[k] else None for k in ("fp32", "bf16")}
                              if cpu_peaks else None),
        "cpu_native_bf16": cpu_peaks["native_bf16"] if cpu_peaks else None,
        "mfu_vs_t4_sustained": (
            model_flops_utilisation(tokens_per_s, throughput.flops_per_token, T4_SUSTAINED_TFLOPS)
            if peak and "T4" in device.upper()
            else None
        ),
    }


def _lora_metrics(params: dict[str, Any], lora_config: Any, model: Any) -> dict[str, Any]:
    """What LoRA trained: parameter counts, target modules, blocks and token rows."""
    return {
        "trainable_params": params["trainable"],
        "total_params": params["total"],
        "lora_targets": sorted(lora_config.target_modules),
        "lora_blocks": describe_blocks(lora_config.layers_to_transform, model.config.num_hidden_layers),
        "trainable_token_ids": lora_config.trainable_token_indices,
    }


def _run_metrics(*, trainer: Any, args: Any, train_output: Any, wall: float, device: str, probes: _Probes,
                 params: dict[str, Any], lora_config: Any, model: Any, peft_model: Any, loss: str,
                 stages: dict[str, int] | None, stage_ends: dict[str, int] | None) -> dict[str, Any]:
    """The `TrainResult.metrics` a run card records, in its fixed key order."""
    return {
        **_loop_metrics(trainer, train_output, wall, device),
        **_throughput_metrics(trainer, probes, wall, device),
        **_lora_metrics(params, lora_config, model),
        # precision, weights_dtype, trainable_dtype, autocast_dtype, loss_scaler (final scale, skipped steps)
        **precision_record(peft_model, args, trainer.accelerator, probes.scaler_steps),
        "loss": loss,
        # Rows per curriculum stage, trained in this order (None: one shuffled set).
        "stages": stages,
        # {stage: the last optimizer step with rows of that stage} for every stage but the last.
        "stage_end_steps": stage_ends,
        **{k: round(v, 1) for k, v in peak_memory_mb().items()},
        "peak_rss_scope": "this training" if probes.throughput.peak_rss_is_per_run else "process lifetime",
    }


def train_lora(
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    output_dir: str | Path,
    eval_dataset: Any | None = None,
    resume_from_checkpoint: str | bool | None = None,
    callbacks: list[Any] | None = None,
    **sft_overrides: Any,
) -> TrainResult:
    """Wrap `model` with LoRA, train it with `SFTTrainer`, save the adapter, return measurements.

    `train_dataset` is a `messages` dataset; it is tokenized here with assistant-only labels.
    `callbacks` are `TrainerCallback`s added to the trainer's own (a profiler's, for instance).
    The model returned is the trained `PeftModel` (in eval mode).
    """
    check_packing_is_safe(cfg.train.batching, model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenized, tokenize_report = _tokenize_train(train_dataset, tokenizer, cfg.data.max_length)
    tokenized, stages = _curriculum_order(cfg, train_dataset, tokenized, tokenize_report)
    if stages is not None:
        sft_overrides = {"train_sampling_strategy": "sequential", **sft_overrides}
    eval_tokenized = _tokenize_eval(eval_dataset, tokenizer, cfg.data.max_length)

    lora_config = run_lora_config(cfg, model, tokenizer)
    args = build_sft_config(cfg, output_dir / "checkpoints", **sft_overrides)
    fused_lm_head, labelled_head = _loss_choice(cfg)
    trainer = sft_trainer_class(fused_lm_head, labelled_head)(
        model=model,
        args=args,
        train_dataset=tokenized,
        eval_dataset=eval_tokenized,
        processing_class=tokenizer,
        peft_config=lora_config,
        callbacks=callbacks,
    )
    params = trainable_parameters(trainer.model)
    device = hardware_name()
    probes = _attach_probes(trainer, args, device, head_everywhere=fused_lm_head or not labelled_head)
    stage_ends = _stage_ends(stages, args, trainer)

    resume_from_checkpoint = _resume_target(cfg, args, resume_from_checkpoint)
    start = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    wall = time.perf_counter() - start
    adapter_dir, peft_model = _save_and_unwrap(trainer, tokenizer, output_dir)

    metrics = _run_metrics(trainer=trainer, args=args, train_output=train_output, wall=wall, device=device,
                           probes=probes, params=params, lora_config=lora_config, model=model, peft_model=peft_model,
                           loss=_loss_name(fused_lm_head, labelled_head), stages=stages, stage_ends=stage_ends)
    return TrainResult(peft_model, adapter_dir, list(trainer.state.log_history), metrics, tokenize_report)
