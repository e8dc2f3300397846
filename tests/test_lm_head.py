"""`sftkit.lm_head`: labelled-position logits and peft's trainable rows, equal to the plain forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

from sftkit.chat import turn_token_ids
from sftkit.lm_head import _TiledHeadCrossEntropy, embed, head_loss_sum, labelled_logits, project
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
    deltas = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert len(deltas) == 1, "the tied head shares the embedding's delta"
    hidden = torch.randn(2, 8, causal_lm.config.hidden_size, generator=torch.Generator().manual_seed(1))
    results = _embed_and_project_both_ways(model, _ids(tokenizer), hidden)
    # fp32 rounding only: the two ways sum the vocabulary in a different order, and the order
    # differs between CPU kernels (AVX2 vs AVX-512 hosts gave up to 1.8e-5 on values near 1.6);
    # a wrong or missing delta row changes values by the size of the 0.3-scale deltas.
    _assert_same(results)
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
def test_tiled_head_loss_equals_cross_entropy_in_value_and_gradients(make_tiny_model, tokenizer, cap):
    # Vocabulary tiles of 5,000 columns (several tiles, the last one short, one holding the
    # trainable turn-token columns), targets that include those rows, and Gemma 2's soft-capping.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    causal_lm = model.get_base_model()
    causal_lm.config.final_logit_softcapping = cap
    head = causal_lm.get_output_embeddings()
    deltas = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    start, end = turn_token_ids(tokenizer)
    generator = torch.Generator().manual_seed(2)
    # Large enough that the frozen rows' logits reach the soft cap's curve (tanh's slope matters).
    hidden = 40.0 * torch.randn(13, causal_lm.config.hidden_size, generator=generator)
    targets = torch.randint(0, causal_lm.config.vocab_size, (13,), generator=generator)
    targets[[0, 4, 9]] = torch.tensor([end, start, end])
    with torch.no_grad():  # large frozen rows behind the trainable ones: using them too would show
        frozen_rows = head.token_adapter.base_layer.weight
        frozen_rows[[start, end]] = 4.0 * torch.randn(2, frozen_rows.shape[1], generator=generator)

    results = {}
    for way in ("plain", "tiled"):
        model.zero_grad()
        h = hidden.clone().requires_grad_(True)
        if way == "plain":
            logits = project(head, h)
            logits = torch.tanh(logits / cap) * cap if cap else logits
            loss = F.cross_entropy(logits, targets, reduction="sum")
        else:
            loss = head_loss_sum(model, h, targets, tile=5_000)
        (2.5 * loss).backward()  # an upstream gradient other than 1 reaches both inputs
        results[way] = (loss.detach(), h.grad.clone(), deltas[0].grad.clone())
    for plain, tiled in zip(results["plain"], results["tiled"]):
        torch.testing.assert_close(tiled, plain, rtol=1e-4, atol=1e-5)
    assert results["tiled"][2].abs().sum() > 0, "the turn-token rows must get a gradient"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen, f"frozen weights got gradients: {frozen}"


def test_tiled_head_loss_without_gradients_gives_the_same_value(tiny_model):
    hidden = torch.randn(7, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(7) * 11
    with torch.no_grad():
        expected = F.cross_entropy(tiny_model.get_output_embeddings()(hidden), targets, reduction="sum")
        loss = head_loss_sum(tiny_model, hidden, targets, tile=7_000)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_a_trainable_head_takes_the_plain_cross_entropy(tiny_model):
    # Full fine-tuning: the head's own weight trains, so the loss must come from autograd's
    # cross-entropy (the tiled path gives no weight gradient); value and weight gradient agree.
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


def _embed_and_project_both_ways(model, ids, hidden):
    """Outputs and gradients (delta rows, hidden) of peft's own forward and of `embed`/`project`."""
    causal_lm = model.get_base_model()
    embedding, head = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    delta = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n][0]
    results = {}
    for way, (emb_fn, head_fn) in {"peft": (embedding, head), "rows": (lambda x: embed(embedding, x),
                                                                      lambda h: project(head, h))}.items():
        model.zero_grad()
        h = hidden.clone().requires_grad_(True)
        out_embed, out_logits = emb_fn(ids), head_fn(h)
        (out_embed.square().sum() + out_logits.tanh().sum()).backward()
        delta_grad = None if delta.grad is None else delta.grad.clone()
        results[way] = (out_embed.detach(), out_logits.detach(), delta_grad, h.grad.clone())
    return results


def _assert_same(results):
    for peft_value, rows_value in zip(results["peft"], results["rows"]):
        if peft_value is None or rows_value is None:
            assert peft_value is None and rows_value is None
        else:
            torch.testing.assert_close(rows_value, peft_value, rtol=1e-4, atol=1e-5)


