"""`sftkit export`: an adapter merged into its base and saved as a standalone model that transformers loads
without peft.

The exported model must give the logits of base + adapter to fp32 rounding, the trained
turn-token rows included (peft's ``trainable_token_indices`` merge into the embedding), carry the
training chat template, and stop `generate` at the end-of-turn token by its generation config.
The smoke test builds a tiny adapter (tests/tiny_adapter.py); the slow one takes the committed
demo adapter (Gemma 3 270M base) as a user meets it: loaded with the standard auto classes in a
fresh interpreter, and exported and read back in an interpreter where peft cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_adapter import build_tiny_adapter

from sftkit.chat import GEMMA, end_of_turn_id, training_template, turn_token_ids
from sftkit.cli import main
from sftkit.export import ExportError, export_merged, load_adapter_folder, probe_ids

ROOT = Path(__file__).resolve().parents[1]
DEMO_ADAPTER = ROOT / "results" / "cpu-demo-base" / "adapter"


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, make_tiny_model, tokenizer):
    return build_tiny_adapter(tmp_path_factory.mktemp("run"), make_tiny_model, tokenizer)


def test_export_of_a_smoke_adapter_loads_without_peft_and_equals_base_plus_adapter(tiny_adapter, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_merged(tiny_adapter, tmp_path / "merged")
    out = result.out_dir
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert {"run.json", "metrics.json", "sftkit_export.json"} <= set(result.files), result.files
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(out)
    assert merged_tokenizer.chat_template == tokenizer.chat_template
    assert merged.generation_config.eos_token_id == end_of_turn_id(tokenizer) == merged_tokenizer.eos_token_id
    peft_model, _ = load_adapter_folder(tiny_adapter)
    ids = probe_ids(tokenizer)
    assert set(turn_token_ids(tokenizer)) <= set(ids[0].tolist()), "the probe must use the trained token rows"
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
    assert (expected - base).abs().max() > 0.1, "the adapter must change the logits for the check to mean anything"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert result.max_logit_diff <= 1e-5
    # The turn-token rows were merged into the embedding, not dropped with the adapter.
    base_model = AutoModelForCausalLM.from_pretrained(tiny_adapter.parent / "base_model")
    rows = turn_token_ids(tokenizer)
    row_change = merged.get_input_embeddings().weight[rows] - base_model.get_input_embeddings().weight[rows]
    assert row_change.abs().max() > 0.1


def test_export_refuses_what_it_must_not_overwrite_or_cannot_read(tiny_adapter, tmp_path, capsys):
    not_adapter = tmp_path / "plain"
    not_adapter.mkdir()
    (not_adapter / "notes.txt").write_text("x")
    assert main(["export", "--adapter", str(not_adapter), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not a peft adapter folder" in err and "adapter_config.json" in err and len(err.splitlines()) == 1

    assert main(["export", "--adapter", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 1
    assert "no such folder" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", "--adapter", str(tiny_adapter), "--out", str(busy)]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and (busy / "keep.txt").read_text() == "mine"

    for out in (tiny_adapter, tiny_adapter.parent):  # the adapter, or the run folder holding it
        with pytest.raises(ExportError, match="holds the adapter"):
            export_merged(tiny_adapter, out, force=True)
    assert (tiny_adapter / "adapter_config.json").is_file()
    with pytest.raises(ExportError, match="not an exported model"):  # --force replaces only an earlier export
        export_merged(tiny_adapter, busy, force=True)
    assert (busy / "keep.txt").read_text() == "mine"

    earlier = tmp_path / "earlier"
    assert main(["export", "--adapter", str(tiny_adapter), "--out", str(earlier)]) == 0
    (earlier / "stale.txt").write_text("from the earlier export")
    assert main(["export", "--adapter", str(tiny_adapter), "--out", str(earlier), "--force"]) == 0
    assert "logits equal base + adapter" in capsys.readouterr().out
    assert not (earlier / "stale.txt").exists() and (earlier / "model.safetensors").is_file()


def _drop_the_adapter(model, merge, rows):
    return model.unload()  # base weights back, the adapter thrown away: a merge that forgot to merge


def _drop_the_turn_token_rows(model, merge, rows):
    # LoRA merged, but the trained embedding rows of the turn tokens put back to the base's values
    base_rows = model.base_model.model.get_input_embeddings().token_adapter.base_layer.weight[rows].clone()
    merged = merge()
    merged.get_input_embeddings().weight.data[rows] = base_rows
    return merged


@pytest.mark.parametrize("bad_merge", [_drop_the_adapter, _drop_the_turn_token_rows])
def test_export_raises_when_the_saved_model_is_not_base_plus_adapter(tiny_adapter, tmp_path, tokenizer, bad_merge):
    model, adapter_tokenizer = load_adapter_folder(tiny_adapter)
    merge = model.merge_and_unload
    model.merge_and_unload = lambda **kwargs: bad_merge(model, merge, turn_token_ids(tokenizer))
    out = tmp_path / "merged"
    with pytest.raises(ExportError, match=r"the exported model's logits differ from base \+ adapter by [0-9.e+-]+ "
                                          r"\(tolerance 0\.0001\); the export in .*merged is not exact"):
        export_merged(tiny_adapter, out, loaded=(model, adapter_tokenizer))
    assert not (out / "sftkit_export.json").exists(), "a failed export must not record itself as exact"


# The committed demo adapter as a user meets it, in two new interpreters that never import sftkit.
# The merged export must stand alone: peft cannot be imported there. It gives the logits on the
# probe and its greedy reply to a held-out test prompt, which must close the turn.
MERGED_USER_CODE = """
import json, sys
sys.modules["peft"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, ids_file, logits_file, prompt = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tok = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    torch.save(model(input_ids=torch.load(ids_file)).logits, logits_file)
ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
# generate() stops at the generation config's EOS when no eos_token_id is passed
new = model.generate(ids, max_new_tokens=160, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
print(json.dumps({"eos_id": tok.eos_token_id, "eos": tok.eos_token, "generation_eos": model.generation_config.eos_token_id,
                  "template": tok.chat_template, "new": new, "text": tok.decode(new)}))
"""  # noqa: E501 (the script's source: wrapping its long line would change the string)
# The adapter folder itself through the two standard calls of README's "use the adapter".
ADAPTER_USER_CODE = """
import json, sys
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
folder, ids_file, logits_file = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.load(ids_file)).logits, logits_file)
print(json.dumps({"eos": tok.eos_token, "eos_id": tok.eos_token_id, "template": tok.chat_template}))
"""


def _run_user_code(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _adapter_pointed_at_this_machine(folder: Path) -> Path:
    """A copy of the committed adapter pointed at this machine's converted base model (as training does,
    `point_adapter_at`), with the base's tokenizer.json (not committed: 33 MB, byte-identical to the base
    model's)."""
    from sftkit.adapters import point_adapter_at
    from sftkit.models import gemma_base_dir

    base = gemma_base_dir()
    shutil.copytree(DEMO_ADAPTER, folder)
    if not (folder / "tokenizer.json").is_file():
        shutil.copy(base / "tokenizer.json", folder / "tokenizer.json")
    point_adapter_at(folder, base)
    return folder


