"""Prediction files: ``File_name,x1,y1,x2,y2,score`` (extra columns allowed), as CSV or binary.

One row per box.  ``File_name`` names the slice the box is on, in DeepLesion
form ``PPPPPP_SS_SS_III.png``.  Boxes are xyxy in the **file frame** (the
convention of ``DL_info.csv`` ``Bounding_boxes``, see :mod:`lesionprop.boxes`).

:class:`Predictions` holds numpy arrays, one entry per box, in file order
(bad rows skipped with ``skip_bad_rows`` are left out): the parsed series and
slice of each box and the CSV line it came from are kept alongside, so the
label tools and the evaluation never re-parse names.

The format is chosen by the suffix wherever predictions are read or written: CSV
(:mod:`lesionprop.predictions.csv_io`, any suffix but the binary ones), Arrow IPC /
Feather (``.arrow``, ``.feather``, ``.ipc``) or Parquet (``.parquet``, ``.pq``)
(:mod:`lesionprop.predictions.binary`; Arrow IPC reads in a few hundredths of a second
at DeepLesion scale).  Both readers end in :func:`check_rows`: the same checks, a
message naming the file, the line or row, the column and the value.
"""

from __future__ import annotations

import os
from typing import Collection, Sequence

import numpy as np

from lesionprop.fileio import require_file
from lesionprop.predictions.table import (
    BINARY_SUFFIXES, COLUMNS, PredictionError, Predictions, _bad_values, _binary_format, _object_array, _value_problem,
    check_rows, output_format,
)

__all__ = ["BINARY_SUFFIXES", "COLUMNS", "PredictionError", "Predictions", "check_rows", "output_format",
           "read_predictions", "write_predictions"]


# ---------------------------------------------------------------- reading

def read_predictions(path: str | os.PathLike, *, skip_bad_rows: bool = False,
                     known_series: Collection[str] | None = None) -> Predictions:
    """Read a prediction file: CSV, or Arrow IPC / Parquet by its suffix (:data:`BINARY_SUFFIXES`).

    Bad rows (wrong column count, NaN or non-numeric value, x2 < x1, y2 < y1, a
    name that is not a DeepLesion slice name, or a series outside
    ``known_series`` when given) raise :class:`PredictionError` naming the file,
    line and value; with ``skip_bad_rows`` they are left out and counted in
    ``Predictions.skipped``.  Blank lines are ignored.  Extra columns are not read: a
    row that only lacks trailing extra fields is accepted.
    """
    path = require_file(path, "prediction file")
    fmt = _binary_format(path)
    # each format's module is imported when a file of that format is read or written: the
    # CLI's start (``--help``) and the other format's runs skip it (~5 ms for the CSV module)
    if fmt is not None:
        from lesionprop.predictions.binary import read_binary

        return read_binary(path, fmt, skip_bad_rows=skip_bad_rows, known_series=known_series)
    from lesionprop.predictions.csv_io import read_csv

    return read_csv(path, skip_bad_rows=skip_bad_rows, known_series=known_series)


# ---------------------------------------------------------------- writing

def write_predictions(path: str | os.PathLike, file_names: Sequence[str], boxes: np.ndarray,
                      scores: np.ndarray) -> None:
    """Write predictions atomically: a CSV, or Arrow IPC / Parquet by the suffix of ``path``
    (see :data:`BINARY_SUFFIXES`).  CSV numbers are written with the shortest text that
    reads back to the same float64 (exact round trip; see :mod:`lesionprop.numtext`);
    binary files hold the float64 values themselves.  A box the readers would refuse (NaN, x2 < x1,
    y2 < y1) raises :class:`PredictionError` naming the row, and nothing is written."""
    names = _object_array(file_names)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(names) == len(b) == len(s)):
        raise ValueError(f"write_predictions: {len(names)} names, {len(b)} boxes, {len(s)} scores")
    bad = np.flatnonzero(_bad_values(b, s))
    if bad.size:           # a file the readers would refuse: say so now, not at the next read
        i = int(bad[0])
        raise PredictionError(f"write_predictions {path}: row {i} ({names[i]}): {_value_problem(b[i], s[i])}; "
                              f"{bad.size} bad row(s), nothing written")
    fmt = output_format(path)
    if fmt != "csv":
        from lesionprop.predictions.binary import write_binary

        write_binary(path, fmt, names, b, s)
        return
    from lesionprop.predictions.csv_io import write_csv

    write_csv(path, names, b, s)
