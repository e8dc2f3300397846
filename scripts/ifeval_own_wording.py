"""Does a tuned model follow instructions worded as its training rows word them?

The evaluation's IFEval-format prompts word each instruction as IFEval does; the training rows use
the project's own phrasings (`scripts/ifeval_training.py`), so a low evaluation score can mean two
things: the model did not learn the instruction, or it did not recognise IFEval's wording of it.
This script separates them. It takes the instruction rows of the training split that the run's
training sample did *not* draw (unseen prompts in the training rows' own wording; their written
answers may have been seen under another instruction), generates the tuned model's replies with the
evaluation's budget, and scores them with the same official checkers (`sftkit.ifeval`).

    python scripts/ifeval_own_wording.py --adapter results/cpu-demo-base/adapter \\
        --out results/cpu-demo-base/ifeval-own-wording.json

The library never imports this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unseen_instruction_rows(cfg) -> list[dict]:
    """The training split's instruction rows (``SOURCE_IFEVAL``) that ``cfg``'s training sample did not draw."""
    from sftkit.offline_conversations import RESOURCE, SOURCE_IFEVAL
    from sftkit.run_data import OFFLINE_CONVERSATIONS, load_run_data

    if cfg.data.source != OFFLINE_CONVERSATIONS:
        raise SystemExit(f"the run trains on {cfg.data.source}, not the offline conversations")
    train, _ = load_run_data(cfg)
    drawn = {json.dumps(row["messages"]) for row in train}
    records = [json.loads(line) for line in RESOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    unseen = [r for r in records if r["source"] == SOURCE_IFEVAL and r["split"] == "train"
              and json.dumps(r["messages"]) not in drawn]
    if not unseen:
        raise SystemExit("every instruction row of the training split is in the training sample: nothing unseen")
    return unseen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="the tuned model: an adapter folder or a model name")
    parser.add_argument("--preset", default="cpu-demo", help="the preset the adapter was trained with")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE, as sftkit --set")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from sftkit.config import apply_overrides, get_preset
    from sftkit.generate import generate_batch
    from sftkit.ifeval import IFEvalRow, score_ifeval
    from sftkit.models import hardware_name
    from sftkit.runs import load_for, load_named_model

    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    unseen = unseen_instruction_rows(cfg)
    rows = [IFEvalRow(key=i, prompt=r["messages"][-2]["content"], instruction_id_list=tuple(r["instruction_id_list"]),
                      kwargs=tuple(r["kwargs"]), id=r["topic"]) for i, r in enumerate(unseen)]

    _, tokenizer = load_for(cfg)
    model = load_named_model(args.adapter, cfg, tokenizer, merge=True)
    start = time.perf_counter()
    prompts = [r["messages"][:-1] for r in unseen]  # the conversation up to the reply being scored
    replies = generate_batch(model, tokenizer, prompts, cfg.eval.ifeval_max_new_tokens, cfg.eval.batch_size)
    result = score_ifeval(rows, [g.text for g in replies], "official checkers, the training rows' own wording",
                          cfg.eval.bootstrap_resamples)
    out = {"model": args.adapter, "preset": args.preset, "hardware": hardware_name(), "n_prompts": len(rows),
           "generate_s": round(time.perf_counter() - start, 1), "prompt_loose": result["prompt_loose"],
           "prompt_strict": result["prompt_strict"], "instruction_loose": result["instruction_loose"],
           "per_instruction": result["per_instruction"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(rows)} unseen instruction rows, prompt-level loose {result['prompt_loose']['mean']:.3f} "
          f"[{result['prompt_loose']['low']:.3f}, {result['prompt_loose']['high']:.3f}]; per id (n, loose):")
    for name, scores in sorted(result["per_instruction"].items()):
        print(f"  {name}: {scores['n']}, {scores['loose']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
