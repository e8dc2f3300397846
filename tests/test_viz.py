"""Tests for sftkit.viz: every figure renders to a real PNG and shows the data it was given.

Backend: the library never picks one; these tests pin the non-interactive Agg backend
before pyplot is imported, so they run headless and never open windows.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from sftkit import viz  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    # viz functions deliberately leave figures open (notebooks display them); close here
    # so the suite does not accumulate figures and trigger matplotlib's memory warning.
    yield
    plt.close("all")


def assert_png(path) -> None:
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 1024, f"{path} is suspiciously small ({len(data)} bytes)"


def bar_heights(ax) -> list[float]:
    return [p.get_height() for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


# --------------------------------------------------------------------------- save_figure / note


def test_save_figure_creates_parent_folders(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = viz.save_figure(fig, tmp_path / "a" / "b" / "fig.png")
    assert out == tmp_path / "a" / "b" / "fig.png"
    assert_png(out)
    assert plt.fignum_exists(fig.number), "save_figure must not close the figure"


def test_note_is_drawn_under_the_plot(tmp_path):
    fig = viz.plot_rate_bars({"base": {"stop rate": 0.5}}, path=tmp_path / "r.png",
                             note="cpu-demo preset, 2 CPU cores")
    assert "cpu-demo preset, 2 CPU cores" in [t.get_text() for t in fig.texts]
    assert_png(tmp_path / "r.png")


# --------------------------------------------------------------------------- loss curves


LOG_HISTORY = [
    {"loss": 3.2, "learning_rate": 1e-4, "epoch": 0.1, "step": 5},
    {"loss": 2.9, "learning_rate": 1e-4, "epoch": 0.2, "step": 10},
    {"eval_loss": 2.95, "epoch": 0.2, "step": 10},
    {"loss": 2.5, "learning_rate": 9e-5, "epoch": 0.3, "step": 15},
    {"loss": 2.2, "learning_rate": 8e-5, "epoch": 0.4, "step": 20},
    {"eval_loss": 2.4, "epoch": 0.4, "step": 20},
    # Trainer's final summary: must not become a point on the curve.
    {"train_runtime": 12.0, "train_loss": 2.7, "epoch": 0.4, "step": 20},
]


def test_loss_curves_plot_train_and_eval_points(tmp_path):
    fig = viz.plot_loss_curves(LOG_HISTORY, path=tmp_path / "loss.png", title="Loss (smoke)")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [5, 10, 15, 20])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [3.2, 2.9, 2.5, 2.2])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [10, 20])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [2.95, 2.4])
    assert ax.get_title() == "Loss (smoke)"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert_png(tmp_path / "loss.png")


def test_loss_curves_mark_where_curriculum_stages_end():
    ax = viz.plot_loss_curves(LOG_HISTORY, stage_end_steps={"0": 10, "1": 15}).axes[0]
    seams = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in seams] == [10, 15]
    assert [t.get_text() for t in ax.texts] == ["stage 0 ends", "stage 1 ends"]
    labels = ax.get_legend_handles_labels()[1]
    assert labels.count("end of a curriculum stage") == 1, labels
    assert not any(line.get_linestyle() == "--" for line in viz.plot_loss_curves(LOG_HISTORY).axes[0].lines)


def test_loss_curves_without_eval_has_one_line():
    fig = viz.plot_loss_curves([e for e in LOG_HISTORY if "eval_loss" not in e])
    assert len(fig.axes[0].lines) == 1


def test_loss_curves_reject_history_without_loss():
    with pytest.raises(ValueError, match="'loss'"):
        viz.plot_loss_curves([{"eval_loss": 2.0, "step": 1}, {"train_loss": 2.0, "step": 1}])


# --------------------------------------------------------------------------- metric bars


METRIC_TABLE = {
    "base": {
        "rougeL": {"mean": 0.20, "low": 0.15, "high": 0.26},
        "chrf": {"mean": 31.0, "low": 28.0, "high": 35.5},
    },
    "tuned": {
        "rougeL": {"mean": 0.35, "low": 0.31, "high": 0.38},
        "chrf": {"mean": 42.0, "low": 39.0, "high": 44.0},
    },
}


def test_metric_bars_error_bars_span_the_intervals(tmp_path):
    metrics = ["rougeL", "chrf"]
    fig = viz.plot_metric_bars(METRIC_TABLE, metrics, path=tmp_path / "metrics.png", title="Before vs after")
    axes = [ax for ax in fig.axes if ax.containers]
    assert len(axes) == 2, "one subplot per metric"
    for ax, metric in zip(axes, metrics):
        assert ax.get_title() == metric
        (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert [p.get_height() for p in bars.patches] == pytest.approx(
            [METRIC_TABLE[m][metric]["mean"] for m in METRIC_TABLE]
        )
        # The vertical error segments run from low to high for each model, in model order.
        segments = bars.errorbar.lines[2][0].get_segments()
        spans = [(min(s[:, 1]), max(s[:, 1])) for s in segments]
        expected = [(METRIC_TABLE[m][metric]["low"], METRIC_TABLE[m][metric]["high"]) for m in METRIC_TABLE]
        # Flattened: pytest.approx (9.x) compares flat sequences only, not lists of tuples.
        assert [v for span in spans for v in span] == pytest.approx([v for span in expected for v in span])
        # Different colours per model.
        assert bars.patches[0].get_facecolor() != bars.patches[1].get_facecolor()
    assert fig.get_suptitle() == "Before vs after"
    assert_png(tmp_path / "metrics.png")


def test_metric_bars_tolerate_missing_metric():
    table = {"base": {"rougeL": {"mean": 0.2, "low": 0.1, "high": 0.3}}, "tuned": {}}
    fig = viz.plot_metric_bars(table, ["rougeL"])
    heights = bar_heights(fig.axes[0])
    assert heights[0] == pytest.approx(0.2) and np.isnan(heights[1])


# --------------------------------------------------------------------------- task / rate bars


def test_task_bars_heights_follow_models_and_tasks(tmp_path):
    per_task = {
        "base": {"arithmetic": 0.1, "reverse": 0.0, "json": 0.25},
        "tuned": {"arithmetic": 0.6, "reverse": 0.4, "json": 0.9},
    }
    fig = viz.plot_task_bars(per_task, path=tmp_path / "tasks.png", note="smoke preset")
    ax = fig.axes[0]
    assert bar_heights(ax) == pytest.approx([0.1, 0.0, 0.25, 0.6, 0.4, 0.9])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["arithmetic", "reverse", "json"]
    assert ax.get_ylim() == pytest.approx((0, 1.12))
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"base", "tuned"}
    assert_png(tmp_path / "tasks.png")


def test_rate_bars_values_and_labels(tmp_path):
    rates = {
        "base": {"stop rate": 0.1, "repeated 4-gram rate": 0.3},
        "tuned": {"stop rate": 0.95, "repeated 4-gram rate": 0.05},
    }
    fig = viz.plot_rate_bars(rates, path=tmp_path / "rates.png")
    ax = fig.axes[0]
    assert bar_heights(ax) == pytest.approx([0.1, 0.3, 0.95, 0.05])
    texts = {t.get_text() for t in ax.texts}
    assert {"10%", "30%", "95%", "5%"} <= texts
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert_png(tmp_path / "rates.png")


# --------------------------------------------------------------------------- length histograms


def test_length_histograms_mark_medians(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {"base": rng.integers(50, 256, 40).tolist(), "tuned": rng.integers(5, 60, 40).tolist()}
    fig = viz.plot_length_histograms(lengths, path=tmp_path / "lengths.png", xlabel="generated tokens")
    ax = fig.axes[0]
    vlines = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in vlines] == pytest.approx([np.median(v) for v in lengths.values()])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"tuned median = {np.median(lengths['tuned']):g}" in legend
    # Shared bins: both step histograms start at the same left edge.
    starts = [p.get_xy()[0, 0] for p in ax.patches]
    assert len(starts) == 2 and starts[0] == pytest.approx(starts[1])
    assert ax.get_xlabel() == "generated tokens"
    assert_png(tmp_path / "lengths.png")


def test_length_histograms_reject_all_empty():
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_length_histograms({"base": [], "tuned": []})


# --------------------------------------------------------------------------- token mask


def _face_count(fig, color) -> int:
    target = to_rgba(color)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    return sum(1 for p in boxes if p.get_facecolor() == pytest.approx(target))


def test_token_mask_colours_trained_and_masked_boxes(tmp_path):
    tokens = ["<|im_start|>", "user", "\n", "What", "Ġcosts", "Ġ$5", "?", "<|im_end|>",
              "<|im_start|>", "assistant", "\n", "It", "Ġcosts", "Ġ$", "5", "$_$", "<|im_end|>"]
    trained = [False] * 11 + [True] * 6
    fig = viz.plot_token_mask(tokens, trained, path=tmp_path / "mask.png", wrap=6)
    assert _face_count(fig, viz.TRAINED_COLOR) == 6
    assert _face_count(fig, viz.MASKED_COLOR) == 11
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "\\n" in texts, "newlines must be drawn escaped"
    assert "<|im_st…" in texts, "long tokens are truncated"
    assert "·costs" in texts, "byte-level BPE space marker shown as a visible space"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["trained (in loss)", "masked (-100)"]
    assert "$_$" in texts
    assert_png(tmp_path / "mask.png")  # "$_$" is invalid mathtext: drawing proves tokens are literal


def test_token_mask_caps_tokens_drawn():
    fig = viz.plot_token_mask(["a"] * 50, [True, False] * 25, max_tokens=20, wrap=8)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(boxes) == 20
    assert "first 20 of 50" in fig.axes[0].get_xlabel()


def test_token_mask_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        viz.plot_token_mask(["a", "b"], [True])


# --------------------------------------------------------------------------- attention


# "$_$" is invalid mathtext: rendering it proves tick labels are drawn literally.
TOKENS = ["<s>", "tokA", "Ġtok$B", "$_$", "\n", "tokD"]


@pytest.fixture(scope="module")
def attentions():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # initializer_range=1.0 makes the random heads attend sharply and differently, so
    # comparing against the wrong head or layer cannot pass by accident.
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, initializer_range=1.0)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([[1, 5, 7, 9, 11, 3]]), output_attentions=True)
    assert len(out.attentions) == 2 and tuple(out.attentions[0].shape) == (1, 2, 6, 6)
    return out.attentions


def test_attention_heatmap_shows_the_chosen_head(tmp_path, attentions):
    expected = attentions[1][0, 1].numpy()
    assert not np.allclose(expected, attentions[1][0, 0].numpy()), "heads must differ for the test to mean anything"
    fig = viz.plot_attention_heatmap(attentions, TOKENS, layer=1, head=1, path=tmp_path / "attn.png")
    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["<s>", "tokA", "·tok$B", "$_$", "\\n", "tokD"]
    assert ax.get_title() == "Attention weights, layer 1, head 1"
    assert len(fig.axes) == 2, "a colourbar axis is expected"
    assert_png(tmp_path / "attn.png")


@pytest.mark.parametrize("layer,head,what", [(0, 2, "head 2"), (2, 0, "layer 2"), (-3, 0, "layer -3")])
def test_attention_heatmap_out_of_range(attentions, layer, head, what):
    with pytest.raises(IndexError, match=what):
        viz.plot_attention_heatmap(attentions, TOKENS, layer=layer, head=head)


def test_bertviz_views_written_as_html(tmp_path, attentions):
    tokens = ["<s>", "alpha", "bravo", "charlie", "delta", "echo"]
    paths = viz.save_bertviz_views(attentions, tokens, tmp_path / "bertviz")
    assert set(paths) == {"head_view", "model_view"}
    assert {p.name for p in paths.values()} == {"head_view.html", "model_view.html"}
    for p in paths.values():
        html = p.read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>")
        assert all(f'"{t}"' in html for t in tokens[1:]), f"tokens missing from {p.name}"
        assert "PYTHON_PARAMS" not in html  # bertviz substituted its data


def test_show_html_accepts_path_and_markup(tmp_path):
    pytest.importorskip("IPython")
    page = tmp_path / "x.html"
    page.write_text("<b>hello</b>", encoding="utf-8")
    assert viz.show_html(page).data == "<b>hello</b>"
    assert viz.show_html(str(page)).data == "<b>hello</b>"
    assert viz.show_html("<i>inline</i>").data == "<i>inline</i>"
