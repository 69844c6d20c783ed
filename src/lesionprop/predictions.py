"""Prediction files: ``File_name,x1,y1,x2,y2,score`` (extra columns allowed), as CSV or binary.

One row per box.  ``File_name`` names the slice the box is on, in DeepLesion
form ``PPPPPP_SS_SS_III.png``.  Boxes are xyxy in the **file frame** (the
convention of ``DL_info.csv`` ``Bounding_boxes``, see :mod:`lesionprop.boxes`).

:class:`Predictions` holds numpy arrays, one entry per box, in file order
(bad rows skipped with ``skip_bad_rows`` are left out): the parsed series and
slice of each box and the CSV line it came from are kept alongside, so the
label tools and the evaluation never re-parse names.

Reading (DeepLesion scale: 3.4 million rows in about a second on one core) is
pyarrow's CSV reader on a memory map of the file, slice names parsed once per
distinct name; writing formats the columns as arrays (:mod:`lesionprop.numtext`),
every float64 as the shortest text that reads back to the same value.  Files as
users have them are accepted: a UTF-8 byte-order mark, CRLF line ends, blank
lines, extra columns in any order; a file that is not UTF-8 is an error naming
the file and line.

The same table can be an Arrow IPC (``.arrow``, ``.feather``, ``.ipc``) or Parquet
(``.parquet``, ``.pq``) file, chosen by the suffix wherever predictions are read or
written (:mod:`lesionprop.predictions_binary`): Arrow IPC reads in a few hundredths
of a second at DeepLesion scale, with the same checks and messages naming the row.
"""

from __future__ import annotations

import csv
import io
import mmap
import os
import re
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lesionprop.data.layout import SLICE_NAME_PATTERN
from lesionprop.fileio import atomic_write

COLUMNS: tuple[str, ...] = ("File_name", "x1", "y1", "x2", "y2", "score")
_MAX_SLICE = 2**31 - 1
_NAME_MATCH = re.compile(SLICE_NAME_PATTERN).match
_BOM = b"\xef\xbb\xbf"
_SCAN = 1 << 22          # bytes per step of the whole-file scans (newlines, non-ASCII)
_EXAMPLES = 5
_CHECK_ROWS = 1 << 16    # rows per step of the value check


#: file suffixes (lower case) read and written as binary tables instead of CSV
#: (:mod:`lesionprop.predictions_binary`): Arrow IPC / Feather v2, Parquet
BINARY_SUFFIXES: dict[str, str] = {".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
                                   ".parquet": "parquet", ".pq": "parquet"}


def _binary_format(path: str | os.PathLike) -> str | None:
    return BINARY_SUFFIXES.get(Path(path).suffix.lower())


class PredictionError(ValueError):
    """A malformed prediction file: the message names the file, line and value."""


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
            raise ValueError(f"predictions, row {i}: {why}")
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


# ---------------------------------------------------------------- reading

class _File:
    """The bytes of a file (memory-mapped) with the scans the reader needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self.data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.bytes = np.frombuffer(self.data, np.uint8)
        self._breaks: np.ndarray | None = None

    def scan(self) -> tuple[int, bool]:
        """``(line breaks, all ASCII after a byte-order mark)`` in one pass."""
        breaks, top = 0, 0
        for lo in range(len(_BOM) if self.data[:len(_BOM)] == _BOM else 0, self.bytes.size, _SCAN):
            part = self.bytes[lo:lo + _SCAN]
            breaks += int(np.count_nonzero(part == 10))
            top = max(top, int(part.max()))
        return breaks, top < 128

    def breaks(self) -> np.ndarray:
        """Offsets of every ``\\n`` (error paths only)."""
        if self._breaks is None:
            self._breaks = np.flatnonzero(self.bytes == 10)
        return self._breaks

    def line(self, number: int) -> str:
        """Text of line ``number`` (1-based), without its line end ('' past the end)."""
        br = self.breaks()
        if number - 2 >= br.size:          # old Mac line ends (a lone CR), or past the end
            lines = bytes(self.data).decode("utf-8", "replace").splitlines()
            return lines[number - 1] if number <= len(lines) else ""
        lo = 0 if number == 1 else int(br[number - 2]) + 1
        hi = int(br[number - 1]) if number - 1 < br.size else self.bytes.size
        return bytes(self.data[lo:hi]).decode("utf-8", "replace").rstrip("\r\n")

    def check_utf8(self) -> None:
        text = bytes(self.data)
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text.count(b"\n", 0, exc.start) + 1
            raise PredictionError(f"{self.path}, line {line}: not a UTF-8 text file (byte 0x{text[exc.start]:02x}); "
                                  "save it as UTF-8 CSV") from None


def _fields(text: str, where: str) -> list[str]:
    """The fields of one CSV line (csv module rules); a csv.Error becomes a PredictionError."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        raise PredictionError(f"{where}: {exc}") from None


