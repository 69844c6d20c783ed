"""The :class:`Predictions` table, its checks and helpers shared by the CSV and binary forms
(:mod:`lesionprop.predictions` reads and writes files; boxes in the file frame)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lesionprop.data.layout import SLICE_NAME_PATTERN
from lesionprop.errors import InputError

COLUMNS: tuple[str, ...] = ("File_name", "x1", "y1", "x2", "y2", "score")
_MAX_SLICE = 2**31 - 1
_NAME_MATCH = re.compile(SLICE_NAME_PATTERN).match
_EXAMPLES = 5
_CHECK_ROWS = 1 << 16    # rows per step of the value check


#: file suffixes (lower case) read and written as binary tables instead of CSV
#: (:mod:`lesionprop.predictions_binary`): Arrow IPC / Feather v2, Parquet
BINARY_SUFFIXES: dict[str, str] = {".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
                                   ".parquet": "parquet", ".pq": "parquet"}


#: file suffixes (lower case) written as CSV; no suffix is CSV too
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".txt")


def _binary_format(path: str | os.PathLike) -> str | None:
    return BINARY_SUFFIXES.get(Path(path).suffix.lower())


class PredictionError(InputError):
    """A malformed prediction file: the message names the file, line and value."""


def output_format(path: str | os.PathLike, option: str = "output") -> str:
    """``"csv"``, ``"arrow"`` or ``"parquet"``: the form a prediction file at ``path`` is written
    in, by its suffix.  Any other suffix (``.json``, ``.xlsx``, ...) is refused, naming ``option``:
    writing CSV text under it would mislead the next program that opens the file."""
    suffix = Path(path).suffix.lower()
    if suffix in BINARY_SUFFIXES:
        return BINARY_SUFFIXES[suffix]
    if suffix in CSV_SUFFIXES or not suffix:
        return "csv"
    known = ", ".join(CSV_SUFFIXES + tuple(BINARY_SUFFIXES))
    raise PredictionError(f"{option} {path}: prediction files are written as CSV, Arrow IPC or Parquet, "
                          f"chosen by the suffix ({known}); {suffix} is none of these")


class Predictions:
    """Boxes predicted on slices, as parallel arrays (file order).

    * ``file_names`` (N,) str, ``boxes`` (N, 4) float64 file frame, ``scores`` (N,) float64
    * ``series_names`` (S,) sorted unique series ``PPPPPP_SS_SS``; ``series_index`` (N,)
      int64 into it; ``slices`` (N,) int64 slice index of each box
    * ``lines`` (N,) int64: CSV line of each box (header = line 1); row number + 1 for
      in-memory predictions
    * ``skipped``: number of bad rows left out; ``skipped_examples``: the first few
      ``"line L: reason"`` strings

    The readers pass ``file_names=None`` with ``name_codes`` / ``name_uniques`` (each row's
    code into an arrow string array): ``file_names`` is then made on first use (the label
    tools never use it; 3.4 million Python strings cost ~0.05 s); ``lines=None`` stands for
    ``2 .. N + 1`` (a binary file's rows), also made on first use.
    """

    def __init__(self, file_names: np.ndarray | None, boxes: np.ndarray, scores: np.ndarray,
                 series_names: np.ndarray, series_index: np.ndarray, slices: np.ndarray, lines: np.ndarray | None,
                 skipped: int = 0, skipped_examples: list[str] | None = None, *,
                 name_codes: np.ndarray | None = None, name_uniques: pa.Array | None = None) -> None:
        if file_names is None and (name_codes is None or name_uniques is None):
            raise ValueError("Predictions: file_names, or name_codes and name_uniques, are needed")
        self._file_names = file_names
        self._name_codes, self._name_uniques = name_codes, name_uniques
        self.boxes, self.scores = boxes, scores
        self.series_names, self.series_index, self.slices = series_names, series_index, slices
        self._lines = lines
        self.skipped = skipped
        self.skipped_examples = [] if skipped_examples is None else skipped_examples

    @property
    def lines(self) -> np.ndarray:
        if self._lines is None:                  # a binary file's rows, none left out: row + 1
            self._lines = np.arange(2, len(self) + 2, dtype=np.int64)
        return self._lines

    @property
    def file_names(self) -> np.ndarray:
        if self._file_names is None:
            self._file_names = np.array(self._name_uniques.to_pylist(), dtype=object)[self._name_codes]
            self._name_codes = self._name_uniques = None
        return self._file_names

    def __repr__(self) -> str:
        return f"Predictions({len(self)} boxes on {len(self.series_names)} series, {self.skipped} skipped)"

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_pandas(self):
        """The boxes as a pandas DataFrame with the file's columns (:data:`COLUMNS`: ``File_name``,
        ``x1 y1 x2 y2`` file frame, ``score``), file order; a copy."""
        import pandas as pd

        frame = {"File_name": self.file_names.astype(str)}
        frame.update({c: self.boxes[:, j].copy() for j, c in enumerate(COLUMNS[1:5])})
        frame["score"] = self.scores.copy()
        return pd.DataFrame(frame)

    @classmethod
    def from_arrays(cls, file_names: Sequence[str], boxes: np.ndarray, scores: np.ndarray) -> "Predictions":
        """In-memory predictions; raises ValueError on a bad name, NaN or x2 < x1."""
        names = _object_array(file_names)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if not (len(names) == len(b) == len(s)):
            raise ValueError(f"predictions: {len(names)} names, {len(b)} boxes, {len(s)} scores")
        codes, uniques = _factorize(names)
        series_names, series_index, slices = _parse_names(uniques, codes)
        bad = np.flatnonzero(_bad_values(b, s) | (series_index < 0))
        if bad.size:
            i = int(bad[0])
            why = _value_problem(b[i], s[i]) or \
                f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {_shown(str(names[i]))}"
            raise InputError(f"predictions, row {i}: {why}")
        return cls(names, b, s, series_names, series_index, slices, np.arange(1, len(s) + 1, dtype=np.int64))

    def subset(self, mask_or_index: np.ndarray) -> "Predictions":
        """A new Predictions with the selected rows (file order kept)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        lazy = self._file_names is None
        return Predictions(None if lazy else self._file_names[idx], self.boxes[idx], self.scores[idx],
                           self.series_names, self.series_index[idx], self.slices[idx], self.lines[idx],
                           self.skipped, list(self.skipped_examples),
                           name_codes=self._name_codes[idx] if lazy else None, name_uniques=self._name_uniques)


