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
- **The loss in vocabulary tiles, with its gradient computed on the way.** Even at labelled
  positions only, the logits of a batch are (positions x 262,144) floats: 1.2 GB for 1,200
  positions, and cross-entropy keeps two more tensors of that size for the backward pass.
  With a frozen head the gradient of the summed loss with respect to the hidden states is
  ``(softmax - one_hot) @ head``, so `head_loss_sum` walks the vocabulary a tile of columns at
  a time, as flash attention walks its keys: a running log-sum-exp and a running
  softmax-weighted sum of head rows, rescaled when a later tile raises the maximum. Each
  tile's exponentials are computed while the tile is in cache and each head row is read once
  for both products, so the head costs little more than its two matrix products, and only
  the (positions x hidden) gradient is kept. This is what fused linear-cross-entropy kernels
  (Liger's, TRL's fused head) do on a GPU; their CPU fallbacks score every position, so sftkit
  writes the few lines here and tests them against `torch.nn.functional.cross_entropy`.
"""

from __future__ import annotations

import math
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


# Vocabulary columns per tile in `head_loss_sum`: about 2**22 logits (16 MB in fp32), so a tile's
# softmax runs in the CPU's cache, but never fewer than `MIN_TILE` columns (a narrower product
# runs below the matmul kernel's rate) nor more than the vocabulary.
TILE_FLOATS = 2**22
MIN_TILE = 1024


def head_tile(positions: int, vocab: int) -> int:
    """How many vocabulary columns `head_loss_sum` scores at once for `positions` hidden states."""
    return max(1, min(vocab, max(MIN_TILE, TILE_FLOATS // max(1, positions))))


class _OnlineSoftmax:
    """Log-sum-exp and softmax-weighted sum of head rows, accumulated one vocabulary tile at a time.

    The trick flash attention plays over keys, played over the vocabulary: each tile's logits
    are exponentiated against the tile's own maximum, and the running sums are rescaled when a
    later tile raises the maximum. After the last tile, ``weighted / total`` is
    ``softmax(logits) @ rows`` (times ``1 - tanh**2`` with soft-capping), the gradient's
    softmax term, although no row of the logits was ever held whole.
    """

    def __init__(self, positions: int, width: int, need_grad: bool, device: torch.device):
        self.maximum = torch.full((positions,), -math.inf, device=device)
        self.total = torch.zeros(positions, device=device)
        self.weighted = torch.zeros(positions, width, device=device) if need_grad else None

    def add(self, logits: torch.Tensor, rows: torch.Tensor, squashed: torch.Tensor | None) -> None:
        """Fold in one tile: its fp32 `logits`, the head `rows` they came from, tanh(z / cap) or None.

        `logits` and `squashed` are overwritten (in place, to keep the tile's work in cache).
        """
        tile_max = logits.amax(-1)
        tile_max = torch.where(torch.isinf(tile_max), 0.0, tile_max)  # a tile with every column masked
        probs = logits.sub_(tile_max[:, None]).exp_()
        new_max = torch.maximum(self.maximum, tile_max)
        keep, scale = (self.maximum - new_max).exp_(), (tile_max - new_max).exp_()
        self.total = self.total * keep + probs.sum(-1) * scale
        self.maximum = new_max
        if self.weighted is not None:
            if squashed is not None:
                probs.mul_(1.0 - squashed.square_())  # d(cap * tanh(z / cap)) / dz
            part = probs.to(rows.dtype) @ rows
            self.weighted.mul_(keep[:, None]).add_(part.float() * scale[:, None])

    def logsumexp(self) -> torch.Tensor:
        return self.maximum + self.total.log()

    def softmax_rows(self) -> torch.Tensor:
        return self.weighted / self.total[:, None]


class _TiledHeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` (with `deltas` as the rows `index`), tile by tile.

    The head `weight` is frozen, so the only gradients are for `hidden` and `deltas`; both are
    computed in the forward pass and kept. The vocabulary is split into tiles of columns: each
    tile's logits, their exponentials and their product with the tile's head rows are computed
    while the tile is in cache (`_OnlineSoftmax`), so the elementwise work never streams a
    (positions x vocabulary) matrix through memory, and each head row is read once for both
    products. On a 2-core CPU in bf16 this took the main job's head from 2.081 to 1.525 s per step
    (benchmarks/README.md, "Where a step's time goes").
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, deltas: torch.Tensor, index: torch.Tensor,
                targets: torch.Tensor, cap: float, tile: int) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[2]
        positions, device = hidden.shape[0], hidden.device
        ctx.dtypes = hidden.dtype, deltas.dtype
        # Sums, maxima and gradients in fp32 whatever the matmuls compute in (fp16/bf16 under autocast).
        softmax = _OnlineSoftmax(positions, hidden.shape[1], need_grad, device)
        picked = torch.zeros(positions, device=device)  # the target's (capped) logit
        masked: dict[int, list[int]] = {}  # per tile, its columns that come from `deltas`, not the frozen rows
        for column in index.tolist() if index.numel() else []:
            masked.setdefault(column - column % tile, []).append(column % tile)
        for start in range(0, weight.shape[0], tile):
            rows = weight[start:start + tile]
            logits = F.linear(hidden, rows).float()
            squashed = None
            if cap:
                squashed = torch.tanh(logits / cap)
                logits = squashed * cap
            # The targets in this tile pick their logit (no data-dependent indexing: no host sync on a GPU).
            local = (targets - start).clamp(0, rows.shape[0] - 1)
            in_tile = (targets >= start) & (targets < start + rows.shape[0])
            picked = torch.where(in_tile, logits.gather(1, local[:, None]).squeeze(1), picked)
            if start in masked:
                logits[:, masked[start]] = -math.inf
            softmax.add(logits, rows, squashed)
        delta_logits = squashed_deltas = None
        matches = targets[:, None] == index  # (positions x trainable rows)
        is_delta, which_delta = matches.any(-1), matches.float().argmax(-1) if index.numel() else targets
        if index.numel():
            delta_logits = F.linear(hidden, deltas).float()
            if cap:
                squashed_deltas = torch.tanh(delta_logits / cap)
                delta_logits = squashed_deltas * cap
            picked = torch.where(is_delta, delta_logits.gather(1, which_delta[:, None]).squeeze(1), picked)
            softmax.add(delta_logits.clone(), deltas, None if squashed_deltas is None else squashed_deltas.clone())
        lse = softmax.logsumexp()
        total = (lse - picked).sum()
        grad_hidden = grad_deltas = None
        if need_grad:
            # d loss / d logit = softmax - one_hot (times 1 - tanh**2 with soft-capping): the softmax
            # part is folded into `softmax`, the one-hot part is the target's own row.
            target_rows = weight[targets].float()
            if index.numel():
                target_rows = torch.where(is_delta[:, None], deltas[which_delta].float(), target_rows)
            slope = 1.0 - (picked / cap).square() if cap else torch.ones_like(picked)
            grad_hidden = softmax.softmax_rows() - slope[:, None] * target_rows
            grad_deltas = torch.zeros_like(deltas, dtype=torch.float32)
            if index.numel():
                grad_logits = (delta_logits - lse[:, None]).exp()
                if cap:
                    grad_logits.mul_(1.0 - squashed_deltas.square())
                grad_logits.scatter_add_(1, which_delta[:, None], -(slope * is_delta)[:, None])
                grad_deltas = grad_logits.t() @ hidden.float()
        ctx.save_for_backward(grad_hidden, grad_deltas)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_deltas = ctx.saved_tensors
        hidden_dtype, deltas_dtype = ctx.dtypes
        grad_total = grad_total.float()
        return ((grad_hidden * grad_total).to(hidden_dtype), None, (grad_deltas * grad_total).to(deltas_dtype),
                None, None, None, None)


def head_loss_sum(model: Any, hidden: torch.Tensor, targets: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of the LM head on `hidden` against `targets`, without holding all logits.

    Equal, in value and in the gradients of `hidden` and of peft's trainable token rows, to
    ``F.cross_entropy(project(head, hidden), targets, reduction="sum")`` (with the model's
    soft-capping); tests/test_lm_head.py checks both. A head whose own weight trains (full
    fine-tuning, an untied head in ``modules_to_save``) or has a bias takes that plain path.
    `tile` (vocabulary columns scored at once) defaults to `head_tile`'s choice.
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
    tile = tile or head_tile(hidden.shape[0], weight.shape[0])
    return _TiledHeadCrossEntropy.apply(hidden, weight, deltas, index, targets, cap, tile)
