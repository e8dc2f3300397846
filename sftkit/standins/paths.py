"""Where each stand-in goes: the Hub ids the `t4` preset names, laid out as folders under one root.

A stand-in folder is named like the Hub repository it replaces (``OUT/HuggingFaceTB/smol-smoltalk``),
so a run points at it by swapping the id for the path; `StandinPaths.overrides` lists the
``--set`` overrides that do so for every key of the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATASET_ID = "HuggingFaceTB/smol-smoltalk"
BASE_ID = "HuggingFaceTB/SmolLM2-360M"
INSTRUCT_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"
# The later chapters' Hub resources on the t4 preset (`sftkit.config`: data.preference_source,
# data.alpaca_source, data.classification_source, model.encoder_name, model.student_name).
PREFERENCE_ID = "trl-lib/ultrafeedback_binarized"
ALPACA_ID = "tatsu-lab/alpaca"
NEWS_ID = "fancyzhx/ag_news"
ENCODER_ID = "bert-base-uncased"
STUDENT_ID = "HuggingFaceTB/SmolLM2-135M"


@dataclass(frozen=True)
class StandinPaths:
    """Where `build_standins` writes each stand-in (the Hub id's layout under one folder)."""

    root: Path
    dataset: Path
    base_model: Path
    instruct_model: Path
    preferences: Path
    alpaca: Path
    news: Path
    encoder: Path
    student_model: Path

    def overrides(self) -> list[str]:
        """``--set`` overrides that point the `t4` preset (demo and notebooks 00-08) at these stand-ins."""
        return [
            f"data.source={self.dataset}",
            f"model.name={self.base_model}",
            f"model.reference_name={self.instruct_model}",
            f"data.preference_source={self.preferences}",
            f"data.alpaca_source={self.alpaca}",
            f"data.classification_source={self.news}",
            f"model.encoder_name={self.encoder}",
            f"model.student_name={self.student_model}",
        ]


def standin_paths(out: str | Path) -> StandinPaths:
    """The folders `build_standins(out)` writes."""
    root = Path(out).expanduser().resolve()
    return StandinPaths(root, root / DATASET_ID, root / BASE_ID, root / INSTRUCT_ID, root / PREFERENCE_ID,
                        root / ALPACA_ID, root / NEWS_ID, root / ENCODER_ID, root / STUDENT_ID)
