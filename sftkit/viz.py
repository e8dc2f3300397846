"""Figures for the before-vs-after story of a LoRA SFT run.

Fine-tuning is taught here by *showing* what changed, so every stage of the pipeline
has one plot:

- what the loss trains on: :func:`plot_token_mask` (assistant tokens vs ``-100`` masked);
- how training went: :func:`plot_loss_curves` from ``Trainer.state.log_history``;
- what changed in behaviour: :func:`plot_metric_bars` (means with confidence intervals),
  :func:`plot_task_bars` (exact match per built-in task), :func:`plot_rate_bars`
  (stop / repetition rates) and :func:`plot_length_histograms` (answer lengths);
- what the model looks at: :func:`plot_attention_heatmap` for one head, and
  :func:`save_bertviz_views` for bertviz's interactive views as standalone HTML files.

Conventions shared by all plotting functions (so notebooks, the CLI and the report
can treat them alike):

- They return the :class:`matplotlib.figure.Figure` and close nothing, so a notebook can
  display it and a caller can tweak it. Scripts that draw many figures should call
  ``plt.close(fig)`` themselves.
- When ``path`` is given the figure is also written there by :func:`save_figure`
  (PNG at 120 dpi, ``bbox_inches="tight"``, parent folders created).
- A title and axis labels are always set; ``note`` adds a small grey line under the
  plot, meant for the hardware or preset ("cpu-demo preset, 2 CPU cores").

Backend choice: this module never calls ``matplotlib.use()``. Choosing a backend is the
application's job, and forcing one at import would break Jupyter's inline display.
Figures are created through ``pyplot`` (imported lazily inside the functions), so
whatever backend is active is used: inline in notebooks, and on a headless machine
matplotlib itself falls back to the non-interactive Agg backend. The tests pin Agg
explicitly (``MPLBACKEND=Agg`` / ``matplotlib.use("Agg")`` in ``tests/test_viz.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported for annotations only; matplotlib is loaded lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "save_figure",
    "plot_loss_curves",
    "plot_metric_bars",
    "plot_task_bars",
    "plot_length_histograms",
    "plot_rate_bars",
    "plot_token_mask",
    "plot_attention_heatmap",
    "save_bertviz_views",
    "show_html",
]

DPI = 120
# Colours are assigned to models in order of appearance, so "base" and "tuned" keep the
# same colour across every figure of a report as long as callers list them in the same order.
_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
TRAINED_COLOR = "#F28E2B"  # warm: these tokens produce gradient
MASKED_COLOR = "#D9D9D9"  # grey: label -100, ignored by the loss


# --------------------------------------------------------------------------- helpers


def _pyplot():
    # Lazy import: importing sftkit (e.g. for the CLI or the data code) must not pay for
    # matplotlib or pick a backend as a side effect.
    import matplotlib.pyplot as plt

    return plt


def _color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (parents created) and return the path.

    The format follows the suffix (PNG when there is none); ``bbox_inches="tight"`` so the
    note under the axes and rotated tick labels are never cut off. The figure stays open.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format=fmt)
    return path


def _finish(fig: Figure, path: str | Path | None, note: str | None) -> Figure:
    """Add the optional note, save when asked, and hand the figure back."""
    if note:
        # Below the axes, outside them: tight bounding boxes (savefig and the inline
        # backend both use them) grow to include it, so it never overlaps the data.
        fig.text(0.99, -0.01, note, ha="right", va="top", fontsize=8, color="dimgray", parse_math=False)
    if path is not None:
        save_figure(fig, path)
    return fig


def _no_math(texts) -> None:
    # Tokens and model names are data, not LaTeX: a "$" in a token would otherwise start
    # mathtext and either garble the label or raise while drawing.
    for t in texts:
        t.set_parse_math(False)


def _categories(data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Union of inner keys in first-seen order (models may lack a category)."""
    seen: dict[str, None] = {}
    for inner in data.values():
        for key in inner:
            seen.setdefault(key, None)
    return list(seen)


