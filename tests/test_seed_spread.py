"""scripts/seed_spread.py's reading of an already trained run (no training: the committed demo run)."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
from repo_scripts import ROOT, load_script

from sftkit.config import apply_overrides, get_preset

COMMITTED = ROOT / "results" / "cpu-demo-base"


def test_a_reused_run_gives_the_scores_of_its_metrics_file():
    script = load_script("seed_spread")
    cfg = apply_overrides(get_preset("cpu-demo"), ["data.eval_split=test", "train.seed=0"])
    row = script._read_run(COMMITTED, cfg, ["train.seed=0"])
    metrics = json.loads((COMMITTED / "metrics.json").read_text())
    assert row["stop_rate"] == metrics["after"]["stop_rate"] and row["looped"] == metrics["after"]["looped"]
    assert row["train_s"] == metrics["train"]["wall_s"] and row["reused"] == str(COMMITTED)
    assert row["instruction_loose"] is None, "the demo scores the conversations alone"
    assert set(script.METRICS) <= set(row)


def test_a_run_of_another_configuration_is_refused(tmp_path):
    script = load_script("seed_spread")
    other = apply_overrides(get_preset("cpu-demo"), ["data.eval_split=test", "train.seed=1"])
    with pytest.raises(SystemExit, match="is not this run's configuration"):
        script._read_run(COMMITTED, other, ["train.seed=1"])
    copy = tmp_path / "run"
    shutil.copytree(COMMITTED, copy, ignore=shutil.ignore_patterns("adapter"))
    dev = apply_overrides(get_preset("cpu-demo"), ["data.eval_split=dev", "train.seed=0"])
    with pytest.raises(SystemExit, match="is not this run's configuration"):
        script._read_run(copy, dev, ["train.seed=0"])


def test_reuse_arguments_name_a_seed_of_the_spread():
    script = load_script("seed_spread")
    assert script._reused_runs(["0=results/x"], [0, 1, 2]) == {0: script.Path("results/x")}
    for bad, message in (("results/x", "expected SEED=RUN_DIR"), ("a=results/x", "expected SEED=RUN_DIR"),
                         ("5=results/x", "seed 5 is not among --seeds")):
        with pytest.raises(SystemExit, match=message):
            script._reused_runs([bad], [0, 1, 2])
    with pytest.raises(SystemExit):  # argparse's error: --reuse needs --conversations-only
        script.main(["--reuse", "0=results/x", "--seeds", "0"])


def test_the_seed_table_is_one_markdown_table_with_a_cell_per_column(tmp_path, monkeypatch):
    """main() with the training and evaluation replaced: the written seeds.md has as many cells per row as columns."""
    script = load_script("seed_spread")
    import sftkit.runs
    import sftkit.run_data

    before = {key: 0.0 for key in script.METRICS}
    (tmp_path / "before.json").write_text(json.dumps({"split": "dev", "before": before, "before_s": 1.0}))
    calls = itertools.count()

    class Result:
        def __init__(self):
            self.model = None
            self.metrics = {"wall_s": 1.0, "tokens_per_s": 2.0}

    import datasets

    eval_rows = datasets.Dataset.from_list([{"row": i} for i in range(8)])
    monkeypatch.setattr(sftkit.run_data, "load_run_data", lambda cfg: ([], eval_rows))
    monkeypatch.setattr(sftkit.runs, "load_for", lambda cfg: (object(), object()))
    monkeypatch.setattr(sftkit.runs, "train_and_record", lambda *a: Result())
    monkeypatch.setattr(script, "_scores", lambda ev: {key: float(next(calls)) for key in script.METRICS})
    import contextlib

    import sftkit.adapters
    import sftkit.evaluation
    monkeypatch.setattr(sftkit.adapters, "merged_adapter", lambda model: contextlib.nullcontext())
    monkeypatch.setattr(sftkit.evaluation, "evaluate_suite", lambda *a: type("S", (), {"reference": None})())
    script.main(["--seeds", "0", "1", "--before-from", str(tmp_path / "before.json"), "--out", str(tmp_path / "out"),
                 "--variant", "other:train.learning_rate=0.002", "--set", "eval.n_examples=4"])
    saved = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert saved["set"] == ["eval.n_examples=4"] and saved["preset"] == "cpu-demo", "what every run was trained with"
    table = [line for line in (tmp_path / "out" / "seeds.md").read_text().splitlines() if line.startswith("|")]
    assert table[0] == "| metric | before | seed 0 | seed 1 | mean | sd | other |"
    assert len(table) == 2 + len(script.METRICS) and all(line.count("|") == 8 for line in table)
    assert table[2] == "| stop_rate | 0.000 | 0.000 | 14.000 | 7.000 | 9.899 | 28.000 |"
