"""Chat templates for base models, and a tokenizer made ready for assistant-only SFT.

A base model has never seen a conversation. To teach it one we need three things from its
tokenizer, and each is a classic way for SFT to fail silently:

1. a chat template whose assistant turns sit inside ``{% generation %}...{% endgeneration %}``
   so that `apply_chat_template(..., return_assistant_tokens_mask=True)` (which TRL uses for
   ``assistant_only_loss``) knows which tokens carry loss;
2. the end-of-turn token (ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``) *inside* that span and
   set as EOS, so training teaches the model to stop and generation stops where it learned to;
3. a pad token that is *not* the EOS: when pad == EOS, collators and masks that drop pad
   positions also drop every end-of-turn label, and the model never learns to stop.

The layout is ChatML's (``START role\\n...END\\n``). Its tokens are those a family already
has: the SmolLM2 and Qwen2.5 vocabularies carry ``<|im_start|>``/``<|im_end|>``, Gemma's
carries ``<start_of_turn>``/``<end_of_turn>`` (`TurnFormat`); tokens a vocabulary lacks are
added, and either way their embedding rows are trained (`turn_token_ids`), since a base
model never learnt them. We add no default system prompt: a base model should be trained
and evaluated on exactly the turns in the data. TRL ships training
templates for instruct families (Qwen, Llama, ...), but those inject each family's own
default system prompt; for base models a neutral ChatML is the honest choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
FALLBACK_PAD = "<|pad|>"


@dataclass(frozen=True)
class TurnFormat:
    """The two control tokens that open and close a turn; everything else is shared.

    Both formats render ``START role\\n content END\\n`` with the same role names, so a
    comparison of the two measures the tokens alone (the token rows a base model has, or
    has not, seen in pre-training), not a different layout.
    """

    name: str
    start: str
    end: str


CHATML = TurnFormat("chatml", IM_START, IM_END)
# Gemma's own turn tokens: in the Gemma 3 vocabulary (ids 105/106) of the *base* model too,
# but the base model was never taught to close a turn with them.
GEMMA = TurnFormat("gemma", "<start_of_turn>", "<end_of_turn>")
TURN_FORMATS = {f.name: f for f in (CHATML, GEMMA)}

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


def training_template(turn_format: TurnFormat = CHATML, bos: bool = False) -> str:
    """The training template for a turn format; `bos` starts every conversation with BOS.

    Some families (Gemma) expect the BOS token first and degrade badly without it; their
    tokenizers add it to plain text, and a chat template must then write it itself, since
    `apply_chat_template` tokenizes without adding special tokens.
    """
    template = CHATML_TRAINING_TEMPLATE.replace(IM_START, turn_format.start).replace(IM_END, turn_format.end)
    return ("{{- bos_token -}}" if bos else "") + template


def pick_turn_format(tokenizer: Any, name: str = "auto") -> TurnFormat:
    """`name` ("chatml", "gemma"), or for "auto" the family's own turn tokens when its vocabulary has them."""
    if name == "auto":
        vocab = tokenizer.get_vocab()
        return GEMMA if GEMMA.start in vocab and GEMMA.end in vocab else CHATML
    if name not in TURN_FORMATS:
        raise ValueError(f"unknown turn format {name!r}; choose auto or one of {sorted(TURN_FORMATS)}")
    return TURN_FORMATS[name]


def turn_format_of(tokenizer: Any) -> TurnFormat:
    """The turn format a prepared tokenizer's template uses (its end-of-turn token is the EOS)."""
    for turn_format in TURN_FORMATS.values():
        if tokenizer.eos_token == turn_format.end:
            return turn_format
    raise TokenizerNotReadyError(
        f"EOS {tokenizer.eos_token!r} is no known end-of-turn token "
        f"({', '.join(f.end for f in TURN_FORMATS.values())}): "
        "call sftkit.chat.prepare_tokenizer first"
    )


class TokenizerNotReadyError(ValueError):
    """The tokenizer would let assistant-only SFT go wrong silently (see the module docstring)."""


def _adds_bos(tokenizer: Any) -> bool:
    """Does the tokenizer put BOS in front of plain text (so the model was trained with it)?"""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


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


def prepare_tokenizer(tokenizer: Any, model: Any | None = None, turn_format: str | TurnFormat = "auto") -> Any:
    """Make a (base model's) tokenizer ready for assistant-only SFT; returns it.

    - picks the turn tokens (`pick_turn_format`: "auto" keeps a family's own, e.g. Gemma's
      ``<start_of_turn>``/``<end_of_turn>``, else ChatML) and adds them as special tokens
      if the vocabulary lacks them;
    - installs `training_template` for them (unless the template already has generation
      markers), starting with BOS where the tokenizer puts BOS before plain text;
    - sets EOS to the end-of-turn token and a pad token that differs from it;
    - pads on the right (training); generation pads on the left by itself.

    If `model` is given, its embeddings are resized when tokens were added and its config
    and generation config learn the new EOS/pad ids (see `prepare_model`).
    """
    fmt = turn_format if isinstance(turn_format, TurnFormat) else pick_turn_format(tokenizer, turn_format)
    bos = _adds_bos(tokenizer)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (fmt.start, fmt.end) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if template is None or not has_generation_markers(template) or fmt.end not in template:
        tokenizer.chat_template = training_template(fmt, bos=bos)
    tokenizer.eos_token = fmt.end
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


def turn_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the prepared tokenizer's start- and end-of-turn tokens: the rows a base model must learn.

    `sftkit.lora.build_lora_config` makes these rows of the (tied) embedding trainable through
    peft's ``trainable_token_indices``, instead of saving a full copy of the embedding.
    """
    fmt = turn_format_of(tokenizer)
    return [tokenizer.convert_tokens_to_ids(fmt.start), tokenizer.convert_tokens_to_ids(fmt.end)]


def prepare_model(model: Any, tokenizer: Any) -> Any:
    """Align a model with a prepared tokenizer: embedding size, EOS and pad ids."""
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    eos_id = end_of_turn_id(tokenizer)  # the prepared format's end-of-turn (Gemma's, or ChatML's)
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
    """Raise `TokenizerNotReadyError` if the tokenizer would let SFT go wrong silently (module docstring)."""
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    fmt = turn_format_of(tokenizer)
    if tokenizer.pad_token is None:
        raise TokenizerNotReadyError("the tokenizer has no pad token")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise TokenizerNotReadyError(
            f"pad token {tokenizer.pad_token!r} equals EOS: padding masks would hide every end-of-turn label"
        )
    if not isinstance(tokenizer.chat_template, str) or not has_generation_markers(tokenizer.chat_template):
        raise TokenizerNotReadyError("the chat template has no {% generation %} markers")
    if not is_chat_template_stop_token_trained(tokenizer):
        raise TokenizerNotReadyError(
            f"the chat template leaves the assistant's end-of-turn token {fmt.end} out of the loss: "
            "the model would never learn to stop"
        )


def render(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool = False) -> str:
    """The conversation as the model sees it (text, special tokens included)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def end_of_turn_id(tokenizer: Any) -> int:
    """The id of the end-of-turn token (the prepared EOS), which training teaches and generation stops at."""
    token = turn_format_of(tokenizer).end
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise TokenizerNotReadyError(f"{token} is not in the vocabulary")
    return token_id
