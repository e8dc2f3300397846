"""Knowledge distillation: a small student learns from a larger teacher, two ways.

- **Token-level KD** (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"):
  at every trained position the student matches the teacher's whole next-token
  distribution, softened by a temperature T, instead of only the one reference token. The
  soft targets say which *wrong* tokens are nearly right, which a one-hot label cannot.
  `kd_loss` is KL(teacher || student) on the softened distributions, averaged over the
  positions that carry a label and multiplied by T^2: the gradient of the softened KL
  scales as 1/T^2, and the factor keeps it comparable to the cross-entropy it is mixed with.
  Both models must share one tokenizer (the same vocabulary, position for position).
- **Sequence-level KD** (Kim & Rush, 2016): the teacher answers the prompts (greedy), and
  the student is fine-tuned on those answers with plain SFT. It needs only the teacher's
  text, so the two models may even use different tokenizers. `sequence_kd_dataset` builds
  the ``messages`` rows; `sftkit.train.train_lora` trains on them as on any conversation.

`train_token_kd` mixes the two losses, ``alpha * KD + (1 - alpha) * CE``, in a simple loop
that is easy to read next to the formula; alpha = 1 is pure distillation, 0 is plain SFT.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..masking import IGNORE_INDEX


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Causal LM alignment: the logits at position t predict the token at t + 1, so the last
    # position predicts nothing and the first label is never a target (as in HF's loss).
    return logits[:, :-1, :], labels[:, 1:]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 2.0) -> torch.Tensor:
    """T^2 * mean over labelled positions of KL(softmax(teacher / T) || softmax(student / T)).

    Shapes: logits (batch, length, vocab), labels (batch, length) aligned with the inputs
    (HF convention: a label of -100 means "no loss here"; the shift happens inside). Computed
    in float32. Raises ValueError on mismatched shapes or when no position has a label.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (the models must share a tokenizer and the same inputs)"
        )
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"expected logits (batch, length, vocab) and labels (batch, length); got {tuple(student_logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    student, shifted_labels = _shifted(student_logits.float(), labels)
    teacher, _ = _shifted(teacher_logits.float(), labels)
    mask = shifted_labels != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no position has a label (all labels[:, 1:] are -100): nothing to distil")
    student_log_probs = F.log_softmax(student[mask] / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher[mask] / temperature, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q) = KL(p || q).
    per_position = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(dim=-1)
    return per_position.mean() * temperature**2


def causal_lm_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions (the usual SFT loss), in float32."""
    shifted_logits, shifted_labels = _shifted(logits.float(), labels)
    return F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.size(-1)), shifted_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------- sequence-level KD


def sequence_kd_dataset(teacher: Any, tokenizer: Any, prompts: list[Any], max_new_tokens: int = 128,
                        batch_size: int = 16, keep_unstopped: bool = False):
    """The teacher's greedy replies as ``messages`` conversations for plain SFT of the student.

    `prompts` are user strings or conversations ending with a user turn. Replies that are
    empty are dropped; replies that ran into `max_new_tokens` without stopping are dropped
    too unless `keep_unstopped`, because training on a cut-off reply closed by end-of-turn
    teaches the student to stop mid-sentence. Returns ``(datasets.Dataset, report)``; every
    kept row passes `sftkit.data.validate_conversation`.
    """
    from datasets import Dataset

    from ..data import MESSAGES_FEATURES, validate_conversation
    from ..generate import generate_batch

    conversations = []
    for index, prompt in enumerate(prompts):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if not messages or messages[-1].get("role") != "user":
            raise ValueError(f"prompt {index} must be a string or a conversation ending with a user turn")
        conversations.append(messages)
    generations = generate_batch(teacher, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size)
    rows, dropped_rows = [], {}
    for index, (messages, generation) in enumerate(zip(conversations, generations)):
        row = {"messages": messages + [{"role": "assistant", "content": generation.text}]}
        reason = validate_conversation(row)
        if reason is None and not generation.stopped and not keep_unstopped:
            reason = "teacher did not stop"
        if reason is not None:
            dropped_rows.setdefault(reason, []).append(index)
            continue
        rows.append(row)
    report = {
        "prompts": len(conversations),
        "kept": len(rows),
        "dropped": {reason: len(numbers) for reason, numbers in dropped_rows.items()},
        "dropped_rows": dropped_rows,
        "teacher_stop_rate": sum(g.stopped for g in generations) / max(len(generations), 1),
    }
    dataset = (Dataset.from_list(rows, features=MESSAGES_FEATURES) if rows
               else Dataset.from_dict({"messages": []}, features=MESSAGES_FEATURES))
    return dataset, report


# --------------------------------------------------------------------------- token-level KD


def pad_batch(rows: list[dict[str, list[int]]], pad_token_id: int, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad tokenized rows into ``input_ids``/``attention_mask``/``labels`` tensors (labels -100 on padding)."""
    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        attention_mask[i, :n] = 1
        labels[i, :n] = torch.tensor(row["labels"])
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
            "labels": labels.to(device)}


def distill_step(student: Any, teacher: Any, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                 temperature: float = 2.0, alpha: float = 0.5) -> dict[str, float]:
    """One optimiser step on ``alpha * kd_loss + (1 - alpha) * CE``; returns the three losses."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits  # the teacher is frozen: no graph, no gradients
    student_logits = student(**inputs).logits
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student vocabulary ({student_logits.shape[-1]}) differs from the teacher's "
            f"({teacher_logits.shape[-1]}): "
            "token-level KD needs a shared tokenizer; use sequence_kd_dataset instead"
        )
    kd = kd_loss(student_logits, teacher_logits, batch["labels"], temperature)
    ce = causal_lm_ce(student_logits, batch["labels"])
    loss = alpha * kd + (1.0 - alpha) * ce
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "kd": kd.item(), "ce": ce.item()}


def train_token_kd(student: Any, teacher: Any, tokenizer: Any, rows: Any, steps: int, lr: float = 1e-4,
                   temperature: float = 2.0, alpha: float = 0.5, batch_size: int = 8,
                   max_length: int | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Token-level KD on ``messages`` rows for `steps` optimiser steps; returns the per-step losses.

    Rows are tokenized with `sftkit.masking.tokenize_conversation`, so KD and CE both apply
    to assistant tokens only (the same positions SFT trains). Batches cycle through a
    seeded shuffle. Trains the student's parameters that require grad (all of them for a
    plain model, the adapter for a `PeftModel`); the teacher is put in eval mode.
    """
    from ..masking import NoTrainableTokensError, tokenize_conversation

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tokenized = []
    for index, row in enumerate(rows):
        try:
            tokenized.append(tokenize_conversation(row["messages"], tokenizer, max_length))
        except NoTrainableTokensError as error:
            raise ValueError(f"row {index}: {error}") from None
    if not tokenized:
        raise ValueError("no rows to distil on")
    parameters = [p for p in student.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the student has no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    device = next(student.parameters()).device
    teacher.eval()
    student.train()
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    history = []
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += torch.randperm(len(tokenized), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        batch = pad_batch([tokenized[i] for i in chosen], tokenizer.pad_token_id, device)
        history.append({"step": step, **distill_step(student, teacher, batch, optimizer, temperature, alpha)})
    student.eval()
    return history


__all__ = [
    "kd_loss",
    "causal_lm_ce",
    "sequence_kd_dataset",
    "pad_batch",
    "distill_step",
    "train_token_kd",
]
