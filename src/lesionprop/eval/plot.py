"""FROC curve figure (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os

from lesionprop.eval.froc import FrocResult
from lesionprop.fileio import save_figure


def plot_froc(result: FrocResult, path: str | os.PathLike, title: str | None = None) -> None:
    """Write the FROC curve of ``result`` (sensitivity vs FPs per image) to ``path`` (PNG/PDF/SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    try:
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
        save_figure(fig, path, bbox_inches="tight")
    finally:
        plt.close(fig)
