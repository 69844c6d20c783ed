"""Text columns on pyarrow without pandas: arrays from and to numpy, vectorised number text.

``pa.array``, ``pa.scalar`` and ``Array.to_numpy`` import pandas (about a second of every
command's start), so arrays are built from and read through their buffers and literals
passed to compute functions are arrow scalars.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lesionprop.data.deeplesion import floats_text, join_text

def arrow_ints(values: Any) -> pa.Array:
    a = np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))
    return pa.Array.from_buffers(pa.int64(), a.size, [None, pa.py_buffer(a)])


def arrow_bools(mask: Any) -> pa.Array:
    m = np.asarray(mask, dtype=bool).reshape(-1)
    return pa.Array.from_buffers(pa.bool_(), m.size, [None, pa.py_buffer(np.packbits(m, bitorder="little"))])


def arrow_strings(values: Any) -> pa.Array:
    """A string array of ``values`` (str, or anything ``str()`` gives the text of)."""
    enc = [v.encode("utf-8") if isinstance(v, str) else str(v).encode("utf-8") for v in values]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in enc], out=offsets[1:])
    return pa.Array.from_buffers(pa.large_string(), len(enc), [None, pa.py_buffer(offsets),
                                                               pa.py_buffer(b"".join(enc))]).cast(pa.string())


_SCALARS: dict[str, pa.Scalar] = {}


def lit(value: str) -> pa.Scalar:
    """``value`` as an arrow string scalar (for compute functions)."""
    if value not in _SCALARS:
        _SCALARS[value] = arrow_strings([value])[0]
    return _SCALARS[value]


def repeat_text(value: str, n: int) -> pa.Array:
    return pc.take(arrow_strings([value]), arrow_ints(np.zeros(n, np.int64)))


def numpy_of(arr: pa.Array | pa.ChunkedArray, dtype: Any) -> np.ndarray:
    """The values of a null-free fixed-width arrow array (a copy when it had several chunks)."""
    if len(arr) == 0:
        return np.zeros(0, dtype)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if arr.type == pa.bool_():
        bits = np.unpackbits(np.frombuffer(arr.buffers()[1], np.uint8), bitorder="little")
        return bits[arr.offset:arr.offset + len(arr)].astype(bool)
    return np.frombuffer(arr.buffers()[1], dtype, len(arr), arr.offset * np.dtype(dtype).itemsize)


def objects_of(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A string array as a numpy object array of str."""
    out = np.empty(len(arr), dtype=object)
    out[:] = arr.to_pylist()
    return out


# ---------------------------------------------------------------- number text

def num_texts(x: np.ndarray, decimals: int = 4) -> pa.Array:
    """Vectorised :func:`num_text`: the same text for every value.

    The decimal is ``m = round(|x| * 10**decimals)`` rounded as Python's ``format`` rounds:
    the exact binary value of ``x``, exact ties to even (:func:`_scaled_rounded`).  NaN, inf
    and values of 2**50 units or more are formatted by ``format`` itself, trimmed the same way.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    unit = 10 ** decimals
    with np.errstate(invalid="ignore", over="ignore"):
        slow = ~(np.abs(x) * unit < 2.0 ** 50)              # NaN, inf, huge
    m = _scaled_rounded(np.where(slow, 0.0, np.abs(x)), decimals)
    whole = pc.cast(arrow_ints(m // unit), pa.string())
    part = pc.utf8_rtrim(pc.utf8_lpad(pc.cast(arrow_ints(m % unit), pa.string()), decimals, "0"), "0")
    part = pc.if_else(arrow_bools(m % unit == 0), lit(""), pc.binary_join_element_wise(lit("."), part, lit("")))
    sign = pc.if_else(arrow_bools(x < 0), lit("-"), lit(""))
    out = pc.binary_join_element_wise(sign, whole, part, lit(""))
    if slow.any():
        spec = f".{decimals}f"              # num_text(v) == format(v, spec) without trailing zeros / point
        fixed = arrow_strings([format(v, spec) for v in x[slow].tolist()])
        if decimals:                        # '.0f' has no point: its zeros are the integer's
            fixed = pc.utf8_rtrim(pc.utf8_rtrim(fixed, "0"), ".")
        out = pc.replace_with_mask(out, arrow_bools(slow), fixed)
    return out


def _scaled_rounded(a: np.ndarray, decimals: int) -> np.ndarray:
    """``a * 10**decimals`` (``0 <= a``, ``a * 10**decimals < 2**50``) rounded to an integer as
    the exact product rounds, half to even: what ``format(a, f'.{decimals}f')`` prints.

    ``p = fl(a * u)`` is within half an ulp of the product, so only values near a tie
    ``t = floor(p) + 0.5`` need more: Dekker's split of ``a`` gives the product's exact error
    ``e`` (``u = 10**decimals`` has at most 26 significant bits for ``decimals <= 11``),
    ``p - t`` is exact (Sterbenz), and the rounded sum ``(p - t) + e`` has the sign of the
    exact ``a * u - t``."""
    if not 0 <= decimals <= 11:
        raise ValueError(f"decimals must be in 0..11, got {decimals}")
    u = float(10 ** decimals)
    p = a * u
    out = np.rint(p)
    m = np.floor(p)
    near = np.abs(p - m - 0.5) <= p * 2.0 ** -50 + 1e-9
    if near.any():
        an, pn, mn = a[near], p[near], m[near]
        c = 134217729.0 * an                     # 2**27 + 1: Veltkamp's split, hi + lo == an
        hi = c - (c - an)
        err = (hi * u - pn) + (an - hi) * u      # a * u == p + err, exactly
        d = (pn - (mn + 0.5)) + err
        out[near] = mn + ((d > 0) | ((d == 0) & (mn % 2 == 1)))
    return out.astype(np.int64)


def join_texts(cols: Sequence[pa.Array]) -> pa.Array:
    """Fields joined as DL_info writes number lists: ``'a, b, c'``."""
    return pc.binary_join_element_wise(*cols, lit(", "))


def int_texts(values: np.ndarray) -> pa.Array:
    return pc.cast(arrow_ints(values), pa.string())


def reformat_texts(texts: pa.Array, rows: np.ndarray, decimals: int) -> pa.Array:
    """Number lists of ``texts[rows]`` re-written in :func:`join_text` form (through their few
    distinct values)."""
    enc = pc.dictionary_encode(texts)
    values = [join_text(floats_text(u, None, ""), decimals) for u in enc.dictionary.to_pylist()]
    return pc.take(arrow_strings(values), pc.take(enc.indices, arrow_ints(rows)))
