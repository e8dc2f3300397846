"""Direct Preference Optimization (DPO) after SFT: on-policy preference pairs and a LoRA DPO run.

SFT shows the model good answers; it never shows it which of *its own* answers are bad. DPO
(Rafailov et al., 2023) learns from pairs (prompt, chosen, rejected) by raising the policy's
log-probability ratio to a frozen reference for the chosen reply over the rejected one;
``beta`` sets how far the policy may drift from the reference.

Where the pairs come from matters more than the loss. Here they are *on-policy*: the
rejected reply is what the SFT model itself generated on a built-in task (`sftkit.tasks`)
when that reply was wrong or never stopped, and the chosen reply is the task's reference.
So DPO spends its updates on the mistakes this model actually makes. Examples the model
already gets right, and stops on, carry no preference and are skipped, counted in a report.

Training uses TRL's `DPOTrainer` with a peft LoRA config: with LoRA there is no second copy
of the model in memory, because TRL computes the reference log-probabilities by switching
the adapter off (the reference is the model as it was before DPO).

On Colab, `load_hub_preferences` reads a public preference data set instead
(``trl-lib/ultrafeedback_binarized``, already in TRL's conversational format).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from transformers import TrainerCallback

from ..adapters import save_adapter
from ..config import RunConfig
from ..data import SAMPLE_BUFFER, DataSourceError, load_hub_dataset, no_shutdown_sleep, stream_sample
from ..generate import Generation, generate_batch
from ..lora import build_lora_config, trainable_parameters
from ..measure import NonFiniteLossError, peak_memory_mb
from ..models import hardware_name
from ..precision import with_cpu_amp
from ..tasks import check_answer
from ..train import trainer_arguments

# Why an example became a pair, or was skipped. Fixed strings so a report can count them.
WRONG = "wrong answer"
NOT_STOPPED = "did not stop"
WRONG_NOT_STOPPED = "wrong answer and did not stop"
ALREADY_RIGHT = "already correct and stopped"
SAME_AS_CHOSEN = "rejected reply equals the reference"


# --------------------------------------------------------------------------- pairs


def preference_pair(prompt: Iterable[dict[str, str]], chosen: str, rejected: str) -> dict[str, list[dict[str, str]]]:
    """One row of TRL's conversational preference format: the prompt's messages and two assistant replies."""
    return {
        "prompt": [dict(message) for message in prompt],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def build_preference_pairs(
    examples: Iterable[dict[str, Any]], generations: list[Generation]
) -> tuple[list[dict[str, list[dict[str, str]]]], dict[str, Any]]:
    """On-policy preference pairs from built-in task examples and the SFT model's replies to them.

    `examples` are rows of `sftkit.tasks.make_task_examples` (``messages``, ``task``,
    ``answer``; the last message is the reference reply) and `generations[i]` is the model's
    reply to ``examples[i]["messages"][:-1]`` (from `generate_on_policy` or
    `sftkit.generate.generate_batch`).

    A pair is made when the reply is wrong (`sftkit.tasks.check_answer`) or did not stop
    (`Generation.stopped` is False: it ran into the token budget); chosen is the reference,
    rejected the model's reply. Rows are in TRL's conversational preference format::

        {"prompt": [messages...], "chosen": [{"role": "assistant", ...}], "rejected": [{...}]}

    Returns ``(pairs, report)``; the report counts pairs and skips by reason, with row
    numbers (``pair_rows`` / ``skipped_rows``) and ``pair_reasons`` aligned with `pairs`.
    """
    examples = list(examples)
    if len(examples) != len(generations):
        raise ValueError(
            f"one generation per example is needed: {len(examples)} examples, {len(generations)} generations"
        )
    pairs: list[dict[str, list[dict[str, str]]]] = []
    pair_reasons: list[str] = []
    pair_rows: dict[str, list[int]] = {}
    skipped_rows: dict[str, list[int]] = {}
    for index, (example, generation) in enumerate(zip(examples, generations)):
        for key in ("messages", "task", "answer"):
            if key not in example:
                raise ValueError(f"example {index} has no {key!r} field (keys: {sorted(example)})")
        messages = example["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(f"example {index}: the last message must be the reference assistant reply")
        reference = messages[-1]["content"]
        correct = check_answer(example["task"], generation.text, example["answer"])
        if correct and generation.stopped:
            skipped_rows.setdefault(ALREADY_RIGHT, []).append(index)
            continue
        if generation.text.strip() == reference.strip():
            # Only possible for a reply cut off exactly at the budget: the rendered pair would be
            # identical (the template closes both turns), so it carries no preference.
            skipped_rows.setdefault(SAME_AS_CHOSEN, []).append(index)
            continue
        reason = WRONG_NOT_STOPPED if not correct and not generation.stopped else WRONG if not correct else NOT_STOPPED
        # A reply that did not stop is rendered closed by the chat template; it still loses to
        # the reference exactly where it should have ended (or where it went wrong).
        pairs.append(preference_pair(messages[:-1], reference, generation.text))
        pair_reasons.append(reason)
        pair_rows.setdefault(reason, []).append(index)
    report = {
        "examples": len(examples),
        "pairs": len(pairs),
        "reasons": {reason: len(rows) for reason, rows in pair_rows.items()},
        "skipped": {reason: len(rows) for reason, rows in skipped_rows.items()},
        "pair_rows": pair_rows,
        "skipped_rows": skipped_rows,
        "pair_reasons": pair_reasons,
    }
    if report["pairs"] + sum(report["skipped"].values()) != report["examples"]:
        raise AssertionError(f"examples were lost without being counted: {report}")
    return pairs, report


def generate_on_policy(model: Any, tokenizer: Any, examples: Iterable[dict[str, Any]], max_new_tokens: int = 64,
                       batch_size: int = 16) -> list[Generation]:
    """The model's greedy replies to each example's prompt (its messages minus the reference reply)."""
    prompts = [list(example["messages"][:-1]) for example in examples]
    return generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def load_hub_preferences(name: str = "trl-lib/ultrafeedback_binarized", limit: int | None = None,
                         split: str = "train", seed: int = 0, buffer_size: int = SAMPLE_BUFFER):
    """A preference data set from the Hub (the Colab path), or a local folder laid out as one, as a
    `datasets.Dataset`.

    ``trl-lib/ultrafeedback_binarized`` is already in TRL's conversational preference format
    (``chosen``/``rejected`` message lists sharing the prompt); the shared prompt is split off
    with TRL's `maybe_extract_prompt`, so the result has ``prompt``, ``chosen`` and ``rejected``
    as `train_dpo` needs (without it, the Colab path failed there). With `limit`,
    a seeded sample of that many pairs is streamed (`sftkit.data.stream_sample`), not the
    split's first rows after downloading all of it: UltraFeedback's rows come grouped by the
    data set their prompt came from. Raises `sftkit.data.DataSourceError` in one line when the
    Hub cannot be reached.
    """
    from datasets import Dataset

    hint = ("offline, build on-policy pairs with sftkit.chapters.preference.build_preference_pairs "
            "on the built-in tasks")
    if limit is None:
        data = load_hub_dataset(name, split, offline_hint=hint)
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    else:
        stream = stream_sample(name, split, seed=seed, buffer_size=buffer_size, offline_hint=hint)
        with no_shutdown_sleep():
            data = Dataset.from_list(list(stream.take(limit)), features=stream.features)
    if not {"chosen", "rejected"} <= set(data.column_names):
        raise DataSourceError(f"{name!r} has no chosen/rejected columns (columns: {data.column_names})")
    data = data.select_columns([c for c in ("prompt", "chosen", "rejected") if c in data.column_names])
    if "prompt" not in data.column_names:
        # An implicit prompt (ultrafeedback_binarized: both conversations start with the user turn):
        # TRL's extract_prompt splits off the shared prefix, so train_dpo gets prompt/chosen/rejected.
        from trl import maybe_extract_prompt

        data = data.map(maybe_extract_prompt)
    return data


# --------------------------------------------------------------------------- training


def build_dpo_config(cfg: RunConfig, output_dir: str | Path, beta: float = 0.1, learning_rate: float = 5e-6,
                     **overrides: Any):
    """A TRL `DPOConfig` from a `RunConfig`, for this machine's hardware.

    Precision follows `sftkit.train.precision_flags` and is always given explicitly: TRL's
    configs otherwise default to ``bf16=True``, which is wrong on a T4 and slow on a CPU.
    Activation checkpointing is likewise explicit (TRL defaults it on).
    """
    from trl import DPOConfig

    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    # Each pair is two sequences (chosen and rejected) in the forward pass; TRL defaults
    # bf16 and checkpointing to on, so the shared arguments set both explicitly.
    values = trainer_arguments(cfg, output_dir)
    values.update(learning_rate=learning_rate, beta=beta, max_length=cfg.data.max_length)
    values.update(overrides)
    return DPOConfig(**values)


class _FiniteLossCallback(TrainerCallback):
    """Stop with a clear error when DPO's loss or gradient norm stops being finite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"DPO {key} became {value} at step {state.global_step}: lower the learning rate or beta, "
                    "or train in fp32/bf16"
                )


