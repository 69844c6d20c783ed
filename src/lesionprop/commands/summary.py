"""``lesionprop summary DIR``: what a DeepLesion-layout dataset holds, cheaply.

Reads ``DL_info.csv`` (or ``--annotations``), ``series_info.csv`` and
``truth.csv`` when present, and lists the ``Images_png`` folders; no PNG is decoded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lesionprop.data.deeplesion import (
    LESION_TYPES, SPLITS, Lesion, parse_file_name, read_annotations, series_geometry,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="DIR", help="dataset root (Images_png/ + DL_info.csv)")
    p.add_argument("--annotations", metavar="CSV", help="annotation file (default: DIR/DL_info.csv)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _interval_key(z: float) -> str:
    if not math.isfinite(z):
        return "nan"
    return f"{z:.2f}".rstrip("0").rstrip(".")


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"count": int(a.size), "min": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "max": float(q[4]), "mean": float(a.mean())}


def summarize(root: str | os.PathLike, annotations: str | os.PathLike | None = None) -> dict[str, Any]:
    """The summary as a plain dict (what ``--json`` prints)."""
    root = Path(root)
    ann = Path(annotations) if annotations else root / "DL_info.csv"
    lesions: list[Lesion] = read_annotations(ann) if (annotations or ann.is_file()) else []
    images = root / "Images_png"
    if not images.is_dir() and not lesions:
        raise FileNotFoundError(f"{root}: neither Images_png/ nor DL_info.csv found")
    folders: dict[str, set[int]] = {}
    if images.is_dir():
        for entry in os.scandir(images):
            if entry.is_dir():
                folders[entry.name] = {int(f.name[:-4]) for f in os.scandir(entry.path)
                                       if f.name.endswith(".png") and f.name[:-4].isdigit()}
    geometry = series_geometry(root, lesions)
    split_names = {v: k for k, v in SPLITS.items()}

    key_slices = {les.file_name for les in lesions}
    missing = sorted(name for name in key_slices
                     if parse_file_name(name)[1] not in folders.get(parse_file_name(name)[0], ()))
    per_split: dict[str, dict[str, int]] = {}
    for les in lesions:
        d = per_split.setdefault(split_names.get(les.split, str(les.split)),
                                 {"lesions": 0, "key_slices": 0, "series": 0, "noisy": 0})
        d["lesions"] += 1
        d["noisy"] += int(les.noisy != 0)
    for name in per_split:
        rows = [les for les in lesions if split_names.get(les.split, str(les.split)) == name]
        per_split[name]["key_slices"] = len({les.file_name for les in rows})
        per_split[name]["series"] = len({les.series for les in rows})

    intervals_series = Counter(_interval_key(g.spacing[2]) for s, g in geometry.items()
                               if s in folders or not folders)
    intervals_lesions = Counter(_interval_key(les.spacing[2]) for les in lesions)
    diam_mm = [les.diameters[0] * les.spacing[0] for les in lesions
               if les.diameters and math.isfinite(les.diameters[0]) and les.spacing[0] > 0]
    out: dict[str, Any] = {
        "root": str(root),
        "annotations": str(ann) if lesions or annotations else None,
        "series": len(folders),
        "slices": sum(len(v) for v in folders.values()),
        "lesions": len(lesions),
        "key_slices": len(key_slices),
        "splits": dict(sorted(per_split.items(), key=lambda kv: SPLITS.get(kv[0], 9))),
        "sources": dict(Counter(les.source for les in lesions)),
        "lesion_types": {LESION_TYPES.get(t, str(t)): n for t, n in sorted(Counter(
            les.lesion_type for les in lesions).items())},
        "slice_interval_mm": {
            "series": dict(sorted(intervals_series.items(), key=lambda kv: float(kv[0]))),
            "lesions": dict(sorted(intervals_lesions.items(), key=lambda kv: float(kv[0]))),
        },
        "long_diameter_mm": _stats(diam_mm),
        "missing_key_slice_files": len(missing),
        "missing_examples": missing[:5],
        "series_without_folder": sorted({les.series for les in lesions} - set(folders))[:5],
    }
    truth = root / "truth.csv"
    if truth.is_file():
        rows = read_annotations(truth)
        ids = {r.extras.get("Lesion_id", "") for r in rows}
        out["truth"] = {"rows": len(rows), "lesions": len(ids - {""}) or len(rows)}
    return out


def _format(s: dict[str, Any]) -> str:
    lines = [f"dataset {s['root']}",
             f"  series {s['series']}, slices {s['slices']}, lesions {s['lesions']} "
             f"on {s['key_slices']} key slices"]
    if s["annotations"]:
        lines.append(f"  annotations {s['annotations']}")
    for name, d in s["splits"].items():
        lines.append(f"  {name:<6} {d['lesions']:>6} lesions, {d['key_slices']:>6} key slices, "
                     f"{d['series']:>5} series, {d['noisy']} possibly noisy")
    if set(s["sources"]) - {"human"}:
        lines.append("  sources: " + ", ".join(f"{k} {v}" for k, v in s["sources"].items()))
    if s["lesion_types"]:
        lines.append("  lesion types: " + ", ".join(f"{k} {v}" for k, v in s["lesion_types"].items()))
    iv = s["slice_interval_mm"]
    if iv["series"]:
        lines.append("  slice interval (mm): series " + ", ".join(f"{k}: {v}" for k, v in iv["series"].items()))
        lines.append("                       lesions " + ", ".join(f"{k}: {v}" for k, v in iv["lesions"].items()))
    d = s["long_diameter_mm"]
    if d["count"]:
        lines.append(f"  long diameter (mm): min {d['min']:.1f}, p25 {d['p25']:.1f}, median {d['median']:.1f}, "
                     f"p75 {d['p75']:.1f}, max {d['max']:.1f}, mean {d['mean']:.1f}")
    lines.append(f"  missing key-slice files: {s['missing_key_slice_files']}"
                 + (f" (e.g. {', '.join(s['missing_examples'])})" if s["missing_examples"] else ""))
    if s["series_without_folder"]:
        lines.append(f"  annotated series without an Images_png folder (first 5): "
                     f"{', '.join(s['series_without_folder'])}")
    if "truth" in s:
        lines.append(f"  truth.csv: {s['truth']['rows']} rows, {s['truth']['lesions']} lesions")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    s = summarize(args.root, args.annotations)
    print(json.dumps(s, indent=2) if args.json else _format(s))
    return 0
