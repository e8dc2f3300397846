"""Batched vs one-at-a-time greedy generation with the real offline model.

Prints, for each repeat, the seconds one prompt at a time and in batches, the speed-up and
whether the outputs are identical; then the median speed-up over the repeats (a shared 2-core
machine moves a single timing by 10% or more, so one run says little). Target: >= 4x at batch
16 on a 2-core CPU with SmolLM2-135M-Instruct, same outputs.

    python benchmarks/generation_speed.py [--n 16] [--max-new-tokens 32] [--repeats 3]

The last line is ``speedup=<median> identical=<same>/<prompts>`` (identical in every repeat).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sftkit.chat import prepare_model, prepare_tokenizer
from sftkit.generate import generate_batch
from sftkit.models import hardware_name, load_model, load_tokenizer
from sftkit.tasks import make_task_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="an offline short name, folder or Hub id")
    args = parser.parse_args()

    tokenizer = prepare_tokenizer(load_tokenizer(args.model))
    model = prepare_model(load_model(args.model, dtype="float32"), tokenizer).eval()
    prompts = [example["messages"][:-1] for example in make_task_examples(args.n, "test", seed=1)]
    generate_batch(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    print(f"hardware: {hardware_name()}, torch threads {torch.get_num_threads()}, model {args.model} (fp32)")
    speedups, identical = [], []
    for repeat in range(1, args.repeats + 1):
        start = time.perf_counter()
        single = generate_batch(model, tokenizer, prompts, args.max_new_tokens, batch_size=1)
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = generate_batch(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size)
        batched_s = time.perf_counter() - start
        same = sum(a.text == b.text for a, b in zip(single, batched))
        tokens = sum(g.new_tokens for g in batched)
        speedups.append(single_s / batched_s)
        identical.append(same)
        print(f"repeat {repeat}: {args.n} prompts, max_new_tokens {args.max_new_tokens}, {tokens} new tokens; "
              f"one at a time {single_s:.2f} s ({args.n / single_s:.2f} prompts/s), batch of {args.batch_size} "
              f"{batched_s:.2f} s ({args.n / batched_s:.2f} prompts/s): {speedups[-1]:.2f}x, "
              f"identical outputs {same}/{args.n}")
    print(f"speedup={statistics.median(speedups):.2f} identical={min(identical)}/{args.n}")


if __name__ == "__main__":
    main()
