"""Tests for sftkit.measure's FLOP count and CPU matmul peak (MFU on a CPU).

The FLOP count is checked two ways on a tiny Llama: against a count done by hand from its
shapes (written out below), and against torch's own `FlopCounterMode` on a real training
step (forward, labelled-head loss, backward), which counts every matmul torch executes.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from sftkit.measure import (
    CountingCollator,
    cpu_matmul_peaks,
    cpu_native_bf16,
    measure_matmul_peak,
    model_matmul_shapes,
    model_flops_utilisation,
    training_flops_per_token,
)
from sftkit.train import labelled_head_loss

# hidden 16, MLP 32, 2 query heads of 8 (attention width A = 16), 1 key/value head, 3 blocks,
# vocabulary 64, tied head. Linear weights per block: q 16x16=256, k 8x16=128, v 128,
# o 256, gate 32x16=512, up 512, down 512: W = 2,304. LoRA r=2 (A: r x in, B: out x r):
# q 32+32, k 32+16, v 32+16, o 32+32, gate 32+64, up 32+64, down 64+32: L = 512, of which
# the A matrices of q, k, v (they read the block input) are 96.
W, L, QKV, QKV_A, A, V, H = 2304, 512, 512, 96, 16, 64, 16
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(lora_blocks: list[int] | None, token_rows: list[int] | None = None, seed: int = 0,
               family: str = "llama"):
    """The tiny model above (Llama, or Gemma 3 with the same sizes: the main job's family), LoRA'd or not."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    sizes = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                 num_hidden_layers=3, vocab_size=64, tie_word_embeddings=True, attn_implementation="eager")
    if family == "gemma3":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**sizes, sliding_window=4))
    else:
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    if lora_blocks is None:
        return model  # full fine-tuning: every weight trains
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=LINEARS,
                                            layers_to_transform=lora_blocks, trainable_token_indices=token_rows))


def test_flops_match_a_hand_count_lora_in_the_top_block():
    f, c = 0.25, 5.0
    # Blocks 0-1: forward only (nothing below block 2 trains). Block 2: forward with LoRA; the
    # input gradient of every linear but q, k, v and their A matrices; LoRA's weight gradients;
    # attention forward 4cA everywhere, backward 8cA in block 2. Head: forward + input gradient.
    hand = (2 * (2 * W)) + 2 * (W + L) + (2 * (W - QKV) + 2 * (L - QKV_A)) + 2 * L + (3 * 4 + 8) * c * A \
        + f * 4 * V * H
    assert hand == 20288 + 320 * c + 4096 * f  # the same sum, added up by hand
    assert training_flops_per_token(tiny_llama([2]), labelled_fraction=f, context=c) == pytest.approx(hand)


def test_flops_hand_count_trainable_token_rows_reach_the_bottom():
    f, c = 0.5, 3.0
    # Trainable rows of the (tied) embedding: the gradient reaches block 0, so every block
    # computes its activation gradients; the head also computes its 2 delta columns (6 x H each).
    hand = 2 * (2 * W + 2 * W) + (2 * (W + L) + 2 * (W + L) + 2 * L) + 3 * 12 * c * A + f * (4 * V * H + 2 * 6 * H)
    got = training_flops_per_token(tiny_llama([2], token_rows=[3, 5]), labelled_fraction=f, context=c)
    assert got == pytest.approx(hand)


def test_flops_full_fine_tuning_is_6n_plus_attention():
    # Every weight trains (the tied head too): 6 x (3W + VH) per token when the head runs everywhere.
    assert training_flops_per_token(tiny_llama(None), labelled_fraction=1.0) == pytest.approx(6 * (3 * W + V * H))


@pytest.mark.parametrize("family, lora_blocks, token_rows", [("llama", [2], None), ("llama", [1, 2], [3, 5]),
                                                              ("llama", None, None), ("gemma3", [1, 2], [3, 5])])
def test_flops_match_torch_flop_counter_on_a_training_step(family, lora_blocks, token_rows):
    model = tiny_llama(lora_blocks, token_rows, family=family)
    model.train()
    batch, length = 2, 6
    input_ids = torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(1))
    # A trainable row in every row, as the turn tokens are in every chat row: only then does
    # the embedding get a gradient (and the backward pass reach block 0).
    input_ids[:, 0] = 3
    labels = input_ids.clone()
    labels[:, :3] = -100  # a prompt of 3 tokens: positions 2..4 predict a labelled token
    labelled = int((labels[:, 1:] != -100).sum())
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    with FlopCounterMode(display=False) as counter:
        labelled_head_loss(model, inputs).backward()
    # Eager attention computes the whole (T x T) score matrix, so the context it spends is T.
    expected = training_flops_per_token(model, labelled_fraction=labelled / (batch * length), context=length)
    # RoPE's frequency matmul (a few dozen FLOPs) is the only matmul the count leaves out.
    assert counter.get_total_flops() == pytest.approx(expected * batch * length, rel=2e-3)


def test_counting_collator_counts_labels_and_context():
    def collate(examples):
        longest = max(len(e["input_ids"]) for e in examples)
        pad = [[-100] * (longest - len(e["labels"])) for e in examples]
        return {"input_ids": torch.zeros(len(examples), longest, dtype=torch.long),
                "labels": torch.tensor([e["labels"] + p for e, p in zip(examples, pad)])}

    counter = CountingCollator(collate)
    counter([{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}, {"input_ids": [1, 2], "labels": [-100, 2]}])
    assert (counter.real_tokens, counter.padded_tokens, counter.labelled_tokens) == (6, 8, 3)
    assert counter.labelled_fraction == 0.5
    assert counter.mean_context == (10 + 3) / 6


