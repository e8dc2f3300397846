"""From adapter to standalone model: load a saved adapter with its base, merge it, save it.

An adapter folder is small and needs peft and its base model to run. Anyone who only wants to
*use* the tuned model (a serving stack, `pipeline("text-generation")`, a GGUF converter) needs
one ordinary checkpoint instead. `export_merged` loads the base named in the adapter's
``adapter_config.json``, applies the adapter, merges it with peft's ``merge_and_unload`` (the
LoRA products *and* the trained turn-token rows of ``trainable_token_indices`` are folded into
the weights), and saves a safetensors model with the tokenizer, the training chat template and
a generation config whose EOS is the end-of-turn token, so that `AutoModelForCausalLM` and
`AutoTokenizer` load it without peft and `generate` stops where training taught it to. The
export is then checked: the saved model, reloaded, must give the logits of base + adapter to
fp32 rounding (`ExportResult.max_logit_diff`), or `ExportError` is raised.

`load_adapter_folder` is also what `sftkit chat` uses to open an adapter. It copes with the two
ways a committed adapter differs from a fresh one: its ``base_model_name_or_path`` may name a
folder on the machine that trained it (an offline short name's cache folder is found again on
this machine, by `sftkit.adapters.adapter_base_name`), and its ``tokenizer.json`` may be left out
(33 MB for Gemma, byte-identical to the base's), in which case the base's tokenizer is loaded
and the adapter's own settings (EOS, pad, chat template) are put on it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .adapters import adapter_base_name
from .chat import end_of_turn_id
from .models import load_model, load_tokenizer

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Files of the run that produced an adapter, carried into the export so that a model card
# (`sftkit.hub`) can still record the data, the settings and the evaluation of the run.
RUN_FILES = ("run.json", "metrics.json")
EXPORT_RECORD = "sftkit_export.json"


class ExportError(ValueError):
    """The folder cannot be exported (not an adapter, output in the way) or the export is not exact."""


def is_adapter_folder(folder: str | Path) -> bool:
    """True when `folder` holds a peft adapter (its config and safetensors weights)."""
    return all((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def is_model_folder(folder: str | Path) -> bool:
    """True when `folder` holds a standalone transformers checkpoint (config and safetensors weights)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any(folder.glob("model*.safetensors"))


