"""Figures like the paper's Figures 2-4: slices K - 1, K, K + 1 with human labels
(red), pseudo-labels (yellow) and, when known, truth (green, dashed).

Boxes come from annotation files (file frame) and are drawn in the pixel frame
(``boxes.file_to_pixel``).  Cases are picked deterministically: the first
correct and the first wrong pseudo-labels in file order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lesionprop.annotations import Annotations, Lesion, Source, read_annotations
from lesionprop.boxes import box_iou, file_to_pixel
from lesionprop.data.layout import parse_file_name, slice_file_name
from lesionprop.fileio import save_figure

DISPLAY_WINDOW = (-160.0, 240.0)   # soft-tissue window for looking at lesions


def _rows_by_slice(ann: Annotations) -> dict[str, list[Lesion]]:
    """Slice name -> its rows (for drawing a few cases)."""
    return {name: [ann.row(i) for i in rows.tolist()] for name, rows in ann.groups().items()}


def _key_slice_of(row: Lesion, key_names: set[str]) -> str:
    """The human key slice a pseudo-label belongs to (itself for mined rows)."""
    if row.file_name in key_names:
        return row.file_name
    series, s = parse_file_name(row.file_name)
    for k in (s - 1, s + 1, s - 2, s + 2):
        name = slice_file_name(series, k)
        if name in key_names:
            return name
    return row.file_name


def pick_cases(pseudo: Sequence[Lesion], truth_by: dict[str, list[Lesion]], n: int = 3,
               key_names: set[str] = frozenset()) -> tuple[list[Lesion], list[Lesion]]:
    """First ``n`` correct (IoU >= 0.5 with truth) and first ``n`` wrong pseudo-labels,
    at most one per key slice (its K - 1 / K + 1 neighbours show the rest)."""
    good, wrong = [], []
    seen: set[str] = set()
    for r in pseudo:
        key = _key_slice_of(r, key_names)
        if key in seen:
            continue
        seen.add(key)
        t = np.array([x.box for x in truth_by.get(r.file_name, [])]).reshape(-1, 4)
        ok = len(t) > 0 and (box_iou(np.array([r.box]), t) >= 0.5).any()
        (good if ok else wrong).append(r)
    return good[:n], wrong[:n]


def _draw(ax, boxes: np.ndarray, color: str, style: str = "-", width: float = 1.4) -> None:
    import matplotlib.patches as patches

    for x1, y1, x2, y2 in file_to_pixel(boxes).reshape(-1, 4):
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                       linestyle=style, linewidth=width))


def render_cases(root: Path, cases: Sequence[Lesion], rows_by: dict[str, list[Lesion]],
                 truth_by: dict[str, list[Lesion]], key_names: set[str], title: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's) stays as it is

    from lesionprop.data.slices import SliceReader

    reader = SliceReader(root)
    fig = Figure(figsize=(9, 3.1 * len(cases)))
    axes = fig.subplots(len(cases), 3, squeeze=False)
    lo, hi = DISPLAY_WINDOW
    for row_axes, case in zip(axes, cases):
        key = _key_slice_of(case, key_names)
        series, k = parse_file_name(key)
        # crop around the case's box so small lesions are visible
        x1, y1, x2, y2 = file_to_pixel(np.array(case.box))
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(48.0, 1.5 * max(x2 - x1, y2 - y1))
        for ax, s in zip(row_axes, (k - 1, k, k + 1)):
            name = slice_file_name(series, s)
            ax.set_xticks([])
            ax.set_yticks([])
            try:
                hu = reader.read_hu(series, s)
            except (FileNotFoundError, ValueError):
                ax.set_title(f"{name}: not on disk", fontsize=8)
                continue
            ax.imshow(np.clip((hu - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
            on = rows_by.get(name, [])
            _draw(ax, np.array([r.box for r in on if r.source == "human"]), "red")
            _draw(ax, np.array([r.box for r in on if r.source != "human"]), "yellow")
            _draw(ax, np.array([r.box for r in truth_by.get(name, [])]), "lime", "--", 0.9)
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(cy + half, cy - half)
            ax.set_title(("S" if s == k else f"S{s - k:+d}") + f"  {name}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def draw_label_figures(root: Path, annotations: Path, truth: Path | None, label_files: dict[str, Path],
                       out_dir: Path, n: int = 3) -> list[Path]:
    """One good-cases and one wrong-cases figure per label set; returns the written paths."""
    key_names = set(read_annotations(annotations).file_name.tolist())
    truth_by = _rows_by_slice(read_annotations(truth)) if truth is not None and truth.is_file() else {}
    written = []
    for name, f in label_files.items():
        rows = read_annotations(f)
        is_pseudo = rows.source != Source.HUMAN.value
        if not is_pseudo.any():
            continue
        pseudo = [rows.row(i) for i in np.flatnonzero(is_pseudo).tolist()]
        rows_by = _rows_by_slice(rows)
        good, wrong = pick_cases(pseudo, truth_by, n, key_names) if truth_by else (pseudo[:n], [])
        for kind, cases in (("good", good), ("wrong", wrong)):
            if not cases:
                continue
            path = out_dir / f"{name}_{kind}.png"
            label = "correct" if kind == "good" else "wrong (no truth lesion at IoU >= 0.5)"
            render_cases(root, cases, rows_by, truth_by, key_names,
                         f"labels_{name}: {label} pseudo-labels (yellow), human (red), truth (green)", path)
            written.append(path)
    return written
