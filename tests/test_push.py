"""`sftkit push`: the model card it writes, and the upload, without the Hub.

The card is checked offline against the run's own files (run.json, metrics.json): base model
and license, rows per source, hyperparameters, the evaluation table with its intervals. The
upload runs against a fake `HfApi` that records what it was given. The token (a sentinel
value) must reach huggingface_hub and nothing else: no file written, no line printed. Offline
the command says in one line that the Hub is unreachable; without a token, how to give one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_adapter import METRICS, RUN_CARD, build_tiny_adapter

import sftkit.hub
from sftkit.cli import main
from sftkit.hub import model_card, push_folder

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUN = ROOT / "results" / "cpu-demo-base"
SENTINEL = "hf_SENTINELtoken0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, make_tiny_model, tokenizer):
    return build_tiny_adapter(tmp_path_factory.mktemp("run"), make_tiny_model, tokenizer)


@pytest.fixture
def demo_copy(tmp_path):
    """The committed demo adapter and its run files, copied (a push writes README.md into the folder)."""
    run = tmp_path / "demo-run"
    shutil.copytree(DEMO_RUN / "adapter", run / "adapter")
    for name in ("run.json", "metrics.json"):
        shutil.copy(DEMO_RUN / name, run / name)
    return run / "adapter"


def _files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_card_of_the_demo_adapter_records_base_data_settings_and_evaluation():
    card = model_card(DEMO_RUN / "adapter", "someone/gemma-sft")
    run = json.loads((DEMO_RUN / "run.json").read_text())
    metrics = json.loads((DEMO_RUN / "metrics.json").read_text())
    assert card.data.base_model == "google/gemma-3-270m" and card.data.license == "gemma"
    assert card.data.library_name == "peft" and "sftkit" in card.data.tags
    text = card.text
    for source, rows in run["train"]["data"]["train"]["rows_per_source"].items():
        assert f"`{source}`: {rows:,}" in text
    assert f"| learning rate | {run['config']['train']['learning_rate']} |" in text
    assert f"| LoRA rank / alpha / dropout | {run['config']['lora']['r']} / {run['config']['lora']['alpha']}" in text
    stop = metrics["paired_differences"]["stopped"]
    assert (f"| stopped | {stop['before']:.3f} | {stop['after']:.3f} | "
            f"{stop['diff']:+.3f} [{stop['low']:+.3f}, ") in text
    assert (f"{metrics['reference']['model']}" in text
            and "AutoPeftModelForCausalLM.from_pretrained('someone/gemma-sft')" in text)


def test_card_of_a_merged_folder_says_transformers_and_keeps_the_run_record(tiny_adapter, tmp_path):
    from sftkit.export import export_merged

    merged = export_merged(tiny_adapter, tmp_path / "merged").out_dir
    card = model_card(merged)
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    assert card.data.base_model is None, "a random test model has no Hub id to name"
    for source, rows in RUN_CARD["train"]["data"]["train"]["rows_per_source"].items():
        assert f"`{source}`: {rows:,}" in card.text
    assert "| echoed_prompt (lower is better) | 0.500 | 0.125 | -0.375 [-0.750, +0.000] |" in card.text
    assert METRICS["reference"]["model"] in card.text and "AutoModelForCausalLM.from_pretrained" in card.text


def test_card_without_run_files_says_what_is_missing(tmp_path, tiny_adapter):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_adapter, bare)
    text = model_card(bare).text
    assert "Not recorded: no run card" in text and "Not recorded: no metrics.json" in text


def test_card_refuses_a_corrupt_run_file_naming_it_and_the_json_error(tmp_path, tiny_adapter, capsys):
    # A corrupt run.json must not look like a missing one: the run would vanish from the card.
    run = tmp_path / "run"
    shutil.copytree(tiny_adapter.parent, run)
    (run / "run.json").write_text('{"config": {"preset": "smoke",')  # cut off mid-write
    with pytest.raises(sftkit.hub.RunRecordError, match=r"run\.json is not valid JSON .*line 1 column") as caught:
        model_card(run / "adapter")
    assert str(run / "run.json") in str(caught.value) and "\n" not in str(caught.value)
    (run / "run.json").write_text("[1, 2]")  # valid JSON, but not a run card
    with pytest.raises(sftkit.hub.RunRecordError, match="not a JSON object"):
        model_card(run / "adapter")
    # `sftkit push` says so in one line before it needs the Hub or a token.
    (run / "run.json").write_text("{not json")
    assert main(["push", "--folder", str(run / "adapter"), "--repo-id", "someone/tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run / "run.json") in err and "not valid JSON" in err, err


def test_run_record_leaves_out_missing_run_files_only(tmp_path, tiny_adapter):
    run = tmp_path / "run"
    shutil.copytree(tiny_adapter.parent, run)
    (run / "metrics.json").unlink()
    record = sftkit.hub.run_record(run / "adapter")
    assert record["run"] == RUN_CARD and "metrics" not in record and "export" not in record


class FakeApi:
    """Records what push_folder hands huggingface_hub; optionally refuses like the Hub."""

    def __init__(self, refuse: bool = False):
        self.calls, self.refuse = [], refuse

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, token, private))
        if self.refuse:
            from huggingface_hub.errors import HfHubHTTPError

            error = HfHubHTTPError.__new__(HfHubHTTPError)  # as the Hub raises it, without a real response
            Exception.__init__(error, "403 Forbidden: you cannot write to someone/else\nmore lines")
            raise error
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, token=None, commit_message=""):
        self.calls.append(("create_commit", repo_id, token, list(operations)))


def test_push_hands_the_token_to_huggingface_hub_only(demo_copy, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setattr(sftkit.hub, "hub_reachable", lambda: True)
    api = FakeApi()
    url = push_folder(demo_copy, "someone/gemma-sft", private=True, api=api)
    assert url == "https://huggingface.co/someone/gemma-sft"
    (_, _, repo_token, private), (_, _, commit_token, operations) = api.calls
    assert repo_token == commit_token == SENTINEL and private is True
    uploaded = {op.path_in_repo: op for op in operations}
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json", "chat_template.jinja",
            "tokenizer.json"} <= set(uploaded), sorted(uploaded)
    config = json.loads(uploaded["adapter_config.json"].path_or_fileobj)
    assert config["base_model_name_or_path"] == "google/gemma-3-270m", "the Hub copy must name the Hub base"
    assert json.loads((demo_copy / "adapter_config.json").read_text())["base_model_name_or_path"].startswith("/")
    assert "base_model: google/gemma-3-270m" in (demo_copy / "README.md").read_text()
    out = capsys.readouterr()
    assert SENTINEL not in out.out + out.err
    assert not _files_containing(tmp_path, SENTINEL)


def test_push_without_a_token_or_refused_says_so_in_one_line(tiny_adapter, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not in Colab: no secrets to read
    monkeypatch.setattr(sftkit.hub, "hub_reachable", lambda: True)
    assert main(["push", "--folder", str(tiny_adapter), "--repo-id", "someone/tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HF_TOKEN" in err and "Colab" in err

    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    with pytest.raises(sftkit.hub.HubError, match="refused the upload to someone/else: 403 Forbidden") as caught:
        push_folder(tiny_adapter, "someone/else", api=FakeApi(refuse=True))
    assert "\n" not in str(caught.value) and SENTINEL not in str(caught.value)

    assert main(["push", "--folder", str(tiny_adapter), "--repo-id", "no-slash"]) == 1
    assert "USER/NAME" in capsys.readouterr().err


def test_sftkit_push_offline_is_one_line_and_the_token_is_nowhere(tiny_adapter, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_adapter.parent, run)
    home = tmp_path / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": SENTINEL, "HOME": str(home), "HF_HOME": str(home / "hf"),
           "SFTKIT_CACHE": os.environ.get("SFTKIT_CACHE", str(Path.home() / ".cache" / "sftkit"))}
    done = subprocess.run([sys.executable, "-m", "sftkit.cli", "push", "--folder", str(run / "adapter"),
                           "--repo-id", "someone/tiny"], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Hub is unreachable" in done.stderr, done.stderr
    assert SENTINEL not in done.stdout + done.stderr
    assert (run / "adapter" / "README.md").is_file(), "the card is written even when nothing can be pushed"
    assert not _files_containing(tmp_path, SENTINEL)


def test_card_takes_the_evaluation_of_an_eval_json(tiny_adapter, tmp_path):
    from sftkit.hub import metrics_from_eval

    diffs = METRICS["paired_differences"]
    eval_json = tmp_path / "eval.json"  # the layout sftkit.evaluation.write_eval_outputs writes
    eval_json.write_text(json.dumps({
        "hardware": "GPU: test", "preset": "smoke",
        "models": {"base": {"summary": {"n": 8}}, "tuned": {"summary": {"n": 8}},
                   "instruct": {"summary": {"n": 8, "stopped": 0.25}}},
        "differences_vs_base": {"tuned": diffs, "instruct": {}}}))
    metrics = metrics_from_eval(eval_json)
    text = model_card(tiny_adapter, metrics=metrics).text
    assert "Greedy decoding on 8 held-out conversations" in text and "GPU: test" in text
    assert "| stopped | 0.000 | 0.875 | +0.875 [+0.625, +1.000] | 0.250 |" in text
    with pytest.raises(sftkit.hub.HubError, match="no differences for a model named 'adapter'"):
        metrics_from_eval(eval_json, tuned="adapter")
