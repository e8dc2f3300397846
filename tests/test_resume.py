"""Checkpoints a disconnected session resumes from (`train.save_steps`, `train.resume`).

A Colab runtime can disconnect mid-run; the `t4` preset saves a checkpoint every 50 steps and
`--set train.resume=true` (or the notebooks' OVERRIDES) continues from the newest one through
TRL's trainer (`resume_from_checkpoint`), with the optimizer, scheduler and RNG states. That a
resumed run reproduces the uninterrupted one is tested once, in tests/test_train.py.
"""

from __future__ import annotations


from sftkit.config import apply_overrides, get_preset


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