def _grouped_bars(
    ax: Axes,
    data: Mapping[str, Mapping[str, float]],
    categories: Sequence[str],
    as_percent: bool,
) -> None:
    """One group of bars per category, one bar (colour) per model, values written on top."""
    import numpy as np

    n_models = max(len(data), 1)
    width = 0.8 / n_models
    x = np.arange(len(categories))
    for i, (model, values) in enumerate(data.items()):
        heights = [float(values.get(c, math.nan)) for c in categories]
        offsets = x - 0.4 + width * (i + 0.5)
        ax.bar(offsets, heights, width=width * 0.95, color=_color(i), label=model)
        for xo, h in zip(offsets, heights):
            if math.isfinite(h):
                label = f"{h:.0%}" if as_percent else f"{h:.2f}"
                ax.annotate(label, (xo, h), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, list(categories))
    # Rotate only when there are many groups; short lists stay horizontal and readable.
    if len(categories) > 4 or max((len(c) for c in categories), default=0) > 14:
        ax.tick_params(axis="x", labelrotation=30)
        for lab in ax.get_xticklabels():
            lab.set_ha("right")
    _no_math(ax.get_xticklabels())
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    # Outside the axes on the right: bars reach the top of the [0, 1] scale, and a legend
    # inside would sit on them.
    legend = ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _no_math(legend.get_texts())


# --------------------------------------------------------------------------- training


def plot_loss_curves(
    log_history: list[dict],
    path: str | Path | None = None,
    title: str = "Training loss",
    note: str | None = None,
    stage_end_steps: dict[str, int] | None = None,
) -> Figure:
    """Training loss (and eval loss when logged) against optimizer step.

    ``log_history`` is ``Trainer.state.log_history``: training entries carry ``"loss"``,
    evaluation entries ``"eval_loss"``; the final summary entry (``"train_loss"``) is
    ignored because it is an average over the whole run, not a point on the curve.
    ``stage_end_steps`` (a curriculum run's ``metrics["stage_end_steps"]``) draws a dashed line
    where each stage ends: the loss jumps there because the rows change, not because training
    went wrong.
    """
    # Entries without "step" should not occur in a Trainer log; fall back to the entry's
    # position so hand-written histories still plot in order.
    train = [(e.get("step", i), float(e["loss"])) for i, e in enumerate(log_history) if "loss" in e]
    evals = [(e.get("step", i), float(e["eval_loss"])) for i, e in enumerate(log_history) if "eval_loss" in e]
    if not train:
        raise ValueError(
            "log_history has no entry with a 'loss' key: nothing to plot. Training loss is only "
            "logged every `logging_steps` steps, so a run shorter than that logs none; "
            "lower logging_steps (e.g. 1 for tiny runs)."
        )

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    # Training first, so fig.axes[0].lines[0] is always the training curve.
    steps, losses = zip(*train)
    # Markers only when points are few enough to see individually (smoke runs log a handful).
    ax.plot(steps, losses, marker="o" if len(train) <= 30 else None, ms=3, color=_color(0), label="train loss")
    if evals:
        e_steps, e_losses = zip(*evals)
        ax.plot(e_steps, e_losses, marker="s", ms=4, color=_color(1), label="eval loss")
    for i, (stage, step) in enumerate(sorted((stage_end_steps or {}).items(), key=lambda item: item[1])):
        ax.axvline(step, ls="--", lw=1, color="0.5", label="end of a curriculum stage" if i == 0 else None)
        ax.annotate(f"stage {stage} ends", (step, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="0.35")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats / trained token)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _finish(fig, path, note)


# --------------------------------------------------------------------------- evaluation


def plot_metric_bars(
    table: dict[str, dict[str, dict]],
    metrics: list[str],
    path: str | Path | None = None,
    title: str = "Metrics with 95% confidence intervals",
    note: str | None = None,
) -> Figure:
    """Bars of each model's mean per metric, with asymmetric interval error bars.

    ``table[model][metric] = {"mean": m, "low": lo, "high": hi}``. Metrics (ROUGE-L, chrF,
    exact match, ...) live on different scales, so each gets its own small subplot in a
    row rather than sharing one y-axis; colours identify models consistently across them.
    A model lacking a metric just has no bar there. ``low``/``high`` may be omitted (no
    error bar).
    """
    if not metrics:
        raise ValueError("metrics is empty: name at least one metric to plot")
    if not table:
        raise ValueError("table is empty: no model results to plot")
    plt = _pyplot()
    models = list(table)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(2.6 * len(metrics), 4.0), 3.6), layout="constrained", squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        means, err_low, err_high = [], [], []
        for model in models:
            cell = table[model].get(metric)
            if cell is None:
                means.append(math.nan)
                err_low.append(0.0)
                err_high.append(0.0)
                continue
            m = float(cell["mean"])
            lo = float(cell.get("low", m))
            hi = float(cell.get("high", m))
            means.append(m)
            # Percentile bootstrap intervals contain the mean in practice; clip at 0 so a
            # degenerate interval cannot make matplotlib reject a negative error length.
            err_low.append(max(m - lo, 0.0))
            err_high.append(max(hi - m, 0.0))
        x = list(range(len(models)))
        ax.bar(
            x,
            means,
            yerr=[err_low, err_high],
            capsize=4,
            color=[_color(i) for i in x],
            error_kw={"elinewidth": 1, "ecolor": "black"},
        )
        for xi, m, eh in zip(x, means, err_high):
            if math.isfinite(m):
                # Above the upper whisker so the label never sits on the error bar.
                ax.annotate(f"{m:.3g}", (xi, m + eh), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, models)
        if len(models) > 3 or max(len(m) for m in models) > 10:
            ax.tick_params(axis="x", labelrotation=30)
        _no_math(ax.get_xticklabels())
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("model")
        ax.set_ylabel("mean (bar) and interval")
        ax.margins(y=0.15)  # headroom for the value labels
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(title)
    return _finish(fig, path, note)


