"""Logits only where a label is, and peft's trainable token rows without copying the embedding.

Gemma 3's vocabulary has 262,144 rows, so on a CPU the LM head (and anything that copies
the 262k x 640 embedding) costs more than the 18 transformer blocks. Two things make SFT on
it affordable, and both give exactly the numbers of the plain computation:

- **Labelled positions only.** Assistant-only SFT labels a minority of positions; the head
  is applied to the hidden states whose next token has a label, not to every position
  (`labelled_logits`). Training (`sftkit.train.labelled_head_loss`) and the held-out NLL
  (`sftkit.metrics.assistant_perplexity`) share it.
- **Trainable token rows, computed as rows.** peft's ``trainable_token_indices`` keeps a
  small delta for the chosen rows (the turn tokens) and, in each forward, builds the full
  merged matrix with ``index_copy``: two 671 MB copies per step (embedding and tied head),
  and a dense gradient of the whole matrix for each. `embed` and `project` use the frozen
  matrix as it is and put the delta rows in afterwards: the same values and the same
  gradients for the delta (tests/test_lm_head.py checks both against peft's forward), with
  no copy and no gradient for the 262k frozen rows.
- **The loss in chunks, with its gradient computed on the way.** Even at labelled positions
  only, the logits of a batch are (positions x 262,144) floats: 1.2 GB for 1,200 positions,
  and cross-entropy keeps two more tensors of that size for the backward pass. With a frozen
  head the gradient of the summed loss with respect to the hidden states is known as soon as
  the softmax is (``softmax - one_hot``, times the head), so `head_loss_sum` computes loss and
  gradients chunk by chunk in the forward pass and keeps only the (positions x hidden)
  gradient: the same two matrix products as the plain computation, a few hundred MB less
  memory. This is what fused linear-cross-entropy kernels (Liger's, TRL's fused head) do on
  a GPU; their CPU fallbacks score every position, so sftkit writes the few lines here and
  tests them against `torch.nn.functional.cross_entropy`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .masking import IGNORE_INDEX


def _token_layer(module: nn.Module) -> Any | None:
    """peft's `TrainableTokensLayer` behind `module` (its wrapper or the layer itself), if active."""
    layer = getattr(module, "token_adapter", module)
    if not hasattr(layer, "trainable_tokens_delta") or not hasattr(layer, "get_merged_weights"):
        return None
    if getattr(layer, "disable_adapters", False) or getattr(layer, "merged", False) or not layer.active_adapters:
        return None
    return layer


