"""A classification head on a causal LM: the last real token's hidden state, a linear layer, a label.

A decoder-only model reads left to right, so the only position that has seen the whole
input is the *last* one. Classifying with a causal LM therefore means: run the model, take
the final-layer hidden state at each row's last non-pad token, and map it to class logits
with a small linear head (what transformers' ``*ForSequenceClassification`` heads do too).
Getting that position wrong is the classic bug: with right padding, ``hidden[:, -1]`` is a
pad token for every row but the longest, and the classifier learns from padding.

Three ways to train it, chosen with `LastTokenClassifier.freeze_for`:

- ``"head"``: only the head (hidden x classes + classes numbers): a linear probe of what
  the pretrained model already represents;
- ``"lora"``: peft LoRA on the base plus the head: the features adapt, cheaply;
- ``"full"``: everything; the most capacity and the most memory.

The offline task is `vowel_count_dataset`: count the vowels of a name, 11 classes (0-10),
with train and test names from the disjoint pools of `sftkit.tasks`. Names are spelled out
("m a r i a") by default, because BPE hides the letters of a word inside one token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LoraSettings

MODES = ("head", "lora", "full")
N_VOWEL_CLASSES = 11  # 0..10 vowels; counts above 10 are clipped into the last class


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real (mask 1) position; works for right and left padding.

    Raises ValueError for a row with no real token at all.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, length), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no real token (attention mask all zero)")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    # The largest position whose mask is 1; masked positions count as -1.
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values


@dataclass
class ClassifierOutput:
    """Class logits (batch, n_classes) and, when labels were given, the mean cross-entropy."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class LastTokenClassifier(nn.Module):
    """A causal LM plus a linear head on the hidden state of each row's last real token.

    The head is kept in float32 whatever the base's precision (it is tiny, and its logits
    feed the loss directly); the pooled hidden state is cast to it.
    """

    def __init__(self, base: nn.Module, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.base = base
        self.n_classes = n_classes
        hidden = base.config.get_text_config().hidden_size
        device = next(base.parameters()).device
        self.head = nn.Linear(hidden, n_classes).to(device=device, dtype=torch.float32)
        self.mode: str | None = None

    def pooled_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The final-layer hidden state at each row's last real token: (batch, hidden)."""
        # logits_to_keep=1: the LM head runs on one position, not on every position over the
        # whole vocabulary (49k for SmolLM2), which would dwarf the classifier's own cost.
        outputs = self.base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                            logits_to_keep=1)
        hidden = outputs.hidden_states[-1]  # after the final norm: what the LM head itself reads
        index = last_token_index(attention_mask)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> ClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.head(self.pooled_hidden(input_ids, attention_mask).float())
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(logits, loss)

    def freeze_for(self, mode: str, lora: LoraSettings | None = None) -> dict[str, float]:
        """Set what trains: ``"head"``, ``"lora"`` (peft LoRA on the base, plus the head) or ``"full"``.

        `lora` gives r/alpha/dropout/targets for ``"lora"`` (default `LoraSettings()`).
        Returns the trainable-parameter counts (`sftkit.lora.trainable_parameters`). Once the
        base is wrapped with LoRA it stays wrapped: build a new classifier for another mode.
        """
        from peft import PeftModel, get_peft_model

        from ..lora import build_lora_config, trainable_parameters

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        wrapped = isinstance(self.base, PeftModel)
        if wrapped and mode != "lora":
            raise ValueError(f"the base already carries a LoRA adapter; build a fresh classifier for mode {mode!r}")
        if mode == "lora" and not wrapped:
            s = lora or LoraSettings()
            config = build_lora_config(self.base, s.r, s.alpha, s.dropout, s.targets, layers=s.layers)
            self.base = get_peft_model(self.base, config)  # freezes the base, LoRA matrices trainable
        elif mode == "head":
            for parameter in self.base.parameters():
                parameter.requires_grad_(False)
        elif mode == "full":
            for parameter in self.base.parameters():
                parameter.requires_grad_(True)
        for parameter in self.head.parameters():
            parameter.requires_grad_(True)
        self.mode = mode
        return trainable_parameters(self)


# --------------------------------------------------------------------------- data


