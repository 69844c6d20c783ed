"""The pipeline report: Tables 1 and 2 with our numbers, FROC plot, pseudo-label
quality and figures like the paper's Figures 2-4.

Sensitivities are fractions in JSON/CSV and percentages in the markdown table.
Boxes drawn in figures are file-frame boxes converted to the pixel frame.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesionprop.annotations import read_annotations
from lesionprop.eval.froc import FrocResult
from lesionprop.fileio import atomic_write, save_figure
from lesionprop.pipeline.quality import label_quality

VARIANT_NAMES = {
    "baseline": "FPN-3DCE (baseline)",
    "dd": "Data distillation",
    "lp": "FPN-3DCE + LP",
    "mm": "FPN-3DCE + MM",
    "mm_lp": "FPN-3DCE + MM + LP (ours)",
}
#: the paper's Tables 1 and 2 (DeepLesion test set, sensitivity % at 0.5/1/2/4/8 FPs)
PAPER = {
    "baseline": [64.56, 75.29, 82.49, 86.87, 89.92],
    "dd": [61.05, 72.54, 81.58, 87.58, 91.65],
    "lp": [65.49, 75.71, 83.27, 87.83, 90.82],
    "mm": [65.70, 76.23, 84.14, 88.70, 91.75],
    "mm_lp": [66.02, 76.87, 84.61, 89.15, 92.00],
}


def markdown_table(results: dict[str, FrocResult], fps: Sequence[float], title: str) -> str:
    head = "| variant | " + " | ".join(f"{f:g}" for f in fps) + " | paper @4 |"
    lines = [f"**{title}** (sensitivity % at FPs per image)", "", head, "|" + " --- |" * (len(fps) + 2)]
    for v, r in results.items():
        paper = PAPER.get(v)
        p4 = f"{paper[3]:.2f}" if paper else ""
        lines.append(f"| {VARIANT_NAMES.get(v, v)} | " + " | ".join(f"{100 * s:.2f}" for s in r.sensitivity)
                     + f" | {p4} |")
    any_r = next(iter(results.values()))
    lines += ["", f"{any_r.images} test images, {any_r.lesions} lesions."]
    return "\n".join(lines)


def paper_table(fps: Sequence[float]) -> str:
    lines = ["**The paper's numbers** (DeepLesion test set, for reference)", "",
             "| variant | " + " | ".join(f"{f:g}" for f in fps) + " |", "|" + " --- |" * (len(fps) + 1)]
    for v, row in PAPER.items():
        lines.append(f"| {VARIANT_NAMES[v]} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def _csv_text(results: dict[str, FrocResult], truth: dict[str, FrocResult], fps: Sequence[float]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["labels", "variant"] + [f"sens@{f:g}" for f in fps] + ["images", "lesions"])
    for kind, res in (("official", results), ("truth", truth)):
        for v, r in res.items():
            w.writerow([kind, v] + [f"{s:.6f}" for s in r.sensitivity] + [r.images, r.lesions])
    for v, row in PAPER.items():
        w.writerow(["paper", v] + [f"{x / 100:.4f}" for x in row] + ["", ""])
    return buf.getvalue()


def froc_plot(results: dict[str, FrocResult], truth: dict[str, FrocResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("official key-slice labels", results)] + ([("complete truth labels", truth)] if truth else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (title, res) in zip(axes[0], panels):
        for v, r in res.items():
            fp = np.asarray(r.fp_curve)
            se = np.asarray(r.sens_curve)
            ax.plot(np.r_[0, fp], np.r_[0, se], label=VARIANT_NAMES.get(v, v))
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlim(0, 16)
        ax.set_xticks([0.5, 1, 2, 4, 8, 16])
        ax.set_xticklabels(["0.5", "1", "2", "4", "8", "16"])
        ax.set_ylim(0, 1)
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("sensitivity")
        ax.set_title(f"FROC, test split, {title}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_report(result: Any, out_dir: Path, *, root: Path, annotations: Path, truth: Path | None,
                 label_files: dict[str, Path], fps: Sequence[float]) -> dict[str, Any]:
    """Write every report artefact under ``out_dir``; return a summary dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = list(fps)
    table = {"fps": fps, "units": "fraction of lesions",
             "variants": {v: [float(x) for x in r.sensitivity] for v, r in result.official.items()},
             "paper": {v: [x / 100 for x in row] for v, row in PAPER.items()}}
    if result.truth:
        table["truth"] = {"fps": fps, "variants": {v: [float(x) for x in r.sensitivity]
                                                   for v, r in result.truth.items()}}
    any_r = next(iter(result.official.values()))
    table["images"], table["lesions"] = any_r.images, any_r.lesions

    md = ["# lesionprop pipeline report", "",
          markdown_table(result.official, fps, "Table 1 / 2 with our numbers: official key-slice test labels")]
    if result.truth:
        md += ["", markdown_table(result.truth, fps, "Against complete labels (truth.csv)")]
    md += ["", paper_table(fps)]

    quality: dict[str, Any] = {}
    if truth is not None and truth.is_file():
        truth_rows = read_annotations(truth)
        for name, f in label_files.items():
            quality[name] = label_quality(read_annotations(f), truth_rows).as_dict()
        md += ["", "**Pseudo-label quality on the training split** (against truth; IoU >= 0.5)", "",
               "| labels | boxes | correct | precision | missing key-slice lesions recovered "
               "| unlabeled K+/-1 lesion slices recovered |", "| --- | --- | --- | --- | --- | --- |"]
        for name, q in quality.items():
            md.append(f"| labels_{name} | {q['boxes']} | {q['correct']} | {_pct(q['precision'])} | "
                      f"{q['missing_recovered']}/{q['missing_targets']} ({_pct(q['missing_recall'])}) | "
                      f"{q['neighbour_recovered']}/{q['neighbour_targets']} ({_pct(q['neighbour_recall'])}) |")
        table["label_quality"] = quality

    froc_plot(result.official, result.truth, out_dir / "froc.png")
    md += ["", "![FROC](froc.png)"]
    try:
        from lesionprop.pipeline.figures import draw_label_figures

        figs = draw_label_figures(root, annotations, truth, label_files, out_dir / "figures")
        md += ["", "Figures (human labels red, pseudo-labels yellow, truth green dashed):", ""]
        md += [f"- [{p.name}](figures/{p.name})" for p in figs]
    except ImportError:
        figs = []
    with atomic_write(out_dir / "table.json") as fh:
        json.dump(_clean(table), fh, indent=2, default=_json_default)
    _write_text(out_dir / "table.csv", _csv_text(result.official, result.truth, fps))
    _write_text(out_dir / "table.md", "\n".join(md) + "\n")
    return {"figures": [str(p) for p in figs]}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _clean(x: Any) -> Any:
    """NaN -> None recursively, so table.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
