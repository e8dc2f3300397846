"""Adapters on disk: save, point at a local base, reload, merge, and verify they are the trained ones.

An adapter that silently does not load, or saves something other than what was trained, is
a known failure of LoRA pipelines, and it looks like a model that learnt nothing. So every
run saves its adapter here (main process only under `accelerate launch`), can name a local
base model in `adapter_config.json` so the adapter reloads offline, and checks by logits
that the saved adapter reloads equal to the trained one, merges equal to it, and changes
the base model (`verify_adapter`, raising `AdapterCheckError`). `adapter_base_name` is the one
way every reader of an adapter (`sftkit eval`, export, chat, the model card) finds its base.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .models import OFFLINE_MODELS, ModelSourceError


def save_adapter(trainer: Any, tokenizer: Any, adapter_dir: Path, base_dir: Path | None = None) -> Path:
    """Save a trainer's adapter and tokenizer (main process only); optionally name `base_dir` as its base."""
    # Under `accelerate launch` every process trains; only the main one writes files.
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        trainer.model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        if base_dir is not None:
            point_adapter_at(adapter_dir, base_dir)
    trainer.accelerator.wait_for_everyone()
    return adapter_dir


def point_adapter_at(adapter_dir: Path, base_dir: Path) -> None:
    """Make an adapter's `adapter_config.json` name `base_dir` (an absolute local path) as its base."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(Path(base_dir).resolve())
    config_path.write_text(json.dumps(config, indent=2) + "\n")


class AdapterConfigError(ModelSourceError):
    """An adapter's ``adapter_config.json`` cannot be read or names no base model.

    A `ModelSourceError`: the adapter's base cannot be had, and the command line reports it as
    one line, like any other model that cannot be loaded.
    """


def adapter_base_name(adapter_dir: str | Path) -> str:
    """The base model an adapter names, made loadable on this machine.

    A committed adapter names the folder its base had on the machine that trained it. A local
    path that does not exist here but whose last part is an offline short name
    (``.../gemma3-270m-base``) is that short name: `sftkit.models` rebuilds its folder. Every
    reader of an adapter uses this, so an adapter that exports or chats also evaluates.
    """
    config_path = Path(adapter_dir) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise AdapterConfigError(f"{config_path} is not valid JSON: {error}") from error
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise AdapterConfigError(f"{config_path} names no base_model_name_or_path")
    if not Path(base).exists() and Path(base).name in OFFLINE_MODELS:
        return Path(base).name
    return base


class AdapterCheckError(RuntimeError):
    """The saved adapter is not the trained one, or it does not change the model."""


@contextlib.contextmanager
def upcast_to_fp32(model: Any) -> Iterator[Any]:
    """Run `model` with every floating parameter and buffer in fp32, then restore each one's dtype.

    fp16 and bf16 values are exactly representable in fp32, so the round trip changes nothing.
    In place rather than on a copy: TRL's trainers patch the model's forward with a closure over
    the original model, which a `copy.deepcopy` would keep calling in the original dtype.
    """
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    for tensor in tensors:
        tensor.data = tensor.data.float()
    try:
        yield model
    finally:
        for tensor, dtype in zip(tensors, dtypes):
            tensor.data = tensor.data.to(dtype)


# In fp32, reload computes the same operations on the same weights (exactly 0 in practice);
# merging rounds W + BA once, which moves logits by about 1e-6 of their scale.
RELOAD_ATOL = 1e-5
MERGE_RTOL = 1e-5


@torch.no_grad()
def verify_adapter(peft_model: Any, base_model: Any, adapter_dir: str | Path,
                   input_ids: torch.Tensor) -> dict[str, float]:
    """Check the saved adapter is the trained one and actually changes the model.

    `base_model` is a fresh copy of the base weights (consumed: the saved adapter is loaded onto
    it and merged). Returns max absolute logit differences: ``reload`` (saved vs in-memory,
    0 in practice), ``merge`` (merged vs adapter, ~1e-6 of the logits' scale) and ``vs_base``
    (tuned vs base, must be > 0: an adapter that silently does not load is a known failure).
    Raises `AdapterCheckError` when a check fails.

    The checks run in fp32. In fp16 the merge alone moves logits of magnitude ~40 by several
    of fp16's steps there (0.03 apart; bf16's are 0.25 apart), as W + BA is rounded to the
    format, so any fixed tolerance either fails a correct fp16 run or lets a wrong adapter
    through. So the checks run with the trained model upcast to fp32 (exactly: every fp16 or
    bf16 value is an fp32 value; its dtypes are restored afterwards) and the saved adapter loaded
    onto the base upcast the same way: reload and merge must then agree to fp32 rounding, whatever
    precision the run trained in, and a wrong adapter still fails.
    """
    from peft import PeftModel

    device = next(peft_model.parameters()).device
    input_ids = input_ids.to(device)
    peft_model.eval()
    with upcast_to_fp32(peft_model):
        tuned = peft_model(input_ids=input_ids).logits.float()
    base_model = base_model.to(device=device, dtype=torch.float32).eval()
    base = base_model(input_ids=input_ids).logits.float()
    reloaded_model = PeftModel.from_pretrained(base_model, str(adapter_dir)).eval()
    reloaded = reloaded_model(input_ids=input_ids).logits.float()
    merged_model = reloaded_model.merge_and_unload()
    merged = merged_model(input_ids=input_ids).logits.float()
    diffs = {
        "reload": (reloaded - tuned).abs().max().item(),
        "merge": (merged - tuned).abs().max().item(),
        "vs_base": (tuned - base).abs().max().item(),
    }
    if diffs["reload"] > RELOAD_ATOL:
        raise AdapterCheckError(f"reloaded adapter differs from the trained one by {diffs['reload']:.3g} "
                                f"(tolerance {RELOAD_ATOL:g}): the saved adapter is not the trained one")
    merge_tolerance = max(RELOAD_ATOL, MERGE_RTOL * tuned.abs().max().item())
    if diffs["merge"] > merge_tolerance:
        raise AdapterCheckError(f"merged model differs from the adapter model by {diffs['merge']:.3g} "
                                f"(tolerance {merge_tolerance:.3g})")
    if not diffs["vs_base"] > 0:
        raise AdapterCheckError("the adapter does not change the model's logits: it was not trained or not loaded")
    return diffs


@contextlib.contextmanager
def merged_adapter(model: Any) -> Iterator[Any]:
    """Run `model` (a peft model) with its adapter merged into the weights, then unmerge it.

    An unmerged LoRA layer adds two small matrix products per linear layer at every decoding
    step, and peft's trainable token rows build the whole merged embedding (262k x 640 for
    Gemma) in every forward: generation with the adapter merged runs at the base model's
    speed. The merged model equals the unmerged one to float rounding (`verify_adapter`'s
    ``merge`` check). A model without an adapter is yielded as it is.
    """
    if not hasattr(model, "merge_adapter") or not hasattr(model, "unmerge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()
