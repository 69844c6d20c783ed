"""``preview.png`` of a synthetic dataset: key slices with truth boxes (labeled red, unlabeled yellow).

Boxes are read from ``truth.csv`` (file frame) and drawn in the pixel frame (``file - 1``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lesionprop.annotations import read_annotations
from lesionprop.data.layout import decode_png, parse_file_name, slice_path
from lesionprop.fileio import save_figure


def write_preview(root: Path, path: Path, n: int = 8) -> Path:
    from matplotlib.figure import Figure      # no pyplot: the caller's backend (a notebook's) stays as it is
    from matplotlib.patches import Rectangle

    truth = read_annotations(root / "truth.csv")
    with open(root / "lesions.csv", newline="", encoding="utf-8") as fh:
        info = {r["Lesion_id"]: r for r in csv.DictReader(fh)}
    by_slice = {name: [truth.row(i) for i in rows.tolist()] for name, rows in truth.groups().items()}
    keys = {f"{r['Series']}_{int(r['Key_slice_index']):03d}.png": r for r in info.values() if r["Labeled"] == "1"}
    # key slices that also show an unlabeled lesion first (what missing-annotation mining looks for)
    ranked = sorted(keys, key=lambda f: (-sum(info[x.extras["Lesion_id"]]["Labeled"] == "0" for x in by_slice[f]), f))
    chosen = ranked[:n]
    cols = min(4, max(1, len(chosen)))
    rows = max(1, (len(chosen) + cols - 1) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), chosen):
        series, idx = parse_file_name(name)
        img = decode_png(slice_path(root, series, idx)).astype(np.float32)
        lung = any(x.windows[0] < -1000 for x in by_slice[name])
        lo, hi = (-1350.0, 150.0) if lung else (-175.0, 275.0)
        ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
        for les in by_slice[name]:
            x1, y1, x2, y2 = (v - 1 for v in les.box)
            color = "red" if info[les.extras["Lesion_id"]]["Labeled"] == "1" else "yellow"
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.0, ec=color))
        ax.set_title(f"{name}  {les.spacing[2]:g} mm", fontsize=7)
    fig.suptitle("truth boxes: labeled (red), unlabeled (yellow)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path
