"""sftkit's preset against the recipe a user would pick instead: TRL's `SFTTrainer` + a peft `LoraConfig`.

In one process, on the same training rows, for the same number of optimizer steps, with the
same batch size and LoRA rank, it trains

- **peer**: the tutorial recipe, written as TRL's documentation writes it --
  ``SFTTrainer(model, args=SFTConfig(...), train_dataset=<messages>, peft_config=LoraConfig(
  r=<rank>, lora_alpha=2 x rank, target_modules="all-linear", task_type="CAUSAL_LM"))``
  with `SFTConfig`'s defaults for batching and loss (TRL 1.x: padding, no packing, shuffled
  rows, max_length 1024, gradient checkpointing on, ``loss_type="nll"``, and on a
  conversational dataset the loss on *all* tokens, since ``assistant_only_loss`` defaults to
  False). Two settings differ from the defaults, as a user on a CPU must set them: bf16 is
  off (TRL's default turns bf16 autocast on, emulated on AVX2 CPUs), and the learning rate is
  the 2e-4 of TRL's LoRA examples (SFTConfig's 2e-5 is meant for full fine-tuning);
- **sftkit**: the preset's own path, `sftkit.train.train_lora` (assistant-only labels, LoRA in
  the preset's blocks, turn-token rows, length-grouped batches, the head only at labelled
  positions), fp32 with bf16 autocast off.

Both get the same prepared tokenizer (chat template, pad token), so the rows are the same
text. Every `--eval-every` steps both are scored on the same held-out rows with the same
function (`sftkit.metrics.assistant_perplexity`: mean NLL of the assistant tokens, whatever
each trained on); scoring time is not counted as training time. Printed per model and repeat:
tokens/s (non-pad tokens), seconds per optimizer step, peak RSS of the training, MFU against
the matmul peak measured in the same process (`sftkit.measure`), the held-out loss after the
steps, and the training time each needed to reach a common held-out loss (the higher of the
two final losses, which both reached) and the other's final loss ("not reached" if it never
did). The last line is ``speedup_vs_peer=<x> mfu_cpu=<y>`` for the first model (the main
job's), averaged over the repeats.

Models: ``gemma3-270m-base`` (the main job's, Gemma 3 270M base) and ``smollm2-135m-instruct``
(SmolLM2-135M-*Instruct*: the only offline 135M checkpoint, dequantised from its Q4_1 GGUF;
no base SmolLM2-135M loads offline). ``--smoke`` trains the tiny random model for 2 steps.

    HF_HUB_OFFLINE=1 python benchmarks/peer_comparison.py [--steps 10] [--batch-size 8] [--repeats 2]
    HF_HUB_OFFLINE=1 python benchmarks/peer_comparison.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import TrainerCallback

import sftkit.train as sftkit_train
from sftkit.chat import prepare_tokenizer
from sftkit.config import RunConfig, get_preset
from sftkit.demo import load_demo_data
from sftkit.masking import tokenize_dataset
from sftkit.measure import (
    CountingCollator,
    ThroughputCallback,
    cpu_matmul_peaks,
    model_flops_utilisation,
    peak_memory_mb,
    training_flops_per_token,
)
from sftkit.metrics import assistant_perplexity
from sftkit.models import hardware_name, load_tokenizer
from sftkit.runs import load_for

MAIN_MODEL = "gemma3-270m-base"
MODELS = {
    "gemma3-270m-base": "Gemma 3 270M base (the cpu-demo model)",
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (only offline 135M checkpoint: GGUF Q4_1, dequantised)",
    "tiny-smollm2": "tiny random SmolLM2-shaped model (smoke)",
}
PEER_LEARNING_RATE = 2e-4  # TRL's LoRA examples (trl/scripts/sft.py docs: --learning_rate 2.0e-4 --use_peft)


@dataclass
class Run:
    """One training's measurements."""

    recipe: str
    tokens: int = 0
    train_s: float = 0.0
    steps: int = 0
    peak_rss_mb: float = 0.0
    mfu: float | None = None
    # (training seconds so far, held-out loss) after step 0, every k steps and the last.
    curve: list[tuple[float, float]] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s else 0.0

    @property
    def final_loss(self) -> float:
        return self.curve[-1][1]

    def time_to(self, loss: float) -> float | None:
        """Training seconds until the held-out loss first reached `loss` (None: never)."""
        return next((t for t, value in self.curve if value <= loss + 1e-9), None)


