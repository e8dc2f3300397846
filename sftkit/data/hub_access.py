"""Hub access: open a Hub dataset (or a local folder laid out as one) and fail in one line when that is impossible.

Colab users read data from the Hugging Face Hub; CI and offline users cannot. Every Hub call in
`sftkit.data` goes through `_check_hub` (offline mode and reachability checked at call time, so
a dead network costs a second, not half a minute of retries) and `_HubErrors` (the Hub's long
tracebacks turned into one `DataSourceError` line that says what to use instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from .errors import DataSourceError

BUILTIN_SOURCE = "builtin-tasks"
OFFLINE_HINT = f'work offline with source="{BUILTIN_SOURCE}" or a local .json/.jsonl/.parquet path'


def _env_true(name: str) -> bool:
    # The same truthy spellings huggingface_hub accepts.
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _connection_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, TimeoutError, requests' errors
    try:
        import httpx  # huggingface_hub >= 1.0 talks to the Hub through httpx.

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _is_local_repository(name: str) -> bool:
    """A local folder laid out like a Hub dataset repository (read by the same `load_dataset` call)."""
    return Path(name).expanduser().is_dir()


def _check_hub(name: str, offline_hint: str) -> None:
    """Fail in one line, fast, when `name` is a Hub id and the Hub is out of reach."""
    from ..models import hub_reachable

    if _is_local_repository(name):
        return  # a local folder needs no network
    # Check offline mode ourselves, at call time: huggingface_hub reads HF_HUB_OFFLINE once
    # at import, so setting it later (in a notebook cell, or a test) would otherwise be
    # ignored and the call would retry a dead network for half a minute.
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(variable):
            raise DataSourceError(
                f"could not reach the Hugging Face Hub for {name!r}: offline mode is on ({variable}=1); {offline_hint}"
            )
    if not hub_reachable():
        raise DataSourceError(f"could not reach the Hugging Face Hub for {name!r}; {offline_hint}")


class _HubErrors:
    """Turn the Hub's errors into one-line `DataSourceError`s (a context manager)."""

    def __init__(self, name: str, offline_hint: str) -> None:
        self.name = name
        self.offline_hint = offline_hint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        from datasets.exceptions import DatasetNotFoundError

        if error is None:
            return False
        # Checked before OSError (it subclasses FileNotFoundError): the Hub answered, and
        # the answer was "no such dataset", which is a different fix from being offline.
        if isinstance(error, DatasetNotFoundError):
            raise DataSourceError(
                f"dataset {self.name!r} was not found on the Hugging Face Hub (check the name, or log in for a gated "
                f"dataset); {self.offline_hint}"
            ) from None
        if isinstance(error, _connection_errors()):
            # `from None`: the chained traceback from requests/urllib3 is pages long and says
            # nothing more than this line does.
            raise DataSourceError(
                f"could not reach the Hugging Face Hub for {self.name!r} ({type(error).__name__}); {self.offline_hint}"
            ) from None
        return False


def load_hub_dataset(name: str, split: str = "train", limit: int | None = None,
                     offline_hint: str = OFFLINE_HINT) -> datasets.Dataset:
    """A Hub dataset split (or one of a local folder laid out as a Hub dataset repository),
    failing in one line, fast, when the Hub is out of reach.

    This downloads the whole split; `stream_sample` draws a sample without doing so.
    `offline_hint` ends the error message: what to use instead offline.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    _check_hub(name, offline_hint)
    # Slicing the split ("train[:4000]") keeps the prepared dataset small. A split that is
    # already sliced is left alone; the row loop still stops at `limit`.
    if limit is not None and "[" not in split:
        split = f"{split}[:{limit}]"
    with _HubErrors(name, offline_hint):
        return datasets.load_dataset(name, split=split)


def dataset_split_names(name: str, offline_hint: str = OFFLINE_HINT) -> list[str]:
    """The splits of a Hub dataset (or of a local folder laid out as one), e.g. ``["train", "test"]``."""
    _check_hub(name, offline_hint)
    with _HubErrors(name, offline_hint):
        return list(datasets.get_dataset_split_names(name))
