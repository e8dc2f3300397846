"""sftkit's preset against what a user would run instead: TRL's `SFTTrainer` + a peft `LoraConfig`, twice.

A speed-up against TRL's defaults alone says as much about the defaults as about sftkit: a user
who knows TRL would not train a LoRA on a CPU with gradient checkpointing on and the loss on
every token. So in one process, on the same training rows, for the same number of optimizer
steps and the same batch size, this trains four recipes:

- **default peer**: the tutorial recipe, written as TRL's documentation writes it --
  ``SFTTrainer(model, args=SFTConfig(...), train_dataset=<messages>, peft_config=LoraConfig(
  r=<rank>, lora_alpha=2 x rank, target_modules="all-linear", task_type="CAUSAL_LM"))``
  with `SFTConfig`'s defaults for batching and loss (TRL 1.x: padding, no packing, shuffled
  rows, max_length 1024, gradient checkpointing on, ``loss_type="nll"``, and on a
  conversational dataset the loss on *all* tokens, since ``assistant_only_loss`` defaults to
  False). Two settings differ from the defaults, as a user on a CPU must set them: bf16 is
  off (TRL's default turns bf16 autocast on, emulated on AVX2 CPUs), and the learning rate is
  the 2e-4 of TRL's LoRA examples (SFTConfig's 2e-5 is meant for full fine-tuning);
- **sftkit**: the preset's own path, `sftkit.train.train_lora` (assistant-only labels, LoRA in
  the preset's blocks, turn-token rows, length-grouped batches, the head only at labelled
  positions), fp32 with bf16 autocast off;
- **expert peer**: `SFTTrainer` + peft configured by someone who knows both to do sftkit's
  work (`expert_peer_config`, field by field): the same LoRA targets, rank, alpha, dropout and
  blocks (``layers_to_transform``), ``assistant_only_loss=True`` on the same chat template
  (it has ``{% generation %}`` markers, so TRL builds the labels itself; they are checked
  against `sftkit.masking`'s on every training row and the count is printed), gradient
  checkpointing off, length-grouped batches, the same ``max_length``, batch, learning-rate
  schedule, seed and precision;
- **sftkit, turn rows off**: sftkit's path with ``lora.train_turn_tokens=false``, the expert
  peer's counterpart (see below).

What TRL cannot do on a CPU, and how both sides are kept equal (also printed):

- the turn-token rows: `SFTTrainer` computes its loss only through TRL's fused LM head, which
  reads ``lm_head.weight`` and ``lm_head.bias`` itself; peft's ``trainable_token_indices``
  wraps the tied head in a ``TrainableTokensWrapper``, which exposes ``.weight`` (the merged
  rows) but no ``.bias``: AttributeError at the first step (TRL 1.16, peft 0.21), and no
  `SFTConfig` or `LoraConfig` field avoids it. The expert peer cannot train them, so in that
  comparison neither side does;
- the LM head at every position: on a device without Triton, TRL's fused head scores every
  position (only its Triton path compacts to the labelled ones) in fp32 tiles, and no
  `SFTConfig` field changes that (only overriding ``compute_loss``, which is what sftkit
  does). Not equalised: it is part of what the speed-up measures;
- ``padding_free`` (and so packing): it flattens a batch into one row that only FlashAttention
  keeps apart; under SDPA, the attention a CPU has, rows attend to each other
  (tests/test_packing.py). Off on both sides; length grouping removes most padding instead;
- Liger kernels (``use_liger_kernel``): Triton kernels, and Triton has no CPU backend. Off on
  both sides (sftkit uses none);
- bf16 autocast: emulated on AVX2-only CPUs. Both sides fp32.

Every `--eval-every` steps each recipe is scored on the same held-out rows with the same
function (`sftkit.metrics.assistant_perplexity`: mean NLL of the assistant tokens, whatever each
trained on); scoring time is not counted as training time. Printed per model and repeat, side by
side: what each recipe does, tokens/s (non-pad tokens), seconds per optimizer step, padding
efficiency, peak RSS of the training, MFU against the matmul peak measured in the same process
(`sftkit.measure`), the held-out NLL after the steps, and, per pair (default peer vs sftkit,
expert peer vs sftkit with turn rows off), the training time each needed to reach the pair's
common held-out NLL (the higher of the two final losses) and the other's final NLL ("not
reached" if it never did). The last line is ``speedup_vs_peer=<x> speedup_vs_expert=<y>
mfu_cpu=<z>`` for the first model (the main job's): sftkit's tokens/s over the default peer's,
sftkit-with-turn-rows-off's over the expert peer's, and the sftkit preset's MFU (against the faster
of the fp32 peaks measured at the start and at the end), each the median over the repeats (every
repeat's figures are printed on the line before).

Models: ``gemma3-270m-base`` (the main job's, Gemma 3 270M base) and ``smollm2-135m-instruct``
(SmolLM2-135M-*Instruct*: the only offline 135M checkpoint, dequantised from its Q4_1 GGUF;
no base SmolLM2-135M loads offline). ``--smoke`` trains the tiny random model for 2 steps.

    HF_HUB_OFFLINE=1 python benchmarks/peer_comparison.py [--steps 10] [--batch-size 8] [--repeats 2]
    HF_HUB_OFFLINE=1 python benchmarks/peer_comparison.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib.util
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback

import sftkit.train as sftkit_train
from sftkit.chat import prepare_tokenizer
from sftkit.config import RunConfig, get_preset
from sftkit.demo import load_demo_data
from sftkit.lora import describe_blocks, find_lora_targets, top_layers
from sftkit.masking import tokenize_dataset
from sftkit.measure import (
    CountingCollator,
    ThroughputCallback,
    cpu_matmul_peaks,
    faster_peaks,
    model_flops_utilisation,
    peak_memory_mb,
    training_flops_per_token,
)
from sftkit.metrics import assistant_perplexity
from sftkit.models import hardware_name, load_tokenizer
from sftkit.precision import precision_flags
from sftkit.runs import load_for

MAIN_MODEL = "gemma3-270m-base"
MODELS = {
    "gemma3-270m-base": "Gemma 3 270M base (the cpu-demo model)",
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (only offline 135M checkpoint: GGUF Q4_1, dequantised)",
    "tiny-smollm2": "tiny random SmolLM2-shaped model (smoke)",
}
PEER_LEARNING_RATE = 2e-4  # TRL's LoRA examples (trl/scripts/sft.py docs: --learning_rate 2.0e-4 --use_peft)

# The four recipes, in the table's order: each comparison pair side by side.
DEFAULT, SFTKIT, EXPERT, SFTKIT_NO_ROWS = "default peer", "sftkit preset", "expert peer", "sftkit, no rows"
RECIPES = (DEFAULT, SFTKIT, EXPERT, SFTKIT_NO_ROWS)
PAIRS = ((DEFAULT, SFTKIT), (EXPERT, SFTKIT_NO_ROWS))  # (peer, the sftkit run it is compared with)

# `SFTConfig` fields where the expert peer must equal what sftkit's `build_sft_config` builds:
# checked before every expert run (`check_expert_matches_sftkit`) and in tests/test_benchmarks.py.
SHARED_SFT_FIELDS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
    "max_length", "truncation_mode", "train_sampling_strategy", "activation_checkpointing",
    "gradient_checkpointing", "packing", "padding_free", "bf16", "fp16", "use_cpu", "seed", "data_seed",
    "loss_type", "use_liger_kernel", "logging_steps", "logging_first_step",
)
SHARED_LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "layers_to_transform", "bias",
                      "trainable_token_indices", "task_type")

# The last line, which the lead's scripts parse.
FINAL_LINE = re.compile(r"speedup_vs_peer=(\d+\.\d{2}) speedup_vs_expert=(\d+\.\d{2}) mfu_cpu=(\d+\.\d{3}|n/a)")


@dataclass
class Run:
    """One training's measurements, and what the recipe does (for the table)."""

    recipe: str
    does: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    padding_efficiency: float = 0.0
    train_s: float = 0.0
    steps: int = 0
    peak_rss_mb: float = 0.0
    flops_per_token: float | None = None  # model FLOPs per trained token (MFU: `mfu`)
    # The last logged training loss and gradient norm: equal work gives (nearly) equal numbers.
    last_log: dict[str, float] = field(default_factory=dict)
    # (training seconds so far, held-out loss) after step 0, every k steps and the last.
    curve: list[tuple[float, float]] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s else 0.0

    def mfu(self, peak_gflops: float | None) -> float | None:
        """Model FLOPs utilisation over training time only (train_lora's own counts the held-out
        scoring too), against `peak_gflops`; None without a peak (a GPU)."""
        if not peak_gflops or not self.flops_per_token:
            return None
        return model_flops_utilisation(self.tokens_per_s, self.flops_per_token, peak_gflops / 1000)

    @property
    def final_loss(self) -> float:
        return self.curve[-1][1]

    def time_to(self, loss: float) -> float | None:
        """Training seconds until the held-out loss first reached `loss` (None: never)."""
        return next((t for t, value in self.curve if value <= loss + 1e-9), None)


