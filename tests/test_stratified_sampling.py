"""Sampling a Hub dataset stratified by ``source`` (`sftkit.data.sample_conversations`,
``data.stratify_by_source``), on the stand-in of smol-smoltalk whose splits are sorted by source.

A plain streamed sample spans the sources, but their shares vary by chance (a cluster sample of
row groups); a stratified one gives each source its share of the split.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sftkit.config import apply_overrides, get_preset
from sftkit.data import DataSourceError, rows_per_source, sample_conversations, source_quotas, split_rows_per_source
from sftkit.run_data import load_run_data_with_report
from sftkit.standins import build_dataset_standin

N = 120


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_dataset_standin(tmp_path_factory.mktemp("smol-smoltalk"), train_rows=1000, test_rows=100)


@pytest.fixture(scope="module")
def split_counts(folder):
    """The train split's rows per source, counted with pyarrow (not with the code under test)."""
    values = pq.read_table(folder / "data" / "train-00000-of-00001.parquet", columns=["source"]).column("source")
    counts: dict[str, int] = {}
    for value in values.to_pylist():
        counts[value] = counts.get(value, 0) + 1
    return counts


def test_split_rows_per_source_reads_the_source_column(folder, split_counts):
    assert split_rows_per_source(str(folder), "train") == split_counts


def test_quotas_sum_to_n_and_round_each_share_down_or_up():
    counts = {"a": 350, "b": 250, "c": 250, "d": 100, "e": 50}
    for n in (1, 7, 13, 120, 1000):
        quotas = source_quotas(counts, n)
        assert sum(quotas.values()) == n
        for key, count in counts.items():
            assert abs(quotas[key] - n * count / 1000) < 1
    with pytest.raises(ValueError):
        source_quotas({}, 3)


def test_stratified_sample_gives_each_source_its_share_of_the_split(folder, split_counts):
    total = sum(split_counts.values())
    sample, report = sample_conversations(str(folder), N, "train", seed=3, buffer_size=200, stratify_by_source=True)
    assert len(sample) == N
    counts = rows_per_source(sample)
    assert set(counts) == set(split_counts)
    for source, count in split_counts.items():  # within one row of the exact share
        assert abs(counts[source] / N - count / total) <= 1 / N + 1e-9, (source, counts, split_counts)
    assert report["split_rows_per_source"] == split_counts
    assert sum(report["skipped_by_stratification"].values()) > 0  # quotas filled: later rows were passed over
    assert report["kept"] == N and report["rows_read"] == N + sum(report["dropped"].values())


@pytest.mark.slow  # about 20 s: two stratified samples, each reading the split's source column first
def test_run_data_stratifies_train_and_eval_when_asked(folder):
    cfg = apply_overrides(get_preset("t4"), [f"data.source={folder}", "data.train_size=100", "data.eval_size=20",
                                              "data.shuffle_buffer=200", "data.stratify_by_source=true"])
    _, _, report = load_run_data_with_report(cfg)
    assert report["train"]["rows"] == 100 and report["eval"]["split"] == "test"
    assert sum(report["eval"]["rows_per_source"].values()) == 20 and len(report["eval"]["rows_per_source"]) == 5


def test_stratifying_a_dataset_without_a_source_column_fails_clearly(tmp_path):
    import datasets

    folder = tmp_path / "no-source"
    (folder / "data").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(20)]
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(DataSourceError, match="no string 'source' column"):
        sample_conversations(str(folder), 5, "train", stratify_by_source=True)
