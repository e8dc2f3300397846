"""Sharing a tuned model: a model card that records the run, and an upload to the Hugging Face Hub.

A model on the Hub without a card is a file nobody can judge. `model_card` writes one for an
adapter folder or a merged folder (`sftkit export`) from what the run left next to it: the
base model (as a Hub id where sftkit knows it, with that model's license), the data sample
(rows per source of the train and eval splits, from the run card), the hyperparameters, and
the before/after evaluation table with paired 95% intervals (from ``metrics.json``). The card
is a ``README.md`` with YAML metadata that the Hub reads (``base_model``, ``library_name``
peft or transformers, ``license``, ``tags``), made with huggingface_hub's `ModelCard`.

`push_folder` uploads the folder with huggingface_hub in one commit. The token comes from
``HF_TOKEN`` or, in Colab, from the notebook's secrets (``google.colab.userdata``); it is
passed to huggingface_hub and nowhere else: never printed, logged or written to a file. When
the Hub is unreachable (offline, ``HF_HUB_OFFLINE=1``) or there is no token, `HubError` says
so in one line, and the command exits with it instead of a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .adapters import adapter_base_name
from .export import EXPORT_RECORD, RUN_FILES, is_adapter_folder, is_model_folder
from .models import hub_reachable, resolve_source
from .report import markdown_table

# What sftkit knows of the base models it names by folder or short name: the Hub id the card
# should name, and that model's license (the Hub's license identifiers).
KNOWN_BASES = {
    "gemma3-270m-base": ("google/gemma-3-270m", "gemma"),
    "google/gemma-3-270m": ("google/gemma-3-270m", "gemma"),
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-360M": ("HuggingFaceTB/SmolLM2-360M", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ("HuggingFaceTB/SmolLM2-360M-Instruct", "apache-2.0"),
    "Qwen/Qwen2.5-0.5B": ("Qwen/Qwen2.5-0.5B", "apache-2.0"),
}
TOKEN_HELP = ("no Hugging Face token: set HF_TOKEN (a write token from https://huggingface.co/settings/tokens), "
              "or in Colab add it as the secret HF_TOKEN (the key icon) and allow this notebook to read it")
CARD_MARK = "<!-- written by sftkit.hub.model_card -->"


class HubError(RuntimeError):
    """The Hub cannot be reached, no token is available, or the upload failed (one line, no secret in it)."""


# --------------------------------------------------------------------------- the token


def find_token() -> str | None:
    """``HF_TOKEN`` from the environment, else Colab's secret ``HF_TOKEN`` (only where google.colab imports)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return (userdata.get("HF_TOKEN") or "").strip() or None
    except Exception:  # the secret is missing, or the notebook was not granted access to it
        return None


# --------------------------------------------------------------------------- the card


class RunRecordError(HubError):
    """A run file next to the folder (run.json, metrics.json, sftkit_export.json) exists but cannot be read.

    Taken for a missing file, it would silently drop the run's data, settings or evaluation
    from the model card; a `HubError`, so `sftkit push` reports it in one line.
    """


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is no such file (run files are optional).

    A file that is there but unreadable, not JSON (a run cut off mid-write) or not an object
    raises `RunRecordError` naming the file and the error.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RunRecordError(f"{path} cannot be read: {error}") from error
    try:
        found = json.loads(text)
    except ValueError as error:  # json.JSONDecodeError, and UnicodeDecodeError
        raise RunRecordError(f"{path} is not valid JSON ({error}); fix or remove it") from error
    if not isinstance(found, dict):
        raise RunRecordError(f"{path} is not a JSON object (it holds a {type(found).__name__}); fix or remove it")
    return found


def run_record(folder: str | Path) -> dict[str, Any]:
    """What the run left about a folder: ``run`` (run.json), ``metrics`` (metrics.json), ``export``
    (sftkit_export.json).

    Looked for in the folder itself (an export copies them there) and in its parent (an adapter
    sits in its run folder, ``runs/<preset>/adapter``); a missing file is simply absent, a
    corrupt one raises `RunRecordError`.
    """
    folder = Path(folder)
    record: dict[str, Any] = {}
    export = _read_json(folder / EXPORT_RECORD)
    if export:
        record["export"] = export
    for name in RUN_FILES:
        for place in (folder, folder.parent):
            found = _read_json(place / name)
            if found is not None:
                record[name.removesuffix(".json")] = found
                break
    return record


