"""Batched vs one-at-a-time greedy generation with the real offline model.

Prints prompts/s for both, the speed-up, and whether the outputs are identical. Target:
>= 4x at batch 16 on a 2-core CPU with SmolLM2-135M-Instruct, same outputs.

    python benchmarks/generation_speed.py [--n 16] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from sftkit.chat import prepare_model, prepare_tokenizer
from sftkit.generate import generate_batch
from sftkit.models import hardware_name, load_model, load_tokenizer
from sftkit.tasks import make_task_examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    tokenizer = prepare_tokenizer(load_tokenizer("smollm2-135m-instruct"))
    model = prepare_model(load_model("smollm2-135m-instruct", dtype="float32"), tokenizer).eval()
    prompts = [example["messages"][:-1] for example in make_task_examples(args.n, "test", seed=1)]
    generate_batch(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    start = time.perf_counter()
    single = generate_batch(model, tokenizer, prompts, args.max_new_tokens, batch_size=1)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate_batch(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size)
    batched_s = time.perf_counter() - start

    same = [a.text == b.text for a, b in zip(single, batched)]
    tokens = sum(g.new_tokens for g in batched)
    print(f"hardware: {hardware_name()}, torch threads {torch.get_num_threads()}")
    print(f"{args.n} prompts, max_new_tokens {args.max_new_tokens}, {tokens} new tokens")
    print(f"one at a time : {single_s:7.2f} s  ({args.n / single_s:.2f} prompts/s)")
    print(f"batch of {args.batch_size:<5}: {batched_s:7.2f} s  ({args.n / batched_s:.2f} prompts/s)")
    print(f"speed-up      : {single_s / batched_s:.2f}x")
    print(f"identical outputs: {sum(same)}/{len(same)}")


if __name__ == "__main__":
    main()