def vowel_count_dataset(n: int, split: str = "train", seed: int = 0, spelled: bool = True) -> list[dict[str, Any]]:
    """`n` rows ``{"text", "label", "name"}``: a name and its number of vowels (a, e, i, o, u).

    Names come from `sftkit.tasks`' train, dev or test pool (disjoint by construction), drawn
    with replacement, deterministic by `seed`. The label is clipped to ``0..N_VOWEL_CLASSES - 1``.
    """
    from ..tasks import SPLITS, VOWELS, _pools, spell

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    names = _pools(split).names
    rng = random.Random(f"vowels-{seed}-{split}")
    rows = []
    for _ in range(n):
        name = rng.choice(names)
        count = sum(letter in VOWELS for letter in name)
        rows.append({"text": spell(name) if spelled else name, "label": min(count, N_VOWEL_CLASSES - 1),
                     "name": name})
    return rows


# --------------------------------------------------------------------------- training and scoring


def _encode(tokenizer: Any, rows: list[dict[str, Any]], device: torch.device) -> dict[str, torch.Tensor]:
    for index, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or not row["text"]:
            raise ValueError(f"row {index}: 'text' must be a non-empty string, got {row.get('text')!r}")
    batch = tokenizer([row["text"] for row in rows], padding=True, return_tensors="pt")
    encoded = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    if all("label" in row for row in rows):
        encoded["labels"] = torch.tensor([int(row["label"]) for row in rows], device=device)
    return encoded


def _check_labels(model: LastTokenClassifier, rows: list[dict[str, Any]]) -> None:
    for index, row in enumerate(rows):
        label = row.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < model.n_classes:
            raise ValueError(f"row {index}: label must be an integer in 0..{model.n_classes - 1}, got {label!r}")


def train_classifier(model: LastTokenClassifier, tokenizer: Any, rows: list[dict[str, Any]], epochs: int = 1,
                     lr: float = 1e-3, batch_size: int = 16, seed: int = 0) -> list[dict[str, float]]:
    """A plain AdamW loop over shuffled mini-batches; returns ``[{"step", "epoch", "loss"}, ...]``.

    Trains whatever `freeze_for` left trainable (call it first; default: everything).
    """
    if not rows:
        raise ValueError("no rows to train on")
    _check_labels(model, rows)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("nothing is trainable: call freeze_for('head' | 'lora' | 'full') first")
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    device = next(model.head.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    history, step = [], 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = _encode(tokenizer, [rows[i] for i in order[start:start + batch_size]], device)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            history.append({"step": step, "epoch": epoch, "loss": loss.item()})
    model.eval()
    return history


@torch.no_grad()
def evaluate_classifier(model: LastTokenClassifier, tokenizer: Any, rows: list[dict[str, Any]],
                        batch_size: int = 32) -> dict[str, Any]:
    """Mean cross-entropy, accuracy and the predictions over `rows` (eval mode, no gradients)."""
    if not rows:
        raise ValueError("no rows to evaluate")
    _check_labels(model, rows)
    was_training = model.training
    model.eval()
    device = next(model.head.parameters()).device
    total_loss, predictions = 0.0, []
    try:
        for start in range(0, len(rows), batch_size):
            batch = _encode(tokenizer, rows[start:start + batch_size], device)
            output = model(**batch)
            total_loss += output.loss.item() * len(batch["labels"])
            predictions += output.logits.argmax(dim=-1).tolist()
    finally:
        model.train(was_training)
    correct = sum(int(p == row["label"]) for p, row in zip(predictions, rows))
    return {"loss": total_loss / len(rows), "accuracy": correct / len(rows), "predictions": predictions}


def accuracy(model: LastTokenClassifier, tokenizer: Any, rows: list[dict[str, Any]], batch_size: int = 32) -> float:
    """Share of rows whose highest-scoring class is the label."""
    return evaluate_classifier(model, tokenizer, rows, batch_size)["accuracy"]


__all__ = [
    "MODES",
    "N_VOWEL_CLASSES",
    "last_token_index",
    "ClassifierOutput",
    "LastTokenClassifier",
    "vowel_count_dataset",
    "train_classifier",
    "evaluate_classifier",
    "accuracy",
]
