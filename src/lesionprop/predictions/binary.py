"""Binary prediction files: Arrow IPC (``.arrow``, ``.feather``, ``.ipc``) and Parquet (``.parquet``, ``.pq``).

The same table as the CSV (``File_name,x1,y1,x2,y2,score``; extra columns are allowed
and not read), in a form other tools open directly (``pandas.read_feather`` /
``read_parquet``, polars, DuckDB, R's arrow).  Written files hold ``File_name``
dictionary-encoded (each distinct slice name once, an int32 code per box) and the
five numbers as float64, so values round-trip exactly.

Arrow IPC files are written uncompressed and read through a memory map without a
copy: 3.4 million rows in a few hundredths of a second (the CSV parse takes ~0.8 s),
which is why the label tools are fastest on them.  Parquet files are written with
zstd compression (about 40% of the CSV's size) and decoded on reading (~0.4 s at that
scale).  Files written elsewhere are accepted with ``File_name`` as text or
dictionary-encoded text and the numbers of any integer or floating type; Arrow IPC
stream files and compressed Arrow IPC files (pandas ``to_feather``'s default) too.

The checks are those of the CSV reader; a message names the file, the row (1-based,
the first data row is row 1), the column and the value.  ``Predictions.lines`` holds
row + 1, the line the row has in the CSV form of the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lesionprop.annotations.arrow_text import arrow_strings
from lesionprop.fileio import atomic_write
from lesionprop.predictions.table import (
    BINARY_SUFFIXES, COLUMNS, PredictionError, Predictions, _factorize, _numpy, _object_array, _shown, check_rows,
)

if TYPE_CHECKING:
    import pandas as pd

_FORMAT_NAMES = {"arrow": "Arrow IPC (Feather v2)", "parquet": "Parquet"}


def binary_format(path: str | os.PathLike) -> str | None:
    """``"arrow"`` or ``"parquet"`` from the file suffix, ``None`` for anything else (CSV)."""
    return BINARY_SUFFIXES.get(Path(path).suffix.lower())


# ---------------------------------------------------------------- reading

def read_table(path: Path, fmt: str, *, all_columns: bool = False) -> pa.Table:
    """The prediction columns of a binary file (every column with ``all_columns``); an
    unreadable or truncated file, or a missing column, is a :class:`PredictionError`
    naming the file."""
    what = _FORMAT_NAMES[fmt]
    try:
        if fmt == "arrow":
            table = _read_ipc(path)
        else:
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path, read_dictionary=["File_name"])  # pq.read_table imports pandas
            _check_columns(path, pf.schema_arrow.names)
            table = pf.read(columns=None if all_columns else list(COLUMNS), use_threads=False)
        table.validate(full=True)      # offsets, UTF-8, dictionary codes in range (ms at 3.4 M rows)
    except PredictionError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise PredictionError(f"{path}: not a readable {what} file, or a truncated one ({detail})") from None
    _check_columns(path, table.column_names)
    return table if all_columns else table.select(list(COLUMNS))


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """Every column of a binary prediction file as a pandas DataFrame, one row per table row
    (``Predictions.lines - 2`` indexes it); dictionary-encoded text as str."""
    path = Path(path)
    table = read_table(path, binary_format(path), all_columns=True)
    frame = table.to_pandas()
    for name, kind in zip(table.column_names, table.schema.types):
        if pa.types.is_dictionary(kind):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _read_ipc(path: Path) -> pa.Table:
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_stream(source).read_all()     # an Arrow IPC stream file
        except pa.ArrowInvalid:
            pass
        raise


def _check_columns(path: Path, names: Sequence[str]) -> None:
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise PredictionError(f"{path}: columns must include {','.join(COLUMNS)}; missing {missing} "
                              f"(columns: {list(names)[:20]})")


def _name_codes(path: Path, table: pa.Table) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """``(codes, uniques, null)`` of File_name: each chunk's dictionary is appended to
    ``uniques`` unless it is the previous chunk's (a file written here has one)."""
    col = table.column("File_name")
    kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise PredictionError(f"{path}: column File_name has type {col.type}, expected text (slice names)")
    codes, nulls, dicts = [], [], []
    at = 0
    for ch in col.chunks:
        if not pa.types.is_dictionary(ch.type):
            ch = pc.dictionary_encode(ch)
        d = ch.dictionary if ch.dictionary.type == pa.string() else ch.dictionary.cast(pa.string())
        if not dicts or not (d is dicts[-1][1] or d.equals(dicts[-1][1])):
            at = sum(len(x) for _, x in dicts)
            dicts.append((at, d))
        idx = ch.indices
        kind = ("i" if pa.types.is_signed_integer(idx.type) else "u") + str(idx.type.bit_width // 8)
        code = _numpy(idx, np.dtype(kind))         # a view of the memory map when there are no nulls
        codes.append(code if dicts[-1][0] == 0 and kind == "i4" else code.astype(np.int64) + dicts[-1][0])
        nulls.append(_null_mask(idx))
    if not dicts:
        return np.zeros(0, np.int64), arrow_strings([]), np.zeros(0, bool)
    uniques = pa.concat_arrays([d for _, d in dicts]) if len(dicts) > 1 else dicts[0][1]
    if len(codes) == 1:
        return codes[0], uniques, nulls[0]
    return np.concatenate([c.astype(np.int64) for c in codes]), uniques, np.concatenate(nulls)


def _null_mask(arr: pa.Array) -> np.ndarray:
    if not arr.null_count:
        return np.zeros(len(arr), bool)
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8), bitorder="little")
    return ~bits[arr.offset:arr.offset + len(arr)].astype(bool)


