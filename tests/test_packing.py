"""Packing vs length grouping: why sftkit refuses to pack without FlashAttention."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from sftkit.masking import IGNORE_INDEX
from sftkit.train import check_packing_is_safe

ROWS = [
    {"input_ids": [1, 5, 6, 7, 8], "labels": [IGNORE_INDEX, 5, 6, 7, 8]},
    {"input_ids": [1, 9, 10, 11], "labels": [IGNORE_INDEX, IGNORE_INDEX, 10, 11]},
]


def _tiny(implementation: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation=implementation)
    return LlamaForCausalLM(config).eval()


def _per_token_losses(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    target = torch.tensor(labels[1:])
    losses = torch.nn.functional.cross_entropy(logits[:-1], target.clamp(min=0), reduction="none")
    return losses[target != IGNORE_INDEX]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_examples_leak_attention_without_flash_attention(implementation):
    model = _tiny(implementation)
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(ROWS)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        alone = [model(input_ids=torch.tensor([row["input_ids"]])).logits[0] for row in ROWS]
    first = len(ROWS[0]["input_ids"])
    # The first example sees nothing before it: identical losses either way.
    assert torch.allclose(_per_token_losses(packed[:first], ROWS[0]["labels"]),
                          _per_token_losses(alone[0], ROWS[0]["labels"]), atol=1e-5)
    # The second attends back into the first: its per-token losses change. If a future
    # transformers release starts honouring position_ids here, this test fails and
    # `check_packing_is_safe` can be relaxed.
    leaked = (_per_token_losses(packed[first:], ROWS[1]["labels"]) - _per_token_losses(alone[1], ROWS[1]["labels"]))
    assert leaked.abs().max() > 1e-3, "packed and unpacked losses agree: packing no longer leaks here"


def test_packing_is_refused_without_flash_attention():
    with pytest.raises(ValueError, match="FlashAttention"):
        check_packing_is_safe("pack", _tiny("sdpa"))
    check_packing_is_safe("group", _tiny("sdpa"))  # grouping is always safe
