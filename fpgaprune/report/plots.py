"""Pictures of the kernels and of what pruning did: each function writes one PNG.

Users decide what to prune by looking, so every figure here answers one question:

- `kernel_heatmap`: which 2-D kernels of each conv layer are near zero (cin x cout), which are pruned;
- `kernel_grid`: what the actual kh x kw kernels of one output channel look like;
- `magnitude_histograms`: how the magnitudes spread, and where the threshold cuts;
- `accuracy_vs_fraction`: what each pruning round cost in accuracy (gradual mode's history);
- `multiplications`: non-zero multiplications per layer before and after pruning;
- `quantized_weights`: the quantized weight values per layer, zeros included;
- `sensitivity_curves`: the analyzer's per-layer accuracy with a growing fraction zeroed.

Figures are built as `matplotlib.figure.Figure` objects rendered by Agg, never through
pyplot, so no display is needed and a notebook's own backend is left alone.

    plots.kernel_heatmap(analyze.kernel_norms(model), "heatmap.png", masks=masks)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import BadInput
from ..io import atomic_path

DPI = 110
PRUNED_COLOR = "#d62728"
KEPT_COLOR = "#1f77b4"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(n: int, panel_height: float) -> tuple[Figure, list]:
    """A figure of `n` panels, two per row, and their axes in reading order (spares hidden)."""
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.2 * ncols, panel_height * nrows)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG, atomically (a report never links half an image)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _layers_only(values: dict) -> dict:
    """Per-layer entries of a summary dict (drops the 'total' row)."""
    return {k: v for k, v in values.items() if k != "total"}


def kernel_heatmap(
    norms: dict[str, np.ndarray],
    path: str | Path,
    masks: dict[str, np.ndarray] | None = None,
    *,
    threshold: float | None = None,
    title: str = "2-D kernel magnitudes",
) -> Path:
    """One heatmap per conv layer, input channel down, output channel across; pruned cells marked x.

    With `threshold`, cells below it are outlined too, to preview a threshold before pruning.
    """
    if not norms:
        raise BadInput("kernel heatmap: the model has no conv layers")
    masks = masks or {}
    width = 8.0
    heights = [min(7.0, max(1.3, width * mag.shape[0] / max(mag.shape[1], 1) * 0.8)) for mag in norms.values()]
    fig = _figure(width + 1.2, sum(heights) + 0.6)
    axes = fig.subplots(len(norms), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, height, (name, mag) in zip(axes, heights, norms.items(), strict=True):
        n_in, n_out = mag.shape
        im = ax.imshow(mag, cmap="viridis", aspect="auto", interpolation="nearest", origin="upper")
        bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
        bar.set_label("magnitude", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        cell = min(width / n_out, 0.8 * height / max(n_in, 1))  # inches per heatmap cell
        size = max(4.0, (72 * cell * 0.6) ** 2)
        pruned = masks.get(name)
        count = ""
        if pruned is not None and np.any(pruned):
            cin, cout = np.nonzero(pruned)
            ax.scatter(cout, cin, marker="x", s=size, c=PRUNED_COLOR, linewidths=1.5, label="pruned")
            count = f", {int(np.count_nonzero(pruned))} of {mag.size} pruned (x)"
        if threshold is not None:
            cin, cout = np.nonzero(mag < threshold)
            ax.scatter(cout, cin, marker="s", s=size, facecolors="none", edgecolors="white", linewidths=0.8)
            count += f", {len(cin)} below {threshold:g} (square)"
        ax.set_title(f"{name}: {n_in} x {n_out} kernels{count}", fontsize=9)
        ax.set_xlabel("output channel (cout)", fontsize=8)
        ax.set_ylabel("input channel (cin)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks(_ticks(n_out))
        ax.set_yticks(_ticks(n_in))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / 16))
    return list(range(0, n, step))


def kernel_grid(
    model,
    layer: str,
    cout: int,
    path: str | Path,
    masks: dict[str, np.ndarray] | None = None,
    *,
    norms: np.ndarray | None = None,
) -> Path:
    """The kh x kw kernels W[:, :, cin, cout] of one output channel, one tile per input channel.

    One symmetric colour scale for the channel, so a near-zero kernel looks pale next to the
    others; pruned kernels get a red frame. Tile titles give `norms[cin, cout]` (the layer's
    ranked magnitudes) when given, else the tile's own L1 norm.
    """
    from ..masks import conv_kernel, conv_layers

    convs = {c.name: c for c in conv_layers(model)}
    if layer not in convs:
        raise BadInput(f"kernel grid: no conv layer {layer!r} (conv layers: {', '.join(convs) or 'none'})")
    kernel = np.asarray(conv_kernel(convs[layer]).numpy())
    kh, kw, n_in, n_out = kernel.shape
    if not 0 <= cout < n_out:
        raise BadInput(f"kernel grid: output channel {cout} is out of range for {layer} (0..{n_out - 1})")
    pruned = (masks or {}).get(layer)
    tiles = kernel[:, :, :, cout]
    ncols = math.ceil(math.sqrt(n_in))
    nrows = math.ceil(n_in / ncols)
    fig = _figure(max(3.0, 1.15 * ncols + 1.0), max(2.2, 1.25 * nrows + 0.7))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    limit = float(np.abs(tiles).max()) or float(np.abs(kernel).max()) or 1.0  # this channel's scale
    im = None
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n_in:
            ax.set_axis_off()
            continue
        im = ax.imshow(tiles[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        l1 = float(np.abs(tiles[:, :, i]).sum())
        value = f"m={float(norms[i, cout]):.2f}" if norms is not None else f"|w|={l1:.2f}"
        is_pruned = pruned is not None and bool(pruned[i, cout])
        ax.set_title(f"cin {i}  {value}", fontsize=6, color=PRUNED_COLOR if is_pruned else "black")
        if is_pruned:
            for side in ax.spines.values():
                side.set_edgecolor(PRUNED_COLOR)
                side.set_linewidth(2.0)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="weight")
    n_pruned = int(np.count_nonzero(pruned[:, cout])) if pruned is not None else 0
    fig.suptitle(
        f"{layer}: the {kh}x{kw} kernels of output channel {cout} ({n_pruned} of {n_in} pruned, red frame)",
        fontsize=9,
    )
    return _save(fig, path)


def magnitude_histograms(
    norms: dict[str, np.ndarray],
    path: str | Path,
    masks: dict[str, np.ndarray] | None = None,
    *,
    threshold: float | None = None,
) -> Path:
    """A magnitude histogram per conv layer, pruned and kept kernels stacked, threshold drawn.

    Without an explicit `threshold`, each layer's effective cut (the largest pruned
    magnitude) is drawn dashed.
    """
    if not norms:
        raise BadInput("magnitude histograms: the model has no conv layers")
    masks = masks or {}
    fig, axes = _panels(len(norms), 2.8)
    for ax, (name, mag) in zip(axes, norms.items(), strict=False):
        values = np.asarray(mag, float).ravel()
        pruned = np.asarray(masks.get(name, np.zeros(mag.shape, bool)), bool).ravel()
        bins = np.histogram_bin_edges(values, bins=min(40, max(5, values.size // 4)))
        ax.hist(
            [values[pruned], values[~pruned]],
            bins=bins,
            stacked=True,
            color=[PRUNED_COLOR, KEPT_COLOR],
            label=[f"pruned ({int(pruned.sum())})", f"kept ({int((~pruned).sum())})"],
        )
        if threshold is not None:
            ax.axvline(threshold, color="black", linewidth=1.2, label=f"threshold {threshold:g}")
        elif pruned.any():
            cut = float(values[pruned].max())
            ax.axvline(cut, color="black", linestyle="--", linewidth=1.0, label=f"cut {cut:.3g}")
        ax.set_title(f"{name} ({values.size} kernels)", fontsize=9)
        ax.set_xlabel("kernel magnitude", fontsize=8)
        ax.set_ylabel("kernels", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return _save(fig, path)


def accuracy_vs_fraction(
    history: list[dict],
    path: str | Path,
    *,
    floor: float | None = None,
    train_floor: float | None = None,
) -> Path:
    """Accuracy after each pruning round against the fraction of kernels pruned.

    `history` is the pruned stage's summary["history"] (round, fraction, val_accuracy,
    test_accuracy, within_budget, train_accuracy where training is a budget split); `floor` and
    `train_floor` are gradual mode's budget on validation and on training accuracy.
    """
    if not history:
        raise BadInput("accuracy plot: the pruning history is empty")
    rows = sorted(history, key=lambda r: (r.get("round", 0), r.get("fraction", 0.0)))
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    fractions = np.array([float(r.get("fraction", 0.0)) for r in rows])
    for key, label, color in (("val_accuracy", "validation", KEPT_COLOR), ("train_accuracy", "training", "#9467bd"),
                              ("test_accuracy", "test", "#2ca02c")):
        acc = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
        if np.all(np.isnan(acc)):
            continue
        ax.plot(fractions, acc, marker="o", color=color, label=label)
    over = [r for r in rows if r.get("within_budget") is False]
    for r in over:
        if r.get("val_accuracy") is not None:
            ax.plot(r["fraction"], r["val_accuracy"], marker="x", markersize=10, color=PRUNED_COLOR, linestyle="none")
    if over:
        ax.plot([], [], marker="x", color=PRUNED_COLOR, linestyle="none", label="over budget (not kept)")
    kept = [r for r in rows if r.get("within_budget", True) and r.get("val_accuracy") is not None]
    if len(rows) > 1 and kept:
        k = kept[-1]
        ax.plot(k["fraction"], k["val_accuracy"], marker="*", markersize=15, color="#ff7f0e", linestyle="none",
                label=f"kept model ({100 * float(k['fraction']):.0f}% pruned)")
    if floor is not None:
        ax.axhline(floor, color="black", linestyle="--", linewidth=1.0, label=f"validation floor {floor:.4f}")
    if train_floor is not None:
        ax.axhline(train_floor, color="#9467bd", linestyle=":", linewidth=1.0,
                   label=f"training floor {train_floor:.4f}")
    ax.set_xlabel("fraction of kernels pruned")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy after masked retraining, per pruning round", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def multiplications(
    before: dict[str, int],
    after: dict[str, int],
    path: str | Path,
    *,
    title: str = "multiplications per image",
    cut: float | None = None,
) -> Path:
    """Bars per layer, before and after pruning (log scale: conv and dense differ 100x).

    The title quotes `cut`, the one savings figure (`analysis.counts.conv_mults_cut`) the caller
    computed, never a second definition; a bar pruning left alone is labelled "unchanged".
    """
    from ..analysis.counts import savings_text

    before, after = _layers_only(before), _layers_only(after)
    names = [k for k in before if k in after]
    if not names:
        raise BadInput("multiplications plot: no layer has both a before and an after count")
    x = np.arange(len(names))
    b = np.array([float(before[k]) for k in names])
    a = np.array([float(after[k]) for k in names])
    fig = _figure(max(5.0, 1.1 * len(names) + 2.0), 3.8)
    ax = fig.subplots()
    ax.bar(x - 0.2, b, width=0.38, color="#7f7f7f", label="before")
    ax.bar(x + 0.2, a, width=0.38, color=KEPT_COLOR, label="after")
    for xi, bi, ai in zip(x, b, a, strict=True):
        ax.annotate(bar_label(bi, ai), (xi + 0.2, max(ai, 1.0)), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, fontsize=8)
    if b.max() > 0:
        ax.set_yscale("log")
    ax.set_ylabel("multiplications")
    ax.set_title(title if cut is None else f"{title}\n{savings_text(cut)}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def bar_label(before: float, after: float) -> str:
    """A layer's bar label: how much it was cut, or "unchanged" (never "-0%")."""
    if after >= before or before == 0:
        return "unchanged"
    return f"cut {100.0 * (1.0 - after / before):.1f}%"


