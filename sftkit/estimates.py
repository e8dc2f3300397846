"""Time and memory of a preset on a GPU card, estimated from the model's shapes: one source for every figure.

The notebooks, the README and the presets' comments need to say how long a run takes on
Colab's T4 and whether it fits in its memory before anyone has run it there. Hand-written
figures drifted apart (three different T4 times for the same preset), so they come from
here instead, computed from the run's configuration and the model's shapes, and labelled
for what they are: an estimate at an assumed sustained rate, until a measured figure is
committed (``results/t4_measured.json``; `load_measured`), which then replaces it.

- **FLOPs** are `sftkit.measure.training_flops_per_token`'s count (the same function the
  run card's MFU uses), applied to the model as it trains -- LoRA wrapped by peft exactly as
  `sftkit.train.train_lora` wraps it -- built on torch's ``meta`` device from the model's
  config: shapes only, no weights, about a second. The config is the model's own where one is
  at hand (`model_config`, or a local folder), else a small table of known architectures
  (`KNOWN_ARCHITECTURES`: SmolLM2-360M/-135M, whose Hub configs `sftkit.standins` copies), since
  offline the preset's Hub model cannot be read. Gradient checkpointing recomputes each block's
  forward pass: time counts it, the model FLOPs (MFU's convention) do not.
- **Training minutes**: (model FLOPs + recomputation) / the card's assumed sustained rate
  (`CARDS`), for ``train_size x epochs`` conversations of an assumed length
  (`tokens_per_conversation`; 500 for smol-smoltalk, what the notebooks assumed).
- **Generation floor**: decoding is memory-bandwidth-bound; every step of a batch reads all
  weights once, so one model's pass over the evaluation prompts takes at least
  ``steps x weight bytes / bandwidth``. Real decoding adds the KV cache and `generate`'s
  per-step overhead: a floor, not an estimate.
- **Peak GPU memory of training** at the preset's batch and ``max_length`` (every row at
  ``max_length``, the worst batch), itemised in `Estimate.memory_gib` (see `training_memory`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .lm_head import head_tile
from .lora import build_lora_config
from .measure import PEAK_TFLOPS, decoder_blocks, training_flops_per_token
from .models import resolve_dtype
from .standins import SMOLLM2_135M_CONFIG, SMOLLM2_360M_CONFIG

# What a whole training step of a small model sustains end to end on a T4 (fp16): the rate the
# notebooks assumed, about 15% of its 65 TFLOP/s data-sheet peak. It is below
# `sftkit.measure.T4_SUSTAINED_TFLOPS` (24: large fp16 matmuls alone) because a 960-wide model
# spends much of a step in kernels that FLOPs do not count (norms, activations, the optimizer,
# launches). An assumption, not a measurement: replace it by a measured run (`load_measured`).
T4_ASSUMED_TFLOPS = 10.0
ASSUMED_FRACTION_OF_PEAK = T4_ASSUMED_TFLOPS / PEAK_TFLOPS["T4"]
# The CUDA context and cuBLAS workspace, outside torch's allocator peak (about 0.4 GiB on Colab
# with torch 2.x; benchmarks/gpu_card.py adds the same).
CUDA_CONTEXT_GIB = 0.4
# smol-smoltalk's conversations, as the notebooks assumed (chapter 02 measures the sample).
DEFAULT_TOKENS_PER_CONVERSATION = 500
# Where a measured T4 run of the t4 preset is committed (`load_measured`; none exists yet).
MEASURED_FILE = Path(__file__).resolve().parents[1] / "results" / "t4_measured.json"


@dataclass(frozen=True)
class Card:
    """A GPU as the estimate sees it.

    `sustained_tflops`: the assumed end-to-end training rate; `memory_gib`: the memory
    nvidia-smi reports in total (the CUDA context comes out of it); `bandwidth_gb_s`: the
    data-sheet memory bandwidth; `dtype`: what `sftkit.models.pick_dtype` gives it
    (fp16 below compute capability 8, bf16 from 8: the same 2 bytes a value). The rate is for
    that dtype: a run forced to fp32 (``model.dtype``) gets fp32's bytes but not a lower rate.
    """

    name: str
    sustained_tflops: float
    memory_gib: float
    bandwidth_gb_s: float
    dtype: str


def _card(name: str, memory_gib: float, bandwidth_gb_s: float, dtype: str = "bfloat16") -> Card:
    # Cards other than the T4: the T4's assumed fraction of the data-sheet peak (`measure.PEAK_TFLOPS`).
    return Card(name, round(ASSUMED_FRACTION_OF_PEAK * PEAK_TFLOPS[name], 1), memory_gib, bandwidth_gb_s, dtype)


# Memory: nvidia-smi's total (T4 15,360 MiB; L4 23,034 MiB; A100 40 GB 40,960 MiB, Colab's;
# H100 80 GB 81,559 MiB). Bandwidth: data sheets (T4 320 GB/s; L4 300 GB/s; A100 40 GB 1,555 GB/s;
# H100 SXM 3,350 GB/s, the card whose peak `measure.PEAK_TFLOPS["H100"]` holds).
CARDS: dict[str, Card] = {
    "T4": Card("T4", T4_ASSUMED_TFLOPS, 15.0, 320.0, "float16"),
    "L4": _card("L4", 22.5, 300.0),
    "A100": _card("A100", 40.0, 1555.0),
    "H100": _card("H100", 79.6, 3350.0),
}

# Architectures whose config values are known offline: Hub id -> (model_type, config values).
KNOWN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "HuggingFaceTB/SmolLM2-360M": ("llama", SMOLLM2_360M_CONFIG),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ("llama", SMOLLM2_360M_CONFIG),
    "HuggingFaceTB/SmolLM2-135M": ("llama", SMOLLM2_135M_CONFIG),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", SMOLLM2_135M_CONFIG),
}
# Rows peft's `trainable_token_indices` trains with `lora.train_turn_tokens`: the start and end of a turn.
TURN_TOKENS = 2
_GIB = 2**30


@dataclass
class Estimate:
    """Time and memory of one preset on one card; what is counted is in `assumptions` and `memory_gib`.

    - `training_flops`: model FLOPs of the run (`training_tokens x flops_per_token`, MFU's
      convention); `recompute_flops`: gradient checkpointing's second forward pass of every
      block, which the card computes too; `training_minutes` = both / `sustained_tflops`;
    - `generation_minutes_floor`: one model's greedy pass over the evaluation prompts
      (``ceil(eval.n_examples / eval.batch_size) x eval.max_new_tokens`` steps) reading all
      weights once a step at the card's bandwidth; KV-cache reads and per-step overhead excluded;
    - `memory_gib`: training's peak allocation by part (torch's allocator, as
      `sftkit.measure.peak_memory_mb` reports it) and `peak_memory_gib` their sum; `fits`
      compares it plus `CUDA_CONTEXT_GIB` with the card's memory;
    - `measured`: a committed measurement of this preset on this card (`load_measured`), if any.
    """

    preset: str
    card: str
    model: str
    parameters: int
    trainable_parameters: int
    dtype: str
    tokens_per_conversation: int
    labelled_fraction: float
    training_tokens: int
    flops_per_token: float
    training_flops: float
    recompute_flops: float
    sustained_tflops: float
    training_minutes: float
    generation_steps: int
    generation_minutes_floor: float
    batch_size: int
    max_length: int
    gradient_checkpointing: bool
    memory_gib: dict[str, float]
    peak_memory_gib: float
    card_memory_gib: float
    fits: bool
    assumptions: list[str] = field(default_factory=list)
    measured: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """What the figures are: "measured on <card>" with a measurement, else how they were estimated."""
        if self.measured:
            return f"measured on {self.measured['card']}"
        return (f"estimate (FLOPs at {self.sustained_tflops:g} TFLOP/s sustained, "
                f"{self.tokens_per_conversation} tokens per conversation), not measured")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "label": self.label}


def card_spec(card: str | Card) -> Card:
    """The `Card` for a name ("T4", "t4", "Tesla T4"); ValueError naming the known cards otherwise."""
    if isinstance(card, Card):
        return card
    matches = [key for key in CARDS if key in card.upper()]
    if not matches:
        raise ValueError(f"unknown card {card!r}; known cards: {', '.join(CARDS)} (or pass a Card)")
    return CARDS[max(matches, key=len)]


def architecture_config(cfg: RunConfig, model_config: Any = None) -> Any:
    """The transformers config of `cfg.model.name`, without loading weights or touching the network.

    `model_config` (a loaded model's ``.config``, or a dict of config values with ``model_type``)
    wins; else a local folder's config.json; else `KNOWN_ARCHITECTURES`.
    """
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_config, PretrainedConfig):
        return model_config
    if isinstance(model_config, dict):
        values = dict(model_config)
        return AutoConfig.for_model(values.pop("model_type", "llama"), **values)
    name = cfg.model.name
    if (Path(name) / "config.json").is_file():
        return AutoConfig.from_pretrained(name)
    if name in KNOWN_ARCHITECTURES:
        model_type, values = KNOWN_ARCHITECTURES[name]
        return AutoConfig.for_model(model_type, **values)
    raise ValueError(f"no config for {name!r} offline: pass model_config= (a loaded model's .config) or a local "
                     f"folder; known architectures: {', '.join(KNOWN_ARCHITECTURES)}")


def meta_lora_model(cfg: RunConfig, config: Any, dtype: torch.dtype) -> nn.Module:
    """The model as `sftkit.train.train_lora` trains it (peft LoRA, turn-token rows), on the meta device:
    shapes only."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    vocab = model.get_input_embeddings().weight.shape[0]
    tokens = list(range(vocab - TURN_TOKENS, vocab)) if cfg.lora.train_turn_tokens else None
    lora_config = build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                                    layers=cfg.lora.layers, trainable_tokens=tokens)
    with warnings.catch_warnings():  # peft calls a deprecated transformers property; nothing to act on here
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora_config)  # peft keeps the trainable parameters in fp32


