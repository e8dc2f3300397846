"""Tests for sftkit.models: precision and attention choices, offline sources, Hub failures."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from sftkit import models
from sftkit.chat import IM_END
from sftkit.models import (
    ModelSourceError,
    attention_for,
    hardware_name,
    hub_reachable,
    load_model,
    load_tokenizer,
    pick_dtype,
    resolve_dtype,
    resolve_source,
)

HUB_ID = "HuggingFaceTB/SmolLM2-360M"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _fake_capability(monkeypatch, capability):
    calls = []

    def get_device_capability(device=None):
        calls.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    return calls


# --------------------------------------------------------------------------- dtype


def test_pick_dtype_is_float32_on_cpu(no_cuda):
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype() == torch.float32, "with no CUDA device the default must be fp32"


@pytest.mark.parametrize(
    "capability, expected",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
    ids=["T4", "V100", "A100", "H100"],
)
def test_pick_dtype_follows_cuda_compute_capability(monkeypatch, capability, expected):
    calls = _fake_capability(monkeypatch, capability)
    # is_bf16_supported() must not be consulted (it says True on a T4, where bf16 is emulated).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") == expected, f"capability {capability} should give {expected}"
    assert calls, "the compute capability was not queried"


def test_pick_dtype_default_device_uses_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _fake_capability(monkeypatch, (7, 5))
    assert pick_dtype() == torch.float16


@pytest.mark.parametrize(
    "name, expected",
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("half", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_dtype_aliases(name, expected):
    assert resolve_dtype(name) == expected


def test_resolve_dtype_auto_follows_hardware(no_cuda):
    assert resolve_dtype("auto") == torch.float32
    assert resolve_dtype(None) == torch.float32


@pytest.mark.parametrize("name", ["float33", "bf17", "Tensor", "nn", ""])
def test_resolve_dtype_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype(name)


def test_attention_for():
    assert attention_for() == "sdpa"
    assert attention_for(False) == "sdpa"
    assert attention_for(need_attention_weights=True) == "eager", "only eager returns attention weights"


def test_hardware_name_on_cpu(no_cuda):
    name = hardware_name()
    assert name.startswith("CPU: ") and name.endswith("cores)"), name


# --------------------------------------------------------------------------- Hub failures


@pytest.mark.parametrize("loader", [load_tokenizer, load_model], ids=["tokenizer", "model"])
def test_hub_id_offline_fails_fast_with_one_line_hint(monkeypatch, loader):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelSourceError) as excinfo:
        loader(HUB_ID)
    elapsed = time.perf_counter() - start
    message = str(excinfo.value)
    assert elapsed < 10, f"failing offline took {elapsed:.1f} s"
    assert "\n" not in message, f"the error should be one line, got {message!r}"
    assert "smollm2-135m-instruct" in message, f"the error should name the offline model: {message!r}"
    assert HUB_ID in message, "the error should name what could not be loaded"
    assert excinfo.value.__suppress_context__, "the Hub traceback chain should be suppressed (raise ... from None)"


def test_unreachable_hub_is_probed_once_and_fails(monkeypatch):
    # Not in offline mode: the loader must probe the Hub (quickly) and give the same hint.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    probes = []

    def refuse(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelSourceError, match="smollm2-135m-instruct"):
        load_tokenizer(HUB_ID)
    assert probes and probes[0][0] == (models.HUB_HOST, 443), probes
    assert probes[0][1] is not None and probes[0][1] <= 5, "the probe needs a short timeout"


def test_hub_reachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False, "offline mode must not even probe"

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    assert hub_reachable() is True


# --------------------------------------------------------------------------- offline sources


def test_resolve_source_leaves_hub_ids_alone():
    assert resolve_source(HUB_ID) == HUB_ID
    folder = resolve_source("tiny-smollm2")
    assert isinstance(folder, Path) and (folder / "model.safetensors").is_file(), folder


@pytest.mark.parametrize(
    "name", ["tiny-smollm2", pytest.param("smollm2-135m-instruct", marks=pytest.mark.slow)]
)
def test_offline_model_loads_from_safetensors_without_remote_code(monkeypatch, name):
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained
    calls = []

    def spy(source, *args, **kwargs):
        calls.append((source, kwargs))
        return original(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    model = load_model(name, dtype="float32", device="cpu")
    assert len(calls) == 1, calls
    source, kwargs = calls[0]
    assert kwargs.get("trust_remote_code") is False, kwargs
    assert kwargs.get("use_safetensors") is True, kwargs
    assert kwargs.get("attn_implementation") == "sdpa", kwargs
    assert Path(source).is_dir() and (Path(source) / "model.safetensors").is_file(), source
    assert not list(Path(source).glob("*.bin")), "no pickle checkpoints should exist to fall back on"
    assert next(model.parameters()).dtype == torch.float32
    del model


def test_tokenizer_loads_without_remote_code(monkeypatch):
    import transformers

    original = transformers.AutoTokenizer.from_pretrained
    calls = []

    def spy(source, *args, **kwargs):
        calls.append(kwargs)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    load_tokenizer("tiny-smollm2")
    assert calls and calls[0].get("trust_remote_code") is False, calls


def test_tiny_model_is_tiny_with_the_real_vocabulary(tiny_model, tokenizer):
    unique = {id(p): p.numel() for p in tiny_model.parameters()}
    n_params = sum(unique.values())
    assert n_params < 1_000_000, f"tiny model has {n_params:,} parameters"
    assert tiny_model.config.vocab_size == len(tokenizer) == 49152, (tiny_model.config.vocab_size, len(tokenizer))
    assert tiny_model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tiny_model.config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
