"""The `sftkit` command end to end with the smoke preset: demo, train, eval."""

from __future__ import annotations

import json
import math

import pytest

from sftkit.chat import IM_END
from sftkit.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def test_demo_writes_metrics_report_and_figures(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    for side in ("before", "after"):
        for key in ("exact_match", "stop_rate", "assistant_ppl", "per_task"):
            assert key in metrics[side], f"{side} lacks {key}"
        assert set(metrics[side]["per_task"]) == {"reverse", "vowels", "add", "upper", "json", "recall"}
    for key in ("tokens_per_s", "padding_efficiency", "wall_s", "peak_rss_mb", "hardware"):
        assert key in metrics["train"], f"train lacks {key}"
    assert metrics["train"]["tokens_per_s"] > 0
    assert 0 < metrics["train"]["padding_efficiency"] <= 1
    for key, paired in metrics["paired_differences"].items():  # each interval contains its point estimate
        assert paired["low"] <= paired["diff"] <= paired["high"], (key, paired)
    report = (demo_dir / "report.md").read_text()
    assert "Before vs after" in report and "Side by side" in report
    for name in ("loss.png", "before_after.png", "behaviour.png"):
        assert (demo_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = [json.loads(line) for line in (demo_dir / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["before"]["n"] and {"before", "after", "reference", "task"} <= set(rows[0])
    assert (demo_dir / "config.json").is_file() and (demo_dir / "run.md").is_file()


def _distinct(texts, n):
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _repeated_4grams(text):
    words = text.split()
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def test_demo_metrics_are_what_its_own_generations_give(demo_dir):
    """metrics.json against generations.jsonl: every generation metric recomputed here from the texts and flags."""
    from rouge_score import rouge_scorer

    metrics = json.loads((demo_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (demo_dir / "generations.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    for side in ("before", "after"):
        m, texts, refs = metrics[side], [r[side] for r in rows], [r["reference"] for r in rows]
        assert m["n"] == len(rows) == 12
        assert m["stop_rate"] == m["stopped"] == pytest.approx(mean([r[f"{side}_stopped"] for r in rows]))
        assert m["invented_turn_rate"] == pytest.approx(mean([r[f"{side}_invented_turn"] for r in rows]))
        checked = [r for r in rows if f"{side}_correct" in r]
        assert m["exact_match"] == pytest.approx(mean([r[f"{side}_correct"] for r in checked]))
        assert m["per_task"] == pytest.approx({t: mean([r[f"{side}_correct"] for r in checked if r["task"] == t])
                                               for t in {r["task"] for r in checked}})
        assert m["distinct_1"] == pytest.approx(_distinct(texts, 1))
        assert m["distinct_2"] == pytest.approx(_distinct(texts, 2))
        assert m["repeated_4gram_rate"] == pytest.approx(mean([_repeated_4grams(t) for t in texts]))
        words = sum(len(t.split()) for t in texts)
        assert m["length_ratio"] == pytest.approx(words / sum(len(r.split()) for r in refs))
        assert m["rouge_l"] == pytest.approx(mean([scorer.score(r, t)["rougeL"].fmeasure
                                                   for t, r in zip(texts, refs)]))
        assert m["assistant_ppl"] == pytest.approx(math.exp(m["assistant_token_nll"]), rel=1e-9)
        for key, ci in m["intervals"].items():
            assert ci["mean"] == pytest.approx(m[key]) and ci["low"] <= ci["mean"] <= ci["high"], (side, key, ci)
    for key, paired in metrics["paired_differences"].items():
        assert paired["before"] == pytest.approx(metrics["before"][key]), key
        assert paired["after"] == pytest.approx(metrics["after"][key]), key
        assert paired["diff"] == pytest.approx(paired["after"] - paired["before"], abs=1e-12), key
    # The smoke model's texts are not all alike, or the checks above would prove little.
    assert 0 < metrics["after"]["distinct_1"] < 1 and 0 < metrics["after"]["repeated_4gram_rate"] < 1
    train = metrics["train"]
    assert train["padding_efficiency"] == round(train["tokens"] / train["padded_tokens"], 4)
    assert train["tokens_per_s"] == pytest.approx(train["tokens"] / train["wall_s"], rel=0.01)


def test_adapter_loads_offline_with_auto_peft(demo_dir):
    from peft import AutoPeftModelForCausalLM

    config = json.loads((demo_dir / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((demo_dir / "base_model").resolve())
    model = AutoPeftModelForCausalLM.from_pretrained(str(demo_dir / "adapter"))
    assert model.peft_config["default"].r == 4


def test_train_command_writes_run_card(tmp_path):
    out = tmp_path / "train"
    assert main(["train", "--preset", "smoke", "--out", str(out)]) == 0
    card = json.loads((out / "run.json").read_text())
    for key in ("wall_s", "tokens_per_s", "peak_rss_mb", "final_loss", "hardware", "adapter_check"):
        assert key in card["train"], key
    assert card["versions"]["trl"] and card["config"]["preset"] == "smoke"
    assert "tokens/s" in (out / "run.md").read_text()


def test_eval_command_compares_base_and_adapter(demo_dir, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--preset", "smoke", "--models", f"base,{demo_dir / 'adapter'}", "--out", str(out)]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert set(results["models"]) == {"base", str(demo_dir / "adapter")}
    differences = results["differences_vs_base"][str(demo_dir / "adapter")]
    assert {"exact_match", "instruction_strict", "refused_harmful"} <= set(differences)
    report = (out / "eval.md").read_text()
    assert "instruction following" in report
    for part in ("task", "instruction", "harmful", "harmless"):
        assert f"**{part}:**" in report, f"no side-by-side example for the {part} part"
    assert (out / "eval_metrics.png").is_file()


def test_demo_eval_split_reaches_the_run_and_its_config(monkeypatch, tmp_path):
    """`--eval-split dev` evaluates on the dev pools, and the saved config says so."""
    import sftkit.demo as demo
    from sftkit.tasks import make_task_examples

    seen = {}

    class StopHere(Exception):
        """Raised once the data is chosen: only that choice is under test, not the model work."""

    def stop_after_data(cfg, **kwargs):
        _, held_out = real_load(cfg)
        seen["prompts"] = [row["messages"] for row in held_out]
        raise StopHere

    real_load = demo.load_demo_data
    monkeypatch.setattr(demo, "load_demo_data", stop_after_data)
    monkeypatch.setattr(demo, "load_for", lambda cfg: (None, None))
    with pytest.raises(StopHere):
        main(["demo", "--preset", "smoke", "--out", str(tmp_path), "--eval-split", "dev"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data"]["eval_split"] == "dev"
    assert seen["prompts"] == [e["messages"] for e in make_task_examples(config["data"]["eval_size"], "dev", seed=0)]


def test_demo_progress_lines_read_as_before(monkeypatch, tmp_path, capsys):
    """The library logs its progress; the command shows it as the "[sftkit] ..." lines it always printed."""
    import sftkit.demo as demo
    from sftkit.models import hardware_name

    class StopHere(Exception):
        """Raised once the first progress line is out."""

    def stop(cfg):
        raise StopHere

    monkeypatch.setattr(demo, "load_for", stop)
    with pytest.raises(StopHere):
        main(["demo", "--preset", "smoke", "--out", str(tmp_path)])
    assert capsys.readouterr().out == f"[sftkit] preset smoke on {hardware_name()} -> {tmp_path}\n"


def test_a_curriculum_needs_the_built_in_tasks(tmp_path):
    from sftkit.config import get_preset
    from sftkit.demo import load_demo_data

    cfg = get_preset("smoke")  # its curriculum trains sums first
    cfg.data.source = str(tmp_path / "my_conversations.jsonl")
    with pytest.raises(ValueError, match="curriculum names built-in tasks"):
        load_demo_data(cfg)


def test_demo_metrics_name_the_model_and_count_invented_turns(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert metrics["model"] == "tiny-smollm2"
    for side in ("before", "after"):
        assert 0 <= metrics[side]["stop_rate"] <= 1 and 0 <= metrics[side]["invented_turn_rate"] <= 1, metrics[side]
    assert "invented_turn" in metrics["paired_differences"]


def test_adapter_folder_loads_in_a_fresh_process_with_its_own_tokenizer(demo_dir):
    # What a user does with the demo's output: AutoPeftModelForCausalLM and AutoTokenizer on
    # the adapter folder alone, in a new interpreter; the saved template is the training one.
    import subprocess
    import sys

    code = (
        "import sys, json; from peft import AutoPeftModelForCausalLM; from transformers import AutoTokenizer\n"
        "folder = sys.argv[1]\n"
        "tok = AutoTokenizer.from_pretrained(folder); model = AutoPeftModelForCausalLM.from_pretrained(folder)\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True,"
        " return_dict=True, return_tensors='pt')['input_ids']\n"
        "out = model.generate(ids, max_new_tokens=3, do_sample=False)\n"
        "print(json.dumps({'eos': tok.eos_token, 'pad': tok.pad_token, 'template': tok.chat_template,"
        " 'new': out.shape[1] - ids.shape[1]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(demo_dir / "adapter")], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    from sftkit.chat import training_template

    assert seen["eos"] == IM_END and seen["pad"] != seen["eos"]
    assert seen["template"] == training_template(), "the adapter's template is not the one training used"
    assert 1 <= seen["new"] <= 3


def test_set_overrides_reach_the_run_and_unknown_keys_fail_in_one_line(tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["train", "--preset", "smoke", "--out", str(out), "--set", "train.max_steps=2",
                 "--set", "lora.r=2"]) == 0
    card = json.loads((out / "run.json").read_text())
    assert card["train"]["steps"] == 2 and card["config"]["lora"]["r"] == 2
    with pytest.raises(SystemExit) as stop:
        main(["train", "--preset", "smoke", "--set", "train.no_such_key=1"])
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train.no_such_key" in message and "unknown key" in message


def test_config_command_shows_the_values_after_overrides(capsys):
    assert main(["config", "--preset", "smoke", "--set", "train.max_steps=7",
                 "--set", "lora.targets=q_proj,v_proj"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert out.startswith("# preset smoke after 2 --set overrides")
    assert lines["train.max_steps"][1:3] == ["int", "7"]
    assert lines["lora.targets"][1:5] == ["all-linear|attention|mlp", "or", "list[str]", "q_proj,v_proj"]


@pytest.mark.parametrize(("command", "override", "message"), [
    ("train", "train.no_such_key=1", "--set train.no_such_key: unknown key"),
    ("train", "lora.layers=abc", "--set lora.layers: cannot read 'abc' as int or none"),
    ("demo", "train.cpu_amp=fp32", "train.cpu_amp must be one of auto|off|bf16|fp16, got 'fp32'"),
    ("config", "train.per_device_train_batch_size=0", "train.per_device_train_batch_size must be >= 1, got 0"),
])
def test_a_set_error_ends_with_where_to_look_up_the_keys(command, override, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--preset", "smoke", "--set", override])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in last and last.endswith("sftkit config --preset smoke"), last
