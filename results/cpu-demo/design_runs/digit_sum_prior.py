"""What the pretrained model already knows about one-column sums, before any training.

The addition scratchpad (`sftkit.tasks.addition_steps`) is a chain of one-digit sums. This
probe asks SmolLM2-135M-Instruct, 4-shot and greedy, to complete every one-digit sum in three
written forms and prints the share it gets right; the committed format uses the form the model
knows best. Run from the repository root: `python results/cpu-demo/design_runs/digit_sum_prior.py`
(about a minute on 2 CPU cores); its output is in `digit_sum_prior.txt`.
"""

from __future__ import annotations

import itertools

import torch

from sftkit.models import load_model, load_tokenizer

MODEL = "smollm2-135m-instruct"

# (name, 4-shot prefix, items, expected completion) for each written form of a column sum.
PAIRS = list(itertools.product(range(10), range(10)))
TRIPLES = list(itertools.product(range(10), range(10), range(2)))
FORMS = [
    ("x + y = s", "3 + 4 = 7\n6 + 2 = 8\n5 + 9 = 14\n8 + 8 = 16\n", PAIRS,
     lambda x, y: (f"{x} + {y} = ", str(x + y))),
    ("x + y = 0s (two digits)", "3 + 4 = 07\n6 + 2 = 08\n5 + 9 = 14\n8 + 8 = 16\n", PAIRS,
     lambda x, y: (f"{x} + {y} = ", f"{x + y:02d}")),
    ("x + y + c = s (c 0 or 1)", "3 + 4 + 1 = 8\n6 + 2 + 0 = 8\n5 + 9 + 1 = 15\n8 + 8 + 0 = 16\n", TRIPLES,
     lambda x, y, c: (f"{x} + {y} + {c} = ", str(x + y + c))),
]


def share_correct(model, tokenizer, shots: str, items: list[tuple[int, ...]], form) -> float:
    prompts, expected = zip(*(form(*item) for item in items))
    encoded = tokenizer([shots + p for p in prompts], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    # The completion must start with the whole expected number and then end it ("1" is not "14").
    right = [c.strip().startswith(e) and not c.strip()[len(e):len(e) + 1].isdigit() for c, e in zip(completions, expected)]
    return sum(right) / len(right)


def main() -> None:
    tokenizer = load_tokenizer(MODEL)
    tokenizer.padding_side = "left"  # generation continues from the last prompt token
    model = load_model(MODEL, dtype="float32", device="cpu").eval()
    print(f"{MODEL}, 4-shot, greedy, CPU fp32")
    for name, shots, items, form in FORMS:
        print(f"{name:<28} {share_correct(model, tokenizer, shots, items, form):.2f} of {len(items)}")


if __name__ == "__main__":
    main()
