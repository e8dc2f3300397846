"""Re-run the demo's before/after evaluation for an adapter the demo already trained.

For when a demo run trained and saved its adapter but did not finish writing its outputs
(the first Gemma run did that: a bug in `write_generations`, since fixed, after
25 minutes of training). It evaluates exactly what `sftkit demo` evaluates, on the same
prompts: the base model, base + the saved adapter, and the reference instruct model, and
writes ``metrics.json`` (with the saved run card's training figures), ``report.md`` and
``generations.jsonl`` next to the adapter. The library never imports this script.

    python scripts/evaluate_demo_adapter.py RUN_DIR      # RUN_DIR holds config.json, run.json, adapter/
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from peft import PeftModel

    from sftkit.config import RunConfig
    from sftkit.demo import evaluate_reference, pick_side_by_side, write_generations, write_report
    from sftkit.evaluation import compare, evaluate_model, intervals, side_by_side
    from sftkit.models import hardware_name
    from sftkit.run_data import load_run_data
    from sftkit.runs import load_for
    from sftkit.measure import peak_memory_mb

    run = Path((argv or sys.argv[1:])[0])
    start = time.perf_counter()
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    card = json.loads((run / "run.json").read_text())
    model, tokenizer = load_for(cfg)
    _, eval_set = load_run_data(cfg)
    eval_set = eval_set.select(range(min(cfg.eval.n_examples, len(eval_set))))
    e = cfg.eval
    before = evaluate_model("before", model, tokenizer, eval_set, e.max_new_tokens, e.batch_size, cfg.data.max_length)
    tuned = PeftModel.from_pretrained(model, str(run / "adapter")).eval()
    after = evaluate_model("after", tuned, tokenizer, eval_set, e.max_new_tokens, e.batch_size, cfg.data.max_length)
    del tuned, model
    reference = evaluate_reference(cfg, eval_set)
    results = {
        "preset": cfg.preset, "model": cfg.model.name, "hardware": hardware_name(),
        "before": {**before.summary, "per_task": before.per_task,
                   "intervals": intervals(before, e.bootstrap_resamples)},
        "after": {**after.summary, "per_task": after.per_task, "intervals": intervals(after, e.bootstrap_resamples)},
        "paired_differences": compare(before, after, e.bootstrap_resamples),
        "reference": None if reference is None else {
            "model": cfg.model.reference_name, **reference.summary, "per_task": reference.per_task,
            "intervals": intervals(reference, e.bootstrap_resamples),
            "paired_vs_after": compare(reference, after, e.bootstrap_resamples),
        },
        "train": {**card["train"], "tokenization": card.get("tokenization")},
        "side_by_side": side_by_side(eval_set, [before, after] + ([reference] if reference else []),
                                     pick_side_by_side(eval_set, e.n_side_by_side)),
        "evaluation_wall_s": round(time.perf_counter() - start, 1),
        "wall_s": None,  # the training run's whole wall time was not recorded (it stopped before the end)
        "peak_memory_evaluation": peak_memory_mb(),
    }
    write_generations(run / "generations.jsonl", eval_set, before, after)
    (run / "metrics.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["wall_s"] = "n/a"
    write_report(run, cfg, results, before, after, eval_set)
    for key in ("stop_rate", "invented_turn_rate", "rouge_l", "bleu", "exact_match", "assistant_nll", "length_ratio",
                "repeated_4gram_rate"):
        ref = f"{reference.summary.get(key, float('nan')):.3f}" if reference else "-"
        print(f"{key:<22}{before.summary.get(key, float('nan')):>8.3f}"
              f"{after.summary.get(key, float('nan')):>8.3f}{ref:>8}")
    print(json.dumps({k: v for k, v in results["paired_differences"].items()}, indent=1)[:3000])
    print(f"evaluation {results['evaluation_wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
