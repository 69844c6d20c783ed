"""Shared parts of the `evaluate`, `propagate`, `mine` and `distill` commands (argument parsing, I/O).

Boxes are not touched here (file frame throughout, see :mod:`lesionprop.boxes`)."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np

from lesionprop.annotations import Annotations, read_annotations, write_with_new_rows
from lesionprop.predictions import Predictions, read_predictions

SPLIT_CHOICES = ("train", "val", "test", "all")


def add_io_arguments(parser: argparse.ArgumentParser, *, out: bool) -> None:
    parser.add_argument("--annotations", required=True, help="DL_info.csv-schema file")
    parser.add_argument("--predictions", required=True,
                        help="File_name,x1,y1,x2,y2,score (file frame): CSV, or .arrow/.feather/.parquet (faster)")
    if out:
        parser.add_argument("--out", required=True, help="output annotation file (input rows, then new rows)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip malformed prediction rows (and report how many) instead of failing")


def load_predictions(path: str, ann: Annotations, skip_bad_rows: bool) -> Predictions:
    """Read predictions; series must be in the annotations; report skipped rows on stderr."""
    preds = read_predictions(path, skip_bad_rows=skip_bad_rows, known_series=set(ann.series.tolist()))
    if preds.skipped:
        print(f"skipped {preds.skipped} bad prediction row(s) in {path}; first: "
              + "; ".join(preds.skipped_examples[:3]), file=sys.stderr)
    return preds


def no_huge_pages() -> None:
    """Stop numpy asking for transparent huge pages for the rest of this process.

    A label command allocates its DeepLesion-scale arrays (3.4 M prediction rows) once
    and reads them once; numpy's huge-page hint made the kernel spend ~1 s of system
    time per command on the CI-type machine (1.5 -> 0.5 s, user time +0.2 s; see
    benchmarks/results/io.md), more than the fewer TLB misses save.
    """
    core = getattr(np, "_core", None) or np.core
    setter = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


def run_label_tool(args: argparse.Namespace, name: str, algorithm: Callable, where: str = "slice(s)") -> int:
    """The shared body of ``mine`` / ``propagate`` / ``distill``: read, run ``algorithm(rows, preds)``
    (returning the new rows), write inputs + new rows to ``args.out``, report."""
    from lesionprop.fileio import check_output_file

    check_output_file(args.out, args.annotations, args.predictions)
    no_huge_pages()
    rows = read_annotations(args.annotations)
    preds = load_predictions(args.predictions, rows, args.skip_bad_rows)
    new = algorithm(rows, preds)
    write_with_new_rows(rows, {args.out: new})   # every input row unchanged, then the new rows
    print(f"{name}: {len(new)} new row(s) on {len(set(new.file_name.tolist()))} {where} -> {args.out}")
    score = getattr(args, "score", None)
    if score is not None and len(preds) and not (preds.scores > score).any():
        print(f"{name}: note: no prediction scores above --score {score:g} (the highest is "
              f"{float(preds.scores.max()):g}), so nothing passes that threshold", file=sys.stderr)
    return 0
