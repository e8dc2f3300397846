"""Splitting a conversation dataset into train and test, seeded and optionally stratified by a column.

``Dataset.train_test_split(stratify_by_column=...)`` only accepts ClassLabel columns, and the
columns worth stratifying by here are usually strings or bools (a task name, "has a system
prompt"), so the split is computed with numpy: each value keeps its share of the test set to
within one row.
"""

from __future__ import annotations

import math
from typing import Any

import datasets
import numpy as np

from .converters import _short_repr


def _test_count(test_size: float | int, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size {test_size} is out of range: a fraction must be strictly between 0 and 1")
        count = round(test_size * n)
        if not 1 <= count <= n - 1:
            raise ValueError(
                f"test_size {test_size} of {n} rows gives {count} test rows; both splits need at least one row"
            )
        return count
    if not 1 <= test_size <= n - 1:
        raise ValueError(
            f"test_size {test_size} is out of range: a row count must be between 1 and {n - 1} for {n} rows"
        )
    return test_size


def _stratified_test_indices(values: list[Any], n_test: int, rng: np.random.Generator) -> np.ndarray:
    groups: dict[Any, list[int]] = {}
    for index, value in enumerate(values):
        try:
            groups.setdefault(value, []).append(index)
        except TypeError:
            raise ValueError(f"cannot stratify: row {index} has an unhashable value {_short_repr(value)}") from None
    n = len(values)
    # Largest-remainder rounding: each group gets floor(exact share) and the rows still
    # missing go to the groups with the largest fractional parts. Every group is then within
    # one row of its exact share, and the test set has exactly n_test rows.
    exact = {key: len(members) * n_test / n for key, members in groups.items()}
    counts = {key: math.floor(share) for key, share in exact.items()}
    missing = n_test - sum(counts.values())
    # Ties broken by first appearance (dict order), which keeps the split deterministic.
    by_remainder = sorted(groups, key=lambda key: -(exact[key] - counts[key]))
    for key in by_remainder[:missing]:
        counts[key] += 1
    chosen = [rng.permutation(np.asarray(members))[: counts[key]] for key, members in groups.items()]
    return np.concatenate(chosen) if chosen else np.array([], dtype=int)


def split_dataset(
    dataset: datasets.Dataset,
    test_size: float | int,
    seed: int = 0,
    stratify_by: str | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split into (train, test), deterministic for a given ``seed``.

    ``test_size`` is a fraction in (0, 1) or a row count. With ``stratify_by`` naming a
    column, each value keeps its share in the test set (within one row). This is done here
    with numpy rather than ``Dataset.train_test_split(stratify_by_column=...)`` because the
    latter only accepts ClassLabel columns, and ours are usually strings or bools (a task
    name, "has a system prompt"). Both splits come back in shuffled order.
    """
    n = len(dataset)
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify_by is None:
        order = rng.permutation(n)
        test_indices, train_indices = order[:n_test], order[n_test:]
    else:
        if stratify_by not in dataset.column_names:
            raise ValueError(f"cannot stratify by {stratify_by!r}: columns are {dataset.column_names}")
        # list(): datasets 5 returns a lazy Column object for dataset[name].
        test_indices = _stratified_test_indices(list(dataset[stratify_by]), n_test, rng)
        in_test = np.zeros(n, dtype=bool)
        in_test[test_indices] = True
        # Shuffle both: concatenated groups would otherwise leave the rows sorted by label.
        train_indices = rng.permutation(np.flatnonzero(~in_test))
        test_indices = rng.permutation(test_indices)
    return dataset.select(train_indices.tolist()), dataset.select(test_indices.tolist())