def _object_array(values: Sequence[str]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.reshape(-1).astype(object, copy=False)
    return np.asarray(list(values), dtype=object).reshape(-1)


def _factorize(names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(codes, uniques)`` with ``names == uniques[codes]`` (cheap when equal names are adjacent)."""
    from lesionprop.numtext import run_codes     # not imported by readers: its tables cost ~10 ms

    run, heads = run_codes(names)
    index: dict[str, int] = {}
    head_code = np.fromiter((index.setdefault(h, len(index)) for h in heads.tolist()), np.int64, heads.size)
    return head_code[run], list(index)


def _bad_values(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows with a NaN / non-numeric value or x2 < x1 or y2 < y1 (vectorised)."""
    n = len(scores)
    ok = np.empty(n, dtype=bool)
    total = np.empty(min(n, _CHECK_ROWS))
    less = np.empty(min(n, _CHECK_ROWS), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for lo in range(0, n, _CHECK_ROWS):      # in cache-sized steps: no DeepLesion-size temporaries
            b, t, c, part = boxes[lo:lo + _CHECK_ROWS], total[:n - lo], less[:n - lo], ok[lo:lo + _CHECK_ROWS]
            np.add(b[:, 0], b[:, 1], out=t)      # finite when all five are (or it overflowed: see below)
            t += b[:, 2]
            t += b[:, 3]
            t += scores[lo:lo + _CHECK_ROWS]
            np.isfinite(t, out=part)
            part &= np.greater_equal(b[:, 2], b[:, 0], out=c)
            part &= np.greater_equal(b[:, 3], b[:, 1], out=c)
        if ok.all():
            return ~ok
        ok = np.isfinite(scores)
        for j in range(4):
            ok &= np.isfinite(boxes[:, j])
        ok &= boxes[:, 2] >= boxes[:, 0]
        ok &= boxes[:, 3] >= boxes[:, 1]
        return ~ok


def _value_problem(box: np.ndarray, score: float) -> str:
    """Why one row failed :func:`_bad_values` ('' when it did not)."""
    if not (np.isfinite(box).all() and np.isfinite(score)):
        return "NaN or non-numeric value"
    if box[2] < box[0]:
        return f"x2 < x1 in box {box.tolist()}"
    if box[3] < box[1]:
        return f"y2 < y1 in box {box.tolist()}"
    return ""


def _numpy(arr: pa.Array, dtype: type) -> np.ndarray:
    """The values of a fixed-width arrow array, without a copy (NaN / 0 where null).

    ``Array.to_numpy``, ``pa.array`` and ``pa.scalar`` import pandas (a second of start-up
    for every command), so array data is taken from the buffers."""
    size = np.dtype(dtype).itemsize
    if len(arr) == 0:
        return np.zeros(0, dtype)
    out = np.frombuffer(arr.buffers()[1], dtype, len(arr), arr.offset * size)
    if arr.null_count:
        bits = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8), bitorder="little")
        out = np.where(bits[arr.offset:arr.offset + len(arr)].astype(bool), out,
                       np.nan if out.dtype.kind == "f" else 0)
    return out


def _parse_names(uniques: Sequence[str] | pa.Array, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse each distinct name once -> ``(series_names, series_index, slices)`` per row;
    ``series_index`` and ``slices`` are -1 where the name is not a DeepLesion slice name."""
    if isinstance(uniques, pa.Array):
        parts = pc.extract_regex(uniques, SLICE_NAME_PATTERN)
        valid = pc.is_valid(parts)
        ok = _numpy(pc.cast(valid, pa.int8()), np.int8).astype(bool)
        series = pc.filter(pc.struct_field(parts, "series"), valid)
        digits = pc.filter(pc.struct_field(parts, "slice"), valid)
        short = len(digits) == 0 or int(_numpy(pc.utf8_length(digits), np.int32).max()) <= 9
        slice_ok = _numpy(pc.cast(digits, pa.int64()), np.int64) if short else \
            np.array([int(d) if len(d) <= 9 else -1 for d in digits.to_pylist()], dtype=np.int64)
        names = pc.unique(series)
        names = names.take(pc.array_sort_indices(names))
        code_ok = _numpy(pc.index_in(series, value_set=names), np.int32)
        series_names = np.array(names.to_pylist(), dtype=object)
    else:
        found = [_NAME_MATCH(str(u)) for u in uniques]
        ok = np.array([m is not None for m in found], dtype=bool)
        slice_ok = np.array([int(m.group(2)) if len(m.group(2)) <= 9 else -1 for m in found if m], dtype=np.int64)
        series_names, code_ok = np.unique(np.array([m.group(1) for m in found if m], dtype=str),
                                          return_inverse=True)
        series_names = series_names.astype(object)
    slice_u = np.full(ok.size, -1, np.int64)
    slice_u[ok] = slice_ok
    code_u = np.full(ok.size, -1, np.int64)
    code_u[ok] = code_ok.reshape(-1)
    bad = (slice_u < 0) | (slice_u > _MAX_SLICE)
    if bad.any():                               # a slice number out of range: its series may vanish
        code_u[bad], slice_u[bad] = -1, -1
        used, code_u[~bad & ok] = np.unique(code_u[~bad & ok], return_inverse=True)
        series_names = series_names[used]
    return series_names, code_u[codes], slice_u[codes]


def _shown(value: str, limit: int = 80) -> str:
    """``repr(value)``, shortened for a one-line message."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value):,} characters)"


def check_rows(codes: np.ndarray, uniques: pa.Array, boxes: np.ndarray, scores: np.ndarray, lines: np.ndarray | None, *,
               skip_bad_rows: bool, known_series: Collection[str] | None, path: Path, where: Callable[[int], str],
               problem: Callable[[int, bool, bool], str], name_missing: np.ndarray | None = None,
               problems: dict[int, str] | None = None, n_problems: int = 0) -> Predictions:
    """The checks shared by the CSV and binary readers, on the rows read from a file.

    ``codes``/``uniques``: the File_name of each row; ``lines``: its CSV line (``None``:
    row + 1, a binary file); ``where(line)`` says ``line L`` or ``row R`` in a message about ``path``;
    ``problem(i, value_bad, name_bad)`` says what is wrong with row ``i``; ``problems``
    (line -> message) and ``n_problems``: bad rows found before (wrong field count).
    Raises on the first bad row unless ``skip_bad_rows``; returns the good rows.
    """
    problems = {} if problems is None else problems
    series_names, series_index, slices = _parse_names(uniques, codes)
    value_bad = _bad_values(boxes, scores)
    name_bad = series_index < 0
    if name_missing is not None and name_missing.any():
        name_bad |= name_missing
        series_index = np.where(name_missing, -1, series_index)
    name_unknown = np.zeros(len(codes), dtype=bool)
    if known_series is not None:
        wanted = set(known_series)
        known = np.fromiter((name in wanted for name in series_names.tolist()), bool, series_names.size)
        if name_bad.any():
            name_unknown[~name_bad] = ~known[series_index[~name_bad]]
        else:
            name_unknown = ~known[series_index]
    bad_rows = np.flatnonzero(value_bad | name_bad | name_unknown)
    n_problems += bad_rows.size
    for i in bad_rows[:_EXAMPLES].tolist():
        problems[i + 2 if lines is None else int(lines[i])] = problem(i, bool(value_bad[i]), bool(name_bad[i]))
    if problems and not skip_bad_rows:
        ln = min(problems)
        raise PredictionError(f"{path}, {where(ln)}: {problems[ln]} (--skip-bad-rows, or skip_bad_rows=True in Python, skips bad rows)")
    if bad_rows.size:
        keep = np.ones(len(codes), dtype=bool)
        keep[bad_rows] = False
        lines = np.arange(2, len(codes) + 2, dtype=np.int64) if lines is None else lines
        codes, boxes, scores, series_index, slices, lines = (
            a[keep] for a in (codes, boxes, scores, series_index, slices, lines))
    examples = [f"{where(ln)}: {problems[ln]}" for ln in sorted(problems)[:_EXAMPLES]]
    return Predictions(None, boxes, scores, series_names, series_index, slices, lines, n_problems, examples,
                       name_codes=codes, name_uniques=uniques)