class HeldOutLoss(TrainerCallback):
    """Scores the held-out rows before training, every `every` steps and after the last step.

    The scoring time is measured and kept out of the training time.
    """

    def __init__(self, rows: list[dict], pad_token_id: int, every: int, run: Run):
        self.rows, self.pad_token_id, self.every, self.run = rows, pad_token_id, every, run
        self.start = 0.0
        self.scoring_s = 0.0

    def _score(self, model: Any) -> None:
        began = time.perf_counter()
        nll = assistant_perplexity(model, self.rows, self.pad_token_id, batch_size=8)["nll"]
        ended = time.perf_counter()
        self.run.curve.append((round(began - self.start - self.scoring_s, 2), round(nll, 4)))
        self.scoring_s += ended - began

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.perf_counter()
        self._score(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._score(model)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.train_s = time.perf_counter() - self.start - self.scoring_s
        self.run.steps = state.global_step


def last_logged(log_history: list[dict]) -> dict[str, float]:
    """The last logged training loss and gradient norm of a trainer's log history."""
    logged = [entry for entry in log_history if "loss" in entry and "grad_norm" in entry]
    return {"loss": float(logged[-1]["loss"]), "grad_norm": float(logged[-1]["grad_norm"])} if logged else {}


def release_memory() -> None:
    """Free the last run's tensors and hand freed heap back to the OS, so the next peak RSS is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- what TRL can do here


def trl_scores_every_position(device: str = "cpu") -> bool:
    """True where TRL's fused LM head scores every position, not only the labelled ones (no Triton)."""
    try:
        from trl.kernels.chunked_logprob import _use_triton  # the rule TRL's fused forward applies
    except ImportError:
        return importlib.util.find_spec("triton") is None
    return not _use_triton(torch.device(device))


def cpu_limits(attention: str) -> list[str]:
    """What the expert peer cannot do here, and how both sides are kept equal (printed, one line each)."""
    triton = "installed" if importlib.util.find_spec("triton") else "not installed"
    head = ("every position, in fp32 tiles (only its Triton path compacts to labelled ones)"
            if trl_scores_every_position() else "the labelled positions only (Triton)")
    return [
        "turn-token rows: off on BOTH sides of the expert comparison. SFTTrainer's loss goes through TRL's "
        "fused LM head, which reads lm_head.weight and lm_head.bias itself; peft's trainable_token_indices wraps "
        "the tied head in a TrainableTokensWrapper that has .weight but no .bias: AttributeError at the first "
        "step, and no SFTConfig/LoraConfig field avoids it. The sftkit preset (with the rows) is compared with "
        "the default peer only.",
        f"LM head: TRL's fused head here scores {head}; no SFTConfig field changes that (only a compute_loss "
        "override, which is sftkit's own path). Not equalised: part of what the speed-up measures.",
        f"padding_free / packing: off on both. TRL flattens a batch into one row that only FlashAttention "
        f"keeps apart; under {attention} attention rows attend to each other (tests/test_packing.py). "
        "Length grouping on both sides removes most padding instead.",
        f"Liger kernels (use_liger_kernel): off on both; they are Triton kernels and Triton has no CPU "
        f"backend (triton {triton}). sftkit uses none.",
        "bf16 autocast: off on both (emulated on AVX2-only CPUs); both train in fp32.",
    ]


# --------------------------------------------------------------------------- the recipes' configurations


def equal_work_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the turn-token rows off: the sftkit run the expert peer is compared with (see `cpu_limits`)."""
    equal = copy.deepcopy(cfg)
    equal.lora.train_turn_tokens = False
    return equal


def expert_peer_config(cfg: RunConfig, model: Any, output_dir: str | Path) -> tuple[Any, Any]:
    """(`SFTConfig`, `LoraConfig`) for TRL + peft set up by an expert to do what sftkit's `train_lora` does.

    `cfg` must have ``lora.train_turn_tokens`` off (`equal_work_config`): TRL's fused LM head cannot
    train peft's token rows (see `cpu_limits`), and a comparison where only one side trains them
    would not be of the same work. Every field below is one an expert sets by hand; those sftkit
    also sets are checked equal to `sftkit.train.build_sft_config` (`SHARED_SFT_FIELDS`).
    """
    from peft import LoraConfig
    from trl import SFTConfig

    if cfg.lora.train_turn_tokens:
        raise ValueError("the expert peer cannot train the turn-token rows (TRL's fused LM head reads lm_head.bias, "
                         "which peft's TrainableTokensWrapper lacks): pass equal_work_config(cfg)")
    t = cfg.train
    args = SFTConfig(
        output_dir=str(output_dir),
        # Same optimisation: sftkit's learning rate, schedule and warm-up (a float < 1 is a share of
        # the steps, as sftkit passes it), AdamW defaults, clipping, steps, batch and seed (the seed
        # also seeds the length-grouped order, so both read the rows in the same batches).
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        max_steps=t.max_steps,
        num_train_epochs=t.num_train_epochs,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        data_seed=t.seed,
        # Same rows, same tokens: TRL tokenizes the conversations with the chat template, whose
        # {% generation %} markers give the assistant mask, and cuts rows to the same max_length,
        # keeping their start, as sftkit.masking does. The labels are checked equal to sftkit's at run time.
        assistant_only_loss=True,
        max_length=cfg.data.max_length,
        truncation_mode="keep_start",
        # Same batching: transformers' length-grouped sampler, as sftkit's batching="group".
        # padding_free/packing stay off: under SDPA packed rows attend to each other (cpu_limits).
        train_sampling_strategy="group_by_length",
        packing=False,
        padding_free=False,
        # SFTConfig turns checkpointing on by default: it recomputes every block's forward in the
        # backward pass to save memory a 270M LoRA does not need. sftkit does not checkpoint.
        activation_checkpointing=t.gradient_checkpointing,
        # The same precision as sftkit's side of the comparison: on a CPU fp32 without autocast
        # (config_for; SFTConfig's default would turn bf16 autocast on).
        **precision_flags(cpu_amp=t.cpu_amp),
        use_cpu=not torch.cuda.is_available(),
        # TRL's own loss (its fused LM head); Liger's kernels need Triton (cpu_limits).
        loss_type="nll",
        use_liger_kernel=False,
        # Bookkeeping, as sftkit's: the same logged steps (the table compares the last logged loss
        # and gradient norm), no checkpoints, no reporting, no progress bar.
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        # peft refuses layers_to_transform with target_modules="all-linear" (a string), so the
        # linear layers are named, read from the model by the helper sftkit uses (the same list).
        target_modules=find_lora_targets(model, cfg.lora.targets),
        # The preset's top blocks: the backward pass stops at the lowest adapted block.
        layers_to_transform=top_layers(model, cfg.lora.layers),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return args, lora


def check_expert_matches_sftkit(cfg: RunConfig, model: Any, tokenizer: Any, expert_args: Any,
                                expert_lora: Any) -> None:
    """Raise if the expert's configuration differs from sftkit's where both must do the same work."""
    with tempfile.TemporaryDirectory() as out:
        ours = sftkit_train.build_sft_config(cfg, out)
    our_lora = sftkit_train.run_lora_config(cfg, model, tokenizer)
    differ = [f"{name}: expert {getattr(expert_args, name)!r}, sftkit {getattr(ours, name)!r}"
              for name in SHARED_SFT_FIELDS if getattr(expert_args, name) != getattr(ours, name)]
    differ += [f"lora.{name}: expert {getattr(expert_lora, name)!r}, sftkit {getattr(our_lora, name)!r}"
               for name in SHARED_LORA_FIELDS if getattr(expert_lora, name) != getattr(our_lora, name)]
    if differ:
        raise ValueError("the expert peer would not do sftkit's work: " + "; ".join(differ))


def labels_agree(trl_rows: Any, sftkit_rows: list[dict]) -> tuple[int, int]:
    """(rows whose input_ids and labels TRL built equal to sftkit.masking's, rows compared)."""
    if len(trl_rows) != len(sftkit_rows):
        return 0, max(len(trl_rows), len(sftkit_rows))
    same = sum(a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"] for a, b in zip(trl_rows, sftkit_rows))
    return same, len(sftkit_rows)


def recipe_summary(args: Any, lora: Any, total_blocks: int, loss_on: str, head: str) -> dict[str, str]:
    """What a recipe does, read from its `SFTConfig` and `LoraConfig` (the table's first rows)."""
    blocks = describe_blocks(lora.layers_to_transform, total_blocks).split(" (")[0]
    order = {"group_by_length": "length groups", "random": "shuffled"}.get(args.train_sampling_strategy,
                                                                          args.train_sampling_strategy)
    precision = "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "fp32"
    return {
        "loss on": loss_on,
        "LoRA blocks": blocks,
        "turn-token rows": "trained" if lora.trainable_token_indices else "frozen",
        "grad. checkpointing": "on" if args.activation_checkpointing else "off",
        "batch order": order,
        "LM head at": head,
        "max_length": str(args.max_length),
        "lr, schedule": f"{args.learning_rate:g} {getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}",
        "precision": precision,
    }


# --------------------------------------------------------------------------- the runs


def run_sftkit(recipe: str, cfg: RunConfig, train_set: Any, held_out: list[dict], eval_every: int) -> Run:
    model, tokenizer = load_for(cfg)
    run = Run(recipe)
    with tempfile.TemporaryDirectory() as out:
        run.does = recipe_summary(sftkit_train.build_sft_config(cfg, out),
                                  sftkit_train.run_lora_config(cfg, model, tokenizer),
                                  model.config.num_hidden_layers, "assistant", "labelled only")
        result = sftkit_train.train_lora(cfg, model, tokenizer, train_set, out, disable_tqdm=True,
                                         callbacks=[HeldOutLoss(held_out, tokenizer.pad_token_id, eval_every, run)])
    m = result.metrics
    run.last_log = last_logged(result.log_history)
    run.tokens, run.peak_rss_mb, run.padding_efficiency = m["tokens"], m["peak_rss_mb"], m["padding_efficiency"]
    run.flops_per_token = m["flops_per_token"]
    del model, result
    release_memory()
    return run


def _train_trl(run: Run, model: Any, tokenizer: Any, args: Any, peft_config: Any, train_set: Any,
               held_out: list[dict], eval_every: int, check: Callable[[Any], None] | None = None) -> None:
    """Train `SFTTrainer` + `peft_config` on the messages rows, measured like sftkit's runs.

    `check` sees the trainer before training (the expert's label comparison).
    """
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                         peft_config=peft_config)
    if check is not None:
        check(trainer)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    peft_model = trainer.model
    # On a CPU TRL's fused head scores every position (trl_scores_every_position): head everywhere.
    everywhere = trl_scores_every_position("cuda" if torch.cuda.is_available() else "cpu")
    # Its FLOPs per token feed `Run.mfu`, against the benchmark's measured peak (not the callback's).
    throughput = ThroughputCallback(
        counter,
        lambda c: training_flops_per_token(peft_model, 1.0 if everywhere else c.labelled_fraction, c.mean_context),
        hardware_name())
    trainer.add_callback(throughput)  # resets the peak RSS at the start of training
    trainer.add_callback(HeldOutLoss(held_out, tokenizer.pad_token_id, eval_every, run))
    trainer.train()
    run.last_log = last_logged(trainer.state.log_history)
    run.tokens, run.padding_efficiency = counter.real_tokens, round(counter.padding_efficiency, 4)
    run.peak_rss_mb = round(peak_memory_mb()["peak_rss_mb"], 1)
    run.flops_per_token = throughput.flops_per_token


def run_default_peer(cfg: RunConfig, train_set: Any, held_out: list[dict], eval_every: int) -> Run:
    """TRL's SFTTrainer + peft LoraConfig as its documentation writes them (see the module docstring)."""
    from peft import LoraConfig
    from trl import SFTConfig

    model, tokenizer = load_for(cfg)
    run = Run(DEFAULT)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=cfg.train.max_steps,
            per_device_train_batch_size=cfg.train.per_device_train_batch_size,
            learning_rate=PEER_LEARNING_RATE,
            bf16=False,  # fp32 on a CPU, as for sftkit (TRL's default would turn bf16 autocast on)
            use_cpu=not torch.cuda.is_available(),
            seed=cfg.train.seed,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=2 * cfg.lora.r, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
        head = "every position" if trl_scores_every_position() else "labelled only"
        run.does = recipe_summary(args, peft_config, model.config.num_hidden_layers, "all tokens", head)
        _train_trl(run, model, tokenizer, args, peft_config, train_set, held_out, eval_every)
    model = None
    release_memory()
    return run


def run_expert_peer(cfg: RunConfig, train_set: Any, held_out: list[dict], eval_every: int,
                    sftkit_rows: list[dict]) -> tuple[Run, tuple[int, int]]:
    """TRL + peft as `expert_peer_config` sets them; returns the run and (rows whose labels equal sftkit's, rows)."""
    model, tokenizer = load_for(cfg)
    run = Run(EXPERT)
    agreement: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory() as out:
        args, peft_config = expert_peer_config(cfg, model, out)
        check_expert_matches_sftkit(cfg, model, tokenizer, args, peft_config)
        head = "every position" if trl_scores_every_position() else "labelled only"
        run.does = recipe_summary(args, peft_config, model.config.num_hidden_layers, "assistant", head)
        _train_trl(run, model, tokenizer, args, peft_config, train_set, held_out, eval_every,
                   check=lambda trainer: agreement.append(labels_agree(trainer.train_dataset, sftkit_rows)))
    model = None
    release_memory()
    return run, agreement[0]


# --------------------------------------------------------------------------- the comparison


def config_for(model_name: str, args: argparse.Namespace) -> RunConfig:
    """The cpu-demo preset (the smoke preset with --smoke) for `model_name`, `--steps` steps."""
    cfg = copy.deepcopy(get_preset("smoke" if args.smoke else "cpu-demo"))
    cfg.model.name = model_name
    cfg.data.curriculum = {}  # one shuffled set for every recipe (cpu-demo has no curriculum)
    cfg.train.max_steps = args.steps
    cfg.train.per_device_train_batch_size = args.batch_size
    cfg.train.gradient_accumulation_steps = 1  # one batch per optimizer step, as SFTConfig's default
    cfg.train.logging_steps = max(1, args.steps)
    # fp32 on every side, whatever the preset's `auto` picks on this CPU: TRL's default recipe has no
    # equivalent of holding the frozen weights in bf16, and fp32 is what an AVX2-only CPU runs.
    cfg.train.cpu_amp = "off"
    cfg.model.dtype = "float32"
    return cfg


def fmt(value: float | None, spec: str = ".1f", missing: str = "not reached") -> str:
    return missing if value is None else format(value, spec)


def compare(model_name: str, args: argparse.Namespace, peak_gflops: float | None) -> list[dict[str, Run]]:
    cfg = config_for(model_name, args)
    equal_cfg = equal_work_config(cfg)
    train_set, eval_set = load_demo_data(cfg)
    train_set = train_set.select(range(min(len(train_set), args.steps * args.batch_size)))
    tokenizer = prepare_tokenizer(load_tokenizer(cfg.model.name), turn_format=cfg.model.turn_format)
    held_out_rows = eval_set.select(range(min(len(eval_set), args.held_out)))
    tokenized, _ = tokenize_dataset(held_out_rows, tokenizer, cfg.data.max_length)
    held_out = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized]
    # sftkit's own tokenization of the training rows: the expert peer's labels are checked against it.
    ours, _ = tokenize_dataset(train_set, tokenizer, cfg.data.max_length)
    sftkit_rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ours]
    repeats = []
    for repeat in range(args.repeats):
        runs = {DEFAULT: run_default_peer(cfg, train_set, held_out, args.eval_every),
                SFTKIT: run_sftkit(SFTKIT, cfg, train_set, held_out, args.eval_every)}
        runs[EXPERT], (same, rows) = run_expert_peer(equal_cfg, train_set, held_out, args.eval_every, sftkit_rows)
        runs[SFTKIT_NO_ROWS] = run_sftkit(SFTKIT_NO_ROWS, equal_cfg, train_set, held_out, args.eval_every)
        runs[EXPERT].does["labels = sftkit's"] = f"{same}/{rows} rows"
        for recipe in (DEFAULT, SFTKIT, SFTKIT_NO_ROWS):
            runs[recipe].does["labels = sftkit's"] = "no (all tokens)" if recipe == DEFAULT else "its own"
        repeats.append(runs)
        print_table(model_name, repeat + 1, runs, peak_gflops)
        if same != rows:
            print(f"WARNING: TRL's assistant_only_loss labels differ from sftkit.masking's on {rows - same} of "
                  f"{rows} rows: the expert comparison is not of the same work")
    return repeats


