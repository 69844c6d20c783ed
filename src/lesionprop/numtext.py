"""Vectorised CSV text for large numeric tables (no Python loop per row).

A CSV field of ``n`` rows is an ``(n, w)`` uint8 array of its bytes, where NUL
bytes are padding and not part of the text (text never holds NUL).
:func:`float_field` and :func:`text_field` build them for a column;
:func:`csv_lines` joins fields with commas and newlines and drops the padding,
so a chunk of rows becomes one ``bytes`` object in a few array operations.  Call
them on chunks of ~16,000 rows: the arrays then stay in the CPU caches.

Numbers are exact: :func:`float_field` writes each float64 as the shortest
decimal with at most ``max_decimals`` decimals that reads back to the *same*
float64 (``m / 10**d`` is the correctly rounded value both of the division and of
parsing the text, so equality of the division proves the round trip).  Values
with no such decimal (1/3, float32 noise, NaN, inf) are written with Python's
``repr``, which round-trips too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lesionprop.errors import InputError

_POW10_F = 10.0 ** np.arange(23)
_POW10_I = 10 ** np.arange(19, dtype=np.int64)
_EXACT_INT = 2.0 ** 53
#: "0000".."9999" as uint32 words of 4 ASCII digits
_DIGITS4 = np.array([f"{i:04d}".encode() for i in range(10000)], dtype="S4").view(np.uint32)
#: words of 0..9999 without leading zeros ("0" for 0; nothing for 0 in _INT4_EMPTY0) and,
#: as a fraction group, without trailing zeros (nothing for 0); NUL bytes pad
_INT4 = np.array([str(i).encode() for i in range(10000)], dtype="S4").view(np.uint32)
_INT4_EMPTY0 = np.concatenate([[0], _INT4[1:]]).astype(np.uint32)
_FRAC4 = np.array([f"{i:04d}".rstrip("0").encode() for i in range(10000)], dtype="S4").view(np.uint32)
_QUOTE_CHARS = (",", '"', "\n", "\r")
CHUNK_ROWS = 1 << 14


def _digit_groups(values: np.ndarray, groups: int) -> list[np.ndarray]:
    """Non-negative int64 ``values < 10**(4 * groups)`` cut into groups of 4 decimal digits
    (ints 0..9999), most significant first."""
    ints = []
    for g in range(groups):
        q = values // _POW10_I[4 * (groups - 1 - g)] if g < groups - 1 else values
        ints.append(q - (q // 10000) * 10000 if g else q)
    return ints


def _exact_at(a: np.ndarray, dec: int) -> tuple[np.ndarray, np.ndarray]:
    """``(s, ok)``: ``a == s / 10**dec`` exactly, ``s`` an integer below 2**53, where ``ok``."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.rint(a * _POW10_F[dec])
        ok = s / _POW10_F[dec] == a
        if not a.max(initial=0.0) * _POW10_F[dec] < _EXACT_INT / 2:
            ok &= s < _EXACT_INT
        return s, ok


