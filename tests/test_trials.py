"""Tests for sftkit.chapters.trials: grid files, resumable trial runs on the tiny model, and the best-trial rule."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import sftkit.chapters.trials as trials
from sftkit.config import get_preset
from sftkit.lora import find_lora_targets, lora_parameter_count
from sftkit.tasks import make_task_splits
from sftkit.chapters.trials import TrialSpec, best_trial, expand_grid, load_grid, read_trials, run_context, run_trials


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


# --------------------------------------------------------------------------- grid files


def test_grid_expands_to_the_cartesian_product_with_deterministic_names(tmp_path):
    grid = {"base": {"dropout": 0.0}, "grid": {"r": [4, 16], "targets": ["attention", "mlp", "all-linear"]}}
    specs = load_grid(write_json(tmp_path / "grid.json", grid))
    assert [s.name for s in specs] == [
        "r4_attention", "r4_mlp", "r4_all-linear", "r16_attention", "r16_mlp", "r16_all-linear",
    ]
    assert [(s.r, s.targets) for s in specs] == [(r, t) for r in (4, 16) for t in ("attention", "mlp", "all-linear")]
    assert all(s.dropout == 0.0 and s.learning_rate is None for s in specs)
    assert [s.name for s in load_grid(tmp_path / "grid.json")] == [s.name for s in specs], "same file, same order"


def test_grid_names_for_learning_rates_lists_and_a_prefix():
    specs = expand_grid({"name": "smol"}, {"learning_rate": [1e-3, 2e-4], "targets": [["q_proj", "v_proj"]]})
    assert [s.name for s in specs] == ["smol_lr0.001_q_proj+v_proj", "smol_lr0.0002_q_proj+v_proj"]
    assert specs[0].learning_rate == 1e-3 and specs[0].targets == ["q_proj", "v_proj"]


def test_explicit_list_keeps_names_and_names_the_unnamed(tmp_path):
    specs = load_grid(write_json(tmp_path / "list.json", [{"name": "small", "r": 2}, {"r": 8, "targets": "mlp"}]))
    assert [s.name for s in specs] == ["small", "r8_mlp"]


@pytest.mark.parametrize(
    "content, message",
    [
        ([{"name": "a", "r": 4}, {"name": "a", "r": 8}], "two trials are named 'a'"),
        ([{"name": "a", "rank": 4}], r"trial 0: unknown setting\(s\) \['rank'\]"),
        ([{"name": "a", "r": 0}], "trial 'a': r must be a positive integer"),
        ([{"name": "a", "targets": "everything"}], "trial 'a': targets must be one of"),
        ({"grid": {"r": []}}, r"grid\['r'\] must be a non-empty list"),
        ({"grid": {"seed": [1, 2]}}, r"cannot vary \['seed'\]"),
        ({"base": {"r": 4}, "grid": {"r": [8]}}, "both 'base' and 'grid'"),
        ({"grid": {"dropout": [1.5]}}, "trial 'drop1.5': dropout must be in"),
    ],
)
def test_bad_grids_say_which_trial_and_why(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_grid(write_json(tmp_path / "bad.json", content))


def test_unset_settings_come_from_the_config_and_alpha_follows_r():
    cfg = get_preset("smoke")  # r=4, alpha=8, lr 1e-3
    assert TrialSpec("same").resolve(cfg) == {
        "r": 4, "alpha": 8, "dropout": 0.0, "targets": "all-linear", "blocks": None, "learning_rate": 1e-3,
    }
    assert TrialSpec("wide", r=16).resolve(cfg)["alpha"] == 32, "alpha / r is kept when only r changes"
    assert TrialSpec("wide", r=16, alpha=16).resolve(cfg)["alpha"] == 16, "an explicit alpha wins"
    applied = TrialSpec("t", r=16, targets="attention", learning_rate=5e-4).apply(cfg)
    assert (applied.lora.r, applied.lora.alpha, applied.lora.targets, applied.train.learning_rate) == (
        16, 32, "attention", 5e-4)
    assert (cfg.lora.r, cfg.train.learning_rate) == (4, 1e-3), "the original config is untouched"


# --------------------------------------------------------------------------- running and resuming


@pytest.fixture(scope="module")
def tiny_cfg():
    cfg = get_preset("smoke")
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, max_steps=1, per_device_train_batch_size=4),
        eval=dataclasses.replace(cfg.eval, max_new_tokens=2, batch_size=4),
    )


@pytest.fixture(scope="module")
def tiny_data():
    return make_task_splits(8, 4, seed=0)


def test_run_trials_writes_one_row_per_trial_and_resumes(tiny_cfg, tiny_data, make_tiny_model, tokenizer, tmp_path,
                                                         monkeypatch):
    calls = []
    real_train = trials.train_lora

    def counting_train(cfg, *args, **kwargs):
        calls.append((cfg.lora.r, cfg.lora.targets))
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(trials, "train_lora", counting_train)
    load = lambda: (make_tiny_model(), tokenizer)  # noqa: E731
    specs = [TrialSpec("r2_attention", r=2, targets="attention"), TrialSpec("r2_mlp", r=2, targets="mlp"),
             TrialSpec("r4_all", r=4, targets="all-linear", learning_rate=1e-2)]
    train, test = tiny_data

    first = run_trials(tiny_cfg, specs[:2], tmp_path, train, test, load, disable_tqdm=True)
    assert [row["name"] for row in first] == ["r2_attention", "r2_mlp"]
    assert len(calls) == 2
    written = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(written) == 2, "one line per finished trial"

    again = run_trials(tiny_cfg, specs, tmp_path, train, test, load, disable_tqdm=True)
    assert calls == [(2, "attention"), (2, "mlp"), (4, "all-linear")], "only the missing trial trains on re-run"
    assert [row["name"] for row in again] == [s.name for s in specs]
    assert again[:2] == first, "rows of finished trials are read back, not recomputed"
    rows = read_trials(tmp_path)
    assert [row["name"] for row in rows] == [s.name for s in specs]
    assert (tmp_path / "trials.jsonl").read_text().splitlines()[:2] == written, "earlier rows are never rewritten"

    model = make_tiny_model()
    for row, spec in zip(rows, specs):
        targets = find_lora_targets(model, spec.targets)
        assert row["lora_targets"] == targets
        # Plus the two turn-token rows of the tied embedding when the preset trains them.
        token_rows = 2 * model.config.hidden_size if tiny_cfg.lora.train_turn_tokens else 0
        assert row["trainable_params"] == lora_parameter_count(model, targets, spec.r) + token_rows, row
        assert row["config"] == spec.resolve(tiny_cfg)
        assert row["steps"] == 1 and row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 0, row
        for key in ("final_loss", "eval_nll", "eval_ppl", "wall_s"):
            assert math.isfinite(row[key]), (key, row)
        assert row["eval_ppl"] == pytest.approx(math.exp(row["eval_nll"]))
        assert 0.0 <= row["exact_match"] <= 1.0, "the built-in tasks have a task column: exact match is scored"
        for key in ("stop_rate", "loop_rate", "rouge_l"):  # the replies' behaviour, from generation
            assert 0.0 <= row[key] <= 1.0, (key, row)
    # Same seed, same data: the two r=2 trials differ only in what they adapt.
    assert rows[0]["trainable_params"] != rows[1]["trainable_params"]


def test_resume_refuses_a_name_whose_settings_changed(tiny_cfg, tiny_data, tmp_path):
    train, test = tiny_data
    row = {"name": "r2_attention", "config": TrialSpec("r2_attention", r=2, targets="attention").resolve(tiny_cfg),
           "context": run_context(tiny_cfg, train, test)}
    (tmp_path / "trials.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="trial 'r2_attention' is already in .* with settings"):
        run_trials(tiny_cfg, [TrialSpec("r2_attention", r=8, targets="attention")], tmp_path, train, test,
                   lambda: pytest.fail("no model should load"))


def test_resume_refuses_rows_from_other_data_or_budget(tiny_cfg, tiny_data, tmp_path):
    train, test = tiny_data
    spec = TrialSpec("r2_attention", r=2, targets="attention")
    row = {"name": spec.name, "config": spec.resolve(tiny_cfg), "context": run_context(tiny_cfg, train, test)}
    (tmp_path / "trials.jsonl").write_text(json.dumps(row) + "\n")
    never = lambda: pytest.fail("no model should load")  # noqa: E731
    # The same everything: skipped, the recorded row comes back.
    assert run_trials(tiny_cfg, [spec], tmp_path, train, test, never) == [row]
    other_train, _ = make_task_splits(8, 4, seed=1)
    with pytest.raises(ValueError, match="from a different run: train_digest was"):
        run_trials(tiny_cfg, [spec], tmp_path, other_train, test, never)
    longer = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_steps=5))
    with pytest.raises(ValueError, match="max_steps was 1, now 5"):
        run_trials(longer, [spec], tmp_path, train, test, never)
    # A row written before contexts were recorded cannot be checked, so it is not reused either.
    (tmp_path / "trials.jsonl").write_text(json.dumps({k: v for k, v in row.items() if k != "context"}) + "\n")
    with pytest.raises(ValueError, match="from a different run: batch was None"):
        run_trials(tiny_cfg, [spec], tmp_path, train, test, never)


def test_a_line_cut_off_mid_write_is_dropped_and_other_damage_is_reported(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"name": "a"}\n{"name": "b", "eval_')
    assert read_trials(tmp_path) == [{"name": "a"}]
    assert path.read_text() == '{"name": "a"}\n', "the partial line is removed so appends stay valid"
    path.write_text('{"name": "a"}\nnot json\n{"name": "c"}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        read_trials(tmp_path)


def test_blocks_limit_the_adapted_blocks_and_all_means_every_block(tiny_cfg, make_tiny_model, tokenizer):
    model = make_tiny_model()
    blocks = model.config.num_hidden_layers
    top = TrialSpec("top1", blocks=1).apply(tiny_cfg)
    every = TrialSpec("every", blocks="all").apply(tiny_cfg)
    assert top.lora.layers == 1 and every.lora.layers is None
    assert TrialSpec("preset").resolve(tiny_cfg)["blocks"] == tiny_cfg.lora.layers
    assert expand_grid({}, {"blocks": [1, "all"]})[1].name == "blocksall"
    from sftkit.train import run_lora_config

    adapted = [run_lora_config(cfg, model, tokenizer).layers_to_transform for cfg in (top, every)]
    assert adapted[0] == [blocks - 1] and adapted[1] is None
    for bad in (0, -1, "most", True, 1.5):
        with pytest.raises(ValueError, match="blocks must be a positive integer or 'all'"):
            TrialSpec("bad", blocks=bad)


def test_trials_table_shows_behaviour_and_exact_match_only_when_scored():
    config = {"r": 4, "alpha": 8, "targets": "mlp", "blocks": None, "learning_rate": 1e-3}
    base = {"name": "t", "config": config, "trainable_params": 10, "tokens_per_s": 1.0, "eval_nll": 2.0,
            "eval_ppl": 7.39, "stop_rate": 0.5, "loop_rate": 0.25, "rouge_l": 0.1, "wall_s": 3.0}
    table = trials.trials_table([{**base, "exact_match": None}])
    header, _, line = table.splitlines()
    assert "exact match" not in header and "stop rate" in header and "loop rate" in header
    assert "| all |" in line and "| 0.500 | 0.250 | 0.100 |" in line
    assert "exact match" in trials.trials_table([{**base, "exact_match": 0.75}])


# --------------------------------------------------------------------------- choosing


def row(name, nll, params, exact=None):
    return {"name": name, "eval_nll": nll, "trainable_params": params, "exact_match": exact}


def test_best_trial_is_the_lowest_nll_and_states_the_rule():
    rows = [row("a", 2.5, 100), row("b", 2.1, 400), row("c", 2.3, 50)]
    winner, sentence = best_trial(rows)
    assert winner["name"] == "b"
    assert sentence.startswith("Rule: lowest held-out assistant NLL; ties (exactly equal) go to fewer trainable")
    assert "'b'" in sentence and "next: 'c'" in sentence


def test_best_trial_ties_go_to_fewer_trainable_parameters():
    winner, sentence = best_trial([row("big", 2.0, 400), row("small", 2.0, 100), row("worse", 2.2, 10)])
    assert winner["name"] == "small" and "2 trials tied" in sentence
    # With a tolerance, "close enough" counts as a tie and the cheaper adapter wins.
    winner, sentence = best_trial([row("big", 2.00, 400), row("small", 2.01, 100)], tolerance=0.02)
    assert winner["name"] == "small" and "within 0.02 nats" in sentence
    winner, _ = best_trial([row("big", 2.00, 400), row("small", 2.01, 100)])
    assert winner["name"] == "big", "without a tolerance 0.01 nats is not a tie"


def test_best_trial_by_exact_match_and_unrankable_rows():
    rows = [row("a", 2.0, 10, 0.5), row("b", 2.4, 10, 0.75), row("c", 2.2, 10, 0.75),
            row("nan", float("nan"), 5, None)]
    winner, sentence = best_trial(rows, rule="exact_match")
    assert winner["name"] == "c", "tie on exact match goes to the lower NLL"
    assert "not ranked (no finite exact_match): nan" in sentence
    winner, sentence = best_trial(rows)
    assert winner["name"] == "a" and "not ranked" in sentence
    with pytest.raises(ValueError, match="unknown rule"):
        best_trial(rows, rule="vibes")


def behaved(name, nll, params, stop, loop):
    return {**row(name, nll, params), "stop_rate": stop, "loop_rate": loop}


def test_behaviour_gate_keeps_a_low_nll_that_does_not_stop_or_loops_from_winning():
    rows = [behaved("never_stops", 1.9, 10, 0.50, 0.0), behaved("loops", 1.95, 10, 1.0, 0.40),
            behaved("good", 2.0, 10, 0.95, 0.05)]
    assert best_trial(rows)[0]["name"] == "never_stops", "NLL alone picks the trial that does not stop"
    winner, sentence = best_trial(rows, behaviour_margin=0.1)
    assert winner["name"] == "good"
    assert "stop rate >= 0.900 (best 1.000 - 0.1)" in sentence
    assert "loop rate <= 0.100 (lowest 0.000 + 0.1)" in sentence
    assert "not eligible: never_stops, loops" in sentence
    # Rows without behaviour (not generated) pass the gate; a bad margin is refused.
    assert best_trial([row("a", 2.0, 1), row("b", 1.0, 1)], behaviour_margin=0.1)[0]["name"] == "b"
    with pytest.raises(ValueError, match="behaviour_margin must be >= 0"):
        best_trial(rows, behaviour_margin=-0.1)