def speedups(runs: dict[str, Run]) -> tuple[float, float]:
    """(sftkit preset over the default peer, sftkit with turn rows off over the expert peer), in tokens/s."""
    return tuple(runs[ours].tokens_per_s / runs[peer].tokens_per_s for peer, ours in PAIRS)  # type: ignore[return-value]


def print_table(model_name: str, repeat: int, runs: dict[str, Run], peak_gflops: float | None) -> None:
    width = 18
    columns = [runs[recipe] for recipe in RECIPES]
    print(f"\n{MODELS.get(model_name, model_name)} -- repeat {repeat}")
    print(f"{'':<30}" + "".join(f"{recipe:>{width}}" for recipe in RECIPES))

    def row(name: str, values: list[str]) -> None:
        print(f"{name:<30}" + "".join(f"{value:>{width}}" for value in values))

    for name in columns[0].does:
        row(name, [run.does.get(name, "") for run in columns])
    common = {}
    for peer, ours in PAIRS:
        common[peer] = common[ours] = max(runs[peer].final_loss, runs[ours].final_loss)
    partner = {a: b for pair in PAIRS for a, b in (pair, pair[::-1])}
    row("optimizer steps", [f"{run.steps}" for run in columns])
    row("tokens/s (non-pad)", [f"{run.tokens_per_s:.1f}" for run in columns])
    row("s per step", [f"{run.train_s / max(run.steps, 1):.2f}" for run in columns])
    row("training s (scoring excluded)", [f"{run.train_s:.1f}" for run in columns])
    row("padding efficiency", [f"{run.padding_efficiency:.3f}" for run in columns])
    row("peak RSS (MB)", [f"{run.peak_rss_mb:.0f}" for run in columns])
    row("MFU vs start fp32 peak", [fmt(run.mfu(peak_gflops), ".3f", "n/a") for run in columns])
    row("last logged train loss", [fmt(run.last_log.get("loss"), ".4f", "n/a") for run in columns])
    row("last logged grad norm", [fmt(run.last_log.get("grad_norm"), ".4f", "n/a") for run in columns])
    row("held-out NLL before", [f"{run.curve[0][1]:.4f}" for run in columns])
    row("held-out NLL after", [f"{run.final_loss:.4f}" for run in columns])
    row("s to the pair's common NLL", [fmt(run.time_to(common[run.recipe])) for run in columns])
    row("s to the other's final NLL", [fmt(run.time_to(runs[partner[run.recipe]].final_loss)) for run in columns])
    print("pairs: " + "; ".join(f"{peer} vs {ours} (common NLL {common[peer]:.4f})" for peer, ours in PAIRS))
    for run in columns:
        print(f"held-out NLL curve (s, NLL) {run.recipe}: {run.curve}")
    vs_peer, vs_expert = speedups(runs)
    print(f"tokens/s speed-up: {SFTKIT} vs {DEFAULT} {vs_peer:.2f}x; {SFTKIT_NO_ROWS} vs {EXPERT} {vs_expert:.2f}x")


