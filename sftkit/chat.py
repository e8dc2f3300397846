"""Chat templates for base models, and a tokenizer made ready for assistant-only SFT.

A base model has never seen a conversation. To teach it one we need three things from its
tokenizer, and each is a classic way for SFT to fail silently:

1. a chat template whose assistant turns sit inside ``{% generation %}...{% endgeneration %}``
   so that `apply_chat_template(..., return_assistant_tokens_mask=True)` (which TRL uses for
   ``assistant_only_loss``) knows which tokens carry loss;
2. the end-of-turn token ``<|im_end|>`` *inside* that span and set as EOS, so training
   teaches the model to stop and generation stops where it learned to;
3. a pad token that is *not* the EOS: when pad == EOS, collators and masks that drop pad
   positions also drop every end-of-turn label, and the model never learns to stop.

We use ChatML (``<|im_start|>role\\n...<|im_end|>\\n``) because the SmolLM2 and Qwen2.5
tokenizers already carry its tokens, and we add no default system prompt: a base model
should be trained and evaluated on exactly the turns in the data. TRL ships training
templates for instruct families (Qwen, Llama, ...), but those inject each family's own
default system prompt; for base models a neutral ChatML is the honest choice.
"""

from __future__ import annotations

from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
FALLBACK_PAD = "<|pad|>"

# ChatML with generation markers. The assistant's <|im_end|> is inside the marked span (it
# must be trained); the newline after it is outside (it is what the *next* turn starts from).
CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def _pick_pad_token(tokenizer: Any) -> tuple[str, bool]:
    """A pad token different from EOS: the current one if fine, else <|endoftext|>, else a new one."""
    pad = tokenizer.pad_token
    if pad is not None and pad != tokenizer.eos_token:
        return pad, False
    vocab = tokenizer.get_vocab()
    for candidate in ("<|endoftext|>", "<pad>", "<|finetune_right_pad_id|>"):
        if candidate in vocab and candidate != tokenizer.eos_token:
            return candidate, False
    return FALLBACK_PAD, True


def prepare_tokenizer(tokenizer: Any, model: Any | None = None) -> Any:
    """Make a (base model's) tokenizer ready for assistant-only SFT with ChatML; returns it.

    - adds ``<|im_start|>``/``<|im_end|>`` as special tokens if the vocabulary lacks them;
    - installs `CHATML_TRAINING_TEMPLATE` (unless the template already has generation markers);
    - sets EOS to ``<|im_end|>`` and a pad token that differs from it;
    - pads on the right (training); generation pads on the left by itself.

    If `model` is given, its embeddings are resized when tokens were added and its config
    and generation config learn the new EOS/pad ids (see `prepare_model`).
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if template is None or not has_generation_markers(template):
        tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    tokenizer.eos_token = IM_END
    pad, is_new = _pick_pad_token(tokenizer)
    if is_new:
        tokenizer.add_special_tokens({"pad_token": pad})
    else:
        tokenizer.pad_token = pad
    tokenizer.padding_side = "right"
    check_tokenizer_ready(tokenizer)
    if model is not None:
        prepare_model(model, tokenizer)
    return tokenizer


def prepare_model(model: Any, tokenizer: Any) -> Any:
    """Align a model with a prepared tokenizer: embedding size, EOS and pad ids."""
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            config.eos_token_id = eos_id
            config.pad_token_id = tokenizer.pad_token_id
    return model


def has_generation_markers(template: str) -> bool:
    """True when a Jinja chat template marks assistant output with ``{% generation %}``."""
    from trl.chat_template_utils import has_generation_markers as trl_has_markers

    return trl_has_markers(template)


def check_tokenizer_ready(tokenizer: Any) -> None:
    """Fail loudly if the tokenizer would let SFT go wrong silently (see the module docstring)."""
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    assert tokenizer.eos_token == IM_END, f"EOS must be the end-of-turn token {IM_END}, got {tokenizer.eos_token!r}"
    assert tokenizer.pad_token is not None, "the tokenizer has no pad token"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id, (
        f"pad token {tokenizer.pad_token!r} equals EOS: padding masks would hide every end-of-turn label"
    )
    assert has_generation_markers(tokenizer.chat_template), "the chat template has no {% generation %} markers"
    assert is_chat_template_stop_token_trained(tokenizer), (
        "the chat template leaves the assistant's end-of-turn token out of the loss: the model would never learn to stop"
    )


def render(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool = False) -> str:
    """The conversation as the model sees it (text, special tokens included)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def end_of_turn_id(tokenizer: Any) -> int:
    """The id of ``<|im_end|>``, which training teaches and generation stops at."""
    token_id = tokenizer.convert_tokens_to_ids(IM_END)
    assert token_id is not None and token_id != tokenizer.unk_token_id, f"{IM_END} is not in the vocabulary"
    return token_id