def test_disabled_or_merged_token_rows_are_used_as_peft_uses_them(make_tiny_model, tokenizer):
    # With the adapters disabled peft uses the base rows (no delta, no delta gradient); merged, the
    # base weight already holds the delta rows and the delta gets no gradient. `embed`/`project`
    # must do the same, not put the deltas in again.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    ids = _ids(tokenizer)
    hidden = torch.randn(2, 8, model.get_base_model().config.hidden_size, generator=torch.Generator().manual_seed(5))
    enabled = _embed_and_project_both_ways(model, ids, hidden)
    with model.disable_adapter():
        disabled = _embed_and_project_both_ways(model, ids, hidden)
    _assert_same(disabled)
    assert not torch.allclose(disabled["rows"][0], enabled["rows"][0]), "the deltas must not be used when disabled"
    assert disabled["rows"][2] is None or disabled["rows"][2].abs().sum() == 0
    model.merge_adapter()
    merged = _embed_and_project_both_ways(model, ids, hidden)
    _assert_same(merged)
    torch.testing.assert_close(merged["rows"][0], enabled["rows"][0], rtol=1e-4, atol=1e-5)
    assert merged["rows"][2] is None or merged["rows"][2].abs().sum() == 0


def test_token_rows_at_the_padding_id_get_no_gradient_there(make_tiny_model, tokenizer):
    # F.embedding (peft's forward) gives the padding row no gradient: where a trainable token is
    # also the padding id, its delta row gets no gradient from the embedding (the tied head's
    # column still trains it), the same in values and gradients as peft's forward.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    start, end = turn_token_ids(tokenizer)
    embedding = model.get_base_model().get_input_embeddings()
    embedding.token_adapter.base_layer.padding_idx = start
    hidden = torch.randn(2, 8, model.get_base_model().config.hidden_size, generator=torch.Generator().manual_seed(6))
    _assert_same(_embed_and_project_both_ways(model, _ids(tokenizer), hidden))
    # The embedding alone: no gradient for the padding token's row, one for the other turn token.
    index = list(embedding.token_adapter.token_indices["default"])
    ids = _ids(tokenizer)
    model.zero_grad()
    embed(embedding, ids).square().sum().backward()
    delta = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n][0]
    assert delta.grad[index.index(start)].abs().sum() == 0
    assert delta.grad[index.index(end)].abs().sum() > 0


def test_a_scaled_embedding_is_scaled_as_peft_scales_it(make_tiny_model, tokenizer):
    # Gemma 3's embedding multiplies by `embed_scale` (sqrt(hidden size)) in its own forward; peft's
    # trainable-token forward applies it by hand, and so must `embed`.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    embedding = model.get_base_model().get_input_embeddings()
    embedding.token_adapter.base_layer.register_buffer("embed_scale", torch.tensor(4.0), persistent=False)
    ids = _ids(tokenizer)
    out = embed(embedding, ids)
    torch.testing.assert_close(out, embedding(ids))
    with model.disable_adapter():
        plain = embedding.token_adapter.base_layer(ids)  # nn.Embedding itself ignores embed_scale
    outside = ~torch.isin(ids, torch.tensor(turn_token_ids(tokenizer)))
    torch.testing.assert_close(out[outside], 4.0 * plain[outside])


def test_labelled_logits_apply_the_final_soft_capping(make_tiny_model, tokenizer):
    # Gemma 2's final_logit_softcapping: logits = cap * tanh(logits / cap), as its own forward does.
    model = _peft_with_token_rows(make_tiny_model, tokenizer).eval()
    ids = _ids(tokenizer)
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, :-1][labels[:, 1:] != IGNORE_INDEX]
        model.get_base_model().config.final_logit_softcapping = 2.0
        capped, _, _ = labelled_logits(model, ids, None, labels)
    torch.testing.assert_close(capped, 2.0 * torch.tanh(full / 2.0), rtol=1e-5, atol=1e-5)
    assert capped.abs().max() < 2.0


class _HeadOnly(torch.nn.Module):
    """A causal LM as `head_loss_sum` sees it: an output head and a config."""

    def __init__(self, head, cap=None):
        super().__init__()
        self.head = head
        self.config = type("Config", (), {"final_logit_softcapping": cap})()

    def get_output_embeddings(self):
        return self.head


def _frozen_head(bias=False):
    head = torch.nn.Linear(6, 11, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(11, 6, generator=torch.Generator().manual_seed(7)))
        if bias:
            head.bias.copy_(torch.randn(11, generator=torch.Generator().manual_seed(8)))
    return head.requires_grad_(False)