@dataclass
class DPOResult:
    """What a DPO run produced: the trained `PeftModel`, its saved adapter and measurements."""

    model: Any
    adapter_dir: Path
    log_history: list[dict]
    metrics: dict[str, Any] = field(default_factory=dict)


def _preference_dataset(pairs: Any) -> Any:
    """`pairs` as a `datasets.Dataset`, checked to be non-empty and to have TRL's preference columns."""
    from datasets import Dataset

    dataset = pairs if isinstance(pairs, Dataset) else Dataset.from_list(list(pairs))
    if len(dataset) == 0:
        raise ValueError("no preference pairs to train on (the model may already be right on every example)")
    for column in ("prompt", "chosen", "rejected"):
        if column not in dataset.column_names:
            raise ValueError(f"preference pairs need a {column!r} column; got {dataset.column_names}")
    return dataset


def _merge_policy(model: Any, tokenizer: Any, output_dir: Path) -> tuple[Any, Path | None]:
    """The policy as a plain model: a `PeftModel` is merged (in place) and saved with the tokenizer
    to ``output_dir/policy_base``, whose path is returned (None when `model` had no adapter).

    The DPO adapter sits on the *merged* SFT model: saving that model lets the adapter's config
    name it (naming the original base would silently drop the SFT weights).
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model, None
    model = model.merge_and_unload()
    policy_base = output_dir / "policy_base"
    model.save_pretrained(policy_base)
    tokenizer.save_pretrained(policy_base)
    return model, policy_base


def _dpo_metrics(trainer: Any, args: Any, train_output: Any, wall: float, dataset: Any, beta: float,
                 learning_rate: float, params: dict[str, Any], lora_config: Any) -> dict[str, Any]:
    """The `DPOResult.metrics`: time, losses and rewards of the last log, LoRA size, precision, memory."""
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logged[-1] if logged else {}
    return {
        "hardware": hardware_name(),
        "wall_s": round(wall, 2),
        "steps": trainer.state.global_step,
        "pairs": len(dataset),
        "beta": beta,
        "learning_rate": learning_rate,
        "train_loss": train_output.training_loss,
        "first_loss": logged[0]["loss"] if logged else None,
        "final_loss": last.get("loss"),
        "reward_accuracy": last.get("rewards/accuracies"),
        "reward_margin": last.get("rewards/margins"),
        "trainable_params": params["trainable"],
        "total_params": params["total"],
        "lora_targets": sorted(lora_config.target_modules),
        "precision": "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32",
        **{k: round(v, 1) for k, v in peak_memory_mb().items()},
    }


def train_dpo(
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    pairs: Any,
    output_dir: str | Path,
    beta: float = 0.1,
    learning_rate: float = 5e-6,
    max_steps: int = -1,
    **dpo_overrides: Any,
) -> DPOResult:
    """DPO with a fresh LoRA adapter (`sftkit.lora.build_lora_config` with the run's LoRA settings).

    `model` is the policy to improve, usually the SFT model. A `PeftModel` (an SFT adapter
    on its base) is merged first (``merge_and_unload``, which changes it in place) so that the
    reference DPO compares against is exactly the SFT model: TRL refuses a `PeftModel`
    together with a new `peft_config`. `pairs` is a list of rows or a `datasets.Dataset` in
    TRL's preference format. The adapter and tokenizer are saved to ``output_dir/adapter``.

    The learning rate default (5e-6) is the usual DPO value for full fine-tuning; LoRA
    adapters often need several times more (5e-5) to move in a few hundred steps.
    """
    from trl import DPOTrainer

    dataset = _preference_dataset(pairs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, policy_base = _merge_policy(model, tokenizer, output_dir)
    lora_config = build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                                    layers=cfg.lora.layers)
    args = build_dpo_config(cfg, output_dir / "checkpoints", beta=beta, learning_rate=learning_rate,
                            max_steps=max_steps, **dpo_overrides)
    trainer = with_cpu_amp(DPOTrainer)(  # fp16 on a CPU as on a T4 (autocast + loss scaler)
        model=model,
        ref_model=None,  # with peft_config, the reference is the same model with the adapter disabled
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config,
        callbacks=[_FiniteLossCallback()],
    )
    params = trainable_parameters(trainer.model)
    start = time.perf_counter()
    train_output = trainer.train()
    wall = time.perf_counter() - start

    adapter_dir = save_adapter(trainer, tokenizer, output_dir / "adapter", base_dir=policy_base)
    trainer.model.eval()
    metrics = _dpo_metrics(trainer, args, train_output, wall, dataset, beta, learning_rate, params, lora_config)
    return DPOResult(trainer.model, adapter_dir, list(trainer.state.log_history), metrics)


__all__ = [
    "WRONG",
    "NOT_STOPPED",
    "WRONG_NOT_STOPPED",
    "ALREADY_RIGHT",
    "SAME_AS_CHOSEN",
    "preference_pair",
    "build_preference_pairs",
    "generate_on_policy",
    "load_hub_preferences",
    "build_dpo_config",
    "train_dpo",
    "DPOResult",
]
