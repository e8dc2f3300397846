"""A representative sample of a big Hub dataset (`sftkit.data.sample_conversations`, `sftkit.run_data`).

Exercised on the Hub-shaped stand-in of smol-smoltalk (`sftkit.standins`), whose splits are
sorted by ``source``: its first rows are one sub-dataset, so only a drawn sample spans them.
A local folder laid out as a Hub dataset repository goes through the same streaming
`load_dataset` call as a Hub id.
"""

from __future__ import annotations

import json
import shutil

import datasets
import pytest

from sftkit.config import apply_overrides, get_preset
from sftkit.data import DataSourceError, load_conversations, rows_per_source, sample_conversations, stream_sample
from sftkit.run_data import load_run_data_with_report
from sftkit.standins import KIND_WEIGHTS, build_dataset_standin


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_dataset_standin(tmp_path_factory.mktemp("smol-smoltalk"), train_rows=1000, test_rows=100)


@pytest.fixture(scope="module")
def run_data(folder):
    cfg = apply_overrides(get_preset("t4"), [f"data.source={folder}", "data.train_size=150", "data.eval_size=40",
                                              "data.shuffle_buffer=500"])
    return load_run_data_with_report(cfg)


def _texts(data) -> set[str]:
    return {json.dumps(m, sort_keys=True) for m in data["messages"]}


def test_first_rows_are_one_source_but_the_sample_spans_them(folder, run_data):
    first, _ = load_conversations(str(folder), limit=150)
    full = datasets.load_dataset(str(folder), split="train")
    assert len(set(full.select(range(150))["source"])) == 1  # sorted: the first rows are one source
    assert len(first) == 150
    train, _, report = run_data
    assert report["train"]["split"] == "train" and report["train"]["rows"] == len(train) == 150
    counts = report["train"]["rows_per_source"]
    # The stream mixes the rows of the row groups it has read (buffer 500 of 1,000 rows: about
    # half of them), so a source as small as 5% of the split may be missed; four of five are not.
    assert set(counts) <= set(KIND_WEIGHTS) and len(counts) >= 4
    assert counts == rows_per_source(train) and sum(counts.values()) == 150
    # No source takes more than twice its share of the split (the largest share is 35%).
    assert max(counts[s] / 150 - KIND_WEIGHTS[s] for s in counts) < 0.2


def test_eval_rows_come_from_the_test_split_and_are_disjoint_from_train(folder, run_data):
    train, held_out, report = run_data
    assert report["eval"]["split"] == "test" and len(held_out) == 40
    assert held_out.column_names == ["messages", "source"]
    test_split = _texts(datasets.load_dataset(str(folder), split="test"))
    assert _texts(held_out) <= test_split
    assert not _texts(held_out) & _texts(train)


def test_sample_is_seeded(folder):
    a, _ = sample_conversations(str(folder), 30, "train", seed=3, buffer_size=300)
    b, _ = sample_conversations(str(folder), 30, "train", seed=3, buffer_size=300)
    c, _ = sample_conversations(str(folder), 30, "train", seed=4, buffer_size=300)
    assert list(a["messages"]) == list(b["messages"])
    assert list(a["messages"]) != list(c["messages"])


def test_without_a_test_split_eval_is_a_seeded_hold_out_of_the_train_sample(folder, tmp_path):
    only_train = tmp_path / "only-train"
    (only_train / "data").mkdir(parents=True)
    shutil.copy(folder / "data" / "train-00000-of-00001.parquet", only_train / "data")
    cfg = apply_overrides(get_preset("t4"), [f"data.source={only_train}", "data.train_size=40", "data.eval_size=10",
                                              "data.shuffle_buffer=300"])
    train, held_out, report = load_run_data_with_report(cfg)
    assert (len(train), len(held_out)) == (40, 10)
    assert report["eval"]["split"] == "train (held out by seed)"
    assert len(set(report["train"]["rows_per_source"])) >= 3


def test_bad_rows_are_counted_and_replaced(tmp_path):
    rows = [{"messages": [{"content": f"q{i}", "role": "user"},
                          {"content": f"a{i}" if i % 4 else "", "role": "assistant"}],
             "source": "s" + str(i % 2)} for i in range(40)]
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    sample, report = sample_conversations(str(tmp_path), 20, "train", seed=0, buffer_size=40)
    assert len(sample) == 20  # dropped rows are replaced from the stream ...
    assert report["dropped"].get("empty assistant reply", 0) >= 1  # ... and counted by reason
    assert report["rows_read"] == report["kept"] + sum(report["dropped"].values())
    assert all(m[1]["content"] for m in sample["messages"])
    assert set(report["rows_per_source"]) == {"s0", "s1"}


def test_a_hub_id_offline_fails_in_one_line_without_streaming(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be called"))
    with pytest.raises(DataSourceError, match="offline mode is on") as caught:
        sample_conversations("HuggingFaceTB/smol-smoltalk", 10)
    assert "\n" not in str(caught.value)


def test_run_card_names_the_splits_and_rows_per_source(run_data):
    from sftkit.run_card import _data_rows

    _, _, report = run_data
    rows = dict(_data_rows(report))
    assert rows["evaluation rows"].startswith("40 from the test split; per source: ")
    assert rows["training rows"].startswith("150 from the train split; per source: standin-")


def test_the_sample_is_streamed_once_per_process(folder, monkeypatch):
    """Chapter 04 asks for the held-out rows once per model: the Hub is streamed once, not each time."""
    import sftkit.data

    calls = []
    real = sftkit.data.sample_conversations

    def counting(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("split"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sftkit.data, "sample_conversations", counting)
    cfg = apply_overrides(get_preset("t4"), [f"data.source={folder}", "data.train_size=20", "data.eval_size=5",
                                              "data.shuffle_buffer=300"])
    first = load_run_data_with_report(cfg)
    second = load_run_data_with_report(cfg)
    assert calls == ["train", "test"]
    assert list(second[1]["messages"]) == list(first[1]["messages"])
    second[2]["train"]["rows"] = -1  # a caller's edit of its report does not reach the next caller
    assert load_run_data_with_report(cfg)[2]["train"]["rows"] == 20


def test_a_sample_does_not_pay_the_thread_shutdown_sleep(folder, monkeypatch):
    """`datasets` sleeps SLEEP_TIME_ON_THREADS_SHUTDOWN seconds whenever a streamed parquet read stops;
    a sample stops its stream early, so every sample paid 5 s until `no_shutdown_sleep` set it to 0."""
    import datasets.iterable_dataset

    slept = []
    monkeypatch.setattr(datasets.iterable_dataset.time, "sleep", slept.append)
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 5)
    stream = stream_sample(str(folder), "train", seed=1, buffer_size=100)
    assert len(list(stream.take(3))) == 3 and slept == [5]  # the library's behaviour this guards against
    slept.clear()
    data, report = sample_conversations(str(folder), 12, seed=1, buffer_size=100, stratify_by_source=True)
    assert len(data) == 12 and report["split_rows_per_source"]
    assert slept and set(slept) == {0}, slept  # each stop still calls sleep, for 0 seconds
    assert datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN == 5  # restored for the caller's own streams
