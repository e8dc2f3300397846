"""A saved adapter of the smoke preset's tiny model, laid out as a training run leaves it (for the lifecycle tests).

`sftkit.runs.train_and_record` saves the tiny base model inside the run folder and points the
adapter at it; this builds the same layout in a second, without training: LoRA on every linear
layer plus trainable turn-token rows (as the demo's adapter), with random non-zero updates so
the adapter changes the logits by a margin a wrong merge cannot hide in. A run card and a
metrics file like the demo's sit next to it, for the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

RUN_CARD = {
    "config": {"preset": "smoke", "model": {"name": "tiny-smollm2"},
               "data": {"source": "builtin-tasks", "max_length": 128},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "all-linear"},
               "train": {"learning_rate": 0.002, "num_train_epochs": 1.0, "per_device_train_batch_size": 4,
                         "gradient_accumulation_steps": 1, "lr_scheduler_type": "cosine", "warmup_ratio": 0.0,
                         "seed": 0}},
    "train": {"steps": 2, "precision": "fp32", "hardware": "CPU: test", "wall_s": 1.5, "trainable_params": 1234,
              "total_params": 400000, "lora_targets": ["q_proj", "v_proj"], "final_loss": 10.5,
              "data": {"train": {"split": "train", "rows": 40, "rows_per_source": {"builtin-tasks/json": 25,
                                                                                  "builtin-tasks/upper": 15}},
                       "eval": {"split": "test", "rows": 8, "rows_per_source": {"builtin-tasks/json": 8}}}},
}
METRICS = {
    "hardware": "CPU: test",
    "after": {"n": 8},
    "reference": {"model": "smollm2-135m-instruct", "stopped": 0.5},
    "paired_differences": {
        "stopped": {"before": 0.0, "after": 0.875, "diff": 0.875, "low": 0.625, "high": 1.0, "lower_is_better": False},
        "echoed_prompt": {"before": 0.5, "after": 0.125, "diff": -0.375, "low": -0.75, "high": 0.0,
                          "lower_is_better": True},
    },
}


def build_tiny_adapter(run_dir: Path, make_tiny_model, tokenizer, seed: int = 0) -> Path:
    """`run_dir/adapter` (pointing at `run_dir/base_model`), with `run.json` and `metrics.json` beside it.

    With seed 5 the tiny model closes some turns with the end-of-turn token and runs others to
    the budget (tests/test_talk.py relies on both); the same seed gives the same adapter.
    """
    from peft import get_peft_model

    from sftkit.adapters import point_adapter_at
    from sftkit.chat import turn_token_ids
    from sftkit.lora import build_lora_config

    run_dir = Path(run_dir)
    base = make_tiny_model()
    base.save_pretrained(run_dir / "base_model")
    tokenizer.save_pretrained(run_dir / "base_model")
    torch.manual_seed(seed)  # peft draws LoRA's A matrices from the global generator
    model = get_peft_model(make_tiny_model(), build_lora_config(
        base, r=4, alpha=8, dropout=0.0, targets="all-linear", trainable_tokens=turn_token_ids(tokenizer)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    adapter = run_dir / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    point_adapter_at(adapter, run_dir / "base_model")
    (run_dir / "run.json").write_text(json.dumps(RUN_CARD))
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    return adapter
