"""Tests for sftkit.chapters.distill: the KD loss's defining properties, sequence-KD rows, and a token-KD loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sftkit.data import validate_conversation
from sftkit.chapters.distill import causal_lm_ce, kd_loss, pad_batch, sequence_kd_dataset, train_token_kd
from sftkit.generate import generate_batch
from sftkit.masking import IGNORE_INDEX, tokenize_conversation
from sftkit.tasks import make_task_examples

VOCAB = 50


@pytest.fixture
def logits_and_labels():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 6, VOCAB, generator=generator) * 3
    teacher = torch.randn(2, 6, VOCAB, generator=generator) * 3
    labels = torch.randint(0, VOCAB, (2, 6), generator=generator)
    labels[0, :3] = IGNORE_INDEX  # a masked prompt
    labels[1, 4:] = IGNORE_INDEX  # masked padding
    return student, teacher, labels


def manual_kd(student, teacher, labels, temperature):
    """The definition, one position at a time."""
    values = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] == IGNORE_INDEX:
                continue
            p = torch.softmax(teacher[b, t] / temperature, dim=-1)
            q = torch.softmax(student[b, t] / temperature, dim=-1)
            values.append((p * (p.log() - q.log())).sum())
    return torch.stack(values).mean() * temperature**2


def test_kd_loss_is_zero_when_the_student_is_the_teacher(logits_and_labels):
    student, _, labels = logits_and_labels
    assert kd_loss(student, student.clone(), labels).abs().item() < 1e-6
    assert kd_loss(student, student + 5.0, labels).abs().item() < 1e-6, "a constant shift is the same distribution"


def test_kd_loss_with_a_one_hot_teacher_is_cross_entropy(logits_and_labels):
    student, _, labels = logits_and_labels
    # Teacher at position t puts (almost) all mass on the label of t + 1.
    teacher = torch.zeros_like(student)
    targets = labels[:, 1:].clamp(min=0)
    teacher[:, :-1].scatter_(-1, targets.unsqueeze(-1), 100.0)
    ce = F.cross_entropy(student[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert kd_loss(student, teacher, labels, temperature=1.0).item() == pytest.approx(ce.item(), abs=1e-4)
    assert causal_lm_ce(student, labels).item() == pytest.approx(ce.item(), abs=1e-6)


def test_kd_loss_matches_the_definition_and_ignores_masked_positions(logits_and_labels):
    student, teacher, labels = logits_and_labels
    expected = manual_kd(student, teacher, labels, 2.0)
    assert kd_loss(student, teacher, labels, temperature=2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # Scramble the logits wherever the *next* label is masked: the loss must not move.
    masked = torch.zeros(labels.shape, dtype=torch.bool)
    masked[:, :-1] = labels[:, 1:] == IGNORE_INDEX
    masked[:, -1] = True  # the last position predicts nothing
    assert masked.any() and (~masked).any()
    scrambled_student, scrambled_teacher = student.clone(), teacher.clone()
    scrambled_student[masked] = torch.randn(int(masked.sum()), VOCAB) * 10
    scrambled_teacher[masked] = torch.randn(int(masked.sum()), VOCAB) * 10
    assert kd_loss(scrambled_student, scrambled_teacher, labels).item() == pytest.approx(
        kd_loss(student, teacher, labels).item(), rel=1e-6)
    # ...and it is an average over labelled positions, not a sum or a mean over all positions.
    fewer = labels.clone()
    fewer[1] = IGNORE_INDEX
    assert kd_loss(student, teacher, fewer, 2.0).item() == pytest.approx(
        manual_kd(student, teacher, fewer, 2.0).item(), rel=1e-5)
    with pytest.raises(ValueError, match="no position has a label"):
        kd_loss(student, teacher, torch.full_like(labels, IGNORE_INDEX))


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_kd_loss_carries_the_t_squared_factor(logits_and_labels, temperature):
    student, teacher, labels = logits_and_labels
    # softmax((T x) / T) = softmax(x): scaling the logits by T makes the softened
    # distributions those at temperature 1, so only the T^2 factor remains.
    scaled = kd_loss(student * temperature, teacher * temperature, labels, temperature)
    plain = kd_loss(student, teacher, labels, 1.0)
    assert scaled.item() == pytest.approx(temperature**2 * plain.item(), rel=1e-5)
    assert plain.item() > 0.1, "distinct distributions, so the comparison is not 0 == 0"


def test_kd_loss_rejects_mismatched_shapes(logits_and_labels):
    student, teacher, labels = logits_and_labels
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(student, teacher[..., :-1], labels)
    with pytest.raises(ValueError, match="temperature must be positive"):
        kd_loss(student, teacher, labels, temperature=0)


# --------------------------------------------------------------------------- sequence-level KD


def test_sequence_kd_rows_are_valid_conversations_of_teacher_replies(tiny_model, tokenizer):
    examples = make_task_examples(4, "test", seed=0, tasks=("add", "upper"))
    prompts = [example["messages"][:-1] for example in examples] + ["Say hello."]
    dataset, report = sequence_kd_dataset(tiny_model, tokenizer, prompts, max_new_tokens=6, keep_unstopped=True)
    replies = generate_batch(tiny_model, tokenizer, [list(p) for p in prompts[:4]] + [[
        {"role": "user", "content": "Say hello."}]], max_new_tokens=6)
    assert report["prompts"] == 5 and report["kept"] + sum(report["dropped"].values()) == 5
    assert report["kept"] >= 1, report
    kept_indices = [i for i in range(5) if not any(i in rows for rows in report["dropped_rows"].values())]
    assert len(dataset) == len(kept_indices)
    for row, index in zip(dataset, kept_indices):
        assert validate_conversation(row) is None, row
        messages = row["messages"]
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == replies[index].text
        assert messages[-2]["role"] == "user"
        assert tokenize_conversation(messages, tokenizer)["labels"], "SFT can train on the row"
    # By default cut-off replies are dropped, with their reason and row numbers.
    strict, strict_report = sequence_kd_dataset(tiny_model, tokenizer, prompts, max_new_tokens=6)
    unstopped = [i for i, reply in enumerate(replies) if not reply.stopped and reply.text.strip()]
    assert strict_report["dropped_rows"].get("teacher did not stop", []) == unstopped
    assert len(strict) == report["kept"] - len(unstopped)
    with pytest.raises(ValueError, match="prompt 0 must be a string or a conversation ending with a user turn"):
        sequence_kd_dataset(tiny_model, tokenizer, [[{"role": "assistant", "content": "hi"}]])


# --------------------------------------------------------------------------- token-level KD


def test_token_kd_moves_the_student_towards_the_teacher(make_tiny_model, tokenizer):
    torch.manual_seed(0)
    teacher = make_tiny_model().eval()
    with torch.no_grad():  # a different teacher: the same tiny model with noisy weights
        for parameter in teacher.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    student = make_tiny_model()
    rows = make_task_examples(2, "train", seed=0, tasks=("upper",))  # short rows: a 49k-vocab softmax per token
    batch = pad_batch([tokenize_conversation(r["messages"], tokenizer) for r in rows], tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}

    def current_kd():
        with torch.no_grad():
            return kd_loss(student(**inputs).logits, teacher(**inputs).logits, batch["labels"]).item()

    before = current_kd()
    history = train_token_kd(student, teacher, tokenizer, rows, steps=4, lr=2e-2, alpha=1.0, batch_size=2)
    assert [h["step"] for h in history] == list(range(1, 5))
    assert all(h["loss"] == pytest.approx(h["kd"]) for h in history), "alpha = 1 is pure distillation"
    assert current_kd() < 0.9 * before, (before, current_kd())
    with pytest.raises(ValueError, match="alpha must be in"):
        train_token_kd(student, teacher, tokenizer, rows, steps=1, alpha=1.5)
