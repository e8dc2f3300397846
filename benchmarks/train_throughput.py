"""Training throughput: batching strategies, the loss path and how many blocks carry LoRA.

Each variant trains the same LoRA on the same data for the same number of steps and prints
tokens/s (non-pad tokens), padding efficiency, and MFU (against a GPU's data-sheet peak, or on
a CPU against the matmul peak each run measures; FLOPs from `sftkit.measure.training_flops_per_token`,
so a variant that computes the head at every position is credited with those FLOPs):

- plain padding, length grouping (the presets' choice) and packing (TRL's best-fit-decreasing
  packing with padding-free batches). Packing is refused (and reported as such) unless the
  model runs FlashAttention: with SDPA or eager attention packed examples attend to each
  other (tests/test_packing.py);
- length grouping with the loss from TRL's fused LM head instead of sftkit's (the labelled-head
  loss is the default on a CPU, where the fused head has no Triton kernel; see
  `TrainSettings.fused_lm_head`), when the preset does not already use it. TRL's fused head
  cannot train peft's turn-token rows (it reads ``lm_head.bias``, which peft's wrapper lacks, so
  the config refuses ``train.fused_lm_head=true`` with ``lora.train_turn_tokens=true``): when
  the preset trains them, that row turns them off and so does an extra row, "group, turn rows
  off", with sftkit's loss, so the two differ in the loss path alone (the output says so);
- length grouping with LoRA in every block, when the preset adapts only the top blocks
  (`LoraSettings.layers`).

    python benchmarks/train_throughput.py [--preset cpu-demo] [--steps 12]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from typing import Callable

from sftkit.config import RunConfig, get_preset
from sftkit.demo import load_demo_data
from sftkit.models import hardware_name
from sftkit.runs import load_for
from sftkit.train import train_lora, wants_fused_lm_head


def _turn_rows_off(cfg: RunConfig) -> None:
    cfg.lora.train_turn_tokens = False


def _fused_head(cfg: RunConfig) -> None:
    # TRL's fused head reads lm_head.weight/.bias itself and peft's trainable-token wrapper has
    # no .bias: it cannot train the turn-token rows, so they are off in this row (and its baseline row).
    cfg.train.fused_lm_head = True
    cfg.lora.train_turn_tokens = False


def variants(base: RunConfig) -> dict[str, Callable[[RunConfig], None]]:
    """Name -> change to a copy of the preset; only the variants that differ from it."""
    chosen: dict[str, Callable[[RunConfig], None]] = {
        f"{batching}": (lambda cfg, b=batching: setattr(cfg.train, "batching", b))
        for batching in ("pad", "group", "pack")
    }
    if not wants_fused_lm_head(base.train.fused_lm_head):
        if base.lora.train_turn_tokens:
            chosen["group, turn rows off"] = _turn_rows_off  # the fused head's baseline: the same work
            chosen["group, turn rows off, TRL head"] = _fused_head
        else:
            chosen["group, TRL fused LM head"] = _fused_head
    if base.lora.layers is not None:
        chosen["group, LoRA in every block"] = lambda cfg: setattr(cfg.lora, "layers", None)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    base_cfg = get_preset(args.preset)
    rows = []
    for name, change in variants(base_cfg).items():
        cfg = copy.deepcopy(base_cfg)
        cfg.train.batching = "group"
        # The variants are compared on the shuffled mix: a curriculum's first stage (one task,
        # longer rows) would fill a few steps on its own and cannot be packed.
        cfg.data.curriculum = {}
        change(cfg)
        cfg.train.max_steps = args.steps
        cfg.train.logging_steps = args.steps
        try:
            cfg.validate()  # a combination the config refuses is reported, not trained
        except ValueError as refusal:
            print(f"{name}: refused: {refusal}")
            continue
        model, tokenizer = load_for(cfg)
        train_set, _ = load_demo_data(cfg)
        with tempfile.TemporaryDirectory() as out:
            try:
                result = train_lora(cfg, model, tokenizer, train_set, out, disable_tqdm=True)
            except ValueError as refusal:
                print(f"{name}: refused: {refusal}")
                continue
        m = result.metrics
        rows.append((name, m["tokens_per_s"], m["padding_efficiency"], m["mfu"], m["wall_s"]))
        del model

    print(f"hardware: {hardware_name()}; preset {args.preset}; {args.steps} steps each")
    if any("turn rows off" in name for name, *_ in rows):
        print("turn rows off: TRL's fused LM head cannot train peft's turn-token rows (the config refuses "
              "train.fused_lm_head=true with lora.train_turn_tokens=true), so its row trains without them, "
              "as does its baseline row 'group, turn rows off' (sftkit's loss); the other rows train them")
    print(f"{'variant':<30}{'tokens/s':>10}{'pad eff.':>10}{'MFU':>8}{'wall s':>9}")
    for name, tps, eff, mfu, wall in rows:
        print(f"{name:<30}{tps:>10.1f}{eff:>10.3f}{(f'{mfu:.3f}' if mfu is not None else 'n/a'):>8}{wall:>9.1f}")


if __name__ == "__main__":
    main()