@pytest.mark.parametrize("tile", [None, 3, 1])
def test_tiled_loss_of_a_frozen_head_without_token_rows(tile):
    # LoRA without trainable tokens: the head is frozen, only `hidden` needs a gradient (the
    # tiled path), in one tile (the default for a small vocabulary) or in several.
    head = _frozen_head()
    hidden = torch.randn(7, 6, generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([0, 10, 3, 3, 7, 1, 5])
    h_plain = hidden.clone().requires_grad_(True)
    expected = F.cross_entropy(head(h_plain), targets, reduction="sum")
    expected.backward()
    h = hidden.clone().requires_grad_(True)
    loss = head_loss_sum(_HeadOnly(head), h, targets, tile=tile)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(h.grad, h_plain.grad)
    with torch.no_grad():  # no gradient wanted at all: the value alone
        torch.testing.assert_close(head_loss_sum(_HeadOnly(head), hidden, targets, tile=tile), expected.detach())


def test_a_head_with_a_bias_takes_the_plain_cross_entropy():
    # The tiled path has no bias term: a biased head must be scored by autograd's cross-entropy.
    head = _frozen_head(bias=True)
    hidden = torch.randn(5, 6, generator=torch.Generator().manual_seed(10))
    targets = torch.tensor([1, 2, 3, 4, 5])
    expected = F.cross_entropy(head(hidden), targets, reduction="sum")
    torch.testing.assert_close(head_loss_sum(_HeadOnly(head), hidden, targets, tile=2), expected)
    capped = F.cross_entropy(3.0 * torch.tanh(head(hidden) / 3.0), targets, reduction="sum")
    torch.testing.assert_close(head_loss_sum(_HeadOnly(head, cap=3.0), hidden, targets, tile=2), capped)


def test_tiled_loss_trains_the_token_rows_from_a_constant_input(make_tiny_model, tokenizer):
    # Only the delta rows need a gradient (hidden states that do not require one): the tiled
    # path must still compute it, equal to the plain computation's.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    head = model.get_base_model().get_output_embeddings()
    delta = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n][0]
    start, end = turn_token_ids(tokenizer)
    hidden = torch.randn(6, model.get_base_model().config.hidden_size, generator=torch.Generator().manual_seed(11))
    targets = torch.tensor([start, 5, end, 9, end, 30])
    grads = []
    for loss_fn in (lambda: F.cross_entropy(project(head, hidden), targets, reduction="sum"),
                    lambda: head_loss_sum(model, hidden, targets, tile=4_000)):
        model.zero_grad()
        loss_fn().backward()
        grads.append(delta.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    assert grads[1].abs().sum() > 0


def test_tiled_loss_stays_on_the_heads_device():
    # On the "meta" device (shapes only, no accelerator needed): the running total, the gradient
    # buffers and the indices must all live where the head and the hidden states are.
    head = torch.nn.Linear(6, 11, bias=False, device="meta").requires_grad_(False)
    hidden = torch.empty(5, 6, device="meta", requires_grad=True)
    targets = torch.zeros(5, dtype=torch.long, device="meta")
    loss = head_loss_sum(_HeadOnly(head), hidden, targets, tile=2)
    assert loss.device.type == "meta" and loss.shape == () and loss.dtype == torch.float32
    loss.backward()
    assert hidden.grad.device.type == "meta" and hidden.grad.shape == (5, 6)


def test_labelled_logits_follow_the_attention_mask(make_tiny_model, tokenizer):
    # Left padding: the first three positions of row 1 are masked out, so no later token may attend
    # to them; the labelled logits must be the full forward's under the same mask.
    model = _peft_with_token_rows(make_tiny_model, tokenizer).eval()
    ids = _ids(tokenizer)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 4:] = ids[:, 4:]
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        unmasked = model(input_ids=ids).logits
        logits, _, rows = labelled_logits(model, ids, mask, labels)
    keep = labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(logits, full[:, :-1][keep], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[1, 3:], unmasked[1, 3:], atol=1e-4), "the mask must matter for row 1"
    assert rows.tolist() == [0] * 4 + [1] * 4