class HeldOutLoss(TrainerCallback):
    """Scores the held-out rows before training, every `every` steps and after the last step.

    The scoring time is measured and kept out of the training time.
    """

    def __init__(self, rows: list[dict], pad_token_id: int, every: int, run: Run):
        self.rows, self.pad_token_id, self.every, self.run = rows, pad_token_id, every, run
        self.start = 0.0
        self.scoring_s = 0.0

    def _score(self, model: Any) -> None:
        began = time.perf_counter()
        nll = assistant_perplexity(model, self.rows, self.pad_token_id, batch_size=8)["nll"]
        ended = time.perf_counter()
        self.run.curve.append((round(began - self.start - self.scoring_s, 2), round(nll, 4)))
        self.scoring_s += ended - began

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.perf_counter()
        self._score(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._score(model)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.train_s = time.perf_counter() - self.start - self.scoring_s
        self.run.steps = state.global_step


def release_memory() -> None:
    """Free the last run's tensors and hand freed heap back to the OS, so the next peak RSS is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def with_callbacks(*callbacks: TrainerCallback) -> Iterator[None]:
    """`sftkit.train.train_lora` with `callbacks` added to the trainer it builds, nothing else changed.

    train_lora takes no callbacks, so the trainer class it looks up is wrapped for the
    duration of the run; its loss, batching, LoRA placement and measurements are its own.
    """
    original = sftkit_train.sft_trainer_class

    def patched(*args: Any, **kwargs: Any):
        base = original(*args, **kwargs)

        class WithCallbacks(base):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **kw: Any):
                super().__init__(*a, **kw)
                for callback in callbacks:
                    self.add_callback(callback)

        return WithCallbacks

    sftkit_train.sft_trainer_class = patched
    try:
        yield
    finally:
        sftkit_train.sft_trainer_class = original


def run_sftkit(cfg: RunConfig, train_set: Any, held_out: list[dict], eval_every: int,
               peak_gflops: float | None) -> Run:
    model, tokenizer = load_for(cfg)
    run = Run("sftkit")
    with tempfile.TemporaryDirectory() as out, with_callbacks(HeldOutLoss(held_out, tokenizer.pad_token_id,
                                                                         eval_every, run)):
        result = sftkit_train.train_lora(cfg, model, tokenizer, train_set, out, disable_tqdm=True)
    m = result.metrics
    run.tokens, run.peak_rss_mb = m["tokens"], m["peak_rss_mb"]
    # train_lora's own MFU counts the held-out scoring as training time; here both recipes are
    # measured against the same peak (measured at the start), over training time only.
    if peak_gflops:
        run.mfu = model_flops_utilisation(run.tokens_per_s, m["flops_per_token"], peak_gflops / 1000)
    del model, result
    release_memory()
    return run


def run_peer(cfg: RunConfig, train_set: Any, held_out: list[dict], eval_every: int, peak_gflops: float | None) -> Run:
    """TRL's SFTTrainer + peft LoraConfig as its documentation writes them (see the module docstring)."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_for(cfg)
    run = Run("peer (TRL + peft)")
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=cfg.train.max_steps,
            per_device_train_batch_size=cfg.train.per_device_train_batch_size,
            learning_rate=PEER_LEARNING_RATE,
            bf16=False,  # fp32 on a CPU, as for sftkit (TRL's default would turn bf16 autocast on)
            use_cpu=not torch.cuda.is_available(),
            seed=cfg.train.seed,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=2 * cfg.lora.r, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, processing_class=tokenizer,
                             peft_config=peft_config)
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        peft_model = trainer.model
        # TRL's "nll" loss scores every position (all tokens are labelled here): head everywhere.
        throughput = ThroughputCallback(
            counter, lambda c: training_flops_per_token(peft_model, 1.0, c.mean_context), hardware_name(),
            peak=peak_gflops / 1000 if peak_gflops else None)
        trainer.add_callback(throughput)  # resets the peak RSS at the start of training
        trainer.add_callback(HeldOutLoss(held_out, tokenizer.pad_token_id, eval_every, run))
        trainer.train()
        run.tokens = counter.real_tokens
        run.peak_rss_mb = round(peak_memory_mb()["peak_rss_mb"], 1)
        if throughput.peak:
            run.mfu = model_flops_utilisation(run.tokens_per_s, throughput.flops_per_token, throughput.peak)
        trainer = peft_model = None
    model = None
    release_memory()
    return run


