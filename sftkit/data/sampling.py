"""Sampling: a seeded, representative sample of a big Hub split, streamed instead of downloaded.

A big Hub split is often sorted (smol-smoltalk's rows come grouped by ``source``), so its first
N rows are one sub-dataset. `sample_conversations` streams the split in a seeded random order
(`stream_sample`: parquet row groups shuffled, then a shuffle buffer), keeps the ``source``
column so the sample's mix can be reported (`rows_per_source`), and can take each source's
share of the split (`split_rows_per_source`, `source_quotas`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import datasets

from ..config import DataConfig
from .converters import FORMATS, to_messages
from .errors import DataSourceError
from .hub_access import OFFLINE_HINT, _check_hub, _HubErrors
from .loading import _convert_rows, _detect_source_format
from .readers import _RawRow
from .validation import validate_conversation

# How many rows the streamed sample's shuffle buffer holds. The stream visits the split's
# parquet row groups in a seeded random order (`IterableDataset.reshard`), and the buffer mixes
# the rows of the groups it has read; a larger buffer mixes more groups at the cost of memory
# and download (rows read >= buffer + sample).
SAMPLE_BUFFER = DataConfig().shuffle_buffer


@contextlib.contextmanager
def no_shutdown_sleep() -> Iterator[None]:
    """Read streams inside this block without `datasets`' 5-second sleep when a stream closes.

    `datasets` sleeps ``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN`` (5 s) every time a
    streamed parquet iteration stops, to let Arrow's reader threads finish before the process
    could exit (apache/arrow#45214: a thread that outlives the interpreter aborts it). A sample
    stops its stream early, so every sample paid those 5 s (a 50-row sample of the smol-smoltalk
    stand-in: 5.9 s with the sleep, 0.9 s without). Here the setting is 0 while the block reads,
    and the stream's objects are collected before the block ends, which joins those threads while
    Arrow is alive (the fix reported in huggingface/datasets#7566); the setting is restored afterwards.
    """
    previous = datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    try:
        yield
    finally:
        gc.collect()
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = previous


def stream_sample(name: str, split: str, seed: int = 0, buffer_size: int = SAMPLE_BUFFER,
                  offline_hint: str = OFFLINE_HINT) -> datasets.IterableDataset:
    """A split of a Hub dataset (or a local folder laid out as one), streamed in a seeded random order.

    Nothing is downloaded up front: rows arrive as the result is iterated, so taking a few
    thousand rows of a big split reads about ``buffer_size`` + that many rows, not the split.
    The order is random at two levels: the split is cut into its parquet row groups
    (`IterableDataset.reshard`) whose order is shuffled, and a buffer of ``buffer_size`` rows,
    fed by up to ten row groups at a time (`IterableDataset.shuffle`), is shuffled as it
    streams. A split sorted by some column (smol-smoltalk's ``source``) therefore still gives
    a sample that spans it, as far as the row groups read do: a cluster sample of about
    (``buffer_size`` + rows taken) / rows-per-group groups.
    """
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
    _check_hub(name, offline_hint)
    with _HubErrors(name, offline_hint):
        stream = datasets.load_dataset(name, split=split, streaming=True)
        return stream.reshard().shuffle(seed=seed, buffer_size=buffer_size)


def rows_per_source(dataset: datasets.Dataset | Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows come from each ``source`` (most first); empty when there is no such column."""
    if isinstance(dataset, datasets.Dataset):
        values = list(dataset["source"]) if "source" in dataset.column_names else []
    else:
        values = [row["source"] for row in dataset if "source" in row]
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def split_rows_per_source(name: str, split: str, offline_hint: str = OFFLINE_HINT) -> dict[str, int]:
    """How many rows of a split come from each ``source``, reading that column only (parquet
    column projection: a streamed Hub split sends the ``source`` pages, not the conversations)."""
    _check_hub(name, offline_hint)
    counts: dict[str, int] = {}
    with _HubErrors(name, offline_hint), no_shutdown_sleep():
        stream = datasets.load_dataset(name, split=split, streaming=True, columns=["source"])
        for batch in stream.iter(batch_size=10_000):
            for value in batch["source"]:
                counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def source_quotas(counts: Mapping[str, int], n: int) -> dict[str, int]:
    """Rows per source for a sample of `n` in proportion to `counts` (largest remainder: the
    quotas sum to `n`, and each is the source's exact share rounded down or up)."""
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("no rows to take a share of")
    exact = {key: n * count / total for key, count in counts.items()}
    quotas = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (-(exact[key] - quotas[key]), key))
    for key in by_remainder[: n - sum(quotas.values())]:
        quotas[key] += 1
    return quotas


def _stratified(rows: Iterable[_RawRow], quotas: dict[str, int], fmt: str | None,
                skipped: dict[str, int]) -> Iterator[_RawRow]:
    """Pass rows of sources whose quota is not yet filled by valid rows; count the others in `skipped`.

    An invalid row is passed on (the converter drops it with its reason) without using the
    quota, so the kept rows fill every quota when the stream has enough valid ones.
    """
    filled = dict.fromkeys(quotas, 0)
    for number, value, error in rows:
        label = value.get("source") if isinstance(value, Mapping) else None
        if label in filled and filled[label] >= quotas[label]:
            skipped[label] = skipped.get(label, 0) + 1
            continue
        if label in filled and error is None:
            try:
                conversation = value if (fmt or "messages") == "messages" else to_messages(value, fmt)
                valid = validate_conversation(conversation) is None
            except ValueError:
                valid = False
            filled[label] += valid
        yield number, value, error


def sample_conversations(
    source: str,
    n: int,
    split: str = "train",
    seed: int = 0,
    buffer_size: int = SAMPLE_BUFFER,
    strict: bool = False,
    fmt: str | None = None,
    stratify_by_source: bool = False,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """A seeded, representative sample of `n` valid conversations from one split of a Hub dataset
    (or a local folder laid out as one), streamed (`stream_sample`) instead of downloaded whole.

    Rows are converted and validated as in `load_conversations`; a dropped row is counted by
    reason and replaced by the next row of the stream, so the sample has `n` rows unless the
    split runs out. A string ``source`` column (which sub-dataset a row comes from) is kept.
    Row numbers in the report are positions in the shuffled stream (the source's own row
    numbers are unknown there). The report adds ``split``, ``seed``, ``buffer_size`` and
    ``rows_per_source``.

    With `stratify_by_source`, each ``source`` gets its share of the split's rows
    (`split_rows_per_source`, `source_quotas`): rows of a source whose quota is filled are
    skipped (counted in the report's ``skipped_by_stratification``, not as dropped), so a rare
    source may need the stream read further, up to the whole split. The report then adds
    ``split_rows_per_source``.
    """
    source = os.fspath(source)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    stream = stream_sample(source, split, seed=seed, buffer_size=buffer_size)
    with _HubErrors(source, OFFLINE_HINT), no_shutdown_sleep():
        # The first n rows decide the format; rows beyond them are streamed (same seed, same
        # order) only when some were dropped and need replacing.
        rows = [(number, row, None) for number, row in enumerate(stream.take(n))]
        detected = fmt or _detect_source_format(rows)
        keep_source = any(isinstance(row, Mapping) and isinstance(row.get("source"), str) for _, row, _ in rows)
        more = ((number, row, None) for number, row in enumerate(stream.skip(n), start=n))
        stream_rows: Iterable[_RawRow] = _chain(rows, more)
        skipped: dict[str, int] = {}
        if stratify_by_source:
            if not keep_source:
                raise DataSourceError(f"{source!r} has no string 'source' column to stratify by")
            split_counts = split_rows_per_source(source, split)
            stream_rows = _stratified(stream_rows, source_quotas(split_counts, n), detected, skipped)
        dataset, report = _convert_rows(source, stream_rows, detected, strict, keep_source=keep_source, want=n)
        more.close()  # stop the stream here, inside no_shutdown_sleep, not whenever it is collected
    report.update(split=split, seed=seed, buffer_size=buffer_size, rows_per_source=rows_per_source(dataset))
    if stratify_by_source:
        report.update(split_rows_per_source=split_counts, skipped_by_stratification=skipped)
    return dataset, report


def _chain(*parts: Iterable[_RawRow]) -> Iterator[_RawRow]:
    for part in parts:
        yield from part
