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


def labelled_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the positions whose next token is labelled: ``(logits, targets, row)``.

    `model` is a causal LM (or a peft model around one). ``logits[k]`` predicts
    ``targets[k]``, a token of row ``row[k]`` of the batch; the model's final logit
    soft-capping, if any, is applied, as its own forward would.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    inputs_embeds = embed(causal_lm.get_input_embeddings(), input_ids)
    hidden = causal_lm.get_decoder()(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = project(causal_lm.get_output_embeddings(), hidden[:, :-1][keep])
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[keep]
    return logits, targets[keep], rows
