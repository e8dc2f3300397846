"""Checkpoints a disconnected session resumes from (`train.save_steps`, `train.resume`).

A Colab runtime can disconnect mid-run; the `t4` preset saves a checkpoint every 50 steps and
`--set train.resume=true` (or the notebooks' OVERRIDES) continues from the newest one through
TRL's trainer (`resume_from_checkpoint`), with the optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import pytest

from sftkit.config import apply_overrides, get_preset


@pytest.mark.slow
def test_a_run_resumes_from_its_last_checkpoint(make_tiny_model, tokenizer, tmp_path):
    from sftkit.tasks import make_task_splits
    from sftkit.train import last_checkpoint, train_lora

    cfg = apply_overrides(get_preset("smoke"), ["train.save_steps=2", "train.max_steps=4", "data.curriculum={}"])
    train_set, _ = make_task_splits(32, 4, seed=0)
    first = train_lora(cfg, make_tiny_model(), tokenizer, train_set, tmp_path)
    assert first.metrics["steps"] == 4
    assert last_checkpoint(tmp_path / "checkpoints").endswith("checkpoint-4")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    apply_overrides(cfg, ["train.resume=true", "train.max_steps=6"])
    resumed = train_lora(cfg, make_tiny_model(), tokenizer, train_set, tmp_path)
    logged = {entry["step"]: entry for entry in resumed.log_history if "loss" in entry}
    before = {entry["step"]: entry for entry in first.log_history if "loss" in entry}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    # Steps 1-4 come back from the checkpoint's trainer state, measured throughput included:
    # they were not trained again (a rerun would measure other tokens/s).
    assert all(logged[step] == before[step] for step in (1, 2, 3, 4))
    assert resumed.metrics["steps"] == 6


def test_resume_without_a_checkpoint_starts_afresh(tmp_path):
    from sftkit.train import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    assert last_checkpoint(tmp_path) is None


def test_t4_saves_checkpoints_and_env_overrides_parse(monkeypatch):
    from sftkit.config import env_overrides

    assert get_preset("t4").train.save_steps > 0
    monkeypatch.setenv("SFTKIT_SET", " train.max_steps=3 ; model.name=/x/y;;")
    assert env_overrides() == ["train.max_steps=3", "model.name=/x/y"]
    cfg = apply_overrides(get_preset("t4"), env_overrides())
    assert (cfg.train.max_steps, cfg.model.name) == (3, "/x/y")
    monkeypatch.delenv("SFTKIT_SET")
    assert env_overrides() == []
