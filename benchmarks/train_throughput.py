"""Training throughput for three batching strategies on the same data.

For plain padding, length grouping and packing (TRL's best-fit-decreasing packing with
padding-free batches) this trains the same LoRA for the same number of steps and prints
tokens/s (non-pad tokens), padding efficiency, and MFU where a GPU is present. Packing is
refused (and reported as such) unless the model runs FlashAttention: with SDPA or eager
attention packed examples attend to each other (tests/test_packing.py).

    python benchmarks/train_throughput.py [--preset cpu-demo] [--steps 12]
"""

from __future__ import annotations

import argparse
import copy
import tempfile

from sftkit.config import get_preset
from sftkit.demo import load_demo_data
from sftkit.models import hardware_name
from sftkit.runs import load_for
from sftkit.train import train_lora


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    base_cfg = get_preset(args.preset)
    rows = []
    for batching in ("pad", "group", "pack"):
        cfg = copy.deepcopy(base_cfg)
        cfg.train.batching = batching
        cfg.train.max_steps = args.steps
        cfg.train.logging_steps = args.steps
        model, tokenizer = load_for(cfg)
        train_set, _ = load_demo_data(cfg)
        with tempfile.TemporaryDirectory() as out:
            try:
                result = train_lora(cfg, model, tokenizer, train_set, out, disable_tqdm=True)
            except ValueError as refusal:
                print(f"{batching}: refused: {refusal}")
                continue
        m = result.metrics
        rows.append((batching, m["tokens_per_s"], m["padding_efficiency"], m["mfu"], m["wall_s"]))
        del model

    print(f"hardware: {hardware_name()}; preset {args.preset}; {args.steps} steps each")
    print(f"{'batching':<10}{'tokens/s':>10}{'pad eff.':>10}{'MFU':>8}{'wall s':>9}")
    for batching, tps, eff, mfu, wall in rows:
        print(f"{batching:<10}{tps:>10.1f}{eff:>10.3f}{(f'{mfu:.3f}' if mfu is not None else 'n/a'):>8}{wall:>9.1f}")


if __name__ == "__main__":
    main()
