"""The `t4` preset (Colab's T4 path) end to end on Hub-shaped offline stand-ins.

Colab users run the notebooks with ``HuggingFaceTB/SmolLM2-360M``, ``-Instruct`` and
``HuggingFaceTB/smol-smoltalk`` from the Hub; CI has no Hub. `sftkit.standins` writes local
folders with the same layout, features and tokenizer settings, and the `t4` preset is pointed
at them with overrides only (``--set`` for the command, ``$SFTKIT_SET`` for the notebooks), with
sizes shrunk so each run takes seconds on two CPU cores. The loading code is the same as for
the Hub ids: streaming a sample of ``train``, evaluating on ``test``, preparing the base
tokenizer (no template, no pad, EOS ``<|endoftext|>``), the reference model comparison, and
t4's gradient checkpointing, and its fp16 numerics (fp16 weights, autocast and a loss scaler)
emulated on the CPU, as well as fp32.

A static test checks that every preset branch of every notebook is executed somewhere: by CI
(`smoke` for all, `t4` on the stand-ins) or by the committed run whose outputs the notebook carries.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time

import jupytext
import nbformat
import pytest

from sftkit.config import PRESETS

from test_notebooks import (  # noqa: F401 (python3_kernel is a fixture)
    NOTEBOOK_DIR, NOTEBOOKS, _setup_lines, _text_outputs, execute_notebook, python3_kernel,
)

# Notebooks CI executes with the t4 preset on the stand-ins (in this order: 04, 06 and 08 use 03's adapter).
T4_NOTEBOOKS = NOTEBOOKS
# t4 branches no CI run executes (none: the static test below then requires every preset branch to run).
KNOWN_T4_GAPS: set[str] = set()
# Sizes shrunk through overrides only: seconds per run on 2 CPU cores.
SHRINK = [
    "data.train_size=16", "data.eval_size=8", "data.max_length=256", "data.shuffle_buffer=500",
    "train.max_steps=2", "train.logging_steps=1", "train.save_steps=1",
    "eval.n_examples=8", "eval.max_new_tokens=8", "eval.open_max_new_tokens=8", "eval.batch_size=8",
    "eval.ifeval_max_new_tokens=8", "eval.ifeval_subset=8",
    "eval.bootstrap_resamples=100", "eval.n_side_by_side=2",
]
# The later chapters repeat training many times (13 LoRA trials, 4 DPO trials, 3 + 3 + 4 models in
# 07/08); their t4 sizes are capped by these, so each notebook runs in about a minute on 2 cores.
# DPO scores every position against the 49k-token vocabulary through TRL's chunked head, slow on a CPU.
# (Two steps, not one: the first step's learning rate is 0 under warm-up, and an adapter that never moved fails
# the adapter check of the quick SFT run 06 and 08 make when 03's adapter is missing.)
SHRINK_LATER = ["train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=1"]


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    from sftkit.standins import build_standins

    return build_standins(tmp_path_factory.mktemp("hub-standins"), train_rows=1000, test_rows=100)


@pytest.fixture(scope="session")
def t4_runs(tmp_path_factory):
    """One artefact folder for the t4 notebook runs of a session (04 reads the adapter 03 saves)."""
    return tmp_path_factory.mktemp("runs-t4")


# A T4's numerics (fp16 weights, fp16 autocast, loss scaler), emulated on the CPU (`sftkit.precision`); fp16
# matmuls have no fast CPU kernels, so these runs take smaller batches. (t4's default on a CPU, fp32, runs in the
# t4 notebook runs below and in every smoke test; an Ampere-or-later card's bf16 in tests/test_precision.py.)
T4_NUMERICS = ["model.dtype=float16", "train.cpu_amp=fp16", "train.per_device_train_batch_size=2",
               "data.max_length=128"]


@pytest.mark.slow
def test_sftkit_demo_runs_the_t4_preset_on_the_standins_in_a_t4s_numerics(standins, tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "sftkit.cli", "demo", "--preset", "t4", "--out", str(out)]
    for override in standins.overrides() + SHRINK + T4_NUMERICS:
        command += ["--set", override]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": os.environ.get("SFTKIT_TEST_THREADS", "1")}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    print(f"\nsftkit demo --preset t4 (fp16) on the stand-ins: {time.perf_counter() - start:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "t4"
    assert metrics["data"]["eval"]["split"] == "test" and metrics["data"]["train"]["split"] == "train"
    assert len(metrics["data"]["train"]["rows_per_source"]) >= 3  # a sample, not the first (sorted) rows
    assert metrics["reference"]["model"] == str(standins.instruct_model)
    train = metrics["train"]
    # Without train.cpu_amp, t4's fp16 degrades to fp32 on a CPU; with it, the card's numerics run and are recorded.
    assert train["precision"] == "fp16" and train["trainable_dtype"] == "float32", train
    assert train["weights_dtype"] == train["autocast_dtype"] == "float16", train
    assert train["loss_scaler"] is not None, train["loss_scaler"]
    assert train["adapter_check"]["reload"] == 0.0 and train["adapter_check"]["vs_base"] > 0, train["adapter_check"]
    assert train["steps"] == 2
    # The merged evaluation and IFEval ran for both models (offline IFEval prompts: google/IFEval has no stand-in).
    assert metrics["after"]["ifeval"]["n_prompts"] > 0 and metrics["before"]["ifeval"]["n_prompts"] > 0
    from peft import AutoPeftModelForCausalLM

    from sftkit.hub import write_model_card

    loaded = AutoPeftModelForCausalLM.from_pretrained(out / "adapter")
    assert sorted(loaded.peft_config["default"].target_modules) == train["lora_targets"]
    card = write_model_card(out / "adapter").read_text()
    assert f"| precision | fp16 ({train['weights_dtype']} weights" in card and "loss scaler: final scale" in card, card
    card = (out / "run.md").read_text()
    assert "| evaluation rows | 8 from the test split; per source: " in card
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == str(standins.base_model)


@pytest.mark.notebook
@pytest.mark.xdist_group("t4-notebooks")  # one process, in order: the t4_runs folder holds 03's adapter for 04-08
@pytest.mark.parametrize("name", T4_NOTEBOOKS)
def test_notebook_runs_the_t4_preset_on_the_standins(name, standins, t4_runs,
                                                      python3_kernel,  # noqa: F811 (the fixture imported above)
                                                      monkeypatch, tmp_path, record_property):
    overrides = standins.overrides() + SHRINK + (SHRINK_LATER if name >= "05" else []) + [f"output_dir={t4_runs}"]
    if name.startswith("03_"):  # chapter 03 trains as a T4 does: fp16 weights, fp16 autocast and a loss scaler
        overrides += T4_NUMERICS
    for key, value in {"SFTKIT_PRESET": "t4", "SFTKIT_SET": ";".join(overrides), "HF_HUB_OFFLINE": "1",
                       "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
                       "OMP_NUM_THREADS": os.environ.get("SFTKIT_TEST_THREADS", "1")}.items():
        monkeypatch.setenv(key, value)
    nb, _ = execute_notebook(name, python3_kernel, tmp_path, record_property, "t4")
    parameters = _setup_lines(nb)
    assert "preset: t4" in parameters and f"model: {standins.base_model}" in parameters, parameters
    assert f"figures: {t4_runs}/figures" in parameters  # the committed figures are never overwritten
    outputs = "".join(_text_outputs(cell) for cell in nb.cells if cell.cell_type == "code")
    if name.startswith("03_"):
        card = json.loads((t4_runs / "03_sft" / "run.json").read_text())["train"]
        assert card["precision"] == "fp16" and card["loss_scaler"] is not None, card
    for expected in LATER_CHAPTER_OUTPUTS.get(name, ()):  # the Hub branches ran on the stand-ins, not an offline path
        assert expected.format(standins=standins) in outputs, expected


# What the t4 branches of the later chapters print when they read the stand-ins.
LATER_CHAPTER_OUTPUTS = {
    "05_lora_trials": ("stage 1: 9 trials",),  # t4's whole grid
    "06_preference_tuning_dpo": ("{standins.preferences}",),
    "08_classification_and_distillation": ("{standins.encoder}, 16 AG News rows, 1 epoch: test accuracy",
                                           "student: {standins.student_model}"),
}


# --------------------------------------------------------------------------- static: every branch runs somewhere


def _preset_literals(source: str) -> set[str] | None:
    """Preset names compared with PRESET in a code cell (None when the cell never looks at PRESET)."""
    tree = ast.parse(source)
    found: set[str] | None = None
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Name) and o.id == "PRESET" for o in operands):
                names = [c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant)
                         and isinstance(c.value, str)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "PRESET"
              and isinstance(node.func.value, ast.Dict)):
            names = [k.value for k in node.func.value.keys if isinstance(k, ast.Constant)]
        else:
            continue
        found = (found or set()) | set(names)
    return found


def _committed_preset(name: str) -> str | None:
    parameters = _setup_lines(nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4))
    return next((line.split(": ", 1)[1] for line in parameters.splitlines() if line.startswith("preset: ")), None)


def test_every_preset_branch_of_every_notebook_is_executed_somewhere():
    """A notebook that branches on PRESET must run on every preset: an `if PRESET == "smoke"` has an
    other side that t4 and cpu-demo take. smoke (all) and t4 (T4_NOTEBOOKS) run in CI; the preset of
    the committed outputs ran when they were made. Names compared with PRESET must be presets."""
    gaps = {}
    for name in NOTEBOOKS:
        cells = [c.source for c in jupytext.read(NOTEBOOK_DIR / f"{name}.py").cells if c.cell_type == "code"]
        literals = [found for found in map(_preset_literals, cells) if found is not None]
        assert all(names <= set(PRESETS) for names in literals), f"{name} compares PRESET with an unknown name"
        if not literals:
            continue
        executed = {"smoke", _committed_preset(name)} | ({"t4"} if name in T4_NOTEBOOKS else set())
        missing = set(PRESETS) - executed
        if missing:
            gaps[name] = missing
    assert gaps == {name: {"t4"} for name in KNOWN_T4_GAPS}, gaps


def test_the_branch_reader_sees_comparisons_and_lookups():
    assert _preset_literals('if PRESET == "t4":\n    x = 1') == {"t4"}
    assert _preset_literals('x = {"smoke": 1, "cpu-demo": 2}.get(PRESET, 3)') == {"smoke", "cpu-demo"}
    assert _preset_literals('y = PRESET in ("smoke", "t4")') == {"smoke", "t4"}
    assert _preset_literals("x = 1") is None