def quantized_weights(model, path: str | Path) -> Path:
    """Distribution of each layer's (quantized) weight values; the zeros are counted in the title.

    For a QKeras model the values are the quantizer's output, so the bars sit on the
    fixed-point levels; a float model shows its float weights.
    """
    from ..hw.quantize import quantized_kernels

    values = {name: kernel.ravel() for name, kernel in quantized_kernels(model).items()}
    if not values:
        raise BadInput("quantized weights plot: the model has no weighted layers")
    fig, axes = _panels(len(values), 2.6)
    for ax, (name, w) in zip(axes, values.items(), strict=False):
        levels, counts = np.unique(w, return_counts=True)
        zeros = int(np.count_nonzero(w == 0.0))
        if len(levels) <= 64:
            step = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
            colors = [PRUNED_COLOR if v == 0.0 else KEPT_COLOR for v in levels]
            ax.bar(levels, counts, width=step * 0.8, color=colors)
            kind = f"{len(levels)} levels"
        else:
            ax.hist(w, bins=min(128, len(levels)), color=KEPT_COLOR)
            kind = f"{len(levels)} distinct values"
        ax.set_yscale("log")
        share = 100.0 * zeros / max(w.size, 1)
        ax.set_title(f"{name}: {w.size} weights, {kind}, {zeros} zeros ({share:.1f}%)", fontsize=8)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(fig, path)


