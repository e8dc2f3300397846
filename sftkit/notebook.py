"""What the chapters' first cells need: quiet libraries, runs kept on Google Drive, chapter 03's adapter found.

A fresh Colab runtime starts with an empty disk, so an adapter that chapter 03 saved in
``runs/<preset>/03_sft/adapter`` is gone by the time chapter 04 or 06 opens in a new session.
``DRIVE = True`` in a notebook's parameters cell keeps the runs on Google Drive instead
(`runs_on_drive`: mounts Drive, ``/content/drive/MyDrive/sftkit-runs/<preset>``), and
`find_adapter` looks for chapter 03's adapter in the run's folder and then on a mounted Drive.
Outside Colab both change nothing. Only the standard library is imported at the top, so the
parameters cell can import this module cheaply.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

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
