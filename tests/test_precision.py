"""A T4's numerics on a CPU: fp16 weights, fp16 autocast and a loss scaler, and bf16 the same way.

Colab's free T4 trains in fp16 with a loss scaler; accelerate leaves both off on a CPU, so a
CPU-only CI would never run them. `sftkit.precision` turns them on (``train.cpu_amp``), and these
tests run training, the labelled-head loss, the adapter check and peft's reload in those numerics,
and show that the emulation catches what a T4 would: with peft's fp32 upcast of the adapter turned
off, the loss scaler refuses fp16 gradients.
"""

from __future__ import annotations

import functools

import pytest
import torch

from sftkit.adapters import AdapterCheckError, verify_adapter
from sftkit.chat import turn_token_ids
from sftkit.config import apply_overrides, get_preset
from sftkit.lora import build_lora_config
from sftkit.precision import enable_cpu_fp16, load_dtype, lora_inputs_uncast, precision_flags, resolve_cpu_amp

# (model.dtype, train.cpu_amp): a T4's numerics, an Ampere-or-later card's, and fp32.
NUMERICS = [("float16", "fp16"), ("bfloat16", "bf16"), ("float32", "off")]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_precision_flags_on_a_cpu_follow_cpu_amp(no_cuda):
    assert precision_flags() == {"fp16": False, "bf16": False}
    assert precision_flags(cpu_amp="fp16") == {"fp16": True, "bf16": False}
    assert precision_flags(cpu_amp="bf16") == {"fp16": False, "bf16": True}
    with pytest.raises(ValueError, match="train.cpu_amp must be one of auto, off, bf16, fp16; got 'half'"):
        precision_flags(cpu_amp="half")


# /proc/cpuinfo flag lines of a CPU with native bf16 and of an AVX2-only one.
NATIVE_BF16_CPU = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_tile"
AVX2_CPU = "flags\t\t: fpu sse2 avx avx2 fma"


def test_cpu_amp_auto_is_bf16_only_where_the_cpu_has_native_bf16():
    assert resolve_cpu_amp("auto", NATIVE_BF16_CPU) == "bf16"
    assert resolve_cpu_amp("auto", AVX2_CPU) == "off", "AVX2-only CPUs emulate bf16: slower than fp32"
    for chosen in ("off", "bf16", "fp16"):
        assert resolve_cpu_amp(chosen, AVX2_CPU) == chosen, "an explicit choice is kept"
    with pytest.raises(ValueError, match="train.cpu_amp must be one of auto, off, bf16, fp16; got 'fp32'"):
        resolve_cpu_amp("fp32")


def test_precision_flags_with_auto_follow_this_cpu(no_cuda, monkeypatch):
    import sftkit.precision
    from sftkit.measure import cpu_native_bf16

    for cpuinfo, bf16 in ((NATIVE_BF16_CPU, True), (AVX2_CPU, False)):  # this CPU's flags replaced by each line
        monkeypatch.setattr(sftkit.precision, "cpu_native_bf16", lambda text=None, c=cpuinfo: cpu_native_bf16(c))
        assert precision_flags(cpu_amp="auto") == {"fp16": False, "bf16": bf16}


def test_auto_weights_on_a_cpu_follow_the_run_precision_and_named_dtypes_are_kept(no_cuda, monkeypatch):
    import sftkit.precision

    assert load_dtype("auto", "off") == "float32"
    assert load_dtype("auto", "bf16") == "bfloat16", "a bf16 run holds its frozen weights in bf16 once"
    assert load_dtype("auto", "fp16") == "float16", "as a T4 loads them"
    assert load_dtype("float32", "bf16") == "float32", "a named dtype is kept: fp32 weights under bf16 autocast"
    monkeypatch.setattr(sftkit.precision, "cpu_native_bf16", lambda text=None: [])
    assert load_dtype("auto", "auto") == "float32", "fp32 on an AVX2-only CPU"
    monkeypatch.setattr(sftkit.precision, "cpu_native_bf16", lambda text=None: ["avx512_bf16"])
    assert load_dtype("auto", "auto") == "bfloat16"


