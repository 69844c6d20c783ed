"""``DL_info.csv``-schema files <-> :class:`lesionprop.annotations.table.Annotations`.

Boxes stay in the file frame (see :mod:`lesionprop.boxes`); nothing is converted here.

Reading: pyarrow's CSV reader takes every field as text, then each column is parsed
at once (pyarrow.compute).  A file that the column-wise parse does not accept whole
(a bad value, a wrong field count, blank or all-empty rows, ...) is read again row by
row with the csv module, which gives the exact error: file, line, column and value of
the first bad row.  So both paths accept and refuse the same files.  Beyond parsing, values
must lie in their domain (:func:`_values_ok` column-wise, :func:`_check_values` per row): the
DeepLesion codes, ``Slice_range`` first <= last, and on human rows a non-empty box inside the
image and the key slice inside ``Slice_range``.  A UTF-8
byte-order mark (a CSV saved from Excel) and CRLF line ends are accepted; a file that
is not UTF-8 is refused with an error naming the file.

Writing: the 18 fields' original text (or, for new rows, their formatted values), then
``Source``/``Score`` and extra columns, quoted as the csv module does (only fields with
a comma, quote or line break), ``\\n`` line ends, through :func:`fileio.atomic_write`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lesionprop.annotations.arrow_text import (
    arrow_bools, arrow_strings, lit, num_texts, numpy_of, objects_of, repeat_text,
)
from lesionprop.annotations.table import (
    COLUMNS, LESION_TYPES, SOURCE_COLUMNS, SOURCES, AnnotationError, Annotations, Lesion, concat, floats_text,
)
from lesionprop.data.layout import SLICE_NAME_PATTERN, parse_file_name
from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write, require_file

_BOM = b"\xef\xbb\xbf"
_ID_COLUMNS = ("Patient_index", "Study_index", "Series_ID", "Key_slice_index")
#: a field of comma-separated numbers (or none), narrower than what float() takes: any other
#: field goes to the row reader, which takes what float() takes and names what it does not
_NUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER_LIST = rf"^\s*(?:{_NUM}(?:\s*,\s*{_NUM})*)?\s*$"


#: the codes DeepLesion uses (REFERENCE.md; the real rows in ../shared hold only these), as numbers:
#: a value is read as a float and must equal one of them, so ``9`` or ``0.5`` is refused, not
#: truncated by ``int(float(text))`` into another split or type
_CODES: dict[str, tuple[int, ...]] = {
    "Coarse_lesion_type": tuple(sorted(LESION_TYPES)), "Possibly_noisy": (0, 1), "Train_Val_Test": (1, 2, 3),
}
_CODE_NAMES = {
    "Coarse_lesion_type": "-1 (unknown) or 1..8 (" + ", ".join(f"{k} {LESION_TYPES[k]}" for k in range(1, 9)) + ")",
    "Possibly_noisy": "0 or 1", "Train_Val_Test": "1 (train), 2 (val) or 3 (test)",
}


def _values_ok(box: np.ndarray, slice_range: np.ndarray, slices: np.ndarray, image_size: np.ndarray,
               human: np.ndarray) -> np.ndarray:
    """Rows whose box and slices are consistent (the column-wise form of :func:`_check_values`):

    * ``Slice_range`` first <= last (every row).
    * human rows (``Source`` human or absent: DL_info.csv, truth.csv): ``Bounding_boxes`` with
      x2 > x1, y2 > y1, x1, y1 >= 0, x2 <= columns + 1, y2 <= rows + 1 (``Image_size`` = rows,
      columns; the file frame is 1-based, see :mod:`lesionprop.boxes`: the image spans 0.5 ..
      size + 0.5, and predictions clipped to the image reach size + 1), and the key slice
      (``File_name``) inside ``Slice_range``.
    * pseudo-label rows (mined / propagated / distilled / reviewed: :meth:`Annotations.derive` of any
      detector's boxes, on any slice that has them, with the template's Slice_range) keep the
      rule they were written under: finite, x2 >= x1, y2 >= y1; so a label file lesionprop
      wrote always reads back.
    NaN fails every comparison, so a non-finite number is refused too.
    """
    x1, y1, x2, y2 = box.T
    xmax = image_size[:, 1].astype(np.float64) + 1.0
    ymax = image_size[:, 0].astype(np.float64) + 1.0
    strict = ((x2 > x1) & (y2 > y1) & (x1 >= 0) & (y1 >= 0) & (x2 <= xmax) & (y2 <= ymax)
              & (slices >= slice_range[:, 0]) & (slices <= slice_range[:, 1]))
    ordered = slice_range[:, 0] <= slice_range[:, 1]
    if human.all():                                    # DL_info.csv, truth.csv
        return ordered & strict
    loose = np.isfinite(box).all(axis=1) & (x2 >= x1) & (y2 >= y1)
    return ordered & np.where(human, strict, loose)


class _Fallback(Exception):
    """The column-wise parse does not accept the file: read it row by row."""


def read_annotations_csv(path: str | os.PathLike) -> Annotations:
    """Read a ``DL_info.csv``-schema file (with or without Source/Score, extra columns).

    Raises :class:`AnnotationError` naming the file, line, column and value of the
    first malformed row, FileNotFoundError for a missing file, or
    :class:`~lesionprop.fileio.PathKindError` for a folder.
    """
    path = require_file(path, "annotation file")
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return _read_columns(data, str(path))
    except _Fallback:
        rows, header = _read_rows(data, path)
    ann = Annotations.from_lesions(rows, str(path))
    ann.line = _row_lines(data)
    ann.source_columns = "Source" in header or "Score" in header
    return ann


# ---------------------------------------------------------------- column-wise

def _header(data: bytes, path: str) -> list[str]:
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a UTF-8 text file (byte 0x{first[exc.start]:02x} "
                              f"at offset {exc.start}); save it as UTF-8 CSV") from None
    if not text.strip():
        raise AnnotationError(f"{path}: empty file, expected the DL_info.csv header")
    header = next(csv.reader([text.rstrip("\r")]))
    if tuple(header[: len(COLUMNS)]) != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        raise AnnotationError(f"{path}, line 1: header is not the DL_info.csv schema "
                              f"(missing or out of order: {missing or 'column order differs'})")
    return header


def _trim(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(col)


def _cast(col: pa.ChunkedArray | pa.Array, typ: pa.DataType) -> np.ndarray:
    try:
        out = pc.cast(col, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _Fallback from None
    if out.null_count:
        raise _Fallback
    return numpy_of(out, np.float64 if typ == pa.float64() else np.int64)


def _int(col: pa.ChunkedArray) -> np.ndarray:
    """``int(text)`` of every field: decimal digits only (arrow's cast also takes ``0x10``)."""
    t = _trim(col)
    if not pc.all(pc.match_substring_regex(t, r"^[+-]?[0-9]+$")).as_py():
        raise _Fallback
    return _cast(t, pa.int64())


def _number_lists(col: pa.ChunkedArray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Comma-separated numbers of every field -> (flat float64 values, count per field)."""
    t = _trim(col)
    empty = numpy_of(pc.equal(t, lit("")), bool)
    counts = values = None
    for sep in (", ", ","):              # DeepLesion writes ", "; anything else takes the slower way
        parts = pc.split_pattern(t, sep)
        flat = pc.list_flatten(parts)
        if sep == ",":
            flat = _trim(flat)
        try:
            values = pc.cast(flat, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        counts = numpy_of(pc.list_value_length(parts), np.int32).astype(np.int64)
        break
    if values is None:
        if not empty.any():
            raise _Fallback
        counts = numpy_of(pc.list_value_length(parts), np.int32).astype(np.int64)
        counts[empty] = 0
        values = _cast(pc.filter(flat, arrow_bools(np.repeat(~empty, np.where(empty, 1, counts)))), pa.float64())
        if n is not None and (counts != n).any():
            raise _Fallback
        return values, counts
    elif empty.any():
        raise _Fallback
    if n is not None and (counts != n).any():
        raise _Fallback
    if values.null_count:
        raise _Fallback
    return numpy_of(values, np.float64), counts


def _padded(values: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Rows of exactly ``n`` numbers as (N, n); NaN rows for the others."""
    out = np.full((counts.size, n), np.nan)
    ok = counts == n
    if ok.all():
        return values.reshape(-1, n)
    ends = np.cumsum(counts)
    starts = ends - counts
    idx = starts[ok][:, None] + np.arange(n)
    out[ok] = values[idx]
    return out


def _read_columns(data: bytes, path: str) -> Annotations:
    header = _header(data, path)
    if len(set(header)) != len(header):
        raise _Fallback
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # one block: line breaks inside quoted fields are then parsed right without the
            # (3x slower) newlines_in_values mode, which only matters at block boundaries
            read_options=pacsv.ReadOptions(use_threads=False, block_size=min(len(data) + 1, (1 << 31) - 1)),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            _check_utf8(data, path)
        raise _Fallback from None
    n = table.num_rows
    col = {h: table.column(h) for h in header}
    text = {c: col[c] for c in COLUMNS}
    lines = _row_lines(data, n)

    names = _trim(col["File_name"])
    if pc.any(pc.invert(pc.match_substring_regex(names, SLICE_NAME_PATTERN))).as_py():
        raise _Fallback
    ints = {c: _int(col[c]) for c in _ID_COLUMNS}
    box, _ = _number_lists(col["Bounding_boxes"], 4)
    box = box.reshape(-1, 4)
    for c in ("Measurement_coordinates", "DICOM_windows"):     # kept as text: only checked
        if not pc.all(pc.match_substring_regex(col[c], _NUMBER_LIST)).as_py():
            raise _Fallback
    diam, dcount = _number_lists(col["Lesion_diameters_Pixel_"], None)
    loc, lcount = _number_lists(col["Normalized_lesion_location"], None)
    sr, _ = _number_lists(col["Slice_range"], 2)
    sp, _ = _number_lists(col["Spacing_mm_px_"], 3)
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise _Fallback
    series, name_ids = _name_parts(names)
    slices = name_ids[:, 3]
    if not ((name_ids == np.stack([ints[c] for c in _ID_COLUMNS], axis=1)).all() and (slices >= 1).all()):
        raise _Fallback                  # an id disagreeing with File_name: the row reader names it
    size, _ = _number_lists(col["Image_size"], 2)
    if not ((np.abs(sr) < 2.0 ** 62).all() and (np.abs(size) < 2.0 ** 62).all()
            and all((np.abs(v) < 2 ** 62).all() for v in ints.values())):
        raise _Fallback                  # int() of these: the row-by-row reader names the value
    age_t = _trim(col["Patient_age"])
    no_age = numpy_of(pc.or_(pc.equal(age_t, lit("")), pc.equal(pc.utf8_lower(age_t), lit("nan"))), bool)
    age = np.full(n, np.nan)
    if (~no_age).any():
        age[~no_age] = _cast(pc.filter(age_t, arrow_bools(~no_age)), pa.float64())
    if "Source" in col:
        source = objects_of(_trim(col["Source"]))
        source[source == ""] = "human"
        if not np.isin(source, SOURCES).all():
            raise _Fallback
    else:
        source = np.full(n, "human", dtype=object)
    score = np.full(n, np.nan)
    if "Score" in col:
        st = _trim(col["Score"])
        has = numpy_of(pc.not_equal(st, lit("")), bool)
        if has.any():
            score[has] = _cast(pc.filter(st, arrow_bools(has)), pa.float64())
    codes = {c: _cast(_trim(col[c]), pa.float64()) for c in _CODES}
    slice_range = np.trunc(sr.reshape(-1, 2)).astype(np.int64)
    image_size = np.trunc(size.reshape(-1, 2)).astype(np.int64)
    if not (all(np.isin(v, _CODES[c]).all() for c, v in codes.items())
            and _values_ok(box, slice_range, slices, image_size,
                           source == "human" if "Source" in col else np.ones(n, bool)).all()):
        raise _Fallback                  # a value out of its domain: the row reader names it
    columns = {
        "file_name": objects_of(names),
        "series": series,
        "slice_index": slices, "patient": ints["Patient_index"], "study": ints["Study_index"],
        "series_id": ints["Series_ID"], "boxes": box, "diameters_px": _padded(diam, dcount, 2),
        "location": _padded(loc, lcount, 3), "lesion_type": codes["Coarse_lesion_type"].astype(np.int64),
        "noisy": codes["Possibly_noisy"] != 0, "slice_range": slice_range,
        "spacing": sp.reshape(-1, 3), "image_size": image_size,
        "gender": objects_of(_trim(col["Patient_gender"])), "age": age,
        "split": codes["Train_Val_Test"].astype(np.int64), "source": source, "score": score, "line": lines,
    }
    extras = {h: col[h] for h in header[len(COLUMNS):] if h not in SOURCE_COLUMNS}
    return Annotations(columns, text, extras, path, "Source" in col or "Score" in col)


def _name_parts(names: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Series (object array of str) and (patient, study, series id, slice) ints of every
    File_name, read from the bytes of the names, which :data:`SLICE_NAME_PATTERN` matched:
    ``PPPPPP_SS_II_KKK.png`` (ASCII digits at fixed places, 3 or more slice digits)."""
    arr = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=object), np.zeros((0, 4), dtype=np.int64)
    arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], np.int64, n + 1, arr.offset * 8)
    buf = np.frombuffer(arr.buffers()[2], np.uint8)
    start, length = offsets[:-1], np.diff(offsets)
    digits = buf[start[:, None] + np.arange(12)].astype(np.int64) - 48   # 'PPPPPP_SS_II'
    ids = np.zeros((n, 4), dtype=np.int64)
    for k, (a, b) in enumerate(((0, 6), (7, 9), (10, 12))):
        ids[:, k] = digits[:, a:b] @ 10 ** np.arange(b - a - 1, -1, -1)
    n_slice = length - 17                                            # 13 before, '.png' after
    if n_slice.max() > 18:                                           # past int64: the rows say why
        raise _Fallback
    for j in range(int(n_slice.max())):
        more = j < n_slice
        d = buf[np.where(more, start + 13 + j, 0)].astype(np.int64) - 48
        ids[:, 3] = np.where(more, ids[:, 3] * 10 + d, ids[:, 3])
    _, first, inverse = np.unique(ids[:, 0] * 10000 + ids[:, 1] * 100 + ids[:, 2],
                                  return_index=True, return_inverse=True)
    series = buf[start[first][:, None] + np.arange(12)].view("S12").ravel().astype(str).astype(object)
    return series[inverse.ravel()], ids


def _check_utf8(data: bytes, path: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AnnotationError(f"{path}, line {line}: not a UTF-8 text file (byte 0x{data[exc.start]:02x} "
                              f"at offset {exc.start}); save it as UTF-8 CSV") from None


def _row_lines(data: bytes, n: int | None = None) -> np.ndarray:
    """Line number (1-based) of every data row: from the line breaks when every line is one
    row, otherwise from a csv-module scan (quoted line breaks, blank lines)."""
    breaks = data.count(b"\n")
    total = breaks + (0 if data.endswith(b"\n") else 1)
    if n is not None and total == n + 1:
        return np.arange(2, n + 2, dtype=np.int64)
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(reader, None)
    return np.asarray([reader.line_num for values in reader
                       if values and not all(not x.strip() for x in values)], dtype=np.int64)


# ---------------------------------------------------------------- row by row (exact errors)

class _FieldError(ValueError):
    """A value that parses but is wrong (names its own column)."""

    def __init__(self, column: str, value: str, why: str) -> None:
        super().__init__(why)
        self.column, self.value = column, value


def _check_against_name(v: dict[str, str], name: str, series: str, k: int) -> None:
    """Patient_index / Study_index / Series_ID / Key_slice_index say what File_name says; slices
    are numbered from 1 (DeepLesion's ``001.png``)."""
    parts = [int(p) for p in series.split("_")]
    for col, want in zip(("Patient_index", "Study_index", "Series_ID", "Key_slice_index"), parts + [k]):
        if int(v[col]) != want:
            raise _FieldError(col, v[col], f"disagrees with File_name {name} ({want})")
    if k < 1:
        raise _FieldError("File_name", v["File_name"], "slice numbers start at 001")


def _check_values(v: dict[str, str], box: Sequence[float], sr: tuple[int, int], k: int,
                  size: tuple[int, int], human: bool) -> None:
    """The codes (:data:`_CODES`) and the rules of :func:`_values_ok`, for one row; the first
    broken one is a :class:`_FieldError` naming its column and value."""
    for col, allowed in _CODES.items():
        if float(v[col]) not in allowed:
            raise _FieldError(col, v[col], f"must be {_CODE_NAMES[col]}")
    if not sr[0] <= sr[1]:
        raise _FieldError("Slice_range", v["Slice_range"], f"first slice {sr[0]} is after the last {sr[1]} "
                                                           "(expected 'first, last')")
    text = v["Bounding_boxes"]
    x1, y1, x2, y2 = box
    if not human:
        if not (x2 >= x1 and y2 >= y1):
            raise _FieldError("Bounding_boxes", text, f"box x1, y1, x2, y2 must have x2 >= x1 and y2 >= y1 "
                                                      f"(width {x2 - x1:g}, height {y2 - y1:g})")
        return
    if not (x2 > x1 and y2 > y1):
        raise _FieldError("Bounding_boxes", text, f"box x1, y1, x2, y2 must have x2 > x1 and y2 > y1 "
                                                  f"(width {x2 - x1:g}, height {y2 - y1:g})")
    if not (x1 >= 0 and y1 >= 0):
        raise _FieldError("Bounding_boxes", text, "box coordinates must be >= 0 (1-based pixel frame)")
    xmax, ymax = float(size[1]) + 1.0, float(size[0]) + 1.0
    if not (x2 <= xmax and y2 <= ymax):
        raise _FieldError("Bounding_boxes", text, f"box reaches past the image: Image_size = {v['Image_size']!r} "
                                                  f"(rows, columns) allows x2 <= {xmax:g}, y2 <= {ymax:g}")
    if not sr[0] <= k <= sr[1]:
        raise _FieldError("Key_slice_index", v["Key_slice_index"],
                          f"key slice {k} is outside its Slice_range {sr[0]}..{sr[1]}")


def _parse_row(values: Sequence[str], header: Sequence[str]) -> Lesion:
    v = dict(zip(header, values))
    age_text = v["Patient_age"].strip()
    age = float(age_text) if age_text and age_text.lower() != "nan" else float("nan")
    source = v.get("Source", "").strip() or "human"
    if source not in SOURCES:
        raise InputError(f"Source must be one of {', '.join(SOURCES)}, got {source!r}")
    score_text = v.get("Score", "").strip()
    score = float(score_text) if score_text else float("nan")
    box = floats_text(v["Bounding_boxes"], 4, "Bounding_boxes")
    if not all(math.isfinite(x) for x in box):
        raise _FieldError("Bounding_boxes", v["Bounding_boxes"], "box numbers must be finite (x1, y1, x2, y2)")
    sr = floats_text(v["Slice_range"], 2, "Slice_range")
    size = floats_text(v["Image_size"], 2, "Image_size")
    extras = {k: v[k] for k in header[len(COLUMNS):] if k not in SOURCE_COLUMNS}
    name = v["File_name"].strip()
    series, k = parse_file_name(name)
    _check_against_name(v, name, series, k)
    for col in ("Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Coarse_lesion_type",
                "Possibly_noisy", "Train_Val_Test", "Slice_range", "Image_size"):
        nums = floats_text(v[col], None, col)
        if not all(abs(x) < 2.0 ** 62 for x in nums):              # NaN too: int() of it fails below
            raise _FieldError(col, v[col], "not a number" if any(x != x for x in nums) else "number out of range")
    spacing = floats_text(v["Spacing_mm_px_"], 3, "Spacing_mm_px_")
    if not all(math.isfinite(x) and x > 0 for x in spacing):
        raise _FieldError("Spacing_mm_px_", v["Spacing_mm_px_"], "spacings must be finite positive mm")
    _check_values(v, box, (int(sr[0]), int(sr[1])), k, (int(size[0]), int(size[1])), source == "human")
    return Lesion(
        file_name=name, patient=int(v["Patient_index"]), study=int(v["Study_index"]),
        series_id=int(v["Series_ID"]), key_slice=int(v["Key_slice_index"]),
        measurement=floats_text(v["Measurement_coordinates"], None, "Measurement_coordinates"),
        box=box,  # type: ignore[arg-type]
        diameters=floats_text(v["Lesion_diameters_Pixel_"], None, "Lesion_diameters_Pixel_"),
        location=floats_text(v["Normalized_lesion_location"], None, "Normalized_lesion_location"),
        lesion_type=int(float(v["Coarse_lesion_type"])), noisy=int(float(v["Possibly_noisy"])),
        slice_range=(int(sr[0]), int(sr[1])),
        spacing=spacing,  # type: ignore[arg-type]
        image_size=(int(size[0]), int(size[1])),
        windows=floats_text(v["DICOM_windows"], None, "DICOM_windows"),
        gender=v["Patient_gender"].strip(), age=age, split=int(float(v["Train_Val_Test"])),
        source=source, score=score, extras=extras, raw=tuple(values))


def _read_rows(data: bytes, path: Path) -> tuple[list[Lesion], list[str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _check_utf8(data, str(path))
        raise
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    if len(set(header)) != len(header):
        raise AnnotationError(f"{path}, line 1: duplicate column names in the header: {header[len(COLUMNS):]}")
    lesions = []
    for values in reader:
        line = reader.line_num
        if not values or all(not x.strip() for x in values):
            continue
        if len(values) != len(header):
            raise AnnotationError(
                f"{path}, line {line}: expected {len(header)} fields, got {len(values)}: {values[:3]}...")
        try:
            lesions.append(_parse_row(values, header))
        except _FieldError as exc:
            raise AnnotationError(f"{path}, line {line}, column {exc.column} = {exc.value!r}: {exc}") from None
        except (ValueError, KeyError, OverflowError) as exc:
            col, val = _locate_bad_field(values, header)
            raise AnnotationError(f"{path}, line {line}, column {col} = {val!r}: {exc}") from None
    return lesions, header


def _locate_bad_field(values: Sequence[str], header: Sequence[str]) -> tuple[str, str]:
    """Best effort: the first field that fails its own parse (for error messages)."""
    checks = {
        "File_name": lambda s: parse_file_name(s.strip()),
        "Patient_index": int, "Study_index": int, "Series_ID": int, "Key_slice_index": int,
        "Bounding_boxes": lambda s: floats_text(s, 4, "Bounding_boxes"),
        "Coarse_lesion_type": lambda s: int(float(s)), "Possibly_noisy": lambda s: int(float(s)),
        "Train_Val_Test": lambda s: int(float(s)),
        "Slice_range": lambda s: floats_text(s, 2, "Slice_range"),
        "Spacing_mm_px_": lambda s: floats_text(s, 3, "Spacing_mm_px_"),
        "Image_size": lambda s: floats_text(s, 2, "Image_size"),
        "Measurement_coordinates": lambda s: floats_text(s, None, ""),
        "Lesion_diameters_Pixel_": lambda s: floats_text(s, None, ""),
        "Normalized_lesion_location": lambda s: floats_text(s, None, ""),
        "DICOM_windows": lambda s: floats_text(s, None, ""),
        "Patient_age": lambda s: float(s) if s.strip() and s.strip().lower() != "nan" else None,
        "Score": lambda s: float(s) if s.strip() else None,
        "Source": lambda s: SOURCES.index(s.strip() or "human"),
    }
    for col, val in zip(header, values):
        fn = checks.get(col)
        if fn is None:
            continue
        try:
            fn(val)
        except (ValueError, TypeError, OverflowError):
            return col, val
    return "Bounding_boxes", dict(zip(header, values)).get("Bounding_boxes", "")


# ---------------------------------------------------------------- writing

def _quoted(values: np.ndarray | pa.Array) -> pa.Array:
    """Text fields as the csv module writes them (QUOTE_MINIMAL: fields holding a comma, a quote
    or a line break).  Characters absent from the column's bytes are not searched row by row."""
    arr = values if isinstance(values, pa.Array) else arrow_strings(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    data = arr.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    need = None
    for char in (",", '"', "\n", "\r"):
        if char.encode() not in raw:
            continue
        has = pc.match_substring(arr, char)
        need = has if need is None else pc.or_(need, has)
    if need is None or not pc.any(need).as_py():
        return arr
    escaped = pc.replace_substring(arr, '"', '""') if b'"' in raw else arr
    quoted = pc.binary_join_element_wise(lit('"'), escaped, lit('"'), lit(""))
    return quoted if pc.all(need).as_py() else pc.if_else(need, quoted, arr)     # all: e.g. every box


def _source_text(source: np.ndarray) -> pa.Array:
    """The Source column through its few distinct values."""
    uniq, inv = np.unique(source.astype(str), return_inverse=True)
    return pc.take(arrow_strings(uniq.tolist()), pa.Array.from_buffers(
        pa.int64(), inv.size, [None, pa.py_buffer(np.ascontiguousarray(inv.reshape(-1), dtype=np.int64))]))


def _header_text(ann: Annotations, with_source: bool | None, extra_columns: Sequence[str] | None
                 ) -> tuple[bool, list[str], bytes]:
    """``(with_source, extra columns, header line)`` of ``ann`` as :func:`write_annotations_csv` writes it."""
    if with_source is None:
        with_source = ann.source_columns or bool((ann.source != "human").any() or (~np.isnan(ann.score)).any())
    extra = list(ann.extras) if extra_columns is None else list(extra_columns)
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(list(COLUMNS) + (list(SOURCE_COLUMNS) if with_source else []) + extra)
    return with_source, extra, head.getvalue().encode("utf-8")


def _body(ann: Annotations, with_source: bool, extra: Sequence[str]) -> pa.Buffer | None:
    """The CSV lines of every row (each ending in a line break); None for no rows."""
    n = len(ann)
    if not n:
        return None
    cols = [_quoted(ann.text[c]) for c in COLUMNS]
    if with_source:
        score = pc.if_else(arrow_bools(np.isnan(ann.score)), lit(""), num_texts(np.nan_to_num(ann.score), 6))
        cols += [_quoted(_source_text(ann.source)), _quoted(score)]
    cols += [_quoted(ann.extras[c] if c in ann.extras else repeat_text("", n)) for c in extra]
    lines = pc.binary_join_element_wise(*cols, lit(","))
    one = pa.Array.from_buffers(pa.int32(), 2, [None, pa.py_buffer(np.array([0, n], np.int32))])
    return pc.binary_join(pa.ListArray.from_arrays(one, pc.binary_join_element_wise(lines, lit(""), lit("\n"))),
                          lit(""))[0].as_buffer()


def write_annotations_csv(path: str | os.PathLike, ann: Annotations, *, with_source: bool | None = None,
                          extra_columns: Sequence[str] | None = None) -> None:
    """Write ``ann`` in the DL_info.csv schema, atomically.

    ``with_source``: add the ``Source`` and ``Score`` columns (default: when the rows were
    read with them or any row is not human or has a score).  ``extra_columns``: further
    trailing columns (default: those of ``ann``), empty where a row has none.
    """
    with_source, extra, head = _header_text(ann, with_source, extra_columns)
    body = _body(ann, with_source, extra)
    with atomic_write(path, "wb") as fh:
        fh.write(head)
        if body is not None:
            fh.write(body)


def write_with_new_rows_csv(rows: Annotations, new: Mapping[str | os.PathLike, Annotations]) -> None:
    """Write file ``p`` = every row of ``rows``, then the rows of ``new[p]``, with Source and Score,
    for every ``p`` in ``new``, each atomically: the same bytes as ``write_annotations_csv(p,
    concat([rows, new[p]]), with_source=True)``, with the text of ``rows`` built once."""
    extra = list(rows.extras)
    head = None
    shared = None
    for path, more in new.items():
        if set(more.extras) - set(extra):      # new extra columns change every line: the plain way
            write_annotations_csv(path, concat([rows, more]), with_source=True)
            continue
        if head is None:
            _, _, head = _header_text(rows, True, extra)
            shared = _body(rows, True, extra)
        body = _body(more, True, extra)
        with atomic_write(path, "wb") as fh:
            fh.write(head)
            for part in (shared, body):
                if part is not None:
                    fh.write(part)
