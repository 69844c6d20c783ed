"""Prediction CSV files: reading and writing (:mod:`lesionprop.predictions` chooses the format).

Reading (DeepLesion scale: 3.4 million rows in about a second on one core) is
pyarrow's CSV reader on a memory map of the file, slice names parsed once per
distinct name; writing formats the columns as arrays (:mod:`lesionprop.numtext`),
every float64 as the shortest text that reads back to the same value.  Files as
users have them are accepted: a UTF-8 byte-order mark, CRLF line ends, blank
lines, extra columns in any order; a file that is not UTF-8 is an error naming
the file and line.
"""

from __future__ import annotations

import csv
import io
import mmap
import os
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lesionprop.fileio import atomic_write
from lesionprop.predictions.table import (
    COLUMNS, PredictionError, Predictions, _numpy, _shown, _value_problem, check_rows,
)

_BOM = b"\xef\xbb\xbf"
_SCAN = 1 << 22          # bytes per step of the whole-file scans (newlines, non-ASCII)


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


def read_csv(path: Path, *, skip_bad_rows: bool = False, known_series: Collection[str] | None = None
             ) -> Predictions:
    """:func:`lesionprop.predictions.read_predictions` for a CSV file."""
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
    boxes = np.empty((4, table.num_rows), np.float64).T    # column-major: no copy in boxes.BoxCols
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


def write_csv(path: str | os.PathLike, names: Sequence[str], b: np.ndarray, s: np.ndarray) -> None:
    """Write checked arrays as a prediction CSV, atomically (see :func:`lesionprop.predictions.write_predictions`)."""
    from lesionprop.numtext import CHUNK_ROWS, FloatText, csv_lines, run_codes, text_field    # its tables: ~8 ms

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