def test_auto_weights_on_a_gpu_are_left_to_the_card(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert load_dtype("auto", "bf16", "cuda") == "auto", "cpu_amp never decides a GPU's weights"


def test_precision_flags_on_a_gpu_follow_the_compute_capability_whatever_cpu_amp_says(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert precision_flags("cuda", cpu_amp="bf16") == {"fp16": True, "bf16": False}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert precision_flags("cuda", cpu_amp="off") == {"fp16": False, "bf16": True}


def test_enable_cpu_fp16_gives_the_accelerator_autocast_and_a_cpu_scaler():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="fp16")
        assert accelerator.scaler is None and not accelerator.native_amp, "accelerate's CPU default changed"
        assert enable_cpu_fp16(accelerator) is True
        assert isinstance(accelerator.scaler, torch.amp.GradScaler) and accelerator.native_amp
        with accelerator.autocast():
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
        assert enable_cpu_fp16(accelerator) is False, "a second call must not replace the scaler"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_old_config_files_with_cpu_bf16_autocast_still_load():
    from sftkit.config import RunConfig

    values = get_preset("smoke").to_dict()
    del values["train"]["cpu_amp"]
    values["train"]["cpu_bf16_autocast"] = True
    assert RunConfig.from_dict(values).train.cpu_amp == "bf16"


def _smoke_cfg(dtype: str, cpu_amp: str, *extra: str):
    return apply_overrides(get_preset("smoke"), [f"model.dtype={dtype}", f"train.cpu_amp={cpu_amp}",
                                                 "train.learning_rate=1e-2", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("dtype,cpu_amp", NUMERICS[:2])  # fp32 training: tests/test_train.py
def test_training_in_a_gpus_numerics_records_them_and_saves_an_adapter_peft_loads(dtype, cpu_amp, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from sftkit.demo import load_demo_data
    from sftkit.runs import load_for, train_and_record

    cfg = _smoke_cfg(dtype, cpu_amp)
    model, tokenizer = load_for(cfg)
    train_set, _ = load_demo_data(cfg)
    result = train_and_record(cfg, model, tokenizer, train_set, tmp_path, disable_tqdm=True)
    m = result.metrics
    assert m["weights_dtype"] == dtype and m["trainable_dtype"] == "float32", m
    assert m["precision"] == {"off": "fp32"}.get(cpu_amp, cpu_amp)
    assert m["autocast_dtype"] == {"fp16": "float16", "bf16": "bfloat16"}.get(cpu_amp), m
    if cpu_amp == "fp16":
        assert m["loss_scaler"]["final_scale"] > 0 and m["loss_scaler"]["skipped_steps"] >= 0, m
        assert m["loss_scaler"]["skipped_steps"] < m["steps"], "every step skipped: nothing trained"
    else:
        assert m["loss_scaler"] is None, m
    # The adapter check runs in fp32 whatever the run trained in: reload is exact, merge is fp32 rounding.
    assert m["adapter_check"]["reload"] == 0.0 and m["adapter_check"]["merge"] < 1e-5, m["adapter_check"]
    assert m["adapter_check"]["vs_base"] > 1e-3, m["adapter_check"]
    assert f"| loss scaler | {'none' if cpu_amp != 'fp16' else 'final scale'}" in (tmp_path / "run.md").read_text()
    # The trained model keeps its dtypes after the fp32 check.
    assert {p.dtype for p in result.model.parameters() if not p.requires_grad} == {getattr(torch, dtype)}
    loaded = AutoPeftModelForCausalLM.from_pretrained(result.adapter_dir, dtype=getattr(torch, dtype))
    assert loaded.get_base_model().dtype == getattr(torch, dtype)
    assert sorted(loaded.peft_config["default"].target_modules) == m["lora_targets"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,cpu_amp", [("float32", "bf16"), ("float16", "fp16")])
def test_the_labelled_head_loss_runs_under_the_trainers_autocast(dtype, cpu_amp, tmp_path):
    # labelled_head_loss calls the decoder itself, not the forward accelerate wrapped in autocast.
    from sftkit.demo import load_demo_data
    from sftkit.runs import load_for
    from sftkit.train import train_lora

    cfg = _smoke_cfg(dtype, cpu_amp, "train.max_steps=2")
    model, tokenizer = load_for(cfg)
    train_set, _ = load_demo_data(cfg)
    seen: list[tuple[bool, torch.dtype, bool]] = []
    model.model.layers[-1].register_forward_hook(  # a top block: peft has wrapped its q_proj by then
        lambda module, args, output: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                                                  module.self_attn.q_proj.cast_input_dtype_enabled)))
    result = train_lora(cfg, model, tokenizer, train_set, tmp_path, disable_tqdm=True)
    assert result.metrics["loss"] == "head on labelled positions"
    expected = torch.float16 if cpu_amp == "fp16" else torch.bfloat16
    # ... and under autocast peft's per-layer input cast is off (`lora_inputs_uncast`), on again afterwards.
    assert len(seen) == 2 and all(on and dtype_ == expected and not cast for on, dtype_, cast in seen), seen
    assert all(m.cast_input_dtype_enabled for m in result.model.modules() if hasattr(m, "cast_input_dtype_enabled"))


def _loss_and_grads(peft_model, batch, accelerator):
    peft_model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16), lora_inputs_uncast(peft_model, accelerator):
        loss = peft_model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}


def test_lora_inputs_uncast_under_autocast_gives_the_same_loss_and_gradients(make_tiny_model, tokenizer):
    # bf16 -> fp32 -> bf16 is exact, so skipping peft's cast of each LoRA input under autocast changes nothing
    # but the copies; with trainable token rows (whose layer has no such switch) and bf16 base weights.
    from types import SimpleNamespace

    from peft import get_peft_model

    torch.manual_seed(0)
    base = make_tiny_model().to(torch.bfloat16)
    peft_model = get_peft_model(base, build_lora_config(base, r=4, alpha=8, dropout=0.0, targets="all-linear",
                                                        trainable_tokens=turn_token_ids(tokenizer)))
    with torch.no_grad():  # B starts at zero: move it, so the adapter's gradients reach A and the input
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    batch = {"input_ids": torch.randint(0, 1000, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    on, off = SimpleNamespace(native_amp=True, mixed_precision="bf16"), SimpleNamespace(native_amp=False,
                                                                                     mixed_precision="no")
    seen: list[torch.dtype] = []
    lora_layer = next(m for m in peft_model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    lora_layer.lora_A["default"].register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    loss_cast, grads_cast = _loss_and_grads(peft_model, batch, off)
    loss_uncast, grads_uncast = _loss_and_grads(peft_model, batch, on)
    assert seen == [torch.float32, torch.bfloat16]  # peft's cast, then none
    assert torch.equal(loss_cast, loss_uncast)
    assert grads_cast.keys() == grads_uncast.keys() and len(grads_cast) > 2
    for name, grad in grads_cast.items():
        assert torch.equal(grad, grads_uncast[name]), name
    assert all(m.cast_input_dtype_enabled for m in peft_model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    # With activation checkpointing the backward recomputes the forward outside the context: keep peft's cast.
    with lora_inputs_uncast(peft_model, on, checkpointing=True):
        assert lora_layer.cast_input_dtype_enabled


def _get_peft_model_without_upcast(get_peft_model, *args, **kwargs):
    return get_peft_model(*args, **{**kwargs, "autocast_adapter_dtype": False})


@pytest.mark.slow
def test_negative_control_fp16_adapter_weights_fail_under_the_loss_scaler(monkeypatch, tmp_path):
    # peft upcasts LoRA's A/B (and the trainable token rows) to fp32, which is what lets a loss
    # scaler unscale their gradients. Without that upcast a T4 stops with this error; so must the emulation.
    import trl.trainer.sft_trainer as sft_trainer_module

    from sftkit.demo import load_demo_data
    from sftkit.runs import load_for
    from sftkit.train import train_lora

    monkeypatch.setattr(sft_trainer_module, "get_peft_model",
                        functools.partial(_get_peft_model_without_upcast, sft_trainer_module.get_peft_model))
    cfg = _smoke_cfg("float16", "fp16", "train.max_steps=1")
    model, tokenizer = load_for(cfg)
    train_set, _ = load_demo_data(cfg)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        train_lora(cfg, model, tokenizer, train_set, tmp_path, disable_tqdm=True)


# --------------------------------------------------------------------------- the adapter check


def _adapter_on(model, tokenizer, seed: int):
    """A LoRA adapter (with turn-token rows) on `model` whose weights are random, so it changes the logits."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, build_lora_config(model, r=4, alpha=8, dropout=0.0, targets="all-linear",
                                                         trainable_tokens=turn_token_ids(tokenizer)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(peft_model.named_parameters()):
            if param.requires_grad:
                param.add_(0.02 * torch.randn(param.shape, generator=generator).to(param.dtype))
    return peft_model.eval()


@pytest.fixture(scope="module")
def probe(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)["input_ids"]


def _real(dtype: str, tokenizer):
    from sftkit.chat import prepare_model
    from sftkit.models import load_model

    return prepare_model(load_model("smollm2-135m-instruct", dtype=dtype, device="cpu"), tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_verify_adapter_holds_in_every_precision_and_still_rejects_a_wrong_adapter(dtype, tokenizer, probe, tmp_path):
    # The real SmolLM2-135M-Instruct, whose logits (~20-40) make fp16's and bf16's rounding visible.
    trained = _adapter_on(_real(dtype, tokenizer), tokenizer, seed=0)
    trained.save_pretrained(tmp_path / "trained")
    diffs = verify_adapter(trained, _real(dtype, tokenizer), tmp_path / "trained", probe)
    assert diffs["reload"] == 0.0 and diffs["merge"] < 1e-3 and diffs["vs_base"] > 0.1, diffs
    assert {p.dtype for p in trained.parameters() if not p.requires_grad} == {getattr(torch, dtype)}, "dtypes restored"

    # A different adapter on disk (another seed: as a stale folder or a failed save would leave) must fail.
    other = _adapter_on(_real(dtype, tokenizer), tokenizer, seed=1)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterCheckError, match="reloaded adapter differs from the trained one"):
        verify_adapter(trained, _real(dtype, tokenizer), tmp_path / "other", probe)


@pytest.mark.slow
def test_verify_adapter_rejects_a_merge_that_loses_the_adapter(monkeypatch, make_tiny_model, tokenizer, probe,
                                                                tmp_path):
    from peft.tuners.tuners_utils import BaseTuner

    trained = _adapter_on(make_tiny_model(), tokenizer, seed=0)
    trained.save_pretrained(tmp_path / "trained")
    monkeypatch.setattr(BaseTuner, "merge_and_unload", lambda self, *a, **k: self.unload())  # drops the update
    with pytest.raises(AdapterCheckError, match="merged model differs from the adapter model"):
        verify_adapter(trained, make_tiny_model(), tmp_path / "trained", probe)
