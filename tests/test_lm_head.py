"""`sftkit.lm_head`: labelled-position logits and peft's trainable rows, equal to the plain forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

from sftkit.chat import turn_token_ids
from sftkit.lm_head import embed, head_loss_sum, labelled_logits, project
from sftkit.lora import build_lora_config
from sftkit.masking import IGNORE_INDEX


def _peft_with_token_rows(make_tiny_model, tokenizer):
    model = make_tiny_model()
    config = build_lora_config(model, r=4, alpha=8, dropout=0.0, targets="all-linear",
                               trainable_tokens=turn_token_ids(tokenizer))
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero deltas and LoRA weights, so every path matters
        for name, param in sorted(peft_model.named_parameters()):
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return peft_model


def _ids(tokenizer):
    start, end = turn_token_ids(tokenizer)
    return torch.tensor([[1, start, 20, 30, end, 40, start, 7], [end, 5, 6, start, 9, 10, 11, 12]])


def test_embed_and_project_equal_peft_forward_in_values_and_delta_gradients(make_tiny_model, tokenizer):
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    causal_lm = model.get_base_model()
    embedding, head = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    deltas = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert len(deltas) == 1, "the tied head shares the embedding's delta"
    ids = _ids(tokenizer)
    hidden = torch.randn(2, 8, causal_lm.config.hidden_size, generator=torch.Generator().manual_seed(1))

    results = {}
    for way, (emb_fn, head_fn) in {"peft": (embedding, head), "rows": (lambda x: embed(embedding, x),
                                                                      lambda h: project(head, h))}.items():
        model.zero_grad()
        h = hidden.clone().requires_grad_(True)
        out_embed, out_logits = emb_fn(ids), head_fn(h)
        (out_embed.square().sum() + out_logits.tanh().sum()).backward()
        results[way] = (out_embed.detach(), out_logits.detach(), deltas[0].grad.clone(), h.grad.clone())
    # fp32 rounding only: the two ways sum the vocabulary in a different order, and the order
    # differs between CPU kernels (AVX2 vs AVX-512 hosts gave up to 1.8e-5 on values near 1.6);
    # a wrong or missing delta row changes values by the size of the 0.3-scale deltas.
    for peft_value, rows_value in zip(results["peft"], results["rows"]):
        torch.testing.assert_close(rows_value, peft_value, rtol=1e-4, atol=1e-5)
    assert results["rows"][2].abs().sum() > 0, "the delta rows must get a gradient"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen, f"frozen weights got gradients: {frozen}"


def test_without_token_rows_the_modules_are_called_as_they_are(tiny_model, tokenizer):
    ids = _ids(tokenizer)
    torch.testing.assert_close(embed(tiny_model.get_input_embeddings(), ids), tiny_model.get_input_embeddings()(ids))
    hidden = torch.randn(3, tiny_model.config.hidden_size)
    torch.testing.assert_close(project(tiny_model.get_output_embeddings(), hidden),
                               tiny_model.get_output_embeddings()(hidden))


def test_labelled_logits_are_the_full_forwards_logits_at_labelled_positions(make_tiny_model, tokenizer):
    model = _peft_with_token_rows(make_tiny_model, tokenizer).eval()
    ids = _ids(tokenizer)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3:6] = ids[0, 3:6]
    labels[1, 5:] = ids[1, 5:]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        logits, targets, rows = labelled_logits(model, ids, mask, labels)
    keep = labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(logits, full[:, :-1][keep], rtol=1e-5, atol=1e-5)
    assert targets.tolist() == labels[:, 1:][keep].tolist()
    assert rows.tolist() == [0, 0, 0, 1, 1, 1]


def test_assistant_perplexity_equals_cross_entropy_of_the_full_logits(tiny_model, tokenizer):
    from sftkit.metrics import assistant_perplexity

    ids = _ids(tokenizer)
    rows = [{"input_ids": ids[0].tolist(), "labels": [IGNORE_INDEX] * 3 + ids[0, 3:6].tolist() + [IGNORE_INDEX] * 2},
            {"input_ids": ids[1, :6].tolist(), "labels": [IGNORE_INDEX, IGNORE_INDEX] + ids[1, 2:6].tolist()}]
    result = assistant_perplexity(tiny_model, rows, tokenizer.pad_token_id, batch_size=2)
    expected = []
    for row in rows:
        x = torch.tensor([row["input_ids"]])
        y = torch.tensor(row["labels"])[1:]
        with torch.no_grad():
            logits = tiny_model(input_ids=x).logits[0, :-1]
        expected.append(F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX).item())
    assert result["row_nll"] == [pytest_approx(v) for v in expected]


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("cap", [None, 3.0])
def test_chunked_head_loss_equals_cross_entropy_in_value_and_gradients(make_tiny_model, tokenizer, cap):
    # Chunks of 5 positions (several chunks, the last one short), targets that include the
    # trainable turn-token rows, and the soft-capping Gemma 2 uses.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    causal_lm = model.get_base_model()
    causal_lm.config.final_logit_softcapping = cap
    head = causal_lm.get_output_embeddings()
    deltas = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    start, end = turn_token_ids(tokenizer)
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(13, causal_lm.config.hidden_size, generator=generator)
    targets = torch.randint(0, causal_lm.config.vocab_size, (13,), generator=generator)
    targets[[0, 4, 9]] = torch.tensor([end, start, end])

    results = {}
    for way in ("plain", "chunked"):
        model.zero_grad()
        h = hidden.clone().requires_grad_(True)
        if way == "plain":
            logits = project(head, h)
            logits = torch.tanh(logits / cap) * cap if cap else logits
            loss = F.cross_entropy(logits, targets, reduction="sum")
        else:
            loss = head_loss_sum(model, h, targets, chunk=5)
        (2.5 * loss).backward()  # an upstream gradient other than 1 reaches both inputs
        results[way] = (loss.detach(), h.grad.clone(), deltas[0].grad.clone())
    for plain, chunked in zip(results["plain"], results["chunked"]):
        torch.testing.assert_close(chunked, plain, rtol=1e-4, atol=1e-5)
    assert results["chunked"][2].abs().sum() > 0, "the turn-token rows must get a gradient"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen, f"frozen weights got gradients: {frozen}"


def test_chunked_head_loss_without_gradients_gives_the_same_value(tiny_model):
    hidden = torch.randn(7, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(7) * 11
    with torch.no_grad():
        expected = F.cross_entropy(tiny_model.get_output_embeddings()(hidden), targets, reduction="sum")
        torch.testing.assert_close(head_loss_sum(tiny_model, hidden, targets, chunk=2), expected, rtol=1e-5, atol=1e-5)


def test_a_trainable_head_takes_the_plain_cross_entropy(tiny_model):
    # Full fine-tuning: the head's own weight trains, so the loss must come from autograd's
    # cross-entropy (the chunked path gives no weight gradient); value and weight gradient agree.
    head = tiny_model.get_output_embeddings()
    assert head.weight.requires_grad
    hidden = torch.randn(5, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([3, 17, 250, 9, 1])
    expected = F.cross_entropy(head(hidden), targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, head.weight)
    loss = head_loss_sum(tiny_model, hidden, targets)
    (grad,) = torch.autograd.grad(loss, head.weight)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
