"""``lesionprop link``: group per-slice boxes of each series into 3D lesions.

Boxes stay in the file frame of the prediction CSV (see :mod:`lesionprop.boxes`);
the rule is :func:`lesionprop.labels.link.link_boxes`.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from lesionprop.commands.arguments import prediction_output
from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write, check_distinct_outputs, check_output_file
from lesionprop.labels.link import drop_short, link_boxes, summarize_lesions
from lesionprop.predictions import COLUMNS, output_format, read_predictions
from lesionprop.predictions.binary import binary_format, read_frame, write_table

LESION_COLUMNS = ("Lesion_id", "Series", "z1", "z2", "x1", "y1", "x2", "y2", "score", "n_slices")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True,
                        help="File_name,x1,y1,x2,y2,score (file frame): CSV, or .arrow/.feather/.parquet")
    parser.add_argument("--out", required=True, type=prediction_output,
                        help="per-box file: the input rows unchanged plus a Lesion_id column "
                             "(an existing Lesion_id column is replaced); CSV, or Arrow IPC / Parquet by suffix")
    parser.add_argument("--lesions", type=prediction_output,
                        help="also write one row per lesion: " + ",".join(LESION_COLUMNS) + " (format by suffix)")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="a box joins a lesion when IoU(its last box, box) > this (default 0.5)")
    parser.add_argument("--max-gap", type=int, default=1,
                        help="a lesion's last box may be up to this many slices back (1: consecutive "
                             "slices only, 2: bridge one missing slice; default 1)")
    parser.add_argument("--min-slices", type=int, default=1,
                        help="drop lesions with fewer boxes than this (default 1: keep all)")


def lesion_table(summary, series_names: np.ndarray) -> pd.DataFrame:
    """The ``--lesions`` table of a :class:`~lesionprop.labels.link.LesionSummary`."""
    return pd.DataFrame({"Lesion_id": summary.lesion_id, "Series": np.asarray(series_names)[summary.series],
                         "z1": summary.z1, "z2": summary.z2,
                         "x1": summary.box[:, 0], "y1": summary.box[:, 1],
                         "x2": summary.box[:, 2], "y2": summary.box[:, 3],
                         "score": summary.score, "n_slices": summary.n_slices}, columns=list(LESION_COLUMNS))


def write_frame(path: str, frame: pd.DataFrame) -> None:
    """``frame`` as CSV, Arrow IPC or Parquet by the suffix of ``path``, atomically."""
    fmt = output_format(path)
    if fmt == "csv":
        with atomic_write(path) as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")
        return
    import pyarrow as pa

    write_table(path, fmt, pa.Table.from_pandas(frame, preserve_index=False))


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, args.predictions)
    if args.lesions:
        check_output_file(args.lesions, args.predictions, option="--lesions")
    check_distinct_outputs({"--out": args.out, "--lesions": args.lesions})
    if not 0.0 <= args.iou < 1.0:
        raise InputError(f"--iou must be in [0, 1), got {args.iou}")
    if args.max_gap < 1:
        raise InputError(f"--max-gap must be at least 1, got {args.max_gap}")
    if args.min_slices < 1:
        raise InputError(f"--min-slices must be >= 1, got {args.min_slices}")
    preds = read_predictions(args.predictions)
    if binary_format(args.predictions):
        raw = read_frame(args.predictions)
    else:
        raw = pd.read_csv(args.predictions, dtype=str, keep_default_na=False, skip_blank_lines=False)
    raw = raw.iloc[preds.lines - 2].drop(columns=["Lesion_id"], errors="ignore")
    ids = link_boxes(preds.series_index, preds.slices, preds.boxes, preds.scores,
                     iou=args.iou, max_gap=args.max_gap)
    keep, ids = drop_short(ids, args.min_slices)
    raw = raw[keep].assign(Lesion_id=ids)
    if output_format(args.out) != "csv":       # typed numbers: the values read, not their text
        raw = raw.assign(**{c: preds.boxes[keep][:, j] for j, c in enumerate(COLUMNS[1:5])},
                         score=preds.scores[keep])
    write_frame(args.out, raw)
    summary = summarize_lesions(ids, preds.series_index[keep], preds.slices[keep], preds.boxes[keep],
                                preds.scores[keep])
    if args.lesions:
        write_frame(args.lesions, lesion_table(summary, preds.series_names))
    n_multi = int(np.sum(summary.n_slices > 1))
    print(f"link: {len(preds)} box(es) -> {len(summary)} lesion(s) ({n_multi} on more than one slice), "
          f"{int((~keep).sum())} box(es) of shorter lesions dropped -> {args.out}")
    return 0