def test_cpu_native_bf16_reads_the_flags():
    assert cpu_native_bf16("flags : fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16") == ["avx512_bf16", "amx_bf16"]
    assert cpu_native_bf16("flags : fpu avx2 fma") == []


def test_measure_matmul_peak_is_the_best_shape_of_best_of_n():
    peak = measure_matmul_peak([(128, 64, 128), (64, 128, 64)], repeats=3)
    assert peak["dtype"] == "fp32" and peak["gflops"] > 0, peak
    assert peak["gflops"] == max(peak["per_shape_gflops"].values()), peak
    assert set(peak["per_shape_gflops"]) == {"128x64x128", "64x128x64"}, peak
    assert "best of 3" in peak["method"] and f"{torch.get_num_threads()} threads" in peak["method"], peak


def test_model_matmul_shapes_are_the_models():
    # Width 16, MLP 32, vocabulary 64: the head's tile is the whole (small) vocabulary.
    assert model_matmul_shapes(tiny_llama([2]), tokens=256) == [(256, 16, 32), (256, 32, 16), (256, 16, 16),
                                                                 (256, 16, 64), (256, 64, 16)]
    # Gemma 3 270M (no model): tiles of 2**22 / 1,024 = 4,096 of the 262,144 vocabulary columns.
    assert model_matmul_shapes() == [(1024, 640, 2048), (1024, 2048, 640), (1024, 640, 640), (1024, 640, 4096),
                                     (1024, 4096, 640)]


def test_cpu_matmul_peaks_measures_bf16_only_where_native(monkeypatch):
    import sftkit.measure as measure

    monkeypatch.setattr(measure, "cpu_native_bf16", lambda: [])
    peaks = cpu_matmul_peaks(tiny_llama([2]), repeats=1)
    assert peaks["bf16"] is None and peaks["native_bf16"] == [] and peaks["fp32"]["gflops"] > 0
    assert list(peaks["fp32"]["per_shape_gflops"])[0] == "1024x16x32", "the model's own shapes"
    monkeypatch.setattr(measure, "cpu_native_bf16", lambda: ["avx512_bf16"])
    assert cpu_matmul_peaks(tiny_llama([2]), repeats=1)["bf16"]["dtype"] == "bf16"


def test_cpu_matmul_peaks_keep_the_fastest_measured_in_this_process(monkeypatch):
    """A disturbed (slower) measurement later in a process does not lower the peak MFU is measured against."""
    import sftkit.measure as measure

    monkeypatch.setattr(measure, "_FASTEST_PEAKS", {})
    monkeypatch.setattr(measure, "cpu_native_bf16", lambda: [])
    rates = iter([400.0, 250.0, 500.0, 100.0])
    monkeypatch.setattr(measure, "measure_matmul_peak", lambda shapes, dtype, repeats: {
        "gflops": next(rates), "dtype": "fp32", "method": "timed"})
    model = tiny_llama([2])
    assert cpu_matmul_peaks(model)["fp32"]["gflops"] == 400.0
    slower = cpu_matmul_peaks(model)["fp32"]
    assert slower["gflops"] == 400.0 and "faster than now (250.0 GFLOP/s)" in slower["method"]
    assert cpu_matmul_peaks(model)["fp32"] == {"gflops": 500.0, "dtype": "fp32", "method": "timed"}
    assert cpu_matmul_peaks(model, remember=False)["fp32"]["gflops"] == 100.0, "remember=False: this measurement"
    # Other shapes are another peak: nothing carries over.
    monkeypatch.setattr(measure, "measure_matmul_peak", lambda shapes, dtype, repeats: {
        "gflops": 50.0, "dtype": "fp32", "method": "timed"})
    assert cpu_matmul_peaks(None)["fp32"]["gflops"] == 50.0


def test_model_flops_utilisation():
    assert model_flops_utilisation(100.0, 5e8, 0.1) == 0.5


def test_faster_peaks_keeps_each_precisions_faster_measurement_and_says_so():
    from sftkit.measure import faster_peaks

    def peak(gflops, name):
        return {"gflops": gflops, "dtype": name, "per_shape_gflops": {}, "threads": 2,
                "method": f"torch.matmul {name}"}

    disturbed = {"fp32": peak(80.0, "fp32"), "bf16": peak(430.0, "bf16"), "native_bf16": ["avx512_bf16"]}
    quiet = {"fp32": peak(200.0, "fp32"), "bf16": peak(410.0, "bf16"), "native_bf16": ["avx512_bf16"]}
    merged = faster_peaks(disturbed, quiet)
    assert merged["fp32"]["gflops"] == 200.0 and merged["bf16"]["gflops"] == 430.0
    assert merged["native_bf16"] == ["avx512_bf16"]
    assert merged["fp32"]["method"] == ("torch.matmul fp32; the faster of two measurements, before and after "
                                        "training (80.0 and 200.0 GFLOP/s)")
    assert disturbed["fp32"]["gflops"] == 80.0, "the inputs are not changed"
    no_bf16 = faster_peaks({**disturbed, "bf16": None}, {**quiet, "bf16": None})
    assert no_bf16["bf16"] is None and no_bf16["fp32"]["gflops"] == 200.0
    benchmark = faster_peaks(disturbed, quiet, when="at the start and at the end of the benchmark")
    assert benchmark["fp32"]["method"].endswith(
        "at the start and at the end of the benchmark (80.0 and 200.0 GFLOP/s)")


def test_decoder_blocks_are_the_models_layers_or_a_named_error(tiny_model):
    from sftkit.measure import decoder_blocks

    assert decoder_blocks(tiny_model) is tiny_model.model.layers
    assert len(decoder_blocks(tiny_model)) == tiny_model.config.num_hidden_layers

    class NoBlocks(torch.nn.Module):
        model = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="NoBlocks: no decoder `.layers`"):
        decoder_blocks(NoBlocks())