def plot_task_bars(
    per_task: dict[str, dict[str, float]],
    path: str | Path | None = None,
    title: str = "Exact match per task",
    note: str | None = None,
    ylabel: str = "exact-match accuracy",
) -> Figure:
    """Grouped bars: one group per task, one bar per model; ``per_task[model][task]`` in [0, 1]."""
    if not per_task:
        raise ValueError("per_task is empty: no model results to plot")
    plt = _pyplot()
    tasks = _categories(per_task)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(tasks) * max(len(per_task), 1) ** 0.5 + 2), 3.8),
                           layout="constrained")
    _grouped_bars(ax, per_task, tasks, as_percent=True)
    ax.set_ylim(0, 1.12)  # fixed [0, 1] scale so runs are comparable by eye; room for labels
    ax.set_title(title)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    return _finish(fig, path, note)


def plot_rate_bars(
    rates: dict[str, dict[str, float]],
    path: str | Path | None = None,
    title: str = "Generation behaviour",
    note: str | None = None,
) -> Figure:
    """Grouped bars of rates in [0, 1], e.g. ``{"base": {"stop rate": .1, "repeated 4-gram rate": .3}}``."""
    if not rates:
        raise ValueError("rates is empty: no model results to plot")
    plt = _pyplot()
    names = _categories(rates)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(names) + 2), 3.8), layout="constrained")
    _grouped_bars(ax, rates, names, as_percent=True)
    ax.set_ylim(0, 1.12)
    ax.set_title(title)
    ax.set_xlabel("measure")
    ax.set_ylabel("rate (fraction of generations)")
    return _finish(fig, path, note)


