"""Where a training step's time goes: a torch.profiler trace of the main job, summed by part.

A few optimizer steps of the preset's training run (the same model, data, LoRA, loss and
precision as `sftkit demo`; `train.cpu_amp` decides the precision, `--set` changes it) are
traced with `torch.profiler` after two warm-up steps. Each step's time is split into the
ranges directly under it in the trace:

- data: the DataLoader's next batch (fetching the rows and collating them into padded tensors);
- embedding + blocks, forward: `sftkit::blocks_forward` (`sftkit.train.labelled_head_loss`);
- LM head loss and its gradient: `sftkit::head_loss` (`sftkit.lm_head.head_loss_sum` computes
  the head's gradient in its forward pass, a vocabulary tile at a time);
- backward: autograd's nodes (the blocks' and LoRA's gradients);
- optimizer: AdamW's step and zeroing the gradients;
- other torch ops at the top level (gradient clipping, the loss's division, ...);
- outside torch ops: the rest of the step's wall time (the Trainer's and TRL's Python,
  callbacks, the profiler's own cost).

It also sums the self time of the matrix products (``aten::mm``, ``addmm``, ``bmm``, ...)
across the whole step (what the matmul peak that MFU is measured against can speed up), and
lists the operators with the most self time: where the rest of the step goes.

    python benchmarks/step_profile.py [--preset cpu-demo] [--steps 4] [--set train.cpu_amp=off] [--out FILE]

The last line is ``step_s=<mean> matmul_share=<x> precision=<p>`` (``fp32``, ``bf16`` or ``fp16``);
`--out` writes the table as Markdown with the hardware, the precision and the command that made it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from sftkit.config import apply_overrides, get_preset
from sftkit.demo import load_demo_data
from sftkit.report import markdown_table
from sftkit.runs import load_for
from sftkit.train import train_lora

WARMUP_STEPS = 2
PARTS = ("data", "embedding + blocks, forward", "LM head loss and its gradient", "backward", "optimizer",
         "other torch ops", "outside torch ops")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkldnn_matmul", "mkldnn::matmul",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_efficient_attention_forward")


class ProfilerSteps(TrainerCallback):
    """Drives a `torch.profiler.profile` schedule from the Trainer's steps."""

    def __init__(self, profiler: Any):
        self.profiler = profiler

    def on_step_end(self, args, state, control, **kwargs):
        self.profiler.step()


def part_of(name: str) -> str:
    """The part of a step that a top-level range of the trace belongs to."""
    if name.startswith("enumerate(DataLoader)"):
        return "data"
    if name == "sftkit::blocks_forward":
        return "embedding + blocks, forward"
    if name == "sftkit::head_loss":
        return "LM head loss and its gradient"
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if name.startswith("Optimizer."):
        return "optimizer"
    return "other torch ops"


def _descendants(event: Any) -> list[Any]:
    stack, found = list(event.cpu_children), []
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(child.cpu_children)
    return found


def step_breakdown(events: list[Any]) -> tuple[list[dict[str, float]], list[float]]:
    """Per traced step: seconds per part (`PARTS`), and the matmuls' self seconds."""
    steps, matmul = [], []
    # torch names the step ranges "ProfilerStep#<n>" (older releases) or "ProfilerStep*".
    for step in (e for e in events if e.name.startswith("ProfilerStep") and e.cpu_parent is None):
        seconds: dict[str, float] = defaultdict(float)
        for child in step.cpu_children:
            seconds[part_of(child.name)] += child.cpu_time_total / 1e6
        # The DataLoader's range can sit outside the step's (it is fetched before the step begins).
        seconds["outside torch ops"] = max(0.0, step.cpu_time_total / 1e6 - sum(seconds.values()))
        seconds["total"] = step.cpu_time_total / 1e6
        steps.append(dict(seconds))
        matmul.append(sum(e.self_cpu_time_total for e in _descendants(step) if e.name in MATMUL_OPS) / 1e6)
    return steps, matmul


def top_operators(profiler: Any, steps: int, step_s: float, count: int = 12) -> list[tuple[str, ...]]:
    """The `count` operators with the most self time in the trace, per traced step."""
    averages = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [(f"`{e.key}`", f"{e.self_cpu_time_total / 1e6 / steps:.3f}",
             f"{e.self_cpu_time_total / 1e6 / steps / step_s:.1%}", str(e.count // steps)) for e in averages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--steps", type=int, default=4, help="traced steps, after two warm-up steps")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, as sftkit --set")
    parser.add_argument("--out", type=Path, help="write the table here as Markdown")
    args = parser.parse_args()

    cfg = apply_overrides(copy.deepcopy(get_preset(args.preset)), args.overrides)
    cfg.train.max_steps = WARMUP_STEPS + args.steps + 1  # the last step ends the schedule's trace
    cfg.train.logging_steps = 1000
    model, tokenizer = load_for(cfg)
    train_set, _ = load_demo_data(cfg)
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                      schedule=torch.profiler.schedule(wait=0, warmup=WARMUP_STEPS,
                                                                       active=args.steps, repeat=1))
    with profiler, tempfile.TemporaryDirectory() as out:
        result = train_lora(cfg, model, tokenizer, train_set, out, callbacks=[ProfilerSteps(profiler)])
    steps, matmul = step_breakdown(list(profiler.events()))
    if not steps:
        sys.exit("no profiled step: the run ended before the trace began")
    mean = {part: sum(s.get(part, 0.0) for s in steps) / len(steps) for part in (*PARTS, "total")}
    rows = [(part, f"{mean[part]:.3f}", f"{mean[part] / mean['total']:.1%}") for part in PARTS]
    rows.append(("step (wall)", f"{mean['total']:.3f}", "100.0%"))
    matmul_share = sum(matmul) / sum(s["total"] for s in steps)
    m = result.metrics  # what the run computed in, as its run card records it (`sftkit.precision.precision_record`)
    precision = m["precision"] + (" autocast" if m["autocast_dtype"] else "")
    header = [
        f"Step profile: preset `{cfg.preset}`, `{cfg.model.name}`, precision {precision} "
        f"(weights {m['weights_dtype']}), batch {cfg.train.per_device_train_batch_size}, "
        f"mean of {len(steps)} traced steps after {WARMUP_STEPS} warm-up steps, on {m['hardware']} "
        f"({torch.get_num_threads()} threads).",
        "",
        f"Matrix products' own time: {matmul_share:.1%} of the step. Whole run's tokens/s (these "
        f"{cfg.train.max_steps} steps, under the profiler): {m['tokens_per_s']}.",
        "",
    ]
    table = markdown_table(("part of the step", "seconds", "share"), rows)
    table += ["", f"The operators with the most own time, per traced step (of {mean['total']:.3f} s):", ""]
    operators = top_operators(profiler, len(steps), mean["total"])
    table += markdown_table(("operator", "seconds", "share", "calls"), operators)
    command = "python benchmarks/step_profile.py " + " ".join(sys.argv[1:])
    print("\n".join(header + table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(header + table + ["", f"Made by `{command.strip()}`."]) + "\n")
    print(f"step_s={mean['total']:.3f} matmul_share={matmul_share:.3f} precision={m['precision']}")


if __name__ == "__main__":
    main()
