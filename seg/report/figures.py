"""Report figures (matplotlib, Agg backend, no pyplot state): IoU bars, ISBI error bars, training
curves and example slices. Each function returns a :class:`matplotlib.figure.Figure`;
:mod:`seg.report.build` writes them (atomically, as one folder).

Variant names are the display labels of the leaderboard (config ``label`` if set). Figure widths
grow with the number of variants; long names are wrapped and, beyond six variants, rotated.
"""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.report.examples import FN_COLOR, FP_COLOR, UNSCORED_COLOR, Example, error_overlay, stretch
from seg.report.leaderboard import Row
from seg.report.references import Reference

DPI = 110
REF_COLOR = "#c0392b"
COMPACT = 6  # more variants than this: rotated names, shorter value labels


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def variant_colors(names: list[str]) -> dict[str, tuple]:
    """A stable colour per variant name (tab10, then tab20 for many variants)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _wrap(label: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(label, width, break_long_words=True)) or label


def _bars(ax, rows: list[Row], key: str, colors: dict[str, tuple], *, digits: int = 3) -> float:
    """Bars of ``row.mean[key]`` with std error bars (merged runs only) and the value printed
    above each bar; returns the highest bar top (mean + std)."""
    x = np.arange(len(rows))
    compact = len(rows) > COMPACT
    means = np.array([r.mean.get(key, math.nan) for r in rows])
    stds = np.array([r.std.get(key, math.nan) for r in rows])
    heights = np.nan_to_num(means, nan=0.0)
    ax.bar(x, heights, width=0.65, color=[colors.get(r.variant, "grey") for r in rows],
           edgecolor="black", linewidth=0.6, zorder=2)
    spread = ~np.isnan(stds) & ~np.isnan(means)
    if spread.any():
        ax.errorbar(x[spread], means[spread], yerr=stds[spread], fmt="none", ecolor="black",
                    capsize=4, linewidth=1.0, zorder=3)
    top = np.nanmax(np.concatenate([means + np.nan_to_num(stds), [0.0]]))
    for xi, m, s, r in zip(x, means, stds, rows):
        if math.isnan(m):
            text = "n/a"
        elif math.isnan(s):
            text = f"{m:.{digits}f}"
        elif compact:
            text = f"{m:.{digits}f}\n±{s:.{digits}f}"
        else:
            text = f"{m:.{digits}f}\n± {s:.{digits}f} (n={r.n})"
        ax.annotate(text, (xi, (0 if math.isnan(m) else m) + (0 if math.isnan(s) else s)),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none",
                              alpha=0.8))
    if compact:  # many variants: one rotated line per name
        ax.set_xticks(x, [r.label if len(r.label) <= 40 else r.label[:39] + "…" for r in rows],
                      rotation=35, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, [_wrap(r.label) for r in rows])
    pad = 0.1 + max(0.0, (3 - len(rows)) / 2)  # few bars: keep them narrow
    ax.set_xlim(-0.5 - pad, len(rows) - 0.5 + pad)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return top


def _width(n: int, minimum: float = 6.0) -> float:
    """Figure width in inches for ``n`` bars: room for a wrapped name under each bar, or for a
    rotated one when there are more than :data:`COMPACT` variants."""
    return max(minimum, 1.5 + (1.15 if n <= COMPACT else 0.75) * n)


def iou_chart(dataset: str, rows: list[Row], refs: tuple[Reference, ...],
              colors: dict[str, tuple], *, key: str = "iou_mean"):
    """Bar chart of mean IoU per variant (leaderboard order), published IoU as a dashed line.
    ``key="seg"`` (sparsely annotated data): SEG instead, with a published value of that measure."""
    fig = _figure(_width(len(rows)), 4.6 + (1.2 if len(rows) > COMPACT else 0.0))
    ax = fig.add_subplot()
    _bars(ax, rows, key, colors)
    for ref in (r for r in refs if r.metric == key):
        ax.axhline(ref.value, color=REF_COLOR, linestyle="--", linewidth=1.5, zorder=2.5,
                   label=f"{ref.name} = {ref.value:.4f}, published,\nmeasured on the {ref.test_set} "
                         "(not our test split)")
    ax.set_ylim(0, 1.18)
    ax.set_yticks(np.linspace(0, 1, 6))
    what = "SEG" if key == "seg" else "IoU"
    ax.set_ylabel("SEG, mean IoU of matched annotated cells (0-1)" if key == "seg" else "IoU, mean over classes (0-1)")
    ax.set_xlabel("model variant")
    ax.set_title(f"{dataset}: {what} on our test split (higher is better)")
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return fig


def isbi_error_chart(dataset: str, rows: list[Row], refs: tuple[Reference, ...],
                     colors: dict[str, tuple]):
    """Rand error and pixel error per variant (two stacked panels) beside the published U-Net
    values (dashed lines)."""
    fig = _figure(_width(len(rows)), 8.4 + (1.2 if len(rows) > COMPACT else 0.0))
    axes = fig.subplots(2, 1, sharex=True)
    published = []
    for ax, key, name in zip(axes, ("rand_error", "pixel_error_isbi"),
                             ("Rand error", "pixel error (1 - F-score)")):
        top = _bars(ax, rows, key, colors, digits=4)
        for ref in (r for r in refs if r.metric == key):
            ax.axhline(ref.value, color=REF_COLOR, linestyle="--", linewidth=1.5, zorder=2.5)
            published.append(f"{name} {ref.value:g}")
            top = max(top, ref.value)
        ax.set_ylim(0, max(top, 1e-3) * 1.35)
        ax.set_ylabel(f"{name}\n(fraction, lower is better)")
        ax.set_title(f"{name} on our test split", fontsize=10)
    axes[-1].set_xlabel("model variant")
    if published:
        from matplotlib.lines import Line2D

        handle = Line2D([], [], color=REF_COLOR, linestyle="--", linewidth=1.5)
        fig.legend([handle], [f"published U-Net: {', '.join(published)};\nmeasured on the "
                              f"{refs[0].test_set}, not on our split"],
                   loc="outside lower center", fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: errors beside the published U-Net\n"
                 "(its warping error 0.000353 is not computed here)", fontsize=11)
    return fig


def read_train_log(path: Path) -> dict[str, np.ndarray]:
    """``train_log.csv`` as float arrays ``iteration``, ``loss``, ``val_iou`` (NaN where empty).

    Raises:
        SegError: the file is missing or lacks the ``iteration`` and ``loss`` columns.
    """

    if not path.is_file():
        raise SegError(f"{path}: file not found")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"iteration", "loss"} <= set(rows[0]):
        raise SegError(f"{path}: needs columns iteration and loss, found {', '.join(rows[0])}")

    def col(name: str) -> np.ndarray:
        out = []
        for r in rows:
            try:
                out.append(float(r.get(name) or "nan"))
            except ValueError:
                out.append(math.nan)
        return np.array(out, dtype=float)

    return {"iteration": col("iteration"), "loss": col("loss"), "val_iou": col("val_iou")}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    kernel = np.ones(window) / window
    pad = np.pad(y, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(pad, kernel, mode="valid")


def training_curves(dataset: str, curves: list[tuple[Row, str, dict[str, np.ndarray]]],
                    colors: dict[str, tuple]):
    """Training loss and validation IoU vs iteration; one colour per variant, one line per run.

    Args:
        curves: (row, run name e.g. ``"seed 1"``, log from :func:`read_train_log`) per run.
    """
    n_var = len({row.variant for row, _, _ in curves})
    fig = _figure(11.0, 4.4 + 0.25 * math.ceil(n_var / 4))
    ax_loss, ax_val = fig.subplots(1, 2, sharex=True)
    seen: set[str] = set()
    losses = []
    for row, _run, log in curves:
        c = colors.get(row.variant, "grey")
        label = None if row.variant in seen else row.label + (f" ({row.n} runs)" if row.n > 1 else "")
        seen.add(row.variant)
        ok = ~np.isnan(log["loss"]) & ~np.isnan(log["iteration"])
        it, loss = log["iteration"][ok], log["loss"][ok]
        if it.size:
            losses.append(loss)
            window = max(1, it.size // 15)
            if window > 1:
                ax_loss.plot(it, loss, color=c, alpha=0.25, linewidth=0.8)
            ax_loss.plot(it, _smooth(loss, window), color=c, linewidth=1.6, label=label)
        ok = ~np.isnan(log["val_iou"]) & ~np.isnan(log["iteration"])
        if ok.any():
            ax_val.plot(log["iteration"][ok], log["val_iou"][ok], color=c, marker="o",
                        markersize=4, linewidth=1.4, label=None if label is None else label)
    allloss = np.concatenate(losses) if losses else np.array([])
    if allloss.size and allloss.min() > 0 and allloss.max() / allloss.min() > 30:
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration (optimiser steps)")
    ax_loss.set_ylabel("training loss (unitless; smoothed, raw faint)")
    ax_loss.set_title("training loss")
    ax_val.set_xlabel("iteration (optimiser steps)")
    ax_val.set_ylabel("validation IoU, mean over classes (0-1)")
    ax_val.set_title("validation IoU")
    if not ax_val.lines:
        ax_val.text(0.5, 0.5, "no validation rows in the logs", ha="center", va="center",
                    transform=ax_val.transAxes)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    handles, labels = ax_loss.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)),
                   fontsize=9, frameon=False)
    fig.suptitle(f"{dataset}: training curves", fontsize=11)
    return fig


def examples_figure(dataset: str, examples: list[Example], variant_label: str,
                    class_names: tuple[str, str]):
    """Rows of image | ground truth | prediction | error overlay for each example slice.

    Args:
        class_names: (class 0, class 1) names, e.g. ("membrane", "interior"), for the legend.
    """
    from matplotlib.patches import Patch

    n = len(examples)
    fig = _figure(13.0, 3.3 * n + 0.9)
    axes = np.atleast_2d(fig.subplots(n, 4))
    bg, fg = class_names
    for ax_row, ex in zip(axes, examples):
        panels = [
            (stretch(ex.image), f"image {ex.id}"),
            (ex.truth, f"ground truth (white = {fg})"),
            (ex.pred, "prediction"),
            (error_overlay(ex.image, ex.truth, ex.pred, unscored=ex.unscored),
             f"errors: FP {100 * ex.fp_fraction:.1f} %, FN {100 * ex.fn_fraction:.1f} %"),
        ]
        for ax, (img, title) in zip(ax_row, panels):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    legend = [Patch(color=np.array(FP_COLOR) / 255, label=f"false positive: predicted {fg}, truly {bg}"),
              Patch(color=np.array(FN_COLOR) / 255, label=f"false negative: truly {fg}, predicted {bg}")]
    if any(ex.unscored is not None for ex in examples):  # sparse annotations
        legend.append(Patch(color=np.array(UNSCORED_COLOR) / 255,
                            label=f"predicted {fg} touching no annotated {fg}: not scored (may be unannotated)"))
    fig.legend(handles=legend, loc="outside lower center", ncols=min(len(legend), 3), fontsize=9, frameon=False)
    fig.suptitle(f"{dataset}: test slices, prediction of {variant_label} "
                 f"(% = share of the slice's pixels)", fontsize=11)
    return fig


def targets_figure(dataset: str, image: np.ndarray, truth: np.ndarray, slice_id: str,
                   panels: list[tuple[str, np.ndarray, float]]):
    """One test slice: the image, its ground-truth instances and each target's instances (random
    colours over the grey image), side by side, with each panel's SEG on that slice.

    Args:
        image: (H, W) raw image; truth: int (H, W) instances (0 = background / not annotated).
        panels: (title, instances (H, W), SEG of the slice) per target.
    """
    from skimage.color import label2rgb

    grey = stretch(image)
    n = 2 + len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = _figure(3.4 * cols, 3.5 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    shown = [(grey, f"image {slice_id}"), (label2rgb(truth, grey, alpha=0.45, bg_label=0), "ground truth")]
    shown += [(label2rgb(inst, grey, alpha=0.45, bg_label=0), f"{_wrap(title, 34)}\nSEG {seg:.3f}")
              for title, inst, seg in panels]
    for ax in axes:
        ax.set_axis_off()
    for ax, (img, title) in zip(axes, shown):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="antialiased")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{dataset}: the instances of each target on one test slice (best row of each target)",
                 fontsize=11)
    return fig
