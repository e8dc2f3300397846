"""Session-5 probes: the cpu-demo preset with one change, trained and scored on dev only.

Each run trains through the package's own path (`make_task_splits` with the preset's
curriculum, `sftkit.runs.train_and_record`), then scores the trained model on the 96 dev
prompts of `sftkit demo --eval-split dev` and on 48 more dev sums; it appends a row to
`/tmp/p5/results.jsonl` (kept here as `session5_probes.jsonl`) and writes the generations
(kept in `session5_generations/`). Options: `--fmt sofar|readback` (two addition formats,
patched in for the probe), `--two SHARE` (that share of training sums has a two-digit
operand), `--r`, `--lr`, `--bs`, `--seed` (the training seed).
Run: `PYTHONPATH=. python results/cpu-demo/design_runs/session5_probe.py NAME [options]`.
"""
import argparse, json, time, pathlib, random, re
import sftkit.tasks as T
from sftkit.config import resolve_preset
from sftkit.runs import load_for, train_and_record
from sftkit.evaluation import evaluate_model
from datasets import Dataset

p = argparse.ArgumentParser()
p.add_argument("name"); p.add_argument("--fmt", default="current"); p.add_argument("--two", type=float, default=0.0)
p.add_argument("--stage", type=int, default=240); p.add_argument("--mix", type=int, default=1300)
p.add_argument("--shares", default="")  # e.g. add=1,reverse=5
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--r", type=int, default=16); p.add_argument("--bs", type=int, default=8); p.add_argument("--seed", type=int, default=0)
a = p.parse_args()

orig_steps = T.addition_steps
def sofar_steps(x: int, y: int) -> str:
    def named(n): return f"{n}: " + ", ".join(f"{pl} {(n // 10 ** i) % 10}" for i, pl in enumerate(T.PLACES))
    clauses, carry, written = [], 0, ""
    for i, pl in enumerate(T.PLACES):
        u, v = (x // 10 ** i) % 10, (y // 10 ** i) % 10
        d = u + v; tot = d + carry
        step = f"{u} + {v} = {d}" + (f", {d} + {carry} = {tot}" if i else "")
        written = f"{tot % 10}{written}"
        clauses.append(f"{pl.capitalize()}: {step}, write {tot % 10}, carry {tot // 10}, so far {written}")
        carry = tot // 10
    return f"{named(x)}. {named(y)}. " + ". ".join(clauses) + f". Answer: {x + y}"
def readback_steps(x: int, y: int) -> str:
    base = orig_steps(x, y).rsplit(". Answer:", 1)[0]
    total = x + y
    back = ", ".join(f"{pl.capitalize()} {(total // 10 ** i) % 10}" for i, pl in reversed(list(enumerate(T.PLACES + ("thousands",)))))
    return f"{base}. Read back: {back}. Answer: {total}"
if a.fmt == "sofar":
    T.addition_steps = sofar_steps
if a.fmt == "readback":
    T.addition_steps = readback_steps

def add_two(rng, pools):
    while True:
        if pools.split == "train" and rng.random() < a.two:
            x, y = rng.randint(10, 99), rng.randint(10, 999)
            if rng.random() < 0.5: x, y = y, x
        else:
            x, y = rng.randint(10, 999), rng.randint(10, 999)
        if T._pair_split(x, y) == pools.split:
            break
    prompt = rng.choice(("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.")).format(a=x, b=y)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": T.addition_steps(x, y)}], str(x + y)
if a.two > 0:
    T.GENERATORS["add"] = add_two
if a.shares:
    for kv in a.shares.split(","):
        k, v = kv.split("="); T.TRAIN_MIX[k] = int(v)

cfg = resolve_preset("cpu-demo"); cfg.train.learning_rate = a.lr; cfg.lora.r = a.r; cfg.lora.alpha = 2 * a.r
cfg.train.per_device_train_batch_size = a.bs; cfg.train.seed = a.seed
cfg.data.max_length = 176 if a.fmt in ("sofar", "readback") else 160
cfg.data.curriculum = {"add": a.stage} if a.stage else {}; cfg.data.train_size = a.mix
t0 = time.perf_counter()
model, tok = load_for(cfg)
train, dev = T.make_task_splits(cfg.data.train_size, 96, seed=0, eval_split="dev", curriculum=cfg.data.curriculum)
sums = Dataset.from_list(T.make_task_examples(48, "dev", 1, ("add",)))
ntok = sum(len(tok.apply_chat_template(m, tokenize=False)) for m in train["messages"])
res = train_and_record(cfg, model, tok, train, f"/tmp/p5/runs/{a.name}")
out = {"name": a.name, "args": vars(a), "train_rows": len(train), "train_s": res.metrics["wall_s"], "tok_s": res.metrics["tokens_per_s"],
       "steps": res.metrics["steps"], "pad_eff": res.metrics["padding_efficiency"]}
for label, ds in (("dev", dev), ("sums", sums)):
    ev = evaluate_model("after", res.model, tok, ds, 160, cfg.eval.batch_size, cfg.data.max_length)
    out[label] = {"em": ev.summary["exact_match"], "stop": ev.summary["stopped"], "per_task": ev.per_task}
    gens = [{"task": ds[i]["task"], "ref": ds[i]["answer"], "out": ev.generations[i].text} for i in range(len(ds))]
    pathlib.Path(f"/tmp/p5/runs/{a.name}/gens_{label}.json").write_text(json.dumps(gens, indent=1))
out["wall"] = time.perf_counter() - t0
print(json.dumps(out))
with open("/tmp/p5/results.jsonl", "a") as f: f.write(json.dumps(out) + "\n")