def _shown(value: str, limit: int = 80) -> str:
    """``repr(value)``, shortened for a one-line message."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value):,} characters)"


def _header(f: _File) -> list[str]:
    head = bytes(f.data[:1 << 16])
    ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
    first = head[:min(ends)] if ends else head
    if not first.strip(b"\r\n\t " + _BOM):
        raise PredictionError(f"{f.path}: empty file, expected the header {','.join(COLUMNS)}")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        f.check_utf8()
        raise
    header = _fields(text, f"{f.path}, line 1")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise PredictionError(f"{f.path}, line 1: header must contain {','.join(COLUMNS)}; missing {missing}")
    return header


def _arrow_read(f: _File, numbers: pa.DataType, threads: bool) -> tuple[pa.Table, list[tuple]]:
    import pyarrow.csv as pacsv                  # not needed for binary files

    invalid: list[tuple] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    types = {"File_name": pa.dictionary(pa.int32(), pa.string()), **{c: numbers for c in COLUMNS[1:]}}
    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(f.data)),
        read_options=pacsv.ReadOptions(use_threads=threads, block_size=1 << 22),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(COLUMNS),
                                             strings_can_be_null=False))
    return table, invalid


def _column(table: pa.Table, name: str) -> np.ndarray:
    """One numeric column as float64; NaN for an empty or non-numeric field."""
    col = table.column(name)
    if col.type != pa.float64():    # the fallback read: text, parsed value by value
        import pandas as pd

        text = pd.Series(col.to_numpy(zero_copy_only=False), dtype=object)
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    out = np.empty(len(col), np.float64)
    at = 0
    for ch in col.chunks:
        out[at:at + len(ch)] = _numpy(ch, np.float64)
        at += len(ch)
    return out


def _names(table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """``(codes, uniques)`` of the dictionary-encoded File_name column: each read block's
    dictionary is appended to ``uniques`` (a name may appear in several blocks)."""
    chunks = table.column("File_name").chunks
    if not chunks:
        return np.zeros(0, np.int64), pa.array([], pa.string())
    offsets = np.cumsum([0] + [len(ch.dictionary) for ch in chunks])
    codes = np.concatenate([_numpy(ch.indices, np.int32).astype(np.int64) + off
                            for ch, off in zip(chunks, offsets.tolist())])
    return codes, pa.concat_arrays([ch.dictionary for ch in chunks])


def _row_lines(f: _File, breaks: int, rows: int) -> np.ndarray:
    """Line number of each CSV record (header = record 0); pyarrow skips empty lines."""
    total = breaks + (0 if f.bytes.size == 0 or f.bytes[-1] == 10 else 1)
    if total == rows + 1:
        return np.arange(1, rows + 2, dtype=np.int64)
    br = f.breaks()
    starts = np.concatenate(([0], br + 1))
    ends = np.concatenate((br, [f.bytes.size]))
    length = ends - starts
    cr = length > 0
    cr[cr] = f.bytes[np.maximum(ends[cr] - 1, 0)] == 13
    filled = np.flatnonzero(length - cr > 0) + 1
    data = bytes(f.data)
    if filled.size == rows + 1 and b'"' not in data and data.count(b"\r") == data.count(b"\r\n"):
        return filled
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    try:
        return np.asarray([reader.line_num for values in reader if values], dtype=np.int64)
    except csv.Error as exc:
        raise PredictionError(f"{f.path}, line {reader.line_num}: {exc}") from None


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    fmt = _binary_format(path)
    if fmt is not None:
        from lesionprop.predictions_binary import read_binary

        return read_binary(path, fmt, skip_bad_rows=skip_bad_rows, known_series=known_series)
    f = _File(path)
    header = _header(f)
    ncol = len(header)
    breaks, ascii_only = f.scan()
    if not ascii_only:
        f.check_utf8()
    numbers = pa.float64()
    for attempt in range(3):
        try:
            table, invalid = _arrow_read(f, numbers, threads=attempt == 0 and pa.cpu_count() > 1)
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc) or numbers == pa.string():
                raise PredictionError(f"{path}: cannot be read as CSV ({exc})") from None
            numbers = pa.string()               # a non-numeric value: read text, then parse
            continue
        if all(num is not None for num, _, _ in invalid):
            break
    record_line = _row_lines(f, breaks, table.num_rows + len(invalid))

    codes, uniques = _names(table)
    boxes = np.empty((4, table.num_rows), np.float64).T    # column-major: no copy in grouping.BoxCols
    for j, c in enumerate(COLUMNS[1:5]):
        boxes[:, j] = _column(table, c)
    scores = _column(table, "score")
    rows_of = np.ones(table.num_rows + len(invalid) + 1, dtype=bool)   # records that are table rows
    rows_of[0] = False
    problems: dict[int, str] = {}
    n_problems = 0
    short: list[tuple[int, list[str]]] = []
    need = max(header.index(c) for c in COLUMNS) + 1
    for number, actual, text in invalid:
        rows_of[number - 1] = False
        if not text.strip():
            continue
        line = int(record_line[number - 1])
        if ncol > actual >= need:
            short.append((number, _fields(text, f"{path}, line {line}")))
            continue
        n_problems += 1
        problems[line] = f"expected {ncol} fields, got {actual}"
    rec = np.flatnonzero(rows_of) if invalid else None   # record index of every table row
    if short:                                    # rows lacking only trailing extra fields: add them back
        extra_names = pa.array([v[header.index("File_name")] for _, v in short], pa.string())
        codes = np.concatenate([codes, len(uniques) + np.arange(len(short))])
        uniques = pa.concat_arrays([uniques, extra_names])
        num = np.asarray([[_to_float(v[header.index(c)]) for c in COLUMNS[1:]] for _, v in short])
        boxes, scores = np.concatenate([boxes, num[:, :4]]), np.concatenate([scores, num[:, 4]])
        rec = np.concatenate([rec, [number - 1 for number, _ in short]])
        order = np.argsort(rec, kind="stable")
        codes, boxes, scores, rec = codes[order], boxes[order], scores[order], rec[order]
    lines = record_line[1:] if rec is None else record_line[rec]

    def problem(i: int, value_bad: bool, name_bad: bool) -> str:
        return _row_problem(f, header, int(lines[i]), boxes[i], scores[i], value_bad, name_bad,
                            uniques[int(codes[i])].as_py())

    return check_rows(codes, uniques, boxes, scores, lines, skip_bad_rows=skip_bad_rows, known_series=known_series,
                      path=path, where=lambda line: f"line {line}", problem=problem, problems=problems,
                      n_problems=n_problems)


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
        raise PredictionError(f"{path}, {where(ln)}: {problems[ln]} (use --skip-bad-rows to skip bad rows)")
    if bad_rows.size:
        keep = np.ones(len(codes), dtype=bool)
        keep[bad_rows] = False
        lines = np.arange(2, len(codes) + 2, dtype=np.int64) if lines is None else lines
        codes, boxes, scores, series_index, slices, lines = (
            a[keep] for a in (codes, boxes, scores, series_index, slices, lines))
    examples = [f"{where(ln)}: {problems[ln]}" for ln in sorted(problems)[:_EXAMPLES]]
    return Predictions(None, boxes, scores, series_names, series_index, slices, lines, n_problems, examples,
                       name_codes=codes, name_uniques=uniques)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _row_problem(f: _File, header: list[str], line: int, box: np.ndarray, score: float, value_bad: bool,
                 name_bad: bool, name: str) -> str:
    if value_bad:
        why = _value_problem(box, score) or "missing value"
        vals = dict(zip(header, _fields(f.line(line), f"{f.path}, line {line}")))
        bad_vals = ", ".join(f"{c!r}: {_shown(vals.get(c, ''))}" for c in COLUMNS[1:]
                             if not np.isfinite(_to_float(vals.get(c, ""))))
        return f"{why} {{{bad_vals}}}" if bad_vals else why
    if name_bad:
        return f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {_shown(name)}"
    return f"series of {_shown(name)} is not in the annotations"


# ---------------------------------------------------------------- writing

def write_predictions(path: str | os.PathLike, file_names: Sequence[str], boxes: np.ndarray,
                      scores: np.ndarray) -> None:
    """Write predictions atomically: a CSV, or Arrow IPC / Parquet by the suffix of ``path``
    (see :data:`BINARY_SUFFIXES`).  CSV numbers are written with the shortest text that
    reads back to the same float64 (exact round trip; see :mod:`lesionprop.numtext`);
    binary files hold the float64 values themselves."""
    names = _object_array(file_names)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(names) == len(b) == len(s)):
        raise ValueError(f"write_predictions: {len(names)} names, {len(b)} boxes, {len(s)} scores")
    fmt = _binary_format(path)
    if fmt is not None:
        from lesionprop.predictions_binary import write_binary

        write_binary(path, fmt, names, b, s)
        return
    from lesionprop.numtext import CHUNK_ROWS, FloatText, csv_lines, run_codes, text_field

    codes, heads = run_codes(names)
    columns = [b[:, 0], b[:, 1], b[:, 2], b[:, 3], s]
    text = [FloatText() for _ in columns]
    with atomic_write(path, "wb") as fh:
        fh.write((",".join(COLUMNS) + "\n").encode())
        for lo in range(0, len(s), CHUNK_ROWS):
            part = codes[lo:lo + CHUNK_ROWS]
            first = int(part[0])
            fields = [text_field(part - first, heads[first:int(part[-1]) + 1])]
            fields += [fmt(col[lo:lo + CHUNK_ROWS]) for fmt, col in zip(text, columns)]
            fh.write(csv_lines(fields))
