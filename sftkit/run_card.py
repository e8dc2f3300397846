"""The run card: what a training run was (config, versions) and what it measured, as `run.json` and `run.md`.

Numbers in the README and the notebooks are read from run cards, never typed in, so a
card holds everything needed to judge a run: the whole config, the package versions, the
hardware and precision (weights, autocast, loss scaler), throughput and MFU (with the peak it
is measured against: a GPU's data sheet, or on a CPU the matmul peak measured in the same run),
peak memory, the loss, the LoRA placement, the rows per curriculum stage and where the adapter is.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig
from .report import markdown_table

if TYPE_CHECKING:
    from .train import TrainResult


def package_versions() -> dict[str, str]:
    """Python's and the training stack's versions, "not installed" for a missing package."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _data_rows(data: dict | None) -> list[tuple[str, str]]:
    """Run-card rows saying where the train and eval rows came from, and their rows per source."""
    rows = []
    for name, label in (("train", "training rows"), ("eval", "evaluation rows")):
        part = (data or {}).get(name)
        if not part:
            continue
        split = f" from the {part['split']} split" if part.get("split") else ""
        per_source = ", ".join(f"{source}: {n:,}" for source, n in part.get("rows_per_source", {}).items())
        rows.append((label, f"{part['rows']:,}{split}" + (f"; per source: {per_source}" if per_source else "")))
    return rows


def _scaler_row(scaler: dict | None) -> str:
    """The run card's loss-scaler row: none, or its final scale and the steps it skipped."""
    if not scaler:
        return "none"
    return f"final scale {scaler['final_scale']:g}, skipped steps {scaler['skipped_steps']}"


def write_run_card(cfg: RunConfig, result: TrainResult, output_dir: str | Path) -> tuple[Path, Path]:
    """`run.json` (machine-readable) and `run.md` (for people) next to the run's outputs."""
    output_dir = Path(output_dir)
    card = {
        "config": cfg.to_dict(),
        "versions": package_versions(),
        "train": result.metrics,
        "tokenization": result.tokenize_report,
        "adapter_dir": str(result.adapter_dir),
    }
    json_path = output_dir / "run.json"
    json_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    m = result.metrics
    rows = [
        ("hardware", m["hardware"]),
        ("precision", m["precision"]),
        ("weights / trainable / autocast dtype",
         f"{m.get('weights_dtype', 'n/a')} / {m.get('trainable_dtype', 'n/a')} / {m.get('autocast_dtype') or 'none'}"),
        ("loss scaler", _scaler_row(m.get("loss_scaler"))),
        ("steps", m["steps"]),
        ("wall time (s)", m["wall_s"]),
        ("tokens/s (non-pad)", m["tokens_per_s"]),
        ("padding efficiency", m["padding_efficiency"]),
        ("MFU", m["mfu"] if m["mfu"] is not None else "n/a (no known peak)"),
        # What MFU was measured against: a GPU's data sheet, or this CPU's matmul peak in the same run.
        ("MFU against", m.get("mfu_peak") or "n/a"),
        ("model FLOPs per token", f"{m['flops_per_token']:,}" if m.get("flops_per_token") else "n/a"),
        ("peak memory (MB)", m.get("peak_gpu_mb", m["peak_rss_mb"])),
        ("final logged loss", m["final_loss"]),
        ("trainable / total parameters", f"{m['trainable_params']:,} / {m['total_params']:,}"),
        ("LoRA targets", ", ".join(m["lora_targets"])),
        ("LoRA blocks", m["lora_blocks"]),
        ("loss computed by", m["loss"]),
        ("rows per stage, in training order", ", ".join(f"stage {k}: {v:,}" for k, v in m["stages"].items())
         if m.get("stages") else "one shuffled set"),
        *_data_rows(m.get("data")),
        ("adapter", str(result.adapter_dir)),
    ]
    lines = [f"# Run card: {cfg.preset}", "", *markdown_table(("what", "value"), rows)]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()), ""]
    md_path = output_dir / "run.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
