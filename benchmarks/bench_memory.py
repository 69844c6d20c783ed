"""Peak resident memory of ``evaluate`` (and ``link``) at DeepLesion scale (goal < 4 GB).

Writes a DL_info.csv-schema file of 32,735 lesion rows (DeepLesion's count; synthetic
numbers, 4,427 series, 3 splits) and a predictions CSV of 3.4 M rows (file frame boxes on
each key slice and its neighbours, ~100 per slice), then runs each command in its own
process and reads its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py --out /tmp/mem [--rows 3400000] [--link]

Record the printed JSON in ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
           "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
           "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
           "Patient_age", "Train_Val_Test"]


def write_inputs(out: Path, lesions: int, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """The annotation file (``lesions`` rows) and the predictions CSV (``rows`` rows)."""
    from lesionprop.predictions import write_predictions

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_series = max(1, lesions * 4427 // 32735)
    series = rng.integers(0, n_series, lesions)
    key = rng.integers(5, 200, lesions)
    names = np.char.add(np.char.add(np.char.mod("%06d_01_01_", series + 1), np.char.mod("%03d", key)), ".png")
    x1, y1 = rng.uniform(50, 400, lesions), rng.uniform(50, 400, lesions)
    w, h = rng.uniform(5, 80, lesions), rng.uniform(5, 80, lesions)
    split = 1 + series % 3
    ann = out / "DL_info.csv"
    with open(ann, "w", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(COLUMNS)
        for i in range(lesions):
            b = f"{x1[i]:.3f}, {y1[i]:.3f}, {x1[i] + w[i]:.3f}, {y1[i] + h[i]:.3f}"
            cx, cy = x1[i] + w[i] / 2, y1[i] + h[i] / 2
            wr.writerow([names[i], series[i] + 1, 1, 1, key[i],
                         f"{x1[i]:.3f}, {cy:.3f}, {x1[i] + w[i]:.3f}, {cy:.3f}, {cx:.3f}, {y1[i]:.3f}, {cx:.3f}, "
                         f"{y1[i] + h[i]:.3f}", b, f"{w[i]:.3f}, {h[i]:.3f}", "0.5, 0.5, 0.5", -1, 0,
                         f"{key[i] - 4}, {key[i] + 4}", "0.8, 0.8, 5", "512, 512", "-175, 275", "F", 60, split[i]])
    # predictions: each lesion's key slice and neighbours, boxes around the lesion and elsewhere
    owner = rng.integers(0, lesions, rows)
    dz = rng.integers(-1, 2, rows)
    pnames = np.char.add(np.char.add(np.char.mod("%06d_01_01_", series[owner] + 1), np.char.mod("%03d", key[owner] + dz)),
                         ".png")
    px1 = np.where(rng.random(rows) < 0.1, x1[owner], rng.uniform(0, 450, rows)) + rng.normal(0, 2, rows)
    py1 = np.where(rng.random(rows) < 0.1, y1[owner], rng.uniform(0, 450, rows)) + rng.normal(0, 2, rows)
    boxes = np.column_stack([px1, py1, px1 + w[owner], py1 + h[owner]]).round(2)
    preds = out / "preds.csv"
    write_predictions(preds, pnames.tolist(), boxes, rng.random(rows).round(4))
    return ann, preds


def peak_rss(argv: list[str]) -> dict:
    """Run ``argv`` in a child process; its wall time, exit code and peak RSS in MB."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:                                            # child: exec the command, no output captured
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.execvpe(argv[0], argv, {**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(pid, 0)
    return {"command": argv[3], "exit": os.waitstatus_to_exitcode(status),
            "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/lesionprop_memory")
    ap.add_argument("--lesions", type=int, default=32735)
    ap.add_argument("--rows", type=int, default=3_400_000)
    ap.add_argument("--link", action="store_true", help="also measure lesionprop link on the predictions")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    ann, preds = write_inputs(out, args.lesions, args.rows)
    results = {"lesions": args.lesions, "prediction_rows": args.rows, "inputs_mb": round(preds.stat().st_size / 2**20),
               "write_s": round(time.perf_counter() - t0, 1), "runs": []}
    py = [sys.executable, "-m", "lesionprop"]
    results["runs"].append(peak_rss(py + ["evaluate", "--annotations", str(ann), "--predictions", str(preds),
                                          "--split", "all", "--json"]))
    if args.link:
        results["runs"].append(peak_rss(py + ["link", "--predictions", str(preds), "--out", str(out / "linked.csv")]))
    results["max_rusage_children_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print(json.dumps(results, indent=1))
    return 0 if all(r["exit"] == 0 for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
