"""What a DeepLesion-layout dataset holds, cheaply: counts, splits, intervals, sizes (no PNG decoded).

Used by ``lesionprop summary`` and ``lesionprop synth --compare``.  Boxes are not
read here; lesion diameters (``Lesion_diameters_Pixel_``) are converted to mm with the
row's x spacing.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lesionprop.annotations import LESION_TYPES, Annotations, Split, read_annotations, series_geometry
from lesionprop.data.layout import IMAGES_DIR, list_series, list_slices, series_dir
from lesionprop.errors import MissingInputError
from lesionprop.fileio import require_folder


def _interval_key(z: float) -> str:
    if not math.isfinite(z):
        return "nan"
    return f"{z:.2f}".rstrip("0").rstrip(".")


def _stats(values: np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {"count": 0}
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"count": int(a.size), "min": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "max": float(q[4]), "mean": float(a.mean())}


def _split_name(code: int) -> str:
    return Split(code).name.lower() if code in (1, 2, 3) else str(code)


def summarize(root: str | os.PathLike, annotations: str | os.PathLike | None = None) -> dict[str, Any]:
    """The summary of dataset ``root`` as a plain dict (what ``lesionprop summary --json`` prints)."""
    root = require_folder(root, "dataset folder")
    path = Path(annotations) if annotations else root / "DL_info.csv"
    ann = read_annotations(path) if (annotations or path.is_file()) else Annotations.empty()
    folders = {s: set(list_slices(series_dir(root, s))) for s in list_series(root)}
    if not (root / IMAGES_DIR).is_dir() and not len(ann):
        raise MissingInputError(f"{root}: neither Images_png/ nor DL_info.csv found")
    geometry = series_geometry(root, ann)
    groups = ann.by_key_slice()
    missing = sorted(str(f) for f, s, k in zip(groups.file_names, groups.series, groups.slices.tolist())
                     if k not in folders.get(s, ()))
    per_split: dict[str, dict[str, int]] = {}
    for code in dict.fromkeys(ann.split.tolist()):
        m = ann.split == code
        per_split[_split_name(code)] = {"lesions": int(m.sum()), "key_slices": len(set(ann.file_name[m].tolist())),
                                        "series": len(set(ann.series[m].tolist())), "noisy": int(ann.noisy[m].sum())}
    order = {s.name.lower(): s.value for s in Split}
    intervals_series = Counter(_interval_key(g.spacing[2]) for s, g in geometry.items() if s in folders or not folders)
    intervals_lesions = Counter(_interval_key(z) for z in ann.spacing[:, 2].tolist())
    long_px, sx = ann.diameters_px[:, 0], ann.spacing[:, 0]
    ok = np.isfinite(long_px) & (sx > 0)
    out: dict[str, Any] = {
        "root": str(root),
        "annotations": str(path) if len(ann) or annotations else None,
        "series": len(folders),
        "slices": sum(len(v) for v in folders.values()),
        "lesions": len(ann),
        "key_slices": len(groups),
        "splits": dict(sorted(per_split.items(), key=lambda kv: order.get(kv[0], 9))),
        "sources": dict(Counter(ann.source.tolist())),
        "lesion_types": {LESION_TYPES.get(t, str(t)): n for t, n in sorted(Counter(ann.lesion_type.tolist()).items())},
        "slice_interval_mm": {
            "series": dict(sorted(intervals_series.items(), key=lambda kv: float(kv[0]))),
            "lesions": dict(sorted(intervals_lesions.items(), key=lambda kv: float(kv[0]))),
        },
        "long_diameter_mm": _stats(long_px[ok] * sx[ok]),
        "missing_key_slice_files": len(missing),
        "missing_examples": missing[:5],
        "series_without_folder": sorted(set(ann.series.tolist()) - set(folders))[:5],
    }
    truth = root / "truth.csv"
    if truth.is_file():
        rows = read_annotations(truth)
        ids = set(rows.extra("Lesion_id").tolist()) if "Lesion_id" in rows.extras else set()
        out["truth"] = {"rows": len(rows), "lesions": len(ids - {""}) or len(rows)}
    return out


def label_statistics(ann: Annotations) -> dict[str, str]:
    """Label statistics of a DL_info file, as text (median [p10, p90] for distributions)."""
    if not len(ann):
        return {}
    _, first = np.unique(ann.series.astype(str), return_index=True)
    iv, px = ann.spacing[first, 2], ann.spacing[first, 0]
    long_mm = ann.diameters_px[:, 0] * ann.spacing[:, 0]
    short_mm = ann.diameters_px[:, 1] * ann.spacing[:, 0]
    per_slice = ann.by_key_slice().count
    ctx = (ann.slice_range[first, 1] - ann.slice_range[first, 0] + 1) * ann.spacing[first, 2]

    def q(a: np.ndarray) -> str:
        a = a[np.isfinite(a)]
        return f"{np.median(a):.1f} [{np.percentile(a, 10):.1f}, {np.percentile(a, 90):.1f}]" if a.size else "-"

    return {
        "label rows": str(len(ann)),
        "series": str(first.size),
        "image size": ", ".join(sorted({f"{h}x{w}" for h, w in ann.image_size.tolist()})),
        "interval 1 / 2 / 5 mm / other": " / ".join(f"{np.mean(iv == v):.0%}" for v in (1, 2, 5))
                                          + f" / {np.mean(~np.isin(iv, (1, 2, 5))):.0%}",
        "pixel spacing mm (median [p10, p90])": q(px),
        "long diameter mm (median [p10, p90])": q(long_mm),
        "short diameter mm": q(short_mm),
        "lesions per key slice": f"{per_slice.mean():.2f}",
        "z range released per series, mm": q(ctx),
        "split train / val / test (rows)": " / ".join(f"{np.mean(ann.split == k):.0%}" for k in (1, 2, 3)),
        "typed rows (val+test)": f"{np.mean(ann.lesion_type != -1):.0%}",
    }


def comparison_table(synth: Annotations, real: Annotations, real_name: str) -> str:
    """Label statistics of ``synth`` next to those of real DeepLesion rows (informative only)."""
    a, b = label_statistics(synth), label_statistics(real)
    w = max(len(k) for k in a) if a else 10
    lines = [f"{'statistic':{w}s} | {'synthetic DL_info.csv':28s} | real rows ({Path(real_name).name})"]
    for k in a:
        lines.append(f"{k:{w}s} | {a[k]:28s} | {b.get(k, '-')}")
    return "\n".join(lines)
