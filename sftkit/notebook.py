"""What the chapters' first cells need: one `setup` call, runs kept on Google Drive, chapter 03's adapter found.

Every chapter opens the same way: quiet libraries, the preset with its overrides, torch seeded,
where its files go and the hardware named. `setup` does all of it and returns a `Chapter`, so
each notebook keeps only its install lines, a parameters cell of plain values and one call of
`setup` in the cell after it (where papermill's injected parameters have already arrived).

A fresh Colab runtime starts with an empty disk, so an adapter that chapter 03 saved in
``runs/<preset>/03_sft/adapter`` is gone by the time chapter 04 or 06 opens in a new session.
``DRIVE = True`` in a notebook's parameters cell keeps the runs on Google Drive instead
(`runs_on_drive`: mounts Drive, ``/content/drive/MyDrive/sftkit-runs/<preset>``), and
`find_adapter` looks for chapter 03's adapter in the run's folder and then on a mounted Drive.
Outside Colab both change nothing. Only the standard library is imported at the top, so the
setup cell can import this module cheaply.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where `runs_on_drive` keeps a preset's runs: <DRIVE_RUNS>/<preset>/ (03_sft/adapter, 04_eval, ...).
DRIVE_MOUNT = Path("/content/drive")
DRIVE_RUNS = DRIVE_MOUNT / "MyDrive" / "sftkit-runs"
SFT_ADAPTER = Path("03_sft") / "adapter"  # where chapter 03 saves its adapter inside a run's folder

logger = logging.getLogger(__name__)


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def quiet_libraries() -> None:
    """Hide the libraries' deprecation notices, tqdm's ipywidgets warning and transformers' loading bars.

    And show sftkit's own progress messages (the "sftkit" logger) as ``[sftkit] ...`` lines in the
    cell's output, as `sftkit demo` prints them; a handler set up before (by the notebook) stays.
    """
    show_sftkit_messages()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain bars
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars (Hub downloads still show)


def show_sftkit_messages() -> None:
    """Print the "sftkit" logger's records of level INFO and above as ``[sftkit] <message>`` lines on stdout.

    Only when the logger has no handler yet (other than the library's `logging.NullHandler`),
    so a notebook that set up logging its own way keeps it. `quiet_libraries` and the command
    line (`sftkit.cli.main`) both call it, so a notebook cell shows the lines `sftkit demo` prints.
    """
    log = logging.getLogger("sftkit")
    if any(not isinstance(handler, logging.NullHandler) for handler in log.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[sftkit] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def runs_on_drive(preset: str, output_dir: str, drive_runs: Path = DRIVE_RUNS) -> str:
    """The run folder on Google Drive (``<drive_runs>/<preset>``), mounting Drive in Colab; elsewhere `output_dir`.

    Outside Colab it changes nothing and says so in one line. In Colab it mounts Drive at
    /content/drive (Colab asks for permission once per runtime) and creates the folder.
    """
    if not in_colab():
        logger.warning(f"DRIVE = True applies only in Colab: runs stay in {output_dir}")
        return output_dir
    from google.colab import drive

    drive.mount(str(DRIVE_MOUNT))
    folder = Path(drive_runs) / preset
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def find_adapter(runs: str | Path, preset: str, drive_runs: Path = DRIVE_RUNS) -> Path | None:
    """Chapter 03's adapter folder, where chapter 03 put it, or None.

    Looks in the run's folder (``<runs>/03_sft/adapter``), then on Google Drive when it is
    mounted (``<drive_runs>/<preset>/03_sft/adapter``); a folder counts when it holds
    ``adapter_config.json`` (a save that was cut short does not).
    """
    for folder in (Path(runs) / SFT_ADAPTER, Path(drive_runs) / preset / SFT_ADAPTER):
        if (folder / "adapter_config.json").is_file():
            return folder
    return None


@dataclass(frozen=True)
class Chapter:
    """What a chapter's cells use: the preset it runs, its configuration and where its files go."""

    preset: str
    cfg: Any = field(repr=False)  # sftkit.config.RunConfig (imported lazily: see the module docstring)
    overrides: tuple[str, ...]
    hardware: str
    root: Path
    runs: Path  # shared artefacts of the preset's chapters: <root>/<cfg.output_dir> (03_sft/adapter, 04_eval ...)
    figures: Path  # committed figures (figures/), or runs/<preset>/figures for smoke and overridden runs

    @property
    def note(self) -> str:
        """The line printed under every figure: which preset, on what hardware."""
        return f"{self.preset} preset, {self.hardware}"


def setup(preset: str | None = None, overrides: Sequence[str] = (), drive: bool = False,
          root: str | Path | None = None) -> Chapter:
    """Set a chapter up: quiet libraries, the preset with its overrides, seeded torch, paths, one line each.

    ``preset`` None takes ``$SFTKIT_PRESET``, else ``t4`` on a GPU and ``cpu-demo`` on a CPU
    (`sftkit.config.default_preset_name`); ``overrides`` are ``key=value`` strings as ``sftkit demo
    --set`` takes them, and ``$SFTKIT_SET`` adds more (";"-separated: CI runs the t4 chapters on
    offline stand-ins so). ``drive`` keeps the runs on Google Drive in Colab (`runs_on_drive`; a
    no-op elsewhere). ``root`` is the repository root that relative output folders are under (None:
    the working directory). Smoke runs and overridden runs write their figures under the run's
    folder, so they never overwrite the committed figures. torch is seeded with ``train.seed``.
    """
    import torch

    from . import __version__, config
    from .models import hardware_name

    quiet_libraries()
    root = Path(root) if root is not None else Path.cwd()
    name = preset or config.default_preset_name()
    overrides = (*overrides, *config.env_overrides())
    cfg = config.apply_overrides(config.get_preset(name), list(overrides))
    if drive:  # output_dir becomes /content/drive/MyDrive/sftkit-runs/<preset>; outside Colab nothing changes
        cfg.output_dir = runs_on_drive(name, cfg.output_dir)
    runs = root / cfg.output_dir  # an absolute output_dir stays as it is
    figures = runs / "figures" if name == "smoke" or overrides else root / "figures"
    torch.manual_seed(cfg.train.seed)
    chapter = Chapter(preset=name, cfg=cfg, overrides=overrides, hardware=hardware_name(), root=root, runs=runs,
                      figures=figures)
    print(f"sftkit {__version__} from {Path(__file__).parent}; repository root: {root}")
    print(f"preset: {name}\nhardware: {chapter.hardware}\nmodel: {cfg.model.name}\nartefacts: {runs}\n"
          f"figures: {figures}\noverrides: {list(overrides) if overrides else 'none'}")
    return chapter
