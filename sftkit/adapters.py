"""Adapters on disk: save, point at a local base, reload, merge, and verify they are the trained ones.

An adapter that silently does not load, or saves something other than what was trained, is
a known failure of LoRA pipelines, and it looks like a model that learnt nothing. So every
run saves its adapter here (main process only under `accelerate launch`), can name a local
base model in `adapter_config.json` so the adapter reloads offline, and checks by logits
that the saved adapter reloads equal to the trained one, merges equal to it, and changes
the base model (`verify_adapter`, raising `AdapterCheckError`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


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


class AdapterCheckError(RuntimeError):
    """The saved adapter is not the trained one, or it does not change the model."""


@torch.no_grad()
def verify_adapter(peft_model: Any, base_model: Any, adapter_dir: str | Path, input_ids: torch.Tensor) -> dict[str, float]:
    """Check the saved adapter is the trained one and actually changes the model.

    `base_model` is a fresh copy of the base weights. Returns max absolute logit differences:
    ``reload`` (saved vs in-memory, should be 0), ``merge`` (merged vs adapter, ~1e-6 in
    fp32) and ``vs_base`` (tuned vs base, must be > 0: an adapter that silently does not
    load is a known failure). Raises `AdapterCheckError` when a check fails.
    """
    from peft import PeftModel

    device = next(peft_model.parameters()).device
    input_ids = input_ids.to(device)
    peft_model.eval()
    tuned = peft_model(input_ids=input_ids).logits.float()
    base_model = base_model.to(device).eval()
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
    tolerance = 1e-5 if peft_model.dtype == torch.float32 and base_model.dtype == torch.float32 else 1e-2
    if diffs["reload"] > tolerance:
        raise AdapterCheckError(f"reloaded adapter differs from the trained one by {diffs['reload']:.3g}")
    if diffs["merge"] > max(tolerance, 1e-5 * tuned.abs().max().item()):
        raise AdapterCheckError(f"merged model differs from the adapter model by {diffs['merge']:.3g}")
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
