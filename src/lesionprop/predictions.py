"""Prediction CSV files: ``File_name,x1,y1,x2,y2,score`` (extra columns allowed).

One row per box.  ``File_name`` names the slice the box is on, in DeepLesion
form ``PPPPPP_SS_SS_III.png``.  Boxes are xyxy in the **file frame** (the
convention of ``DL_info.csv`` ``Bounding_boxes``, see :mod:`lesionprop.boxes`).

:class:`Predictions` holds numpy arrays, one entry per box, in file order
(bad rows skipped with ``skip_bad_rows`` are left out): the parsed series and
slice of each box and the CSV line it came from are kept alongside, so the
label tools and the evaluation never re-parse names.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from lesionprop.fileio import atomic_write

COLUMNS: tuple[str, ...] = ("File_name", "x1", "y1", "x2", "y2", "score")
_NAME_RE = r"^(\d{6}_\d{2}_\d{2})_(\d{3,})\.png$"
_MAX_SLICE = 2**31 - 1


class PredictionError(ValueError):
    """A malformed prediction file: the message names the file, line and value."""


@dataclass
class Predictions:
    """Boxes predicted on slices, as parallel arrays (file order).

    * ``file_names`` (N,) str, ``boxes`` (N, 4) float64 file frame, ``scores`` (N,) float64
    * ``series_names`` (S,) sorted unique series ``PPPPPP_SS_SS``; ``series_index`` (N,)
      int64 into it; ``slices`` (N,) int64 slice index of each box
    * ``lines`` (N,) int64: CSV line of each box (header = line 1); row number + 1 for
      in-memory predictions
    * ``skipped``: number of bad rows left out; ``skipped_examples``: the first few
      ``"line L: reason"`` strings
    """

    file_names: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    series_names: np.ndarray
    series_index: np.ndarray
    slices: np.ndarray
    lines: np.ndarray
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def from_arrays(cls, file_names: Sequence[str], boxes: np.ndarray, scores: np.ndarray) -> "Predictions":
        """In-memory predictions; raises ValueError on a bad name, NaN or x2 < x1."""
        names = np.asarray(list(file_names), dtype=object)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if not (len(names) == len(b) == len(s)):
            raise ValueError(f"predictions: {len(names)} names, {len(b)} boxes, {len(s)} scores")
        lines = np.arange(1, len(s) + 1, dtype=np.int64)
        series_names, series_index, slices, name_bad = _parse_names(names)
        bad = np.flatnonzero(_bad_values(b, s) | name_bad)
        if bad.size:
            i = int(bad[0])
            why = _value_problem(b[i], s[i]) or f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {names[i]!r}"
            raise ValueError(f"predictions, row {i}: {why}")
        return cls(names, b, s, series_names, series_index, slices, lines)

    def subset(self, mask_or_index: np.ndarray) -> "Predictions":
        """A new Predictions with the selected rows (file order kept)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Predictions(self.file_names[idx], self.boxes[idx], self.scores[idx], self.series_names,
                           self.series_index[idx], self.slices[idx], self.lines[idx], self.skipped,
                           list(self.skipped_examples))


