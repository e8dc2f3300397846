"""The bert-base-uncased stand-in (chapter 08's classifier): BERT config values, random weights, a small vocabulary.

The vocabulary is built from the news stand-in's words (the real special tokens at their real
ids), so the uncased WordPiece tokenizer splits the headlines into words, not only characters,
and a classifier trained on the stand-in has something to learn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .paths import ENCODER_ID

# bert-base-uncased's config.json (BertForMaskedLM); the stand-in keeps every value but depth,
# width and the vocabulary size (its vocabulary is small).
BERT_BASE_UNCASED_CONFIG: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}


def news_vocabulary(news_folder: str | Path) -> list[str]:
    """A WordPiece vocabulary for the stand-in BERT: bert-base-uncased's special tokens at their ids
    ([PAD] 0, [unused0-98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), then single
    characters and their ``##`` continuations, then every lower-cased word of the news stand-in."""
    import pyarrow.parquet as pq
    from tokenizers.pre_tokenizers import BertPreTokenizer

    words: set[str] = set()
    pre = BertPreTokenizer()
    for parquet in sorted(Path(news_folder, "data").glob("*.parquet")):
        for text in pq.read_table(parquet, columns=["text"]).column("text").to_pylist():
            words.update(piece for piece, _ in pre.pre_tokenize_str(text.lower()))
    chars = sorted({c for word in words for c in word} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-()"))
    special = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return special + chars + [f"##{c}" for c in chars] + sorted(words - set(chars))


def build_encoder_standin(folder: str | Path, news_folder: str | Path, num_hidden_layers: int = 2,
                          hidden_size: int = 96, seed: int = 0) -> Path:
    """Write a bert-base-uncased stand-in: its config values (few layers, narrow, a small vocabulary),
    random weights with the checkpoint's heads (pooler, MLM and NSP), an uncased WordPiece tokenizer.

    The weights are those of `BertForPreTraining`, as in the real checkpoint, so that
    `AutoModelForSequenceClassification.from_pretrained` loads the encoder and its pooler and
    initialises only the classifier. `hidden_size` must be a multiple of 12 (12 heads).
    """
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizer

    if hidden_size <= 0 or hidden_size % 12:
        raise ValueError(f"hidden_size must be a positive multiple of 12 (12 heads), got {hidden_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = news_vocabulary(news_folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    values = dict(BERT_BASE_UNCASED_CONFIG, num_hidden_layers=num_hidden_layers, hidden_size=hidden_size,
                  intermediate_size=4 * hidden_size, vocab_size=len(vocab))
    torch.manual_seed(seed + 3)
    model = BertForPreTraining(BertConfig(**values))
    model.save_pretrained(folder, safe_serialization=True)
    config_file = folder / "config.json"  # save_pretrained names the class it saved; the Hub's says BertForMaskedLM
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "architectures": ["BertForMaskedLM"]},
                                      indent=2) + "\n")
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True,
                              model_max_length=512)
    tokenizer.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    saved = json.loads(settings.read_text())
    saved.update(do_lower_case=True, model_max_length=512)
    settings.write_text(json.dumps(saved, indent=2) + "\n")
    (folder / "README.md").write_text("\n".join([
        "---", "license: apache-2.0", "library_name: transformers", "---", "",
        f"# Stand-in for {ENCODER_ID} (random weights, built offline by `sftkit standins`)", "",
        f"Not the real model: BERT with [{ENCODER_ID}](https://huggingface.co/{ENCODER_ID})'s config values except "
        f"depth ({num_hidden_layers} layers), width (hidden size {hidden_size}, intermediate {4 * hidden_size}) and "
        f"vocabulary ({len(vocab)} WordPiece tokens instead of 30,522: the special tokens at their real ids, single "
        "characters and the words of the AG News stand-in). Random weights (seeded), safetensors, with the pooler "
        "and pre-training heads of the real checkpoint. Uncased tokenizer (do_lower_case, model_max_length 512).", "",
    ]))
    return folder