def plot_length_histograms(
    lengths: dict[str, list[int]],
    path: str | Path | None = None,
    xlabel: str = "tokens",
    title: str = "Length distribution",
    note: str | None = None,
    bins: int = 30,
) -> Figure:
    """Overlaid step histograms on shared bins, with a dashed line at each median.

    Shared bins matter: with per-series bins two histograms of the same data can look
    different. Medians (not means) because generation lengths are skewed by the runs
    that never stop.
    """
    import numpy as np

    non_empty = {k: np.asarray(v, dtype=float) for k, v in lengths.items() if len(v)}
    if not non_empty:
        raise ValueError("lengths has no non-empty series: nothing to plot")
    plt = _pyplot()
    edges = np.histogram_bin_edges(np.concatenate(list(non_empty.values())), bins=bins)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for i, (name, values) in enumerate(lengths.items()):
        color = _color(i)
        if not len(values):
            continue  # keep the colour slot so colours match the other figures
        arr = non_empty[name]
        ax.hist(arr, bins=edges, histtype="step", linewidth=1.8, color=color, label=f"{name} (n={len(arr)})")
        med = float(np.median(arr))
        ax.axvline(med, color=color, linestyle="--", linewidth=1.2, label=f"{name} median = {med:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=8, frameon=False)
    _no_math(legend.get_texts())
    return _finish(fig, path, note)


# --------------------------------------------------------------------------- tokens & attention


def _display_token(tok: str, max_chars: int) -> str:
    """Make a token visible in a small box: escape whitespace, mark spaces, truncate."""
    # Byte-level BPE (GPT-2/SmolLM) spells space/newline/tab as Ġ/Ċ/ĉ and SentencePiece spells
    # space as ▁; map both to the real characters first so either token form reads the same.
    tok = tok.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n").replace("ĉ", "\t")
    tok = tok.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    # A leading space is what distinguishes " the" from "the"; a middle dot keeps it visible.
    tok = tok.replace(" ", "·")
    if len(tok) > max_chars:
        tok = tok[: max_chars - 1] + "…"
    return tok


def plot_token_mask(
    tokens: list[str],
    trained: list[bool],
    path: str | Path | None = None,
    title: str = "Which tokens the loss trains on",
    max_tokens: int = 400,
    wrap: int = 24,
    note: str | None = None,
    max_chars: int = 8,
) -> Figure:
    """Grid of token boxes, trained (label != -100) tokens coloured, masked ones grey.

    Rows hold ``wrap`` tokens; only the first ``max_tokens`` are drawn (the x-label says
    how many were dropped) because a full conversation would make unreadable boxes.
    Each box is a ``Rectangle`` patch whose facecolour encodes trained vs masked.
    """
    if len(tokens) != len(trained):
        raise ValueError(f"tokens ({len(tokens)}) and trained ({len(trained)}) must have the same length")
    if wrap < 1 or max_tokens < 1:
        raise ValueError("wrap and max_tokens must be positive")
    from matplotlib.patches import Patch, Rectangle

    plt = _pyplot()
    total, n_trained_total = len(tokens), sum(bool(t) for t in trained)
    shown = list(zip(tokens, trained))[:max_tokens]
    n_rows = max(1, math.ceil(len(shown) / wrap))
    cols = min(wrap, max(len(shown), 1))
    box_w, box_h = 0.62, 0.34  # inches per box: fits ~8 characters at 7 pt
    fig, ax = plt.subplots(figsize=(max(cols * box_w, 4.0) + 0.8, n_rows * box_h + 1.4), layout="constrained")
    for i, (tok, is_trained) in enumerate(shown):
        row, col = divmod(i, wrap)
        y = -row - 1  # row 0 on top
        ax.add_patch(
            Rectangle(
                (col + 0.04, y + 0.06),
                0.92,
                0.88,
                facecolor=TRAINED_COLOR if is_trained else MASKED_COLOR,
                edgecolor="white",
                linewidth=0.5,
            )
        )
        ax.text(
            col + 0.5,
            y + 0.5,
            _display_token(str(tok), max_chars),
            ha="center",
            va="center",
            fontsize=7,
            family="monospace",
            parse_math=False,
            clip_on=True,
        )
    ax.set_xlim(0, cols)
    ax.set_ylim(-n_rows, 0)
    # Rows are labelled with the index of their first token, so a position in the
    # printed input_ids/labels can be found in the picture.
    ax.set_yticks([-r - 0.5 for r in range(n_rows)], [str(r * wrap) for r in range(n_rows)], fontsize=7)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    pct = n_trained_total / total if total else 0.0
    dropped = f"; first {len(shown)} of {total} shown" if len(shown) < total else ""
    ax.set_xlabel(f"{n_trained_total} of {total} tokens in the loss ({pct:.0%}); {wrap} tokens per row{dropped}")
    ax.set_ylabel("first token index")
    ax.set_title(title)
    # A figure legend placed by constrained layout below the axes: it cannot cover a box
    # or collide with the title, whatever the number of rows.
    fig.legend(
        handles=[Patch(facecolor=TRAINED_COLOR, label="trained (in loss)"),
                 Patch(facecolor=MASKED_COLOR, label="masked (-100)")],
        loc="outside lower center",
        ncol=2,
        frameon=False,
        fontsize=8,
    )
    return _finish(fig, path, note)


def _to_numpy(x: Any):
    """torch tensor (any dtype/device, grad or not) or array-like -> float numpy array."""
    import numpy as np

    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        # .float() first: numpy has no bfloat16, and half precision is fine to upcast.
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _check_index(name: str, index: int, size: int) -> int:
    """Python-style index check (negatives count from the end) with a readable error."""
    if not -size <= index < size:
        raise IndexError(f"{name} {index} is out of range: the model has {size} {name}s (valid: 0..{size - 1})")
    return index % size


def plot_attention_heatmap(
    attentions,
    tokens: list[str],
    layer: int,
    head: int,
    path: str | Path | None = None,
    title: str | None = None,
    note: str | None = None,
) -> Figure:
    """Heatmap of one head's attention weights for the first sequence of the batch.

    ``attentions`` is ``outputs.attentions`` of a transformers model run with
    ``output_attentions=True`` (one ``[batch, heads, seq, seq]`` tensor per layer); the
    model must be loaded with ``attn_implementation="eager"`` because SDPA/flash kernels
    never materialise the weights. Rows are queries (the token doing the attending),
    columns are keys; in a causal LM everything above the diagonal is zero.
    """
    if attentions is None or len(attentions) == 0:
        raise ValueError(
            "attentions is empty: run the model with output_attentions=True and "
            "attn_implementation='eager' (SDPA does not return attention weights)"
        )
    layer = _check_index("layer", layer, len(attentions))
    weights = _to_numpy(attentions[layer])
    if weights.ndim != 4:
        raise ValueError(f"expected a [batch, heads, seq, seq] tensor per layer, got shape {weights.shape}")
    head = _check_index("head", head, weights.shape[1])
    matrix = weights[0, head]
    if len(tokens) != matrix.shape[-1] or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{len(tokens)} tokens given but the attention matrix is {matrix.shape[0]}x{matrix.shape[1]}")

    plt = _pyplot()
    n = len(tokens)
    side = min(max(4.0, 0.28 * n + 2.0), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    # vmin=0 keeps the colour scale honest (weights are probabilities); nearest keeps cells crisp.
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0, interpolation="nearest", aspect="equal")
    labels = [_display_token(str(t), 12) for t in tokens]
    # Label every token while that stays legible; beyond ~60 label every k-th.
    step = max(1, math.ceil(n / 60))
    ticks = list(range(0, n, step))
    fontsize = 8 if n <= 60 else 6
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=fontsize)
    _no_math(ax.get_xticklabels() + ax.get_yticklabels())
    ax.set_xlabel("key (token attended to)")
    ax.set_ylabel("query (token attending)")
    ax.set_title(title if title is not None else f"Attention weights, layer {layer}, head {head}")
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("attention weight")
    return _finish(fig, path, note)