@pytest.mark.slow
def test_the_committed_demo_adapter_loads_as_a_user_loads_it_and_its_export_stands_alone(tmp_path):
    """One load of the committed adapter (Gemma 3 270M base) checks both ways a user meets it.

    The adapter folder loads with `AutoTokenizer` and `AutoPeftModelForCausalLM` in a fresh
    interpreter, carries the training chat template and `<end_of_turn>` as EOS, and gives base +
    adapter's logits; the merged export loads without peft, gives the same logits to fp32 rounding,
    and its greedy reply to a held-out test prompt closes the turn. (The reply is generated from the
    merged model: with the adapter unmerged, peft rebuilds the 262k-row embedding at every step.)
    """
    if not (DEMO_ADAPTER / "adapter_model.safetensors").is_file():
        pytest.fail(f"{DEMO_ADAPTER} has no adapter_model.safetensors: copy the demo's adapter there")
    from sftkit.config import get_preset
    from sftkit.run_data import load_run_data

    cfg = get_preset("cpu-demo")
    _, test_set = load_run_data(cfg)
    assert cfg.data.eval_split == "test"
    prompt = next(row["messages"][:-1] for row in test_set if not row.get("task"))

    peft_model, tokenizer = load_adapter_folder(DEMO_ADAPTER)
    ids = probe_ids(tokenizer)
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits.clone()
    result = export_merged(DEMO_ADAPTER, tmp_path / "merged", loaded=(peft_model, tokenizer))  # loaded once
    del peft_model
    torch.save(ids, tmp_path / "ids.pt")
    # fp32 rounding at the scale of Gemma's logits (|logit| up to ~40)
    tolerance = max(1e-4, 1e-5 * expected.abs().max().item())
    template = training_template(GEMMA, bos=True)

    merged = _run_user_code(MERGED_USER_CODE, str(result.out_dir), str(tmp_path / "ids.pt"),
                            str(tmp_path / "merged_logits.pt"), json.dumps(prompt))
    assert (torch.load(tmp_path / "merged_logits.pt") - expected).abs().max().item() <= tolerance
    assert merged["eos"] == "<end_of_turn>"
    assert merged["eos_id"] == merged["generation_eos"] == end_of_turn_id(tokenizer)
    assert merged["template"] == tokenizer.chat_template == template
    assert merged["new"][-1] == merged["eos_id"], f"the reply does not close its turn: {merged['text']!r}"
    assert len(merged["new"]) > 3, merged["text"]
    record = json.loads((result.out_dir / "sftkit_export.json").read_text())
    assert record["max_logit_diff"] == result.max_logit_diff and Path(record["base_model"]).name == "gemma3-270m-base"

    folder = _adapter_pointed_at_this_machine(tmp_path / "adapter")
    adapter = _run_user_code(ADAPTER_USER_CODE, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt"))
    assert (torch.load(tmp_path / "logits.pt") - expected).abs().max().item() <= tolerance
    assert adapter["template"] == template, "the saved template is not the training one"
    assert adapter["eos"] == "<end_of_turn>" and adapter["eos_id"] == end_of_turn_id(tokenizer)