def config_for(model_name: str, args: argparse.Namespace) -> RunConfig:
    """The cpu-demo preset (the smoke preset with --smoke) for `model_name`, `--steps` steps."""
    cfg = copy.deepcopy(get_preset("smoke" if args.smoke else "cpu-demo"))
    cfg.model.name = model_name
    cfg.data.curriculum = {}  # one shuffled set for both recipes (cpu-demo has no curriculum)
    cfg.train.max_steps = args.steps
    cfg.train.per_device_train_batch_size = args.batch_size
    cfg.train.gradient_accumulation_steps = 1  # one batch per optimizer step, as SFTConfig's default
    cfg.train.logging_steps = max(1, args.steps)
    cfg.train.cpu_amp = "off"
    return cfg


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "not reached" if value is None else format(value, spec)


def compare(model_name: str, args: argparse.Namespace, peak_gflops: float | None) -> list[tuple[Run, Run]]:
    cfg = config_for(model_name, args)
    train_set, eval_set = load_demo_data(cfg)
    train_set = train_set.select(range(min(len(train_set), args.steps * args.batch_size)))
    tokenizer = prepare_tokenizer(load_tokenizer(cfg.model.name), turn_format=cfg.model.turn_format)
    held_out_rows = eval_set.select(range(min(len(eval_set), args.held_out)))
    tokenized, _ = tokenize_dataset(held_out_rows, tokenizer, cfg.data.max_length)
    held_out = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized]
    pairs = []
    for repeat in range(args.repeats):
        peer = run_peer(cfg, train_set, held_out, args.eval_every, peak_gflops)
        ours = run_sftkit(cfg, train_set, held_out, args.eval_every, peak_gflops)
        pairs.append((peer, ours))
        print_table(model_name, repeat + 1, peer, ours)
    return pairs