def check_adapter_folder(folder: str | Path) -> Path:
    """`folder` as a Path, or `ExportError` naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        hint = " (it looks like a merged model: it needs no export)" if is_model_folder(folder) else ""
        raise ExportError(f"{folder} is not a peft adapter folder: {', '.join(missing)} missing{hint}")
    return folder


def load_adapter_tokenizer(adapter_dir: str | Path, base: str) -> Any:
    """The adapter's tokenizer; when its ``tokenizer.json`` was left out, the base's with the adapter's settings."""
    from transformers import AutoTokenizer

    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "tokenizer.json").is_file() or (adapter_dir / "tokenizer.model").is_file():
        return AutoTokenizer.from_pretrained(adapter_dir)
    # Without tokenizer.json, AutoTokenizer would build a vocabulary of the special tokens alone.
    tokenizer = load_tokenizer(base)
    settings = json.loads((adapter_dir / "tokenizer_config.json").read_text()) if (
        adapter_dir / "tokenizer_config.json").is_file() else {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if isinstance(settings.get(key), str):
            token_id = tokenizer.convert_tokens_to_ids(settings[key])  # (get_vocab() builds a 262k-entry dict)
            if token_id is None or (token_id == tokenizer.unk_token_id and key != "unk_token"):
                raise ExportError(f"{adapter_dir}: its {key} {settings[key]!r} is not in the base tokenizer's "
                                  "vocabulary; save the adapter with its tokenizer.json")
            setattr(tokenizer, key, settings[key])
    template_file = adapter_dir / "chat_template.jinja"
    template = template_file.read_text() if template_file.is_file() else settings.get("chat_template")
    if not template:
        raise ExportError(f"{adapter_dir} has no chat template (chat_template.jinja or tokenizer_config.json)")
    tokenizer.chat_template = template
    return tokenizer


def load_adapter_folder(adapter_dir: str | Path, dtype: str | torch.dtype = "float32",
                        device: str | torch.device | None = "cpu") -> tuple[Any, Any]:
    """Base + adapter as a `PeftModel` (eval mode) and the adapter's tokenizer."""
    from peft import PeftModel

    from .chat import prepare_model

    adapter_dir = check_adapter_folder(adapter_dir)
    base_name = adapter_base_name(adapter_dir)
    tokenizer = load_adapter_tokenizer(adapter_dir, base_name)
    base = load_model(base_name, dtype=dtype, device=device)
    # Resize for tokens the training tokenizer added, and put its EOS (end-of-turn) and pad
    # ids on the config and generation config, as training did.
    prepare_model(base, tokenizer)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    return model, tokenizer


@dataclass
class ExportResult:
    """What `export_merged` wrote and how exactly the saved model reproduces base + adapter."""

    out_dir: Path
    adapter_dir: Path
    base_model: str
    dtype: str
    max_logit_diff: float  # saved model vs base + adapter, on a probe conversation
    max_abs_logit: float  # the scale of the logits that difference is measured against
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["out_dir"], record["adapter_dir"] = str(self.out_dir), str(self.adapter_dir)
        return record


def probe_ids(tokenizer: Any) -> torch.Tensor:
    """A short two-turn conversation through the chat template: the turn tokens whose rows were trained occur in it."""
    messages = [{"role": "user", "content": "Name three colours."},
                {"role": "assistant", "content": "Red, green and blue."},
                {"role": "user", "content": "And one more?"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)["input_ids"]


def _check_out(out_dir: Path, adapter_dir: Path, force: bool) -> bool:
    """Refuse an `out_dir` in the way; True when an earlier export there must be replaced.

    `force` replaces only what an export writes (a folder with ``sftkit_export.json`` or a
    model checkpoint), never the adapter itself, a folder holding it, or other files: a
    mistyped ``--out .`` must not delete a repository.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.resolve() == adapter_dir.resolve() or out_dir.resolve() in adapter_dir.resolve().parents:
        raise ExportError(f"--out {out_dir} holds the adapter {adapter_dir}: the export would overwrite it")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return False
    if not force:
        raise ExportError(f"{out_dir} exists and is not empty; choose another folder or pass --force to replace "
                          "an earlier export there")
    if not ((out_dir / EXPORT_RECORD).is_file() or is_model_folder(out_dir)) or is_adapter_folder(out_dir):
        raise ExportError(f"{out_dir} holds files that are not an exported model; --force replaces only an earlier "
                          "export: remove the folder yourself or choose another")
    return True


@torch.no_grad()
def export_merged(adapter_dir: str | Path, out_dir: str | Path, force: bool = False,
                  dtype: str = "float32", loaded: tuple[Any, Any] | None = None) -> ExportResult:
    """Merge an adapter into its base and save a standalone model in `out_dir`; check it by logits.

    `dtype` is the precision of the merge and of the saved weights (fp32 by default: the check
    then holds to fp32 rounding; "bfloat16" halves the file). Raises `ExportError` for a folder
    that is not an adapter, an `out_dir` that is not empty (unless `force`), or an export whose
    logits differ from base + adapter by more than rounding. `loaded` is the adapter already
    loaded by `load_adapter_folder` (model, tokenizer), to save loading it twice; the model is
    merged in place, so it is consumed.
    """
    from transformers import AutoModelForCausalLM

    from .models import resolve_dtype

    adapter_dir = check_adapter_folder(adapter_dir)
    out_dir = Path(out_dir)
    replace = _check_out(out_dir, adapter_dir, force)  # before the slow part: fail fast
    torch_dtype = resolve_dtype(dtype)
    model, tokenizer = loaded or load_adapter_folder(adapter_dir, dtype=torch_dtype, device="cpu")
    ids = probe_ids(tokenizer)
    expected = model(input_ids=ids).logits.float()
    merged = model.merge_and_unload()
    if replace:
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eos_id = end_of_turn_id(tokenizer)
    for config in (merged.config, merged.generation_config):
        config.eos_token_id = eos_id  # generate() stops at the end-of-turn token with no argument
        config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if (not (out_dir / "chat_template.jinja").is_file()
            and "chat_template" not in (out_dir / "tokenizer_config.json").read_text()):
        raise ExportError(f"the tokenizer saved to {out_dir} carries no chat template")
    for name in RUN_FILES:  # the run's record, when the adapter sits in a run folder
        source = adapter_dir.parent / name
        if source.is_file():
            shutil.copy(source, out_dir / name)
    del model, merged
    # The check reads the folder back as a user would: transformers alone, no peft.
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch_dtype, use_safetensors=True).eval()
    got = reloaded(input_ids=ids).logits.float()
    diff = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    tolerance = max(1e-4, 1e-5 * scale) if torch_dtype == torch.float32 else 5e-2 * max(1.0, scale)
    if not diff <= tolerance:
        raise ExportError(f"the exported model's logits differ from base + adapter by {diff:.3g} "
                          f"(tolerance {tolerance:.3g}); the export in {out_dir} is not exact")
    result = ExportResult(out_dir=out_dir, adapter_dir=adapter_dir, base_model=adapter_base_name(adapter_dir),
                          dtype=str(torch_dtype).removeprefix("torch."), max_logit_diff=diff, max_abs_logit=scale,
                          files=sorted({p.name for p in out_dir.iterdir()} | {EXPORT_RECORD}))
    (out_dir / EXPORT_RECORD).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def load_saved_model(folder: str | Path, dtype: str | torch.dtype = "float32",
                     device: str | torch.device | None = None) -> tuple[Any, Any]:
    """An adapter folder (base + adapter, merged for decoding speed) or a merged folder: model and tokenizer."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if is_adapter_folder(folder):
        model, tokenizer = load_adapter_folder(folder, dtype=dtype, device=device)
        # Merged, decoding runs at the base model's speed (sftkit.adapters.merged_adapter).
        return model.merge_and_unload().eval(), tokenizer
    if is_model_folder(folder):
        return load_model(str(folder), dtype=dtype, device=device).eval(), AutoTokenizer.from_pretrained(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    raise ExportError(f"{folder} is neither an adapter folder (adapter_config.json + adapter_model.safetensors) "
                      "nor a model folder (config.json + model*.safetensors)")

