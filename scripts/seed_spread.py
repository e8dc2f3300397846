"""Train the cpu-demo preset with several seeds and report the spread, on the dev split.

The demo runs one training seed; this script says how much that one run can be trusted.
The base model's baseline does not depend on the seed, so it is evaluated once; each seed
then trains the preset from scratch (LoRA's initial A matrices, the row sample and order)
and is evaluated on the same dev prompts by the whole offline suite (`sftkit.evaluation.
evaluate_suite`: the held-out conversations, IFEval-format prompts, short-answer facts and
refusal). Extra variants (``--variant NAME:KEY=VALUE,...``)
train with `--set`-style overrides, e.g. the frozen turn-token rows:

    python scripts/seed_spread.py --seeds 0 1 2 --variant frozen-turn-rows:lora.train_turn_tokens=false

Writes ``seeds.json`` and ``seeds.md`` (mean, standard deviation and range per metric) to
``--out``. The library never imports this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("stop_rate", "looped", "rouge_l", "bleu", "exact_match", "assistant_nll", "length_ratio",
           "instruction_loose", "instruction_strict", "fact_correct", "open_looped", "open_stopped", "refused_harmful",
           "refused_harmless")


def _scores(conversations) -> dict:
    """Per-example means (the conversations, and with the whole suite IFEval, facts and refusal)
    and summary rates of a `ModelEval` (None for the metrics it does not have)."""
    summary = {k: v for k, v in conversations.summary.items() if isinstance(v, (int, float))}
    means = {k: sum(v) / len(v) for k, v in conversations.per_example.items() if v}
    return {key: means.get(key, summary.get(key)) for key in METRICS}


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _reused_runs(items: list[str], seeds: list[int]) -> dict[int, Path]:
    """``SEED=RUN_DIR`` items as {seed: folder}; each seed must be one of ``--seeds``."""
    reused = {}
    for item in items:
        seed, sep, folder = item.partition("=")
        if not sep or not seed.strip().lstrip("-").isdigit():
            raise SystemExit(f"--reuse {item!r}: expected SEED=RUN_DIR")
        if int(seed) not in seeds:
            raise SystemExit(f"--reuse {item!r}: seed {seed} is not among --seeds {seeds}")
        reused[int(seed)] = Path(folder)
    return reused


def _read_run(folder: Path, cfg, extra: list[str]) -> dict:
    """The scores of a demo run trained with ``cfg`` (checked against its config.json, output_dir aside)."""
    import dataclasses

    from sftkit.config import RunConfig

    saved = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    if dataclasses.replace(saved, output_dir=cfg.output_dir) != cfg:
        raise SystemExit(f"{folder}/config.json is not this run's configuration ({extra}): train it instead")
    metrics = json.loads((folder / "metrics.json").read_text())
    after, train = metrics["after"], metrics["train"]
    return {"overrides": extra, "train_s": train["wall_s"], "tokens_per_s": train["tokens_per_s"],
            "reused": str(folder), **{key: after.get(key) for key in METRICS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value (seed 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "seeds")
    parser.add_argument("--conversations-only", action="store_true",
                        help="score the held-out conversations alone, as `sftkit demo` does (no IFEval, facts, "
                             "refusal): a run's demo figures and the seeds' are then comparable")
    parser.add_argument("--before-from", type=Path, default=None,
                        help="a seeds.json of the same split whose base-model scores to reuse "
                             "instead of re-evaluating")
    parser.add_argument("--reuse", action="append", default=[], metavar="SEED=RUN_DIR",
                        help="a run `sftkit demo` already trained with this seed (same preset, overrides and "
                             "split; its config.json is checked): its metrics.json is read instead of training "
                             "again. Only with --conversations-only, which scores what the demo scores")
    args = parser.parse_args(argv)
    reused = _reused_runs(args.reuse, args.seeds)
    if reused and not args.conversations_only:
        parser.error("--reuse reads a demo run's scores (the conversations alone): add --conversations-only")

    from sftkit.adapters import merged_adapter
    from sftkit.config import apply_overrides, get_preset
    from sftkit.evaluation import evaluate_model, evaluate_suite
    from sftkit.models import hardware_name
    from sftkit.run_data import load_run_data
    from sftkit.report import markdown_table
    from sftkit.runs import load_for, train_and_record

    def evaluate(model, tokenizer, cfg):
        if args.conversations_only:
            e = cfg.eval
            return evaluate_model("m", model, tokenizer, eval_set, e.max_new_tokens, e.batch_size, cfg.data.max_length)
        return evaluate_suite("m", model, tokenizer, cfg).reference

    def config(extra: list[str]):
        cfg = apply_overrides(get_preset(args.preset), [f"data.eval_split={args.split}", *args.overrides, *extra])
        return cfg

    args.out.mkdir(parents=True, exist_ok=True)
    base_cfg = config([])
    e = base_cfg.eval
    _, eval_set = load_run_data(base_cfg)
    eval_set = eval_set.select(range(min(e.n_examples, len(eval_set))))
    model, tokenizer = load_for(base_cfg)
    start = time.perf_counter()
    if args.before_from:  # the base model's scores do not depend on the training settings
        earlier = json.loads(args.before_from.read_text())
        if earlier["split"] != args.split:
            raise SystemExit(f"{args.before_from} scored the {earlier['split']} split, not {args.split}")
        before_scores, before_s = earlier["before"], earlier["before_s"]
    else:
        before_scores = _scores(evaluate(model, tokenizer, base_cfg))
        before_s = round(time.perf_counter() - start, 1)
    results = {"hardware": hardware_name(), "split": args.split, "n": len(eval_set), "preset": args.preset,
               "set": args.overrides,  # applied to every run, before each run's own overrides
               "before": before_scores, "before_s": before_s, "runs": {}}
    (args.out / "seeds.json").write_text(json.dumps(results, indent=2) + "\n")  # reusable with --before-from
    del model
    runs = [(f"seed {seed}", [f"train.seed={seed}"]) for seed in args.seeds]
    runs += [(name, [f"train.seed={args.seeds[0]}", *pairs.split(",")]) for name, pairs in
             (v.split(":", 1) for v in args.variant)]
    for name, extra in runs:
        cfg = config(extra)
        seed = int(name.split()[1]) if name.startswith("seed ") else None
        if seed in reused:
            results["runs"][name] = _read_run(reused[seed], cfg, extra)
            print(f"[seeds] {name}: read from {reused[seed]}", flush=True)
            continue
        train_set, _ = load_run_data(cfg)
        model, tokenizer = load_for(cfg)
        out = args.out / name.replace(" ", "-")
        result = train_and_record(cfg, model, tokenizer, train_set, out)
        with merged_adapter(result.model):  # the base model's decoding speed; equal to rounding (verify_adapter)
            after = _scores(evaluate(result.model, tokenizer, cfg))
        results["runs"][name] = {"overrides": extra, "train_s": result.metrics["wall_s"],
                                 "tokens_per_s": result.metrics["tokens_per_s"], **after}
        print(f"[seeds] {name}: " + ", ".join(f"{k} {after[k]}" for k in METRICS if after[k] is not None), flush=True)
        (args.out / "seeds.json").write_text(json.dumps(results, indent=2) + "\n")  # after each run: resumable reading
        del model, result
    seeds = [results["runs"][f"seed {s}"] for s in args.seeds]
    variants = [name for name, _ in runs[len(args.seeds):]]
    header = ["metric", "before", *(f"seed {s}" for s in args.seeds), "mean", "sd", *variants]
    rows = []
    for key in METRICS:
        values = [r[key] for r in seeds if r[key] is not None]
        if not values:
            continue
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        extra = [_cell(results["runs"][name][key]) for name in variants]
        rows.append([key, _cell(results["before"][key]), *(_cell(r[key]) for r in seeds),
                     _cell(statistics.mean(values)), _cell(sd), *extra])
    lines = [f"# {args.preset}: {len(args.seeds)} training seeds on the {args.split} split "
             f"({len(eval_set)} prompts)", "",
             f"Hardware: {results['hardware']}. Before = the base model (seed-independent).", "",
             *markdown_table(header, rows, align=["left", *["right"] * (len(header) - 1)])]
    lines += ["", "Training seconds: " + ", ".join(f"{name} {r['train_s']}" for name, r in results["runs"].items())]
    results["summary"] = {key: {"mean": statistics.mean([r[key] for r in seeds]),
                                "sd": statistics.stdev([r[key] for r in seeds]) if len(seeds) > 1 else 0.0}
                          for key in METRICS if all(r[key] is not None for r in seeds)}
    (args.out / "seeds.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