def print_table(model_name: str, repeat: int, peer: Run, ours: Run) -> None:
    common = max(peer.final_loss, ours.final_loss)  # both reached it: it is the worse final loss
    print(f"\n{MODELS.get(model_name, model_name)} -- repeat {repeat}")
    print(f"{'':<34}{'peer (TRL + peft)':>20}{'sftkit':>14}")
    rows = [
        ("optimizer steps", f"{peer.steps}", f"{ours.steps}"),
        ("tokens/s (non-pad)", f"{peer.tokens_per_s:.1f}", f"{ours.tokens_per_s:.1f}"),
        ("s per step", f"{peer.train_s / max(peer.steps, 1):.2f}", f"{ours.train_s / max(ours.steps, 1):.2f}"),
        ("training s (scoring excluded)", f"{peer.train_s:.1f}", f"{ours.train_s:.1f}"),
        ("peak RSS (MB)", f"{peer.peak_rss_mb:.0f}", f"{ours.peak_rss_mb:.0f}"),
        ("MFU vs measured fp32 peak", fmt(peer.mfu, ".3f"), fmt(ours.mfu, ".3f")),
        ("held-out NLL before", f"{peer.curve[0][1]:.4f}", f"{ours.curve[0][1]:.4f}"),
        ("held-out NLL after", f"{peer.final_loss:.4f}", f"{ours.final_loss:.4f}"),
        (f"s to common NLL {common:.4f}", fmt(peer.time_to(common)), fmt(ours.time_to(common))),
        ("s to the other's final NLL", fmt(peer.time_to(ours.final_loss)), fmt(ours.time_to(peer.final_loss))),
    ]
    for name, a, b in rows:
        print(f"{name:<34}{a:>20}{b:>14}")
    print(f"{'held-out NLL curve (s, NLL)':<34} peer {peer.curve}")
    print(f"{'':<34} sftkit {ours.curve}")
    print(f"tokens/s speed-up: {ours.tokens_per_s / peer.tokens_per_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 10 steps x 4 trainings x 2 repeats: about 15-20 minutes on a quiet 2-core EPYC (estimated
    # from a loaded 4-step run and the demo's quiet 5.2 s per sftkit step; the peer's Gemma steps
    # are about 3x longer).
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per training (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step, both recipes (default 8)")
    parser.add_argument("--models", default=f"{MAIN_MODEL},smollm2-135m-instruct",
                        help="comma-separated; the first is the main job's (the last line's figures)")
    parser.add_argument("--repeats", type=int, default=2, help="run each comparison this many times in a row")
    parser.add_argument("--eval-every", type=int, default=2, help="score the held-out rows every k steps (default 2)")
    parser.add_argument("--held-out", type=int, default=16, help="held-out rows scored (default 16)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 steps, 1 repeat (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.steps, args.repeats, args.eval_every, args.held_out = "tiny-smollm2", 2, 1, 1, 4
        args.batch_size = 2
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")

    # The main job's shapes (Gemma 3 270M: width 640, MLP 2048); smoke: a few repeats of the same.
    peaks = cpu_matmul_peaks(repeats=2 if args.smoke else 5) if not torch.cuda.is_available() else None
    print(f"hardware: {hardware_name()}, torch threads {torch.get_num_threads()}; "
          "both recipes fp32, bf16 autocast off")
    if peaks:
        print(f"fp32 matmul peak: {peaks['fp32']['gflops']} GFLOP/s ({peaks['fp32']['method']})")
        if peaks["bf16"]:
            print(f"bf16 matmul peak (native {', '.join(peaks['native_bf16'])}; not used here): "
                  f"{peaks['bf16']['gflops']} GFLOP/s")
    rank = config_for(models[0], args).lora.r
    print(f"settings: {args.steps} optimizer steps x batch {args.batch_size}, LoRA r={rank} both; held-out NLL on "
          f"{args.held_out} rows every {args.eval_every} steps; {args.repeats} repeat(s); models {', '.join(models)}")
    print(f"peer: SFTTrainer + LoraConfig(target_modules='all-linear', alpha=2r), SFTConfig defaults (padding, "
          f"gradient checkpointing, loss on all tokens, max_length 1024) but bf16=False, lr {PEER_LEARNING_RATE}")
    print("sftkit: the preset's train_lora (assistant-only loss, head at labelled positions, its LoRA placement, "
          "turn-token rows, length grouping, its learning rate)")

    began = time.perf_counter()
    results = {}
    for name in models:
        results[name] = compare(name, args, peaks["fp32"]["gflops"] if peaks else None)

    main_pairs = results[models[0]]
    speedups = [ours.tokens_per_s / peer.tokens_per_s for peer, ours in main_pairs]
    mfus = [ours.mfu for _, ours in main_pairs if ours.mfu is not None]
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    print(f"{models[0]}: speed-up per repeat {[round(s, 2) for s in speedups]}, sftkit MFU per repeat {mfus}")
    print(f"speedup_vs_peer={statistics.mean(speedups):.2f} "
          f"mfu_cpu={(f'{statistics.mean(mfus):.3f}' if mfus else 'n/a')}")


if __name__ == "__main__":
    main()
