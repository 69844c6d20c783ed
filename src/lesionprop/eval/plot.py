"""FROC curve and forest plot figures: matplotlib Figure objects (no pyplot, so a notebook's backend is
left alone), returned and optionally written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lesionprop.errors import InputError
from lesionprop.eval.froc import FrocResult
from lesionprop.fileio import check_output_file, save_figure


def figure_formats() -> list[str]:
    """The file suffixes matplotlib can write here (png, pdf, svg, ...), sorted."""
    from matplotlib.figure import Figure

    return sorted(Figure().canvas.get_supported_filetypes())


def check_plot_path(path: str | os.PathLike, *inputs: str | os.PathLike | None, option: str = "--plot") -> None:
    """Before any work: ``path`` (the value of ``option``) is a writable file, not one of ``inputs``,
    with a suffix matplotlib writes (none: png, as :func:`~lesionprop.fileio.save_figure` does)."""
    check_output_file(path, *inputs, option=option)
    suffix = Path(path).suffix.lstrip(".").lower()
    formats = figure_formats()
    if suffix and suffix not in formats:
        raise InputError(f"{option} {path}: matplotlib cannot write .{suffix} files; use one of "
                         + ", ".join(f".{f}" for f in formats))


def plot_froc(result: FrocResult, path: str | os.PathLike | None = None, title: str | None = None, *, ax=None):
    """Draw the FROC curve of ``result`` (sensitivity vs FPs per image) and return its matplotlib Figure.

    ``path``: also write it there (PNG/PDF/SVG by the suffix).  ``ax``: draw into these axes (e.g. a
    panel of a notebook figure) instead of a new figure.  No pyplot state is touched, so a notebook's
    backend stays as it is; a Figure returned as a cell's last value shows inline.
    """
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 4), dpi=120)
        ax = fig.subplots()
    else:
        fig = ax.figure
    ax.plot(result.fp_curve, result.sens_curve, lw=1.5, label="FROC")
    ax.plot(result.fps, result.sensitivity, "o", label="reported rates")
    for f, s in zip(result.fps, result.sensitivity):
        ax.annotate(f"{100 * s:.1f}", (f, s), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, max(max(result.fps) * 1.1, 1e-6))
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_title(title or f"{result.split}: {result.images} images, {result.lesions} lesions "
                          f"(IoU {result.iou:g}, {result.convention})", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if path is not None:
        save_figure(fig, path, bbox_inches="tight")
    return fig


def plot_forest(comparison, path: str | os.PathLike | None = None, title: str | None = None):
    """Forest plot of a :class:`lesionprop.eval.compare.Comparison`: each variant's difference to
    the first (percentage points) at each FP rate and for the mean, with its CI, one panel per variant.
    Returns the matplotlib Figure; ``path``: also write it there."""
    from matplotlib.figure import Figure      # no pyplot: the caller's backend stays as it is

    c = comparison
    others = list(range(1, len(c.names)))
    if not others:
        raise InputError("a forest plot needs at least two variants")
    labels = [f"{f:g} FPs" for f in c.fps] + ["mean 0.5-8"]
    fig = Figure(figsize=(3.2 * len(others) + 1.2, 0.35 * len(labels) + 1.6), dpi=120)
    axes = fig.subplots(1, len(others), sharex=True, sharey=True, squeeze=False)
    y = np.arange(len(labels))[::-1]
    for ax, v in zip(axes[0], others):
        mid = 100 * np.r_[c.diff[v], c.mean_diff[v]]
        lo = 100 * np.r_[c.diff_low[v], c.mean_diff_ci[v, 0]]
        hi = 100 * np.r_[c.diff_high[v], c.mean_diff_ci[v, 1]]
        colors = ["tab:green" if a > 0 else "tab:red" if b < 0 else "tab:gray" for a, b in zip(lo, hi)]
        ax.hlines(y, lo, hi, colors=colors, lw=2)
        ax.scatter(mid, y, c=colors, marker="D", s=22, zorder=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.axhline(0.5, color="0.7", lw=0.6)
        ax.set_title(f"{c.names[v]} - {c.names[0]}", fontsize=9)
        ax.set_xlabel("difference in sensitivity (points)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    fig.suptitle(title or f"paired bootstrap: {100 * c.level:g}% CIs, {c.n_boot} resamples of {c.units} "
                          f"patients ({c.images} images, {c.lesions} lesions)", fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, bbox_inches="tight")
    return fig