def metrics_from_eval(eval_json: str | Path, tuned: str = "tuned",
                      reference: str | None = "instruct") -> dict[str, Any]:
    """An ``eval.json`` of `sftkit eval` or notebook 04 in the shape of the demo's ``metrics.json``, for the card.

    `tuned` names the model whose differences from the baseline (the first model evaluated)
    are reported; `reference`, if evaluated, fills the card's reference column.
    """
    results = json.loads(Path(eval_json).read_text())
    models = results.get("models", {})
    differences = next((v for k, v in results.items() if k.startswith("differences_vs_")), {})
    if tuned not in differences:
        raise HubError(f"{eval_json} has no differences for a model named {tuned!r} (models: {sorted(models)})")
    metrics: dict[str, Any] = {"hardware": results.get("hardware"), "paired_differences": differences[tuned],
                               "after": {"n": models.get(tuned, {}).get("summary", {}).get("n")}}
    if reference and reference in models:
        metrics["reference"] = {"model": reference, **models[reference].get("summary", {})}
    return metrics


def base_model_of(folder: str | Path, record: dict[str, Any] | None = None) -> tuple[str, str | None, str | None]:
    """(the base as the folder names it, its Hub id or None, its license or None)."""
    folder = Path(folder)
    record = record if record is not None else run_record(folder)
    if is_adapter_folder(folder):
        named = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    elif "export" in record:
        named = record["export"].get("base_model", "")
    else:
        named = (record.get("run", {}).get("config", {}).get("model", {}) or {}).get("name", "")
    for key in (named, Path(named).name, "/".join(Path(named).parts[-2:])):
        if key in KNOWN_BASES:
            return named, *KNOWN_BASES[key]
    looks_like_hub_id = named.count("/") == 1 and not named.startswith((".", "/")) and not Path(named).exists()
    return named, (named if looks_like_hub_id else None), None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _data_lines(run: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    data = (run.get("train", {}) or {}).get("data") or metrics.get("data") or {}
    source = (run.get("config", {}).get("data", {}) or {}).get("source") or data.get("source")
    lines = [f"- dataset: `{source}`"] if source else []
    for part, label in (("train", "training"), ("eval", "evaluation")):
        info = data.get(part)
        if not info:
            continue
        split = f" from the `{info['split']}` split" if info.get("split") else ""
        lines.append(f"- {label}: {info['rows']:,} rows{split}")
        lines += [f"  - `{name}`: {n:,}" for name, n in info.get("rows_per_source", {}).items()]
    return lines


def _precision_text(measured: dict[str, Any]) -> str | None:
    """The card's precision: "fp16 (float16 weights, float16 autocast, loss scaler: ...)", or what is recorded."""
    precision = measured.get("precision")
    if precision is None or "weights_dtype" not in measured:
        return precision  # a run card written before the dtypes were recorded
    parts = [f"{measured['weights_dtype']} weights", f"{measured.get('autocast_dtype') or 'no'} autocast"]
    scaler = measured.get("loss_scaler")
    if scaler:
        parts.append(f"loss scaler: final scale {scaler['final_scale']:g}, {scaler['skipped_steps']} steps skipped")
    return f"{precision} ({', '.join(parts)})"


def _hyperparameter_rows(run: dict[str, Any]) -> list[tuple[str, Any]]:
    config = run.get("config", {})
    lora, train, data = config.get("lora", {}), config.get("train", {}), config.get("data", {})
    measured = run.get("train", {})
    rows = [
        ("LoRA rank / alpha / dropout",
         f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}" if lora else None),
        ("LoRA targets", ", ".join(measured.get("lora_targets", [])) or lora.get("targets")),
        ("LoRA blocks", measured.get("lora_blocks")),
        ("trained turn-token rows", measured.get("trainable_token_ids")),
        ("learning rate", train.get("learning_rate")),
        ("schedule / warmup", f"{train.get('lr_scheduler_type')} / {train.get('warmup_ratio')}" if train else None),
        ("batch size x accumulation",
         f"{train.get('per_device_train_batch_size')} x {train.get('gradient_accumulation_steps')}"
         if train else None),
        ("epochs / optimizer steps", f"{train.get('num_train_epochs')} / {measured.get('steps')}" if train else None),
        ("max sequence length", data.get("max_length")),
        ("seed", train.get("seed")),
        ("precision", _precision_text(measured)),
        ("hardware", measured.get("hardware")),
        ("training wall time (s)", measured.get("wall_s")),
        ("trainable / total parameters", f"{measured['trainable_params']:,} / {measured['total_params']:,}"
         if "trainable_params" in measured else None),
        ("final training loss", measured.get("final_loss")),
    ]
    return [(k, v) for k, v in rows if v not in (None, "", [], "None / None")]


def _evaluation_lines(metrics: dict[str, Any]) -> list[str]:
    diffs = metrics.get("paired_differences") or {}
    if not diffs:
        return []
    reference = metrics.get("reference") or {}
    n = (metrics.get("after") or {}).get("n")
    ref_name = reference.get("model")
    header = ["metric", "base", "tuned", "tuned - base (paired 95% CI)"] + ([ref_name] if ref_name else [])
    rows = []
    for name, d in diffs.items():
        row = [f"{name}{' (lower is better)' if d.get('lower_is_better') else ''}", _fmt(d["before"]),
               _fmt(d["after"]), f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"]
        if ref_name:
            row.append(_fmt(reference[name]) if name in reference else "n/a")
        rows.append(row)
    return [f"Greedy decoding on {n} held-out conversations" if n else "Held-out evaluation",
            f"({metrics.get('hardware') or 'hardware not recorded'}), measured by sftkit's harness.", "",
            *markdown_table(header, rows)]


def model_card(folder: str | Path, repo_id: str | None = None, metrics: dict[str, Any] | None = None) -> Any:
    """The `huggingface_hub.ModelCard` of an adapter or merged folder, from the run's records (module docstring).

    `metrics` (the shape of ``metrics.json``; `metrics_from_eval` makes it from an ``eval.json``)
    replaces the ``metrics.json`` found next to the folder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    adapter = is_adapter_folder(folder)
    if not adapter and not is_model_folder(folder):
        raise HubError(f"{folder} is neither an adapter folder nor a model folder: nothing to describe")
    record = run_record(folder)
    run, metrics = record.get("run", {}), metrics or record.get("metrics", {})
    named, hub_id, license_id = base_model_of(folder, record)
    tags = ["sftkit", "sft", "lora", "text-generation"] + ([] if adapter else ["merged"])
    data = ModelCardData(base_model=hub_id, library_name="peft" if adapter else "transformers", license=license_id,
                         pipeline_tag="text-generation", tags=tags)
    title = repo_id.split("/")[-1] if repo_id else folder.name
    kind = ("a LoRA adapter (load it with peft on top of its base model)" if adapter else
            "a standalone model: a LoRA adapter merged into its base (`sftkit export`); "
            "transformers loads it without peft")
    lines = [CARD_MARK, f"# {title}", "",
             f"This is {kind}, trained with sftkit by supervised fine-tuning "
             "on conversations, with the loss on the assistant's tokens only.", "",
             "## Base model", "",
             f"- `{hub_id or named}`"
             + (f" (trained from the local copy `{named}`)" if hub_id and named != hub_id else ""),
             f"- license: {license_id or 'that of the base model'}", ""]
    data_lines = _data_lines(run, metrics)
    lines += (["## Data sample", ""] + (data_lines or ["Not recorded: no run card (run.json) next to this folder."])
              + [""])
    hyper = _hyperparameter_rows(run)
    lines += ["## Training hyperparameters", ""]
    lines += markdown_table(("setting", "value"), hyper) if hyper else [
        "Not recorded: no run card (run.json) next to this folder."]
    lines += ["", "## Evaluation", ""]
    lines += _evaluation_lines(metrics) or ["Not recorded: no metrics.json next to this folder."]
    lines += ["", "## Use", "", "```python"]
    if adapter:
        lines += ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                  f"model = AutoPeftModelForCausalLM.from_pretrained({(repo_id or str(folder))!r})"]
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"model = AutoModelForCausalLM.from_pretrained({(repo_id or str(folder))!r})"]
    lines += [f"tok = AutoTokenizer.from_pretrained({(repo_id or str(folder))!r})",
              "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Name three colours.'}],",
              "                              add_generation_prompt=True, return_tensors='pt', return_dict=True)",
              "out = model.generate(**ids, max_new_tokens=64, eos_token_id=tok.eos_token_id)  # stops at end-of-turn",
              "print(tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))", "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def write_model_card(folder: str | Path, repo_id: str | None = None,
                     metrics: dict[str, Any] | None = None) -> Path:
    """Write the card as ``folder/README.md`` (replacing peft's empty template or an earlier sftkit card)
    and return its path.

    A README written by someone else is kept: the card then goes to ``folder/MODEL_CARD.md``
    and is uploaded as README.md.
    """
    folder = Path(folder)
    path = folder / "README.md"
    if path.is_file():
        existing = path.read_text(errors="replace")
        if CARD_MARK not in existing and "[More Information Needed]" not in existing:
            path = folder / "MODEL_CARD.md"
    model_card(folder, repo_id, metrics).save(path)
    return path


# --------------------------------------------------------------------------- the upload


def _operations(folder: Path, card_path: Path, hub_base: str | None) -> list[Any]:
    """One commit's files: the folder as it is, the card as README.md, and an adapter config naming the Hub base."""
    from huggingface_hub import CommitOperationAdd

    operations = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in ("README.md", "MODEL_CARD.md") or relative.startswith(".") or "/." in relative:
            continue
        if relative == "adapter_config.json" and hub_base:
            # The saved config names the base by a folder on the training machine; on the Hub
            # it must name the Hub id, or AutoPeftModelForCausalLM cannot find the base.
            config = json.loads(path.read_text())
            config["base_model_name_or_path"] = hub_base
            operations.append(CommitOperationAdd(relative, (json.dumps(config, indent=2) + "\n").encode()))
            continue
        operations.append(CommitOperationAdd(relative, path))
    operations.append(CommitOperationAdd("README.md", card_path))
    if is_adapter_folder(folder) and not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        # A committed adapter may leave out tokenizer.json (byte-identical to the base's); without
        # it AutoTokenizer would build a vocabulary of the special tokens alone.
        base_tokenizer = Path(resolve_source(adapter_base_name(folder))) / "tokenizer.json"
        if not base_tokenizer.is_file():
            raise HubError(f"{folder} has no tokenizer.json and its base's ({base_tokenizer}) is not on this machine")
        operations.append(CommitOperationAdd("tokenizer.json", base_tokenizer))
    return operations


def push_folder(folder: str | Path, repo_id: str, private: bool = False, api: Any = None,
                metrics: dict[str, Any] | None = None) -> str:
    """Write the model card and upload `folder` to the Hub repository `repo_id` in one commit; the repo's URL.

    Raises `HubError` (one line) when the folder is not a model or adapter, a run file next to
    it is corrupt (`RunRecordError`), the Hub is unreachable, there is no token, or the Hub
    refuses the upload.
    """
    folder = Path(folder)
    if not (is_adapter_folder(folder) or is_model_folder(folder)):
        raise HubError(f"{folder} is neither an adapter folder (adapter_config.json + adapter_model.safetensors) "
                       "nor a model folder (config.json + model*.safetensors)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"--repo-id {repo_id!r} must be USER/NAME (or ORG/NAME)")
    card_path = write_model_card(folder, repo_id, metrics)
    if not hub_reachable():
        raise HubError(f"the Hugging Face Hub is unreachable (offline or HF_HUB_OFFLINE=1): nothing pushed; "
                       f"the model card is in {card_path}")
    token = find_token()
    if not token:
        raise HubError(TOKEN_HELP)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _, hub_base, _ = base_model_of(folder)
    api = api or HfApi()
    try:
        url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        api.create_commit(repo_id, _operations(folder, card_path, hub_base), token=token,
                          commit_message=f"Upload {'adapter' if is_adapter_folder(folder) else 'merged model'} "
                                         "with sftkit")
    except HfHubHTTPError as error:
        # The message is the Hub's answer (status and reason); a token never appears in it.
        raise HubError(f"the Hub refused the upload to {repo_id}: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise HubError(f"the Hugging Face Hub is unreachable ({type(error).__name__}): nothing pushed") from None
    return str(url)