def sensitivity_curves(sweep: dict[str, list[dict]], path: str | Path, *, baseline: float | None = None) -> Path:
    """The analyzer's sweep: validation accuracy per layer with its smallest kernels zeroed."""
    if not sweep:
        raise BadInput("sensitivity plot: the sweep is empty")
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    for name, points in sweep.items():
        pts = [p for p in points if p.get("val_accuracy") is not None]
        ax.plot([p["fraction"] for p in pts], [p["val_accuracy"] for p in pts], marker="o", label=name)
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1.0, label=f"unpruned {baseline:.4f}")
    ax.set_xlabel("fraction of the layer's kernels zeroed (no retraining)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("per-layer sensitivity", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]], front: list[tuple[float, float]], path: str | Path, *,
                 default: tuple[float, float] | None = None, xlabel: str = "LUT-equivalents (LUT + 55 x DSP)",
                 ylabel: str = "validation accuracy (quantized)") -> Path:
    """A sweep's trials as (cost, accuracy), the Pareto front highlighted, the default flow's design starred."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    if points:
        ax.scatter(*zip(*points, strict=True), s=16, color="#999999", label=f"trials ({len(points)})")
    if front:
        ax.scatter(*zip(*front, strict=True), s=34, color=PRUNED_COLOR, zorder=2, label=f"Pareto front ({len(front)})")
    stairs = _staircase(points)
    if len(stairs) > 1:  # the front of these two axes alone (the study's may have more objectives)
        ax.plot(*zip(*stairs, strict=True), color=PRUNED_COLOR, lw=1, alpha=0.6, drawstyle="steps-post")
    if default is not None:
        ax.scatter([default[0]], [default[1]], marker="*", s=180, color=KEPT_COLOR, zorder=3, label="default flow")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _staircase(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats on both axes (lower cost, higher accuracy), by cost."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:
            out.append((x, y))
    return out
