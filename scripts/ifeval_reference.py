"""IFEval (offline prompts, official checkers) for the cpu-demo preset's instruct reference.

`sftkit eval --models` loads every model with the preset's base tokenizer, which suits the base
model and its adapters but not a published instruct model with its own vocabulary and template.
This takes the demo's path for the reference (`sftkit.evaluation.ifeval_for_model`, the
model's own tokenizer prepared like the demo's) and writes the summary as JSON:

    HF_HUB_OFFLINE=1 python scripts/ifeval_reference.py runs/cpu-demo/ifeval-ref.json
"""
import json
import sys
import time

from sftkit.chat import prepare_tokenizer
from sftkit.config import get_preset
from sftkit.evaluation import ifeval_for_model
from sftkit.ifeval import summary
from sftkit.models import hardware_name, load_model, load_tokenizer
from sftkit.precision import load_dtype

cfg = get_preset("cpu-demo")
name = cfg.model.reference_name
start = time.perf_counter()
tok = prepare_tokenizer(load_tokenizer(name))
model = load_model(name, dtype=load_dtype(cfg.model.dtype, cfg.train.cpu_amp)).eval()
result = ifeval_for_model(model, tok, cfg)
out = {"model": name, "hardware": hardware_name(), "wall_s": round(time.perf_counter() - start, 1), **summary(result)}
json.dump(out, open(sys.argv[1], "w"), indent=2)
print({k: out[k] for k in ("model", "wall_s", "prompt_strict", "prompt_loose", "instruction_strict",
                            "instruction_loose", "fallback_kinds")})
