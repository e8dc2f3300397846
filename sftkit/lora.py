"""LoRA: peft configuration helpers, a from-scratch layer for teaching, parameter counts.

LoRA (Hu et al., 2021) freezes a pretrained weight W (d_out x d_in) and learns a low-rank
update: y = W x + (alpha / r) * B A x, with A (r x d_in) initialised randomly and B
(d_out x r) initialised to zero, so training starts exactly at the pretrained model. Only
r * (d_in + d_out) numbers per adapted layer are trained.

peft does this for real (`build_lora_config`); `LoRALinear` does it by hand in a dozen
lines so the notebooks can show the idea, and the tests check it gives the same outputs
as peft's layer for the same A, B, alpha and r.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import torch
from torch import nn

# Linear-layer names by role, across the architectures this project meets (Llama/SmolLM2,
# Qwen2, Gemma, Mistral; GPT-2 style fused names; BERT-style encoders).
ATTENTION_NAMES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "query", "key", "value", "qkv_proj"})
MLP_NAMES = frozenset({"gate_proj", "up_proj", "down_proj", "c_fc", "c_proj", "fc1", "fc2", "dense_h_to_4h",
                       "dense_4h_to_h"})
OUTPUT_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier"})


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last-name components of the model's linear layers, excluding output heads."""
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            last = full_name.rsplit(".", 1)[-1]
            if last not in OUTPUT_NAMES:
                names.add(last)
    return sorted(names)


def find_lora_targets(model: nn.Module, which: str | Iterable[str] = "all-linear") -> list[str]:
    """Module names to adapt: ``"attention"``, ``"mlp"``, ``"all-linear"`` or an explicit list.

    Raises when the choice matches no linear layer of this model, so a typo or an unknown
    architecture cannot silently train nothing.
    """
    available = linear_module_names(model)
    if not isinstance(which, str):
        chosen = sorted(set(which))
        missing = [name for name in chosen if name not in available]
        if missing:
            raise ValueError(f"no linear layer named {missing} in this model; it has {available}")
        return chosen
    if which == "all-linear":
        chosen = available
    elif which == "attention":
        chosen = [name for name in available if name in ATTENTION_NAMES]
    elif which == "mlp":
        chosen = [name for name in available if name in MLP_NAMES]
    else:
        raise ValueError(f"targets must be 'all-linear', 'attention', 'mlp' or a list of names, got {which!r}")
    if not chosen:
        raise ValueError(f"targets={which!r} matches none of this model's linear layers: {available}")
    return chosen


def top_layers(model: nn.Module, layers: int | None) -> list[int] | None:
    """Indices of the top `layers` transformer blocks (None: every block, no restriction)."""
    if layers is None:
        return None
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"layers must be between 1 and {total} (this model's blocks), got {layers}")
    return list(range(total - layers, total))


def describe_blocks(layers: list[int] | None, total: int) -> str:
    """'all 30' or 'top 15 of 30 (15-29)': which transformer blocks carry LoRA."""
    if layers is None:
        return f"all {total}"
    return f"top {len(layers)} of {total} ({min(layers)}-{max(layers)})"


def build_lora_config(model: nn.Module, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                      targets: str | Iterable[str] = "all-linear", task_type: str = "CAUSAL_LM",
                      layers: int | None = None, trainable_tokens: Iterable[int] | None = None):
    """A peft `LoraConfig` with explicit target names (so the run card says what was adapted).

    `layers` adapts only the top that many transformer blocks (peft's `layers_to_transform`).
    Gradients then stop at the lowest adapted block, so the backward pass skips the blocks
    below it: on a CPU, half the blocks of SmolLM2-135M trained 1.4x more tokens per second.

    `trainable_tokens` (token ids, e.g. `sftkit.chat.turn_token_ids`) makes those rows of the
    input embedding trainable through peft's ``trainable_token_indices``; with tied weights
    peft ties the LM head's rows to them. The adapter then stores a few rows, not a copy of a
    262k-row embedding as ``modules_to_save`` would. The input rows need gradients from the
    bottom of the network, so the backward pass then runs through every block.
    """
    from peft import LoraConfig

    extra = {"trainable_token_indices": sorted(set(trainable_tokens))} if trainable_tokens else {}
    return LoraConfig(
        **extra,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=find_lora_targets(model, targets),
        layers_to_transform=top_layers(model, layers),
        bias="none",
        task_type=task_type,
    )


def lora_parameter_count(model: nn.Module, targets: Iterable[str], r: int, layers: int | None = None) -> int:
    """r * (d_in + d_out) summed over the adapted layers: what peft will make trainable.

    With `layers`, only linear layers inside the top that many blocks count (``layers.<i>.``).
    """
    targets = set(targets)
    kept = top_layers(model, layers)
    total = 0
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and full_name.rsplit(".", 1)[-1] in targets:
            if kept is not None and _block_index(full_name) not in kept:
                continue
            total += r * (module.in_features + module.out_features)
    return total


def _block_index(module_name: str) -> int | None:
    # "model.layers.12.self_attn.q_proj" -> 12, the convention peft's layers_to_transform reads.
    match = re.search(r"\.(?:layers|h|layer|blocks)\.(\d+)\.", module_name)
    return int(match.group(1)) if match else None


def trainable_parameters(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameters (tied weights once) and the trainable share in percent."""
    seen: set[int] = set()
    total = trainable = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / max(total, 1)}


# --------------------------------------------------------------------------- from scratch


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update, written out for teaching.

    forward(x) = base(x) + (alpha / r) * dropout(x) @ A^T @ B^T

    A is initialised like peft's default (Kaiming-uniform with a = sqrt(5)) and B to zeros,
    so a fresh layer computes exactly what the base layer computes.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: int = 16, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"rank must be positive, got {r}")
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T
        return self.base(x) + self.scaling * update

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / r) B A: the single matrix a merged model would hold."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)


def inject_lora(model: nn.Module, targets: Iterable[str], r: int = 8, alpha: int = 16,
                dropout: float = 0.0) -> list[str]:
    """Replace every `nn.Linear` whose last name is in `targets` by a `LoRALinear`; freeze the rest.

    Returns the full names of the replaced modules. This is what peft does, minus its
    bookkeeping (saving, merging, multiple adapters).
    """
    targets = set(targets)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    replaced = []
    for full_name, module in list(model.named_modules()):
        last = full_name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and last in targets:
            parent = model.get_submodule(full_name.rsplit(".", 1)[0]) if "." in full_name else model
            setattr(parent, last, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
            replaced.append(full_name)
    if not replaced:
        raise ValueError(f"no nn.Linear named any of {sorted(targets)} in this model")
    return replaced


def copy_peft_weights_into(lora_layer: LoRALinear, peft_layer: Any, adapter: str = "default") -> None:
    """Copy A and B from a peft LoRA layer, so both compute the same function (used in tests)."""
    with torch.no_grad():
        lora_layer.lora_A.copy_(peft_layer.lora_A[adapter].weight)
        lora_layer.lora_B.copy_(peft_layer.lora_B[adapter].weight)
