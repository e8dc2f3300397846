"""The committed demo adapter (Gemma 3 270M base, results/cpu-demo-base/adapter) as a user meets it.

A user who downloads the repository, or runs `make demo`, gets an adapter folder. It must load
with the two standard calls, `AutoTokenizer.from_pretrained(folder)` and
`peft.AutoPeftModelForCausalLM.from_pretrained(folder)`, in a fresh interpreter that has never
imported sftkit; the chat template saved with it must be the one training used; and its greedy
reply to a held-out test prompt must close the turn with `<end_of_turn>`. The folder records the
base model's path on the machine that trained it, so the test points a copy at this machine's
converted base model (what `sftkit.runs.point_adapter_at` does after training).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ADAPTER = Path(__file__).resolve().parents[1] / "results" / "cpu-demo-base" / "adapter"

# Runs in a new interpreter: only transformers and peft, as in README's "use the adapter".
USER_CODE = """
import json, sys
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
folder, prompt = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder)
model = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
out = model.generate(ids, max_new_tokens=160, do_sample=False, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
new = out[0, ids.shape[1]:].tolist()
print(json.dumps({"eos": tok.eos_token, "eos_id": tok.eos_token_id, "template": tok.chat_template, "new": new,
                  "text": tok.decode(new)}))
"""


@pytest.mark.slow
def test_committed_demo_adapter_loads_with_auto_classes_and_closes_its_turn(tmp_path):
    if not (ADAPTER / "adapter_model.safetensors").is_file():
        pytest.fail(f"{ADAPTER} has no adapter_model.safetensors: copy the demo's adapter there")
    from sftkit.chat import GEMMA, training_template
    from sftkit.config import get_preset
    from sftkit.models import gemma_base_dir
    from sftkit.run_data import load_run_data

    base = gemma_base_dir()
    folder = tmp_path / "adapter"
    shutil.copytree(ADAPTER, folder)
    if not (folder / "tokenizer.json").is_file():
        # Not committed (33 MB): it is byte-identical to the base model's tokenizer.json.
        shutil.copy(base / "tokenizer.json", folder / "tokenizer.json")
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(config, indent=2))

    cfg = get_preset("cpu-demo")
    _, test_set = load_run_data(cfg)
    assert cfg.data.eval_split == "test"
    prompt = next(row["messages"][:-1] for row in test_set if not row.get("task"))
    done = subprocess.run([sys.executable, "-c", USER_CODE, str(folder), json.dumps(prompt)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["template"] == training_template(GEMMA, bos=True), "the saved template is not the training one"
    assert seen["eos"] == "<end_of_turn>"
    assert seen["new"][-1] == seen["eos_id"], f"the reply does not close its turn: {seen['text']!r}"
    assert len(seen["new"]) > 3, seen["text"]