def _bad_values(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows with a NaN / non-numeric value or x2 < x1 or y2 < y1 (vectorised)."""
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(boxes).all(1) & np.isfinite(scores)
                 & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))


def _value_problem(box: np.ndarray, score: float) -> str:
    """Why one row failed :func:`_bad_values` ('' when it did not)."""
    if not (np.isfinite(box).all() and np.isfinite(score)):
        return "NaN or non-numeric value"
    if box[2] < box[0]:
        return f"x2 < x1 in box {box.tolist()}"
    if box[3] < box[1]:
        return f"y2 < y1 in box {box.tolist()}"
    return ""


def _parse_names(names: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse slice names once per distinct name -> (series_names, series_index, slices, bad)."""
    codes, uniq = pd.factorize(pd.Series(names, dtype=object), use_na_sentinel=True)
    uniq = pd.Series(np.asarray(uniq, dtype=object), dtype=object)
    parts = uniq.astype(str).str.extract(_NAME_RE)
    ok_u = parts[0].notna().to_numpy().copy()
    slice_u = np.full(len(uniq), -1, dtype=np.int64)
    if ok_u.any():
        digits = parts[1][ok_u]
        too_big = digits.str.len().to_numpy() > 9
        vals = np.where(too_big, -1, pd.to_numeric(digits.where(~too_big, "0")).to_numpy())
        slice_u[ok_u] = vals
        ok_u &= (slice_u >= 0) & (slice_u <= _MAX_SLICE)
    series_u = parts[0].fillna("").to_numpy(dtype=object)
    series_names, series_code_u = np.unique(series_u[ok_u].astype(str), return_inverse=True)
    code_u = np.full(len(uniq), -1, dtype=np.int64)
    code_u[ok_u] = series_code_u
    valid = codes >= 0
    series_index = np.where(valid, code_u[np.where(valid, codes, 0)], -1)
    slices = np.where(valid, slice_u[np.where(valid, codes, 0)], -1)
    bad = series_index < 0
    return series_names.astype(object), series_index.astype(np.int64), slices.astype(np.int64), bad


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise PredictionError(f"{path}: empty file, expected the header {','.join(COLUMNS)}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise PredictionError(f"{path}, line 1: header must contain {','.join(COLUMNS)}; missing {missing}")
    return header


def _raw_lines(path: Path, wanted: Collection[int]) -> dict[int, str]:
    """The text of a few lines (error path only)."""
    wanted = set(int(w) for w in wanted)
    out: dict[int, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if n in wanted:
                out[n] = text.rstrip("\r\n")
            if n >= last:
                break
    return out


def read_predictions(path: str | os.PathLike, *, skip_bad_rows: bool = False,
                     known_series: Collection[str] | None = None) -> Predictions:
    """Read a prediction CSV (pandas C parser).

    Bad rows (wrong column count, NaN or non-numeric value, x2 < x1, y2 < y1, a
    name that is not a DeepLesion slice name, or a series outside
    ``known_series`` when given) raise :class:`PredictionError` naming the file,
    line and value; with ``skip_bad_rows`` they are left out and counted in
    ``Predictions.skipped``.  Blank lines are ignored.  Extra columns are not read: a
    row that only lacks trailing extra fields is accepted (the parser fills them with "").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    header = _read_header(path)
    ncol = len(header)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = pd.read_csv(path, on_bad_lines="warn", skip_blank_lines=False, dtype={"File_name": object},
                         keep_default_na=False, na_values={c: ["", "nan", "NaN", "NA"] for c in COLUMNS[1:]},
                         low_memory=False)
    too_long = {int(ln): int(saw) for w in caught
                for ln, saw in re.findall(r"line (\d+): expected \d+ fields, saw (\d+)", str(w.message))}
    long_lines = sorted(too_long)
    nrows = len(df)
    lines = np.arange(2, nrows + len(long_lines) + 2, dtype=np.int64)
    if long_lines:
        lines = np.setdiff1d(lines, np.asarray(long_lines, dtype=np.int64), assume_unique=True)
    problems: dict[int, str] = {ln: f"expected {ncol} fields, got {too_long[ln]}" for ln in long_lines}

    names = df["File_name"].to_numpy(dtype=object)
    num = np.empty((nrows, 5), dtype=np.float64)
    for j, c in enumerate(COLUMNS[1:]):
        col = df[c]
        num[:, j] = (col if col.dtype.kind == "f" or col.dtype.kind == "i"
                     else pd.to_numeric(col, errors="coerce")).to_numpy(dtype=np.float64)
    boxes, scores = num[:, :4], num[:, 4]
    value_bad = _bad_values(boxes, scores)
    series_names, series_index, slices, name_bad = _parse_names(names)
    if known_series is not None:
        known = np.isin(series_names, np.asarray(sorted(known_series), dtype=object))
        name_unknown = (~name_bad) & ~known[np.where(name_bad, 0, series_index)]
    else:
        name_unknown = np.zeros(nrows, dtype=bool)
    bad_rows = np.flatnonzero(value_bad | name_bad | name_unknown)

    blank = np.zeros(nrows, dtype=bool)
    if bad_rows.size:
        raw = _raw_lines(path, lines[bad_rows])
        for i in bad_rows:
            ln = int(lines[i])
            text = raw.get(ln, "")
            if not text.strip():
                blank[i] = True
                continue
            fields = next(csv.reader([text]))
            if len(fields) != ncol:
                problems[ln] = f"expected {ncol} fields, got {len(fields)}"
            elif value_bad[i]:
                why = _value_problem(boxes[i], scores[i]) or "missing value"
                vals = dict(zip(header, fields))
                bad_vals = {c: vals[c] for c in COLUMNS[1:] if not _is_finite_number(vals[c])}
                problems[ln] = f"{why} {bad_vals}" if bad_vals else why
            elif name_bad[i]:
                problems[ln] = f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {names[i]!r}"
            else:
                problems[ln] = f"series of {names[i]!r} is not in the annotations"
    if problems and not skip_bad_rows:
        ln = min(problems)
        raise PredictionError(f"{path}, line {ln}: {problems[ln]} (use --skip-bad-rows to skip bad rows)")
    keep = np.ones(nrows, dtype=bool)
    keep[bad_rows] = False
    idx = np.flatnonzero(keep)
    examples = [f"line {ln}: {problems[ln]}" for ln in sorted(problems)[:5]]
    return Predictions(names[idx], np.ascontiguousarray(boxes[idx]), scores[idx].copy(), series_names,
                       series_index[idx], slices[idx], lines[idx], len(problems), examples)


def _is_finite_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def write_predictions(path: str | os.PathLike, file_names: Sequence[str], boxes: np.ndarray,
                      scores: np.ndarray) -> None:
    """Write a prediction CSV atomically.  Numbers are written with the shortest text that
    reads back to the same float64 (exact round trip)."""
    names = np.asarray(list(file_names), dtype=object)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(names) == len(b) == len(s)):
        raise ValueError(f"write_predictions: {len(names)} names, {len(b)} boxes, {len(s)} scores")
    df = pd.DataFrame({"File_name": names, "x1": b[:, 0], "y1": b[:, 1], "x2": b[:, 2], "y2": b[:, 3],
                       "score": s})
    with atomic_write(path) as fh:
        df.to_csv(fh, index=False, lineterminator="\n")
