"""The one function that gives a run its training and held-out conversations.

Every entry point (the demo, `sftkit train`/`eval`, the trials, the notebooks, the
benchmarks) asks `load_run_data` for its data, so a source is split the same way
wherever it is used. It lives in the data layer: it reads a `RunConfig` and knows the data
sources, nothing above them.

Sources (``DataConfig.source``):

- ``offline-conversations``: the conversational set shipped with the package
  (`sftkit.offline_conversations`: conversations written for the project, instruction rows
  checked by IFEval's checker and verifiable task rows; dev/test about subjects training never
  sees), the CPU main job's data;
- ``builtin-tasks``: the built-in verifiable tasks (`sftkit.tasks`);
- a local json/jsonl/parquet file (`sftkit.data.load_conversations`, split by seed);
- a Hub id, or a local folder laid out as a Hub dataset repository (`sftkit.standins` writes
  one): a seeded sample streamed from its ``train`` split (`sftkit.data.sample_conversations`),
  evaluated on a sample of its own ``test`` split when it has one (else on a seeded split of
  the train sample); rows per ``source`` are reported (`load_run_data_with_report`).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from .config import RunConfig

OFFLINE_CONVERSATIONS = "offline-conversations"


def load_run_data(cfg: RunConfig) -> tuple[Any, Any]:
    """Train and held-out `messages` datasets for a run config."""
    train, held_out, _ = load_run_data_with_report(cfg)
    return train, held_out


def load_run_data_with_report(cfg: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Train and held-out datasets, and a report of where they came from.

    The report has, for each of ``train`` and ``eval``: ``split`` (the source's split the
    rows were drawn from), ``rows`` and ``rows_per_source`` (empty when the source has no
    ``source`` column), plus the loader's drop report where there is one.
    """
    from .data import rows_per_source

    train, held_out, loaded = _load(cfg)
    report: dict[str, Any] = {"source": cfg.data.source}
    for name, data in (("train", train), ("eval", held_out)):
        entry = {"split": loaded.get(name, {}).get("split"), "rows": len(data),
                 "rows_per_source": rows_per_source(data)}
        for key in ("rows_read", "kept", "dropped"):
            if key in loaded.get(name, {}):
                entry[key] = loaded[name][key]
        report[name] = entry
    return train, held_out, report


def _load(cfg: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    d = cfg.data
    if d.kind_rows and d.source != OFFLINE_CONVERSATIONS:
        raise ValueError(f"data.kind_rows names kinds of the offline conversations; source {d.source!r} has none "
                         "(set data.kind_rows={})")
    if d.source == OFFLINE_CONVERSATIONS:
        from .offline_conversations import offline_conversation_splits

        if d.curriculum:
            raise ValueError("data.curriculum names built-in tasks; the offline conversations have no stages")
        train, held_out = offline_conversation_splits(d.train_size, d.eval_size, eval_split=d.eval_split, seed=d.seed,
                                                      kind_rows=d.kind_rows)
        return train, held_out, {"train": {"split": "train"}, "eval": {"split": d.eval_split}}
    if d.source == "builtin-tasks":
        from .tasks import make_task_splits

        train, held_out = make_task_splits(d.train_size, d.eval_size, seed=d.seed, eval_split=d.eval_split,
                                           curriculum=d.curriculum)
        return train, held_out, {"train": {"split": "train"}, "eval": {"split": d.eval_split}}
    if d.curriculum:
        raise ValueError(f"data.curriculum names built-in tasks; source {d.source!r} has none "
                         "(set curriculum to {} or order your own data)")
    from .data import LOCAL_SUFFIXES, format_report, load_conversations, split_dataset

    if Path(d.source).suffix.lower() in LOCAL_SUFFIXES:  # one local file: its first rows, split by seed
        data, report = load_conversations(d.source, limit=d.train_size + d.eval_size)
        print(format_report(report))
        train, held_out = split_dataset(data, d.eval_size, seed=d.seed)
        return train, held_out, {"train": {**report, "split": "train"}, "eval": {**report, "split": "train"}}
    # A Hub id or a folder laid out as one: a streamed, seeded sample (not the first rows).
    train, held_out, reports = _sample_splits(d.source, d.train_size, d.eval_size, d.seed, d.shuffle_buffer,
                                              d.stratify_by_source)
    for report in reports.values():
        print(format_report(report))
    return train, held_out, copy.deepcopy(reports)


@functools.lru_cache(maxsize=4)
def _sample_splits(source: str, train_size: int, eval_size: int, seed: int, shuffle_buffer: int,
                   stratify_by_source: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """The streamed sample of a Hub dataset, drawn once per process for the same settings.

    Chapter 04 asks for the held-out rows once per model; streaming the Hub again each time
    would read the same rows over the network again (datasets are immutable, so sharing is safe;
    a local folder rewritten during the session is not read again).
    """
    from .data import dataset_split_names, sample_conversations, split_dataset

    if "test" in dataset_split_names(source):
        train, train_report = sample_conversations(source, train_size, "train", seed=seed,
                                                   buffer_size=shuffle_buffer,
                                                   stratify_by_source=stratify_by_source)
        held_out, eval_report = sample_conversations(source, eval_size, "test", seed=seed,
                                                     buffer_size=shuffle_buffer,
                                                     stratify_by_source=stratify_by_source)
    else:  # no held-out split of its own: a seeded split of one train sample
        data, train_report = sample_conversations(source, train_size + eval_size, "train", seed=seed,
                                                  buffer_size=shuffle_buffer,
                                                  stratify_by_source=stratify_by_source)
        train, held_out = split_dataset(data, eval_size, seed=seed)
        eval_report = {**train_report, "split": "train (held out by seed)"}
    return train, held_out, {"train": train_report, "eval": eval_report}