def _rows_and_deltas(layer: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    base = layer.base_layer.weight
    for name in layer.active_adapters:
        if name in layer.token_indices:
            index = torch.as_tensor(layer.token_indices[name], device=base.device)
            pairs.append((index, layer.trainable_tokens_delta[name].to(base)))
    return pairs


def embed(embedding: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``embedding(input_ids)``, with peft's trainable rows looked up from their deltas."""
    layer = _token_layer(embedding)
    if layer is None:
        return embedding(input_ids)
    base = layer.base_layer
    out = F.embedding(input_ids, base.weight, padding_idx=base.padding_idx)
    for index, deltas in _rows_and_deltas(layer):
        hit = input_ids.unsqueeze(-1) == index  # (..., rows): which trainable row each id is, if any
        if hit.any():
            rows = deltas[hit.float().argmax(-1)]
            if base.padding_idx is not None:  # F.embedding gives the padding row no gradient
                rows = torch.where((input_ids == base.padding_idx).unsqueeze(-1), rows.detach(), rows)
            out = torch.where(hit.any(-1, keepdim=True), rows, out)
    scale = layer._get_embed_scale() if hasattr(layer, "_get_embed_scale") else None
    return out * scale.to(out.dtype) if scale is not None else out


def project(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``head(hidden)`` (logits), with peft's trainable rows' columns from their deltas."""
    layer = _token_layer(head)
    if layer is None:
        return head(hidden)
    base = layer.base_layer
    logits = F.linear(hidden, base.weight, getattr(base, "bias", None))
    for index, deltas in _rows_and_deltas(layer):
        # In place on the matmul's output: its backward needs the inputs, not the output.
        logits[..., index] = F.linear(hidden, deltas)
    return logits


def _causal_lm(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def labelled_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final hidden states of the positions whose next token is labelled: ``(hidden, targets, row)``.

    `model` is a causal LM (or a peft model around one). ``hidden[k]`` predicts ``targets[k]``,
    a token of row ``row[k]`` of the batch.
    """
    causal_lm = _causal_lm(model)
    inputs_embeds = embed(causal_lm.get_input_embeddings(), input_ids)
    hidden = causal_lm.get_decoder()(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[keep]
    return hidden[:, :-1][keep], targets[keep], rows


def labelled_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the positions whose next token is labelled: ``(logits, targets, row)``.

    ``logits[k]`` predicts ``targets[k]``, a token of row ``row[k]`` of the batch; the model's
    final logit soft-capping, if any, is applied, as its own forward would.
    """
    hidden, targets, rows = labelled_hidden(model, input_ids, attention_mask, labels)
    return _head_logits(_causal_lm(model), hidden), targets, rows


def _head_logits(causal_lm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on `hidden` (peft's trainable rows included), soft-capped as the model's forward does."""
    logits = project(causal_lm.get_output_embeddings(), hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# Rows of logits per chunk in `head_loss_sum`: 2**26 floats (256 MB in fp32) whatever the vocabulary.
CHUNK_FLOATS = 2**26


class _ChunkedHeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` (with `deltas` as the rows `index`), chunk by chunk.

    The head `weight` is frozen, so the only gradients are for `hidden` and `deltas`; both are
    computed in the forward pass from each chunk's softmax and kept, and the chunk's logits
    are freed before the next chunk.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, deltas: torch.Tensor, index: torch.Tensor,
                targets: torch.Tensor, cap: float, chunk: int) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Gradients are summed in fp32 whatever the matmuls compute in (fp16/bf16 under autocast):
        # they are O(1) per position here and only scaled by the loss scaler in `backward`.
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if need_grad else None
        grad_deltas = torch.zeros_like(deltas, dtype=torch.float32) if need_grad else None
        ctx.dtypes = hidden.dtype, deltas.dtype
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]
            logits = F.linear(h, weight).float()
            if index.numel():
                logits[:, index] = F.linear(h, deltas).float()
            if cap:
                squashed = torch.tanh(logits / cap)
                logits = squashed * cap
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[start:start + chunk, None]).squeeze(1)
            total += (lse - picked).sum()
            if not need_grad:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad[torch.arange(grad.shape[0], device=grad.device), targets[start:start + chunk]] -= 1.0
            if cap:
                grad.mul_(1.0 - squashed.square_())  # d(cap * tanh(z / cap)) / dz
            if index.numel():
                grad_rows = grad[:, index]
                grad[:, index] = 0.0  # those columns come from `deltas`, not from the frozen rows
                grad_deltas += grad_rows.t() @ h.float()
                grad_hidden[start:start + chunk] += grad_rows @ deltas.float()
            grad_hidden[start:start + chunk] += grad.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden, grad_deltas)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_deltas = ctx.saved_tensors
        hidden_dtype, deltas_dtype = ctx.dtypes
        grad_total = grad_total.float()
        return ((grad_hidden * grad_total).to(hidden_dtype), None, (grad_deltas * grad_total).to(deltas_dtype),
                None, None, None, None)


def head_loss_sum(model: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of the LM head on `hidden` against `targets`, without holding all logits.

    Equal, in value and in the gradients of `hidden` and of peft's trainable token rows, to
    ``F.cross_entropy(project(head, hidden), targets, reduction="sum")`` (with the model's
    soft-capping); tests/test_lm_head.py checks both. A head whose own weight trains (full
    fine-tuning, an untied head in ``modules_to_save``) or has a bias takes that plain path.
    """
    causal_lm = _causal_lm(model)
    head = causal_lm.get_output_embeddings()
    cap = float(getattr(causal_lm.config, "final_logit_softcapping", None) or 0.0)
    layer = _token_layer(head)
    base = layer.base_layer if layer is not None else head
    weight = getattr(base, "weight", None)
    if weight is None or weight.requires_grad or getattr(base, "bias", None) is not None:
        return F.cross_entropy(_head_logits(causal_lm, hidden).float(), targets, reduction="sum")
    pairs = _rows_and_deltas(layer) if layer is not None else []
    index = torch.cat([i for i, _ in pairs]) if pairs else torch.zeros(0, dtype=torch.long, device=hidden.device)
    deltas = torch.cat([d for _, d in pairs]) if pairs else hidden.new_zeros(0, hidden.shape[-1])
    chunk = chunk or max(1, CHUNK_FLOATS // weight.shape[0])
    return _ChunkedHeadCrossEntropy.apply(hidden, weight, deltas, index, targets, cap, chunk)
