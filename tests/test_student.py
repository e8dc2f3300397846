"""Tests for the truncated student of sftkit.chapters.distill: the teacher with fewer decoder blocks.

Tiny random Gemma 3 and Llama models built from configs (the main model's family and SmolLM2's),
in float32 with eager attention, so equal computations give bitwise-equal logits.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel,
                          LlamaConfig, LlamaForCausalLM)

from sftkit.chapters.distill import parameter_counts, student_blocks, truncated_student

VOCAB, HIDDEN, BLOCKS, WINDOW = 64, 16, 6, 4
SIZES = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
             head_dim=8, num_hidden_layers=BLOCKS, tie_word_embeddings=True, attn_implementation="eager")
S, F = "sliding_attention", "full_attention"
# Two full-attention blocks rather than Gemma's default one in six, so that slicing has something to get wrong.
GEMMA_TYPES = [S, S, F, S, S, F]
# One block's parameters, counted from the sizes above: q (16x16), k and v (16x8 each: one KV head
# of 8), o (16x16), the MLP's gate, up and down (16x32 each), and the RMSNorm weights: Llama has
# two of width 16; Gemma 3 four, plus q_norm and k_norm of width 8 (the head).
LINEARS = 256 + 128 + 128 + 256 + 3 * 512
PER_BLOCK = {"gemma3": LINEARS + 4 * 16 + 2 * 8, "llama": LINEARS + 2 * 16}
# 10 tokens, longer than the sliding window of 4: sliding and full blocks see different positions.
IDS = torch.tensor([[5, 17, 3, 60, 22, 9, 41, 8, 33, 2], [7, 7, 12, 50, 1, 19, 28, 44, 6, 30]])


def make_teacher(family: str, seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    sizes = {**SIZES, **changes}
    if family == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**sizes, sliding_window=WINDOW, layer_types=GEMMA_TYPES)).eval()
    return LlamaForCausalLM(LlamaConfig(**sizes)).eval()


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def teacher(request):
    """A tiny teacher of each family. Read-only: a test that changes one builds its own."""
    return make_teacher(request.param)


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def by_hand(teacher, blocks: list[int], ids=IDS) -> torch.Tensor:
    """Embedding, then the teacher's own blocks `blocks` in order, then its final norm and head.

    Each block gets the mask and rotary table of its type, built here: causal, and for Gemma's
    sliding blocks only the last WINDOW positions (key > query - WINDOW), with that type's RoPE
    base. Gemma's embedding module multiplies by sqrt(hidden) itself.
    """
    base = teacher.model
    length = ids.shape[1]
    positions = torch.arange(length).unsqueeze(0)
    query, key = torch.arange(length)[:, None], torch.arange(length)[None, :]
    layer_types = getattr(teacher.config, "layer_types", None) or [F] * BLOCKS
    with torch.no_grad():
        hidden = base.embed_tokens(ids)
        for index in blocks:
            allowed = key <= query
            if layer_types[index] == S:
                allowed &= key > query - WINDOW
            mask = torch.zeros(length, length).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
            if isinstance(teacher, Gemma3ForCausalLM):
                rotary = base.rotary_emb(hidden, positions, layer_types[index])
            else:
                rotary = base.rotary_emb(hidden, positions)
            hidden = base.layers[index](hidden, attention_mask=mask, position_embeddings=rotary,
                                        position_ids=positions)
        return teacher.lm_head(base.norm(hidden))


# --------------------------------------------------------------------------- which blocks


@pytest.mark.parametrize("total, keep, expected", [
    (6, 6, [0, 1, 2, 3, 4, 5]),
    (6, 2, [0, 5]),
    (6, 3, [0, 3, 5]),  # 2.5 rounds up
    (6, 4, [0, 2, 3, 5]),  # 5/3 = 1.67 -> 2, 10/3 = 3.33 -> 3
    (18, 6, [0, 3, 7, 10, 14, 17]),  # Gemma 3 270M: 3.4, 6.8, 10.2, 13.6
    (18, 9, [0, 2, 4, 6, 9, 11, 13, 15, 17]),  # 8.5 rounds up
    (6, 1, [0]),
    (6, [1, 4], [1, 4]),
    (6, range(3), [0, 1, 2]),
    (6, np.int64(2), [0, 5]),
    (6, torch.tensor([2, 5]), [2, 5]),
])
def test_student_blocks_follows_the_documented_rule(total, keep, expected):
    assert student_blocks(total, keep) == expected


# --------------------------------------------------------------------------- what the student computes


def test_keeping_every_block_gives_the_teachers_logits(teacher):
    student = truncated_student(teacher, BLOCKS)
    assert torch.equal(logits(student), logits(teacher))


def test_a_subset_computes_the_kept_blocks_of_the_teacher(teacher):
    # The hand computation is itself checked first: with every block it is the teacher.
    assert torch.equal(by_hand(teacher, list(range(BLOCKS))), logits(teacher))
    for blocks in ([0, 2, 3], [1, 4, 5], [3]):
        student = truncated_student(teacher, blocks)
        assert torch.equal(logits(student), by_hand(teacher, blocks)), blocks
    assert not torch.equal(by_hand(teacher, [0, 2, 3]), logits(teacher)), "dropping blocks must change the output"


def test_the_config_and_each_block_describe_the_student(teacher):
    student = truncated_student(teacher, [1, 2, 4, 5])
    assert student.config.num_hidden_layers == 4 and len(student.model.layers) == 4
    expected_types = [S, F, S, F]  # GEMMA_TYPES at 1, 2, 4, 5
    for new_index, layer in enumerate(student.model.layers):
        # layer_idx indexes the KV cache: it must be the block's place in the student, not in the teacher.
        assert layer.self_attn.layer_idx == new_index
        if isinstance(teacher, Gemma3ForCausalLM):
            assert layer.self_attn.layer_type == expected_types[new_index]
            assert layer.self_attn.sliding_window == (WINDOW if expected_types[new_index] == S else None)
    if isinstance(teacher, Gemma3ForCausalLM):
        assert student.config.layer_types == expected_types
        assert "_sliding_window_pattern" not in student.config.to_dict()
    assert student.generation_config.to_dict() == teacher.generation_config.to_dict()


def test_generation_with_the_cache_equals_generation_without(teacher):
    # A sliding, a full and a sliding block: a block reading another's cache entry (or a cache
    # layer of the wrong kind) fails or diverges once the text outgrows the window of 4.
    student = truncated_student(teacher, [0, 2, 3])
    prompt = IDS[:1, :3]
    cached = student.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True)
    uncached = student.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False)
    assert cached.shape[1] == 13
    assert torch.equal(cached, uncached)


def test_save_and_reload_gives_the_same_student(teacher, tmp_path):
    student = truncated_student(teacher, 3)  # blocks 0, 3, 5
    student.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_hidden_layers"] == 3
    if isinstance(teacher, Gemma3ForCausalLM):
        assert saved["layer_types"] == [S, S, F]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is type(teacher)
    assert torch.equal(logits(reloaded), logits(student))
    assert torch.equal(logits(reloaded), by_hand(teacher, [0, 3, 5]))


# --------------------------------------------------------------------------- the teacher, the weights


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_the_teacher_is_unchanged_and_shares_nothing(family):
    teacher = make_teacher(family)
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    config_before, logits_before = teacher.config.to_dict(), logits(teacher)
    count_before = parameter_counts(teacher)["total"]
    students = [truncated_student(teacher, 2), truncated_student(teacher, [1, 3]),
                truncated_student(teacher, BLOCKS, dtype=torch.bfloat16)]
    assert students[2].dtype == torch.bfloat16 and teacher.dtype == torch.float32
    with torch.no_grad():  # a student's weights are its own: training it must not move the teacher
        for student in students:
            for parameter in student.parameters():
                parameter.add_(1.0)
    assert teacher.state_dict().keys() == before.keys()
    assert all(torch.equal(tensor, before[name]) for name, tensor in teacher.state_dict().items())
    assert teacher.config.to_dict() == config_before
    assert [layer.self_attn.layer_idx for layer in teacher.model.layers] == list(range(BLOCKS))
    assert parameter_counts(teacher)["total"] == count_before
    assert torch.equal(logits(teacher), logits_before)


def test_tied_embeddings_stay_tied(teacher):
    student = truncated_student(teacher, 2)
    assert student.config.tie_word_embeddings
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert student.model.embed_tokens.weight.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_an_untied_head_stays_untied(family):
    # A head untied from the embedding while the config still says tied (as after merging an adapter
    # that trained some token rows): both matrices must survive, and the saved config must say untied.
    teacher = make_teacher(family)
    teacher.lm_head.weight = torch.nn.Parameter(teacher.lm_head.weight.detach() + 0.5)
    student = truncated_student(teacher, BLOCKS)
    assert not student.config.tie_word_embeddings
    assert student.lm_head.weight is not student.model.embed_tokens.weight
    assert torch.equal(logits(student), logits(teacher))
    untied = truncated_student(make_teacher(family, tie_word_embeddings=False), 2)
    assert not untied.config.tie_word_embeddings
    assert parameter_counts(untied)["embedding"] == 2 * VOCAB * HIDDEN


def test_parameter_counts_split_embedding_blocks_and_norm(teacher):
    family = "gemma3" if isinstance(teacher, Gemma3ForCausalLM) else "llama"
    expected = {"embedding": VOCAB * HIDDEN, "blocks": BLOCKS * PER_BLOCK[family], "other": HIDDEN}
    assert parameter_counts(teacher) == {**expected, "total": sum(expected.values())}
    student = parameter_counts(truncated_student(teacher, 2))
    assert student["blocks"] == 2 * PER_BLOCK[family]
    assert student["embedding"] == VOCAB * HIDDEN  # the embedding does not shrink with depth
    assert student["total"] == sum(p.numel() for p in truncated_student(teacher, 2).parameters())


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("keep, message", [
    (0, "between 1 and 6"),
    (-2, "between 1 and 6"),
    (7, "between 1 and 6"),
    (True, "number of blocks or a list"),
    ([], "at least one"),
    ([0, 6], "index 6 is out of range"),
    ([-1, 2], "index -1 is out of range"),
    ([1, 3, 1], r"\[1\] are listed more than once"),
    ([3, 1], "increasing"),
    ([0, 1.5], "number of blocks or a list"),
    ("012", "number of blocks or a list"),
])
def test_bad_blocks_are_refused(teacher, keep, message):
    with pytest.raises(ValueError, match=message):
        truncated_student(teacher, keep)


def test_models_it_cannot_cut_are_refused(teacher):
    from peft import LoraConfig, get_peft_model

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=32))
    with pytest.raises(ValueError, match="cannot cut the blocks of GPT2LMHeadModel"):
        truncated_student(gpt2, 1)
    with pytest.raises(ValueError, match="expected a transformers model, got Linear"):
        truncated_student(torch.nn.Linear(2, 2), 1)
    peft_model = get_peft_model(copy.deepcopy(teacher), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="merge the adapter first"):
        truncated_student(peft_model, 1)
    quantized = copy.deepcopy(teacher)
    quantized.model.norm.weight = torch.nn.Parameter(torch.zeros(HIDDEN, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="quantized"):
        truncated_student(quantized, 1)
    claimed = copy.deepcopy(teacher)  # float weights, but a config that would quantize them when reloaded
    claimed.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    with pytest.raises(ValueError, match="quantized"):
        truncated_student(claimed, 1)