def save_bertviz_views(attentions, tokens: list[str], out_dir: str | Path) -> dict[str, Path]:
    """Write bertviz's head view and model view as standalone HTML files.

    Returns ``{"head_view": path, "model_view": path}``. bertviz only displays inside a
    notebook by default; ``html_action="return"`` gives the HTML instead, which is wrapped
    in a minimal page here so it opens in any browser. Note that the page loads require.js,
    d3 and jQuery from cdnjs, so viewing it needs internet access (writing it does not).
    """
    import torch
    from bertviz import head_view, model_view

    if attentions is None or len(attentions) == 0:
        raise ValueError("attentions is empty: run the model with output_attentions=True (eager attention)")
    # bertviz wants CPU float tensors with batch size exactly 1 (it squeezes dim 0 and
    # calls .tolist()); keep only the first sequence, and upcast bf16/fp16 for JSON.
    layers = tuple(torch.as_tensor(a).detach().float().cpu()[:1] for a in attentions)
    tokens = [str(t) for t in tokens]
    if layers[0].shape[-1] != len(tokens):
        raise ValueError(f"{len(tokens)} tokens given but attention covers {layers[0].shape[-1]} positions")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    views = {
        "head_view": head_view(layers, tokens, html_action="return"),
        # The light palette: the default dark one draws light text meant for a dark notebook theme.
        "model_view": model_view(layers, tokens, display_mode="light", html_action="return"),
    }
    paths: dict[str, Path] = {}
    for name, html in views.items():
        page = (
            "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>bertviz {name.replace('_', ' ')}</title>\n</head>\n<body>\n"
            f"{html.data}\n</body>\n</html>\n"
        )
        path = out_dir / f"{name}.html"
        path.write_text(page, encoding="utf-8")
        paths[name] = path
    return paths


def show_html(path_or_html: str | Path):
    """Display helper for notebooks: an HTML file path or an HTML string -> ``IPython.display.HTML``.

    A :class:`~pathlib.Path`, or a string that names an existing file, is read; any other
    string is taken as markup. Without IPython the HTML text itself is returned.
    """
    if isinstance(path_or_html, Path):
        html = path_or_html.read_text(encoding="utf-8")
    else:
        text = str(path_or_html)
        is_file = False
        if not text.lstrip().startswith("<"):
            try:
                is_file = Path(text).is_file()
            except OSError:  # e.g. a string too long to be a file name
                is_file = False
        html = Path(text).read_text(encoding="utf-8") if is_file else text
    try:
        from IPython.display import HTML
    except ImportError:
        return html
    return HTML(html)