class FloatText:
    """Exact shortest decimal text of float64 columns, chunk after chunk.

    ``FloatText(max_decimals)(x)`` gives the columns of the text of each value of
    ``x`` (see :func:`csv_lines`): at most ``max_decimals`` (0..15) decimals,
    integers without a point, ``repr`` where no such decimal reads back to the same
    float64.  The object remembers the decimals of the previous chunk (columns of a
    table keep their precision), so a typical chunk needs one exactness test."""

    def __init__(self, max_decimals: int = 9) -> None:
        if not 0 <= max_decimals <= 15:
            raise ValueError(f"max_decimals must be in 0..15, got {max_decimals}")
        self.max_decimals = max_decimals
        self.decimals = 0

    def _decimals(self, a: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """``(dec, s, ok)``: every ``ok`` value of ``a`` is ``s / 10**dec`` exactly."""
        s, ok = _exact_at(a, self.decimals)
        if ok.all():
            return self.decimals, s, ok
        top = self.max_decimals
        ok = _exact_at(a, top)[1]
        a = np.where(ok, a, 0.0)
        lo, hi = 0, top                    # fewest decimals that hold every ok value
        while lo < hi:
            mid = (lo + hi) // 2
            if _exact_at(a, mid)[1].all():
                hi = mid
            else:
                lo = mid + 1
        self.decimals = hi
        return hi, _exact_at(a, hi)[0], ok

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        n = x.size
        dec, s, ok = self._decimals(np.abs(x))
        m = np.where(ok, s, 0.0).astype(np.int64) if not ok.all() else s.astype(np.int64)
        ip = m // _POW10_I[dec] if dec else m
        cols: list[np.ndarray] = []
        neg = np.signbit(x)
        if neg.any():
            cols.append(neg.view(np.uint8) * np.uint8(45))          # "-"
        groups = _digit_groups(ip, -(-len(str(int(ip.max(initial=0)))) // 4))
        lead = np.ones(n, dtype=bool)      # every group so far was 0
        for g, part in enumerate(groups):
            table = _INT4 if g == len(groups) - 1 else _INT4_EMPTY0
            cols.append(np.where(lead, table[part], _DIGITS4[part]) if g else table[part])
            lead &= part == 0
        if dec:
            fg = -(-dec // 4)
            parts = _digit_groups((m - ip * _POW10_I[dec]) * _POW10_I[4 * fg - dec], fg)
            words, tail = [], np.ones(n, dtype=bool)   # every later group is 0
            for part in parts[::-1]:
                words.append(np.where(tail, _FRAC4[part], _DIGITS4[part]) if len(words) else _FRAC4[part])
                tail &= part == 0
            cols.append((~tail).view(np.uint8) * np.uint8(46))       # "." unless the fraction is 0
            cols += [w for w in words[::-1] if w.any()]
        bad = np.flatnonzero(~ok)
        if bad.size:  # repr: shortest round-trip text (also nan / inf), in a column of its own
            text = np.array([repr(float(v)).encode() for v in x[bad].tolist()], dtype="S")
            for c in cols:
                c[bad] = 0
            block = np.zeros((n, text.dtype.itemsize), np.uint8)
            block[bad] = text.view(np.uint8).reshape(bad.size, -1)
            cols.append(block)
        return cols


def float_field(x: np.ndarray, max_decimals: int = 9) -> list[np.ndarray]:
    """Columns of the exact shortest decimal text of each float64 in ``x`` (one chunk)."""
    return FloatText(max_decimals)(x)


def text_field(codes: np.ndarray, uniques: Sequence[str]) -> list[np.ndarray]:
    """Columns of strings given as ``codes`` into ``uniques`` (UTF-8; quoted as the csv
    module would when a string holds a comma, quote or line break)."""
    enc = []
    for s in uniques:
        s = str(s)
        if "\0" in s:
            raise InputError(f"text with a NUL character cannot be written: {s!r}")
        if any(c in s for c in _QUOTE_CHARS):
            s = '"' + s.replace('"', '""') + '"'
        enc.append(s.encode("utf-8"))
    table = np.array(enc or [b""], dtype="S")
    w = table.dtype.itemsize
    return [np.frombuffer(table.tobytes(), np.uint8).reshape(-1, w)[np.asarray(codes, dtype=np.int64)]]


def _width(col: np.ndarray) -> int:
    return col.shape[1] if col.ndim == 2 else col.itemsize


def csv_lines(fields: Sequence[list[np.ndarray]]) -> bytes:
    """Rows of ``fields`` joined by commas, each row ending in ``\\n``.  A field is a list of
    columns: ``(n,)`` uint8 (one byte), ``(n,)`` uint32 (four bytes) or ``(n, w)`` uint8;
    NUL bytes are dropped."""
    n = fields[0][0].shape[0]
    width = sum(_width(c) for f in fields for c in f) + len(fields)
    out = np.empty((n, width), np.uint8)
    at = 0
    for f in fields:
        for c in f:
            w = _width(c)
            if c.ndim == 2:
                out[:, at:at + w] = c
            elif w == 4:
                out[:, at:at + 4].view(np.uint32)[:, 0] = c
            else:
                out[:, at] = c
            at += w
        out[:, at] = 44
        at += 1
    out[:, -1] = 10
    return out.tobytes().translate(None, b"\0")


def run_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, heads)``: ``values`` as runs of equal consecutive items (``values ==
    heads[codes]``).  Cheap for object arrays whose equal items are adjacent (a
    prediction file: one slice's boxes in a row); correct for any order."""
    values = np.asarray(values, dtype=object).reshape(-1)
    change = np.ones(values.size, dtype=bool)
    if values.size > 1:
        change[1:] = values[1:] != values[:-1]
    return np.cumsum(change) - 1, values[change]
