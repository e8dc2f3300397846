"""Whole runs behind `sftkit train` and `sftkit eval`, shared with the demo and the notebooks.

`train_and_record` is the one place a training run is turned into durable outputs: the
adapter (whose ``adapter_config.json`` names a base model that loads offline), a verified
reload/merge, and the run card. `run_evaluation` evaluates any number of models (a base
model name, or an adapter folder) on the offline evaluation set and writes ``eval.json``,
``eval.md`` and figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .adapters import adapter_base_name, point_adapter_at, verify_adapter
from .chat import prepare_model, prepare_tokenizer
from .config import RunConfig, resolve_preset
from .models import OFFLINE_MODELS, hardware_name, load_model, load_tokenizer
from .precision import load_dtype
from .run_card import write_run_card
from .train import TrainResult, train_lora

logger = logging.getLogger(__name__)


def load_for(cfg: RunConfig, need_attention_weights: bool = False):
    """The run's model and prepared tokenizer."""
    tokenizer = prepare_tokenizer(load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code),
                                  turn_format=cfg.model.turn_format)
    model = load_model(
        cfg.model.name,
        dtype=load_dtype(cfg.model.dtype, cfg.train.cpu_amp),
        attn_implementation=None if need_attention_weights else cfg.model.attn_implementation,
        need_attention_weights=need_attention_weights,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    prepare_model(model, tokenizer)
    return model, tokenizer


def train_and_record(cfg: RunConfig, model: Any, tokenizer: Any, train_set: Any, out: str | Path,
                     data_report: dict[str, Any] | None = None, **sft_overrides: Any) -> TrainResult:
    """Train, make the adapter loadable offline, verify it, and write the run card.

    `data_report` (`sftkit.run_data.load_run_data_with_report`) goes into the card: the splits
    the train and eval rows came from and their rows per source. Without it the card still
    counts the training rows per ``source`` when the data have that column.
    """
    from .data import rows_per_source

    out = Path(out)
    result = train_lora(cfg, model, tokenizer, train_set, out, **sft_overrides)
    result.metrics["data"] = data_report or {"train": {"rows": len(train_set),
                                                       "rows_per_source": rows_per_source(train_set)}}
    if not result.metrics["is_main_process"]:
        return result  # the main process verifies and records
    if cfg.model.name == "tiny-smollm2":
        # The smoke model is tiny: keep a copy inside the run so the run folder is self-contained.
        base_dir = out / "base_model"
        fresh = load_model(cfg.model.name, dtype="float32", device="cpu")
        prepare_model(fresh, tokenizer)
        fresh.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        point_adapter_at(result.adapter_dir, base_dir)
    elif cfg.model.name in OFFLINE_MODELS:
        from .models import resolve_source

        point_adapter_at(result.adapter_dir, Path(resolve_source(cfg.model.name)))
    base = load_model(cfg.model.name, dtype=load_dtype(cfg.model.dtype, cfg.train.cpu_amp),
                      attn_implementation=cfg.model.attn_implementation)
    prepare_model(base, tokenizer)
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    result.metrics["adapter_check"] = verify_adapter(result.model, base, result.adapter_dir, probe)
    del base
    write_run_card(cfg, result, out)
    return result


def run_training(preset: str | None = None, out: str | Path | None = None,
                 cfg: RunConfig | None = None) -> TrainResult:
    """`sftkit train`: load, train, record; prints where the run card is."""
    from .run_data import load_run_data_with_report

    cfg = cfg or resolve_preset(preset)
    out = Path(out or cfg.output_dir)
    cfg.output_dir = str(out)
    cfg.save(out)
    logger.info(f"training preset {cfg.preset} on {hardware_name()} -> {out}")
    model, tokenizer = load_for(cfg)
    train_set, _, data_report = load_run_data_with_report(cfg)
    result = train_and_record(cfg, model, tokenizer, train_set, out, data_report=data_report)
    m = result.metrics
    if not m["is_main_process"]:
        return result
    logger.info(
        f"{m['steps']} steps in {m['wall_s']} s, {m['tokens_per_s']} tokens/s, "
        f"final loss {m['final_loss']}, adapter check {m['adapter_check']}; run card: {out / 'run.md'}"
    )
    return result


def load_named_model(spec: str, cfg: RunConfig, tokenizer: Any, merge: bool = False):
    """'base' -> the preset's model; an adapter folder -> base + adapter; anything else -> a model name.

    `merge` folds an adapter into its base (peft's ``merge_and_unload``, the LoRA products and the
    trained turn-token rows alike): the same function to rounding (`sftkit.export` checks it), at
    the base model's decoding speed, which matters on a CPU, where generating through the
    unmerged LoRA layers of every block costs several times more per token.

    An adapter's base is found as `sftkit export` and `sftkit chat` find it (`adapter_base_name`:
    a committed adapter's vanished base folder named like an offline model is that model), and
    it is aligned with the tokenizer before the adapter goes on, so that a base loaded by short
    name gets the training run's embedding size and the adapter's weights fit it.
    """
    path = Path(spec)
    dtype = load_dtype(cfg.model.dtype, cfg.train.cpu_amp)  # the precision the run trained in
    if spec == "base":
        model = load_model(cfg.model.name, dtype=dtype)
    elif (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = prepare_model(load_model(adapter_base_name(path), dtype=dtype), tokenizer)
        model = PeftModel.from_pretrained(base, str(path))
        if merge:
            model = model.merge_and_unload()
    else:
        model = load_model(spec, dtype=dtype)
    prepare_model(model, tokenizer)
    return model.eval()


def run_evaluation(preset: str | None, out: str | Path | None, model_specs: list[str],
                   cfg: RunConfig | None = None) -> dict[str, Any]:
    """`sftkit eval`: every model on the same offline eval set; eval.json, eval.md, figures."""
    from .evaluation import evaluate_suite, write_eval_outputs

    cfg = cfg or resolve_preset(preset)
    out = Path(out or Path(cfg.output_dir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer = prepare_tokenizer(load_tokenizer(cfg.model.name), turn_format=cfg.model.turn_format)
    suites = {}
    for spec in model_specs:
        model = load_named_model(spec, cfg, tokenizer, merge=True)
        suites[spec] = evaluate_suite(spec, model, tokenizer, cfg)
        del model
    results = write_eval_outputs(out, suites, cfg, hardware_name(), round(time.perf_counter() - start, 1))
    print((out / "eval.md").read_text())
    return results