def forward_block_flops_per_token(model: nn.Module, context: float) -> float:
    """One forward pass of the decoder blocks per token (2 x every linear weight, LoRA's included, and
    4 x `context` x attention width): what gradient checkpointing recomputes. Same terms as
    `training_flops_per_token`."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal_lm.config, "text_config", None) or causal_lm.config
    heads = config.num_attention_heads
    attention = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    total = 0.0
    for block in decoder_blocks(causal_lm):
        total += 4.0 * context * attention
        total += sum(2.0 * m.weight.numel() for m in block.modules() if isinstance(m, nn.Linear))
    return total


def training_memory(cfg: RunConfig, model: nn.Module, act_bytes: int, mixed_precision: bool) -> dict[str, float]:
    """Training's peak GPU allocation, in GiB by part, for `cfg`'s batch at `max_length` tokens a row.

    - ``weights``: every frozen parameter at its dtype (the card's: 2 bytes);
    - ``trainable``: LoRA's and the turn-token rows' parameters in fp32, their gradients and
      AdamW's two moments: 16 bytes each;
    - ``activations``: what autograd keeps for the backward pass. Per token and block of a
      Llama-style model under SDPA (no T x T scores kept), `act_bytes` per value: two norms'
      inputs and outputs (4 x hidden), q, k, v after RoPE (hidden + 2 x key/value width), the
      attention output (hidden), the MLP's gate, up and SiLU(gate) (3 x intermediate); per
      LoRA-adapted linear, A's r outputs and a copy of its input (peft casts it to the fp32
      adapter and autocast back, or dropout copies it; with neither the input is shared) plus a
      1-byte dropout mask per input value. With gradient checkpointing only each block's input
      (hidden) is kept, plus one block's full set while it is recomputed;
    - ``workspace``: one block's set again, for the gradients flowing through it;
    - ``head``: the labelled-head loss (`sftkit.lm_head.head_loss_sum`) keeps the gathered hidden
      states and their gradient (2 x hidden per position; every position counted), three fp32
      sums of hidden width per position (the softmax-weighted rows, the target rows, the
      gradient) and one vocabulary tile of logits (`head_tile`) in fp32 plus their
      half-precision product; the model-forward
      loss instead keeps every position's logits, their fp32 copy and log-softmax
      (vocabulary x (act_bytes + 8)).

    Not counted: the CUDA context (`CUDA_CONTEXT_GIB`, added by `Estimate.fits`), the
    allocator's fragmentation, RoPE tables, masks and the embedding's output.
    """
    causal_lm = model.get_base_model()
    config = getattr(causal_lm.config, "text_config", None) or causal_lm.config
    hidden, intermediate = config.hidden_size, getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    tokens = cfg.train.per_device_train_batch_size * cfg.data.max_length
    blocks = list(decoder_blocks(causal_lm))

    def block_bytes(block: nn.Module) -> float:
        values = 4 * hidden + (hidden + 2 * kv) + hidden + 3 * intermediate
        extra = 0.0
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear) and name.split(".")[-2:-1] == ["lora_A"]:
                copies = mixed_precision or cfg.lora.dropout > 0
                extra += act_bytes * module.out_features + (act_bytes * module.in_features if copies else 0)
                extra += module.in_features if cfg.lora.dropout > 0 else 0
        return act_bytes * values + extra

    per_block = [block_bytes(block) * tokens for block in blocks]
    if cfg.train.gradient_checkpointing:
        activations = len(blocks) * act_bytes * hidden * tokens + max(per_block)
    else:
        activations = sum(per_block)
    vocab = causal_lm.get_input_embeddings().weight.shape[0]  # tied or not, the head has as many rows
    if cfg.train.labelled_head:
        tile_logits = head_tile(tokens, vocab) * tokens
        head = 2 * act_bytes * hidden * tokens + 3 * 4 * hidden * tokens + tile_logits * (4 + act_bytes)
    else:
        head = tokens * vocab * (act_bytes + 8)
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    trainable = 16 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = {"weights": weights, "trainable": trainable, "activations": activations, "workspace": max(per_block),
             "head": head}
    return {key: value / _GIB for key, value in parts.items()}


def load_measured(cfg: RunConfig, card: Card, path: str | Path | None = None) -> dict[str, Any] | None:
    """A committed measurement of `cfg`'s preset on `card`, if `path` (default `MEASURED_FILE`) holds one.

    The file is one JSON object: ``card`` (the hardware name the run card gives, e.g. "Tesla T4"),
    ``preset``, the measured ``training_minutes`` and ``peak_memory_gib`` (optionally
    ``generation_minutes``, ``tokens_per_s``, ``source``: the run it came from), and optionally
    ``settings`` ({"data.train_size": 4000, ...}) that `cfg` must match for it to apply.
    """
    path = Path(path) if path is not None else MEASURED_FILE
    if not path.is_file():
        return None
    measured = json.loads(path.read_text())
    if card.name not in str(measured.get("card", "")).upper() or measured.get("preset") != cfg.preset:
        return None
    for key, value in (measured.get("settings") or {}).items():
        target: Any = cfg
        for part in key.split("."):
            target = getattr(target, part, None)
        if target != value:
            return None
    return measured


def estimate(cfg: RunConfig, card: str | Card = "T4", *, model_config: Any = None,
             tokens_per_conversation: int = DEFAULT_TOKENS_PER_CONVERSATION, labelled_fraction: float = 1.0,
             sustained_tflops: float | None = None, measured_path: str | Path | None = None) -> Estimate:
    """Time and memory of training `cfg` on `card`, estimated from the model's shapes (see the module docstring).

    `tokens_per_conversation` (capped at ``data.max_length``) is the assumed mean row length;
    `labelled_fraction` the share of positions where the LM head runs (1.0, every position: an
    upper bound for the labelled-head loss, which runs it only where a label is);
    `sustained_tflops` overrides the card's assumed rate. A committed measurement
    (`load_measured`) is attached as `Estimate.measured` and changes the label.
    """
    spec = card_spec(card)
    rate = sustained_tflops or spec.sustained_tflops
    dtype = getattr(torch, spec.dtype) if cfg.model.dtype == "auto" else resolve_dtype(cfg.model.dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    act_bytes = dtype.itemsize
    config = architecture_config(cfg, model_config)
    model = meta_lora_model(cfg, config, dtype)

    length = min(tokens_per_conversation, cfg.data.max_length)
    t = cfg.train
    if t.max_steps > 0:
        rows = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps
    else:
        rows = math.ceil(cfg.data.train_size * t.num_train_epochs)
    tokens = rows * length
    context = (length + 1) / 2  # causal attention within a row of `length` tokens
    per_token = training_flops_per_token(model, labelled_fraction, context)
    recompute = forward_block_flops_per_token(model, context) if t.gradient_checkpointing else 0.0
    minutes = tokens * (per_token + recompute) / (rate * 1e12) / 60

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # LoRA unmerged, as evaluated
    steps = math.ceil(cfg.eval.n_examples / cfg.eval.batch_size) * cfg.eval.max_new_tokens
    generation_floor = steps * weight_bytes / (spec.bandwidth_gb_s * 1e9) / 60

    memory = training_memory(cfg, model, act_bytes, mixed_precision=dtype_name != "float32")
    peak = sum(memory.values())
    parameters = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assumptions = [
        f"{length} tokens per conversation (assumed; capped at max_length {cfg.data.max_length}), "
        f"{rows:,} conversations: {tokens:,} tokens",
        f"{rate:g} TFLOP/s sustained on {spec.name} (assumed, end to end)",
        ("LM head at every position" if labelled_fraction >= 1
         else f"LM head at {labelled_fraction:g} of the positions"),
        f"memory at batch {t.per_device_train_batch_size} x max_length {cfg.data.max_length} (every row full), "
        f"{dtype_name} weights and activations, gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}",
        f"generation floor: {steps:,} decoding steps each reading {weight_bytes / 1e9:.2f} GB of weights at "
        f"{spec.bandwidth_gb_s:g} GB/s",
    ]
    return Estimate(
        preset=cfg.preset, card=spec.name, model=cfg.model.name, parameters=parameters,
        trainable_parameters=trainable, dtype=dtype_name, tokens_per_conversation=length,
        labelled_fraction=labelled_fraction, training_tokens=tokens, flops_per_token=per_token,
        training_flops=tokens * per_token, recompute_flops=tokens * recompute, sustained_tflops=rate,
        training_minutes=minutes, generation_steps=steps,
        generation_minutes_floor=generation_floor, batch_size=t.per_device_train_batch_size,
        max_length=cfg.data.max_length, gradient_checkpointing=t.gradient_checkpointing, memory_gib=memory,
        peak_memory_gib=peak, card_memory_gib=spec.memory_gib, fits=peak + CUDA_CONTEXT_GIB <= spec.memory_gib,
        assumptions=assumptions, measured=load_measured(cfg, spec, measured_path),
    )


def format_estimate(est: Estimate) -> str:
    """One line for a notebook or the README: training time, generation floor, peak memory, and what they are."""
    fit = "fits" if est.fits else "does NOT fit"
    line = (f"`{est.preset}` preset on {est.card}: training ~{est.training_minutes:.1f} min "
            f"({est.training_tokens / 1e6:.1f}M tokens, {est.training_flops + est.recompute_flops:.1e} FLOPs), "
            f"generation >= {est.generation_minutes_floor * 60:.0f} s per model pass "
            f"({est.generation_steps:,} decoding steps), peak training memory ~{est.peak_memory_gib:.1f} GiB "
            f"+ {CUDA_CONTEXT_GIB} GiB CUDA context of {est.card_memory_gib:g} GiB ({fit}) -- {est.label}")
    if est.measured:
        m = est.measured
        line = (f"`{est.preset}` preset on {m['card']}: training {m['training_minutes']:.1f} min, "
                "peak training memory "
                f"{m['peak_memory_gib']:.1f} GiB -- {est.label} (estimate was ~{est.training_minutes:.0f} min, "
                f"~{est.peak_memory_gib:.1f} GiB)")
    return line
