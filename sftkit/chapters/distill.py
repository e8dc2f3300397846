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

The student: token-level KD needs one tokenizer for both models, and the simplest student that
shares it is the teacher with fewer decoder blocks (`truncated_student`, as in DistilBERT, which
starts from every other block of BERT). It keeps the embedding, the final norm and the LM head,
so it starts far closer to the teacher than a random model of the same size would. In a small
model most parameters sit in the embedding (Gemma 3 270M: 168M of 268M, a 262k-token vocabulary),
so dropping blocks saves less than the depth suggests; `parameter_counts` shows the split.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..masking import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


# --------------------------------------------------------------------------- a truncated student

# The model types whose decoder blocks `truncated_student` knows how to cut, each with the config
# fields that hold one entry per block (sliced with the blocks). Gemma 3's `layer_types` says which
# blocks use sliding-window attention and which attend to everything; Llama's config has nothing per
# block. A type is listed only once its config has been read for per-block fields: cutting a model
# whose config still described the dropped blocks would load into a different network.
PER_BLOCK_FIELDS: dict[str, tuple[str, ...]] = {"gemma3_text": ("layer_types",), "llama": ()}


def student_blocks(num_blocks: int, keep: int | Iterable[int]) -> list[int]:
    """The teacher's block indices a student keeps, checked: increasing, distinct, in range.

    An int `keep` = n spreads n blocks evenly from bottom to top: block ``round(i * (N - 1) / (n - 1))``
    for i = 0 .. n - 1 of the teacher's N, halves rounded up, so the first and the last block are
    always kept (the first reads the embeddings, the last writes what the head reads); n = 1 keeps
    block 0 alone. For 18 blocks, 6 keeps 0, 3, 7, 10, 14, 17. A sequence names the blocks itself.
    Raises ValueError for n < 1 or n > N, an index out of range, a repeated or out-of-order index.
    """
    if isinstance(keep, bool):  # True is an int to Python, never a block count to a reader
        raise ValueError(f"keep must be a number of blocks or a list of block indices, got {keep!r}")
    if not isinstance(keep, Iterable):
        try:
            keep = operator.index(keep)  # an int, or an integer from numpy or torch
        except TypeError:
            raise ValueError(f"keep must be a number of blocks or a list of block indices, got {keep!r}") from None
        if not 1 <= keep <= num_blocks:
            raise ValueError(f"keep={keep}: a student keeps between 1 and {num_blocks} blocks (the teacher's)")
        if keep == 1:
            return [0]
        # Integer arithmetic for round-half-up, so the rule never depends on float rounding.
        return [(2 * i * (num_blocks - 1) + keep - 1) // (2 * (keep - 1)) for i in range(keep)]
    try:
        blocks = [operator.index(index) for index in keep]
    except TypeError:
        raise ValueError(f"keep must be a number of blocks or a list of block indices, got {keep!r}") from None
    if not blocks:
        raise ValueError("keep names no block: a student keeps at least one")
    for index in blocks:
        if not 0 <= index < num_blocks:
            raise ValueError(f"block index {index} is out of range: the teacher has {num_blocks} blocks "
                             f"(0-{num_blocks - 1})")
    repeated = sorted({index for index in blocks if blocks.count(index) > 1})
    if repeated:
        raise ValueError(f"block indices {repeated} are listed more than once: each block is kept once")
    if blocks != sorted(blocks):
        # A student runs its blocks in the teacher's order; a permutation is more likely a typo than a wish.
        raise ValueError(f"block indices must be increasing (the teacher's order), got {blocks}")
    return blocks


def _decoder_blocks(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """The dotted name and the module list of a supported model's decoder blocks; ValueError otherwise."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        peft = hasattr(model, "peft_config")
        hint = " (a PEFT model: merge the adapter first, model.merge_and_unload())" if peft else ""
        raise ValueError(f"expected a transformers model, got {type(model).__name__}{hint}")
    model_type = getattr(model.config, "model_type", None)
    layers = getattr(model.base_model, "layers", None)
    if model_type not in PER_BLOCK_FIELDS or not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"cannot cut the blocks of {type(model).__name__} (model type {model_type!r}): "
                         f"truncated_student knows {sorted(PER_BLOCK_FIELDS)}")
    if len(layers) != model.config.num_hidden_layers:
        raise ValueError(f"the model has {len(layers)} blocks but its config says num_hidden_layers="
                         f"{model.config.num_hidden_layers}")
    name = next(name for name, module in model.named_modules() if module is layers)
    return name, layers


def _ties_head_to_embedding(model: Any) -> bool:
    """Whether the LM head computes with the input embedding's matrix (the same tensor, or an equal one)."""
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or not getattr(model.config, "tie_word_embeddings", False):
        return False
    return head.weight is embedding.weight or (head.weight.shape == embedding.weight.shape
                                               and torch.equal(head.weight, embedding.weight))


def _student_config(model: Any, blocks: list[int]) -> Any:
    """A copy of the teacher's config that describes the student: its depth and its blocks' own entries."""
    config = copy.deepcopy(model.config)  # keeps the attention implementation and every other setting
    config.num_hidden_layers = len(blocks)
    for field in PER_BLOCK_FIELDS[config.model_type]:
        values = getattr(config, field, None)
        if values is not None:
            setattr(config, field, [values[index] for index in blocks])
    # Gemma 3's legacy period of full-attention blocks (every 6th) only builds `layer_types` when a
    # config has none; the student's are explicit and usually no longer periodic, so a saved period
    # would misdescribe it. (Loading sets the in-memory default back; it is unused there too.)
    if hasattr(config, "_sliding_window_pattern"):
        del config._sliding_window_pattern
    # A head that was untied from the embedding (a merged adapter that trained some token rows, say)
    # while the config still says tied must stay untied, or one of the two matrices would be lost.
    config.tie_word_embeddings = _ties_head_to_embedding(model)
    return config


def truncated_student(model: Any, keep: int | Iterable[int], *, dtype: str | torch.dtype | None = None
                      ) -> PreTrainedModel:
    """A new model: the teacher with only the decoder blocks `keep` (see `student_blocks` for the rule).

    The student has copies of the kept blocks, the embedding, the final norm and the LM head (tied
    to the embedding when the teacher's is), and a config that describes it exactly: the new
    `num_hidden_layers` and, per block, the kept blocks' entries (Gemma 3's sliding/full
    `layer_types`). It is built from that config, as `from_pretrained` would build it, so every
    per-block attribute the modules derive from it (each attention's ``layer_idx``, which indexes
    the KV cache, numbered 0..n-1; its sliding window) is the one a saved and reloaded student has.
    The teacher is not changed. `dtype` None keeps the teacher's; the student is on the teacher's
    device, with every parameter trainable, in the teacher's train/eval mode, with a copy of its
    generation config. Supported: the model types in `PER_BLOCK_FIELDS` (Gemma 3 text, Llama);
    ValueError for others, a PEFT model (merge it first), quantized weights or a bad `keep`.
    """
    from transformers.initialization import no_init_weights

    from ..models import resolve_dtype

    layers_name, layers = _decoder_blocks(model)
    # Quantized weights (int8/4-bit storage, or a quantizer that would re-quantize on loading) cannot
    # be copied as plain tensors, and the student's config would claim a quantization it lacks.
    quantized = getattr(model, "hf_quantizer", None) is not None or \
        getattr(model.config, "quantization_config", None) is not None or \
        any(not parameter.is_floating_point() for parameter in model.parameters())
    if quantized:
        raise ValueError("the teacher is quantized: load it unquantized (float32 or bfloat16) to cut its blocks")
    blocks = student_blocks(len(layers), keep)
    config = _student_config(model, blocks)
    # No random initialisation (every weight is overwritten below): for Gemma 3 270M it would fill a
    # 168M-parameter embedding with noise only to replace it.
    with torch.device(model.device), no_init_weights():
        student = type(model)._from_config(config, dtype=model.dtype if dtype is None else resolve_dtype(dtype))
    student.tie_weights()  # post_init ties them, but no_init_weights skips it along with the initialisation
    # The teacher's weights under the student's names: kept block blocks[j] becomes block j.
    prefix = layers_name + "."
    new_index = {old: new for new, old in enumerate(blocks)}
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            if int(index) not in new_index:
                continue
            name = f"{prefix}{new_index[int(index)]}.{rest}"
        state[name] = tensor
    # strict: a weight left over or missing would be a bug here, never something to skip.
    student.load_state_dict(state, strict=True)
    student.generation_config = copy.deepcopy(model.generation_config)
    student.train(model.training)
    return student


def parameter_counts(model: Any) -> dict[str, int]:
    """Parameters by part, each tensor once: ``embedding`` (and an untied LM head), ``blocks``, ``other``, ``total``.

    ``other`` is what is left (the final norm). For a table of teacher against students: blocks
    shrink with depth, the embedding does not.
    """
    _, layers = _decoder_blocks(model)
    embedding_ids = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        embedding_ids.add(id(model.get_output_embeddings().weight))
    block_ids = {id(parameter) for parameter in layers.parameters()}
    counts = {"embedding": 0, "blocks": 0, "other": 0}
    for parameter in model.parameters():  # each shared (tied) tensor once
        part = "embedding" if id(parameter) in embedding_ids else "blocks" if id(parameter) in block_ids else "other"
        counts[part] += parameter.numel()
    return {**counts, "total": sum(counts.values())}


__all__ = [
    "PER_BLOCK_FIELDS",
    "student_blocks",
    "truncated_student",
    "parameter_counts",
    "kd_loss",
    "causal_lm_ce",
    "sequence_kd_dataset",
    "pad_batch",
    "distill_step",
    "train_token_kd",
]
