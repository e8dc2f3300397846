"""Tests for sftkit.chapters.classify: last-token pooling under padding, freezing modes, training, the vowel data."""

from __future__ import annotations

import pytest
import torch

from sftkit.chapters.classify import (
    N_VOWEL_CLASSES,
    LastTokenClassifier,
    accuracy,
    evaluate_classifier,
    last_token_index,
    train_classifier,
    vowel_count_dataset,
)
from sftkit.config import LoraSettings
from sftkit.lora import find_lora_targets, lora_parameter_count, trainable_parameters
from sftkit.tasks import VOWELS


def test_last_token_index_for_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [4, 4]
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_pooled_state_is_the_unpadded_last_token_state(make_tiny_model, tokenizer):
    classifier = LastTokenClassifier(make_tiny_model(), n_classes=3).eval()
    texts = ["m a r i a", "a much longer line of text than the others", "hi"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "right" and (batch["attention_mask"] == 0).any(), "the batch must be padded"
    with torch.no_grad():
        pooled = classifier.pooled_hidden(batch["input_ids"], batch["attention_mask"])
        # The manual loop: each text alone, no padding, its final position.
        for row, text in enumerate(texts):
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            alone = classifier.base(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            torch.testing.assert_close(pooled[row], alone, atol=1e-5, rtol=1e-4)
        # And it is not simply the last column, which is padding for the shorter rows.
        naive = classifier.base(**batch, output_hidden_states=True).hidden_states[-1][:, -1]
        assert not torch.allclose(pooled[0], naive[0], atol=1e-4)


def test_trainable_parameters_per_mode(make_tiny_model):
    hidden = make_tiny_model().config.hidden_size
    n_classes = N_VOWEL_CLASSES
    head_only = hidden * n_classes + n_classes

    probe = LastTokenClassifier(make_tiny_model(), n_classes)
    assert probe.freeze_for("head")["trainable"] == head_only
    assert all(not p.requires_grad for p in probe.base.parameters())

    settings = LoraSettings(r=2, alpha=4, dropout=0.0, targets="attention")
    base = make_tiny_model()
    expected_lora = lora_parameter_count(base, find_lora_targets(base, "attention"), r=2)
    lora = LastTokenClassifier(base, n_classes)
    counts = lora.freeze_for("lora", settings)
    assert counts["trainable"] == expected_lora + head_only, counts
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        lora.freeze_for("full")

    full = LastTokenClassifier(make_tiny_model(), n_classes)
    counts = full.freeze_for("full")
    assert counts["trainable"] == counts["total"] == trainable_parameters(make_tiny_model())["total"] + head_only
    with pytest.raises(ValueError, match="mode must be one of"):
        full.freeze_for("partial")


@pytest.mark.parametrize("mode", ["head", "lora"])
def test_a_few_steps_reduce_the_training_loss(make_tiny_model, tokenizer, mode):
    torch.manual_seed(0)
    classifier = LastTokenClassifier(make_tiny_model(), N_VOWEL_CLASSES)
    classifier.freeze_for(mode, LoraSettings(r=2, alpha=4, dropout=0.0, targets="all-linear"))
    rows = vowel_count_dataset(32, "train", seed=0)
    before = evaluate_classifier(classifier, tokenizer, rows)
    history = train_classifier(classifier, tokenizer, rows, epochs=3, lr=5e-2, batch_size=8)
    after = evaluate_classifier(classifier, tokenizer, rows)
    assert [h["step"] for h in history] == list(range(1, 13)) and {h["epoch"] for h in history} == {0, 1, 2}
    assert after["loss"] < before["loss"] - 0.3, (before["loss"], after["loss"])
    assert 0.0 <= accuracy(classifier, tokenizer, rows) <= 1.0
    assert accuracy(classifier, tokenizer, rows) == after["accuracy"]


def test_bad_labels_are_reported_by_row(make_tiny_model, tokenizer):
    classifier = LastTokenClassifier(make_tiny_model(), 3)
    with pytest.raises(ValueError, match=r"row 1: label must be an integer in 0\.\.2"):
        train_classifier(classifier, tokenizer, [{"text": "a", "label": 0}, {"text": "b", "label": 3}])


def test_vowel_labels_are_counts_in_range_and_splits_are_disjoint():
    train = vowel_count_dataset(200, "train", seed=0)
    test = vowel_count_dataset(100, "test", seed=0)
    for row in train + test:
        assert 0 <= row["label"] < N_VOWEL_CLASSES
        assert row["label"] == min(sum(c in VOWELS for c in row["name"]), N_VOWEL_CLASSES - 1)
        assert row["text"] == " ".join(row["name"]), "spelled out by default"
    assert len({row["label"] for row in train}) >= 3, "a label set with one class would teach nothing"
    assert not {row["name"] for row in train} & {row["name"] for row in test}
    assert vowel_count_dataset(5, "train", seed=0) == train[:5], "deterministic by seed"
    assert vowel_count_dataset(5, "train", seed=1) != train[:5]
    assert vowel_count_dataset(3, "test", spelled=False)[0]["text"].isalpha()