def _numbers(path: Path, table: pa.Table, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """One numeric column as float64 (NaN where null), into ``out`` when given; a float64
    column of one chunk without nulls is returned as a view of the file's memory map."""
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise PredictionError(f"{path}: column {name} has type {col.type}, expected numbers")
    if out is None and col.num_chunks == 1 and col.type == pa.float64() and not col.null_count:
        return _numpy(col.chunk(0), np.float64)
    out = np.empty(len(col), np.float64) if out is None else out
    at = 0
    for ch in col.chunks:
        if ch.type != pa.float64():
            ch = pc.cast(ch, pa.float64())
        out[at:at + len(ch)] = _numpy(ch, np.float64)
        at += len(ch)
    return out


def _box_view(table: pa.Table) -> np.ndarray | None:
    """x1, y1, x2, y2 as one read-only ``(N, 4)`` view of the memory-mapped file, without a
    copy, when the four columns are float64 buffers (one chunk, no nulls) at equal distances
    in memory, as :func:`write_binary` lays them out; ``None`` otherwise."""
    chunks = [table.column(c).chunks for c in COLUMNS[1:5]]
    n = table.num_rows
    if n == 0 or any(len(ch) != 1 or ch[0].type != pa.float64() or ch[0].null_count for ch in chunks):
        return None
    starts = [ch[0].buffers()[1].address + ch[0].offset * 8 for ch in chunks]
    step = starts[1] - starts[0]
    if step < 8 * n or step % 8 or any(b - a != step for a, b in zip(starts, starts[1:])):
        return None
    span = pa.foreign_buffer(starts[0], 3 * step + 8 * n, base=table)
    flat = np.frombuffer(span, np.float64)
    return np.lib.stride_tricks.as_strided(flat, shape=(n, 4), strides=(8, step), writeable=False)


def read_binary(path: Path, fmt: str, *, skip_bad_rows: bool = False,
                known_series: Collection[str] | None = None) -> Predictions:
    """:func:`lesionprop.predictions.read_predictions` for a binary file (same checks)."""
    table = read_table(path, fmt)
    codes, uniques, null_name = _name_codes(path, table)
    boxes = _box_view(table)
    if boxes is None:
        boxes = np.empty((4, table.num_rows), np.float64).T    # column-major: no copy in boxes.BoxCols
        for j, c in enumerate(COLUMNS[1:5]):
            _numbers(path, table, c, boxes[:, j])
    scores = _numbers(path, table, "score")

    def where(line: int) -> str:
        return f"row {line - 1}"

    def problem(i: int, value_bad: bool, name_bad: bool) -> str:
        if value_bad:
            return _value_problem(boxes[i], float(scores[i]))
        name = None if null_name[i] else uniques[int(codes[i])].as_py()
        if name_bad:
            return (f"column File_name: not a DeepLesion slice name (PPPPPP_SS_SS_III.png): "
                    f"{'missing (null)' if name is None else _shown(name)}")
        return f"column File_name: series of {_shown(name)} is not in the annotations"

    return check_rows(codes, uniques, boxes, scores, None, name_missing=null_name, skip_bad_rows=skip_bad_rows,
                      known_series=known_series, path=path, where=where, problem=problem)


def _value_problem(box: np.ndarray, score: float) -> str:
    x1, y1, x2, y2 = box.tolist()
    for c, v in zip(COLUMNS[1:], (x1, y1, x2, y2, float(score))):
        if not np.isfinite(v):
            return f"column {c}: {v!r} (NaN, missing or infinite value)"
    if x2 < x1:
        return f"column x2: {x2!r} < x1 = {x1!r} (negative width)"
    return f"column y2: {y2!r} < y1 = {y1!r} (negative height)"


# ---------------------------------------------------------------- writing

def _float_array(values: np.ndarray) -> pa.Array:
    v = np.ascontiguousarray(values, dtype=np.float64)
    return pa.Array.from_buffers(pa.float64(), v.size, [None, pa.py_buffer(v)])


def prediction_table(file_names: Sequence[str], boxes: np.ndarray, scores: np.ndarray) -> pa.Table:
    """The table written to binary files: File_name dictionary-encoded, numbers float64."""
    names = _object_array(file_names)
    codes, uniques = _factorize(names)
    if len(uniques) >= 2**31:
        raise ValueError(f"write_predictions: {len(uniques)} distinct slice names (at most 2**31 - 1)")
    idx = np.ascontiguousarray(codes, dtype=np.int32)
    indices = pa.Array.from_buffers(pa.int32(), idx.size, [None, pa.py_buffer(idx)])
    file_name = pa.DictionaryArray.from_arrays(indices, arrow_strings(uniques))
    cols = [file_name] + [_float_array(boxes[:, j]) for j in range(4)] + [_float_array(scores)]
    return pa.Table.from_arrays(cols, names=list(COLUMNS))


def write_binary(path: str | os.PathLike, fmt: str, file_names: Sequence[str], boxes: np.ndarray,
                 scores: np.ndarray) -> None:
    """Write predictions as Arrow IPC (uncompressed, one record batch) or Parquet (zstd), atomically."""
    write_table(path, fmt, prediction_table(file_names, boxes, scores))


def write_table(path: str | os.PathLike, fmt: str, table: pa.Table) -> None:
    """Any table as Arrow IPC (uncompressed, one record batch) or Parquet (zstd), atomically."""
    with atomic_write(path, "wb") as fh:
        if fmt == "arrow":
            with pa.ipc.new_file(fh, table.schema) as writer:
                writer.write_table(table, max_chunksize=max(table.num_rows, 1))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, fh, compression="zstd")