def final_line(vs_peer: list[float], vs_expert: list[float], mfus: list[float]) -> str:
    """``speedup_vs_peer=<x> speedup_vs_expert=<y> mfu_cpu=<z>``: medians over the repeats (MFU n/a on a GPU).

    Medians, not means or the best run: one repeat slowed by another job on a shared machine
    moves a mean of two or three, and the best run is the one least like what a user sees.
    """
    mfu = f"{statistics.median(mfus):.3f}" if mfus else "n/a"
    return (f"speedup_vs_peer={statistics.median(vs_peer):.2f} speedup_vs_expert={statistics.median(vs_expert):.2f} "
            f"mfu_cpu={mfu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Defaults: 10 steps x 4 trainings x 2 models x 2 repeats. Without the expert pair the script
    # took 1,279 s on a quiet 2-core EPYC; the expert peer and sftkit without turn rows add an
    # estimated 6-10 minutes (not measured quietly: in a loaded 2-step SmolLM2 run the expert's
    # step took about as long as sftkit's preset step, the default peer's about 2.3x).
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per training (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step, every recipe (default 8)")
    parser.add_argument("--models", default=f"{MAIN_MODEL},smollm2-135m-instruct",
                        help="comma-separated; the first is the main job's (the last line's figures)")
    parser.add_argument("--repeats", type=int, default=2, help="run each comparison this many times in a row")
    parser.add_argument("--eval-every", type=int, default=2, help="score the held-out rows every k steps (default 2)")
    parser.add_argument("--held-out", type=int, default=16, help="held-out rows scored (default 16)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 steps, 1 repeat (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.steps, args.repeats, args.eval_every, args.held_out = "tiny-smollm2", 2, 1, 1, 4
        args.batch_size = 2
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")

    # The main job's shapes (Gemma 3 270M: width 640, MLP 2048); smoke: a few repeats of the same.
    peaks = cpu_matmul_peaks(repeats=2 if args.smoke else 5, remember=False) if not torch.cuda.is_available() else None
    print(f"hardware: {hardware_name()}, torch threads {torch.get_num_threads()}; "
          "every recipe fp32, bf16 autocast off")
    if peaks:
        print(f"fp32 matmul peak: {peaks['fp32']['gflops']} GFLOP/s ({peaks['fp32']['method']})")
        if peaks["bf16"]:
            print(f"bf16 matmul peak (native {', '.join(peaks['native_bf16'])}; not used here): "
                  f"{peaks['bf16']['gflops']} GFLOP/s")
    cfg = config_for(models[0], args)
    print(f"settings: {args.steps} optimizer steps x batch {args.batch_size}, LoRA r={cfg.lora.r} all; "
          f"held-out NLL on {args.held_out} rows every {args.eval_every} steps; {args.repeats} repeat(s); "
          f"models {', '.join(models)}")
    print(f"{DEFAULT}: SFTTrainer + LoraConfig(target_modules='all-linear', alpha=2r), SFTConfig defaults (padding, "
          f"gradient checkpointing, loss on all tokens, max_length 1024) but bf16=False, lr {PEER_LEARNING_RATE}")
    print(f"{SFTKIT}: the preset's train_lora (assistant-only loss, head at labelled positions, its LoRA placement, "
          "turn-token rows, length grouping, its learning rate)")
    print(f"{EXPERT}: SFTTrainer + LoraConfig set to do sftkit's work (expert_peer_config): the same LoRA targets, "
          "alpha, dropout and blocks (layers_to_transform), assistant_only_loss=True with TRL building the labels "
          "from the template's {% generation %} markers (checked equal to sftkit.masking's, row by row), "
          "gradient checkpointing off, length-grouped batches, the same max_length, batch, lr schedule, seed, fp32")
    print(f"{SFTKIT_NO_ROWS}: sftkit's train_lora with lora.train_turn_tokens=false, the expert peer's counterpart")
    print("what TRL cannot do on this CPU, and how both sides are kept equal:")
    for note in cpu_limits(cfg.model.attn_implementation):
        print(f"  - {note}")

    began = time.perf_counter()
    results = {}
    for name in models:
        results[name] = compare(name, args, peaks["fp32"]["gflops"] if peaks else None)

    main_repeats = results[models[0]]
    vs_peer = [speedups(runs)[0] for runs in main_repeats]
    vs_expert = [speedups(runs)[1] for runs in main_repeats]
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    mfus: list[float] = []
    if peaks:
        # Measured again at the end and the faster kept, as train_lora does: a peak measured while
        # the cores were busy or not yet warm would inflate every MFU.
        peaks = faster_peaks(peaks, cpu_matmul_peaks(repeats=2 if args.smoke else 5, remember=False),
                            when="at the start and at the end of the benchmark")
        peak = peaks["fp32"]["gflops"]
        print(f"fp32 matmul peak, the faster of the start and the end: {peak} GFLOP/s ({peaks['fp32']['method']})")
        mfus = [round(runs[SFTKIT].mfu(peak), 3) for runs in main_repeats if runs[SFTKIT].flops_per_token]
    print(f"{models[0]}, per repeat: speed-up vs {DEFAULT} {[round(s, 2) for s in vs_peer]}, vs {EXPERT} "
          f"{[round(s, 2) for s in vs_expert]}, {SFTKIT} MFU against that peak {mfus}; the last line: medians "
          f"over the repeats (speedup_vs_peer: {SFTKIT}/{DEFAULT}, speedup_vs_expert: {SFTKIT_NO_ROWS}/{EXPERT}, "
          f"mfu_cpu: {SFTKIT})")
    print(final_line(vs_peer, vs_expert, mfus))


if __name__ == "__main__":
    main()