def test_a_frozen_head_never_builds_the_full_logits(make_tiny_model, tokenizer, monkeypatch):
    # The point of the tiled path is memory: with a frozen head (LoRA, with or without trainable
    # token rows) `head_loss_sum` must not fall back to the plain (all logits at once) computation.
    import sftkit.lm_head as lm_head

    def no_plain_path(*args, **kwargs):
        raise AssertionError("the plain cross-entropy path was taken for a frozen head")

    frozen = make_tiny_model().requires_grad_(False)
    with_rows = _peft_with_token_rows(make_tiny_model, tokenizer)
    hidden = torch.randn(4, frozen.config.hidden_size, generator=torch.Generator().manual_seed(12))
    targets = torch.tensor([1, 2, 3, 4])
    expected = [F.cross_entropy(frozen.get_output_embeddings()(hidden), targets, reduction="sum"),
                F.cross_entropy(project(with_rows.get_base_model().get_output_embeddings(), hidden), targets,
                                reduction="sum")]
    monkeypatch.setattr(lm_head, "_head_logits", no_plain_path)
    monkeypatch.setattr(lm_head, "project", no_plain_path)
    for model, value in zip((frozen, with_rows), expected):
        torch.testing.assert_close(head_loss_sum(model, hidden, targets), value.detach(), rtol=1e-5, atol=1e-5)


class _WeightOnlyHead(torch.nn.Module):
    """A frozen head module with a weight and no `bias` attribute at all (not even None)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)

    def forward(self, hidden):
        return F.linear(hidden, self.weight)


def test_a_head_without_a_bias_attribute_takes_the_tiled_path():
    head = _WeightOnlyHead(torch.randn(11, 6, generator=torch.Generator().manual_seed(13)))
    hidden = torch.randn(4, 6, generator=torch.Generator().manual_seed(14))
    targets = torch.tensor([0, 3, 10, 3])
    expected = F.cross_entropy(head(hidden), targets, reduction="sum")
    torch.testing.assert_close(head_loss_sum(_HeadOnly(head), hidden, targets, tile=3), expected)


def test_tiled_loss_of_a_bfloat16_head():
    # A bf16 model without autocast: the tile's softmax gradient (fp32) is cast to the head's
    # dtype before the matmul with the head, and the gradient comes back in the hidden dtype.
    head = _frozen_head().to(torch.bfloat16)
    hidden = torch.randn(5, 6, generator=torch.Generator().manual_seed(15)).to(torch.bfloat16)
    targets = torch.tensor([1, 0, 10, 4, 4])
    h_plain = hidden.clone().requires_grad_(True)
    expected = F.cross_entropy(head(h_plain).float(), targets, reduction="sum")
    expected.backward()
    h = hidden.clone().requires_grad_(True)
    loss = head_loss_sum(_HeadOnly(head), h, targets, tile=2)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-3)
    assert h.grad.dtype == torch.bfloat16
    torch.testing.assert_close(h.grad, h_plain.grad, rtol=2e-2, atol=2e-2)


def test_embed_and_project_never_build_the_merged_matrix(make_tiny_model, tokenizer, monkeypatch):
    # The module's point: peft's own forward copies the whole (vocabulary x hidden) matrix to put
    # the delta rows in (`get_merged_weights`); `embed` and `project` must not, and still give its values.
    model = _peft_with_token_rows(make_tiny_model, tokenizer)
    causal_lm = model.get_base_model()
    embedding, head = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    ids = _ids(tokenizer)
    hidden = torch.randn(3, causal_lm.config.hidden_size, generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        expected = embedding(ids), head(hidden)

    def no_copy(*args, **kwargs):
        raise AssertionError("the merged weight matrix was built")

    for module in (embedding, head):
        monkeypatch.setattr(module.token_adapter, "get_merged_weights", no_copy)
    with torch.no_grad():
        torch.testing.assert_close(embed(embedding, ids), expected[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(project(head, hidden), expected[1], rtol=1e-5, atol=1e-5)


def test_a_tile_whose_every_column_comes_from_the_trainable_rows():
    # Tiles of 2 columns over an 11-row head whose rows 4 and 5 are trainable: the tile [4, 5] is
    # masked whole (its maximum is -inf), and must add nothing but stay finite.
    generator = torch.Generator().manual_seed(17)
    weight, deltas = torch.randn(11, 6, generator=generator), torch.randn(2, 6, generator=generator)
    index, targets = torch.tensor([4, 5]), torch.tensor([5, 0, 4, 10, 7])
    hidden = torch.randn(5, 6, generator=generator)
    h_plain, d_plain = hidden.clone().requires_grad_(True), deltas.clone().requires_grad_(True)
    logits = torch.cat([h_plain @ weight[:4].t(), h_plain @ d_plain.t(), h_plain @ weight[6:].t()], dim=1)
    expected = F.cross_entropy(logits, targets, reduction="sum")
    expected.backward()
    h, d = hidden.clone().requires_grad_(True), deltas.clone().requires_grad_(True)
    loss = _TiledHeadCrossEntropy.apply(h, weight, d, index, targets, 0.0, 2)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(h.grad, h_plain.grad)
    torch.testing.assert_close(d.grad, d_plain.grad)
