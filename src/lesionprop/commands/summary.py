"""``lesionprop summary DIR``: what a DeepLesion-layout dataset holds, cheaply.

Reads ``DL_info.csv`` (or ``--annotations``), ``series_info.csv`` and
``truth.csv`` when present, and lists the ``Images_png`` folders; no PNG is decoded.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lesionprop.dataset_stats import summarize


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="DIR", help="dataset root (Images_png/ + DL_info.csv)")
    p.add_argument("--annotations", metavar="CSV", help="annotation file (default: DIR/DL_info.csv)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


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
        if iv["lesions"]:                   # none in a dataset without annotations
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
