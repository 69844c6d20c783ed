"""Boxes grouped by (series, slice): where the label tools (:mod:`lesionprop.labels`) and the
key-slice evaluation (:mod:`lesionprop.eval.froc`) find the predictions on a slice.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`).

A slice is identified by an int64 *key* ``series_code << 32 | slice`` where
``series_code`` indexes a vocabulary of series names shared by the annotations and
the predictions (:class:`Vocab`).  :class:`PredIndex` sorts predictions by (key, file
order) once; each slice is then a contiguous segment ``[start, start + count)`` found
with ``searchsorted``.  :class:`KeySlices` are the annotation rows grouped by key slice
with their keys.  Pairs of boxes between two families of segments are generated in
bounded chunks (:func:`lesionprop.segments.segment_pairs`) and their IoUs computed in one
batched operation (:func:`lesionprop.boxes.overlap_iou`): no Python loop per box or per
slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lesionprop.annotations import Annotations, KeySliceGroups
from lesionprop.boxes import BoxCols
from lesionprop.predictions import Predictions

_SHIFT = np.int64(1 << 32)


def slice_keys(series_code: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """int64 key of (series code, slice); a negative code gives a key that matches nothing."""
    code = np.asarray(series_code, dtype=np.int64)
    s = np.asarray(slices, dtype=np.int64)
    keys = code * _SHIFT
    keys += s
    if code.size and code.min() < 0:
        keys = np.where(code >= 0, keys, np.int64(-1) - np.abs(s))
    return keys


class Vocab:
    """Series names -> int codes shared by annotations and predictions.

    The prediction series (sorted, unique: ``Predictions.series_names``) have codes
    ``0..S-1`` = ``Predictions.series_index``, so the prediction index never needs
    re-coding.  Other names get codes ``>= S``, distinct per name *within one call* of
    :meth:`codes` (enough for comparing the keys of one set of key slices).
    """

    def __init__(self, predicted: np.ndarray | Sequence[str]) -> None:
        names = [str(n) for n in predicted]
        if any(b <= a for a, b in zip(names, names[1:])):
            raise ValueError("Vocab: prediction series names must be sorted and unique")
        self.predicted = names
        self._code = {n: i for i, n in enumerate(names)}

    def codes(self, names: Sequence[str] | np.ndarray) -> np.ndarray:
        """Code of each name (names outside the predictions: ``>= S``, one per distinct name)."""
        code = self._code
        extra: dict[str, int] = {}
        base = len(code)
        out = [code.get(n, -1) for n in names]
        for j, c in enumerate(out):
            if c < 0:
                out[j] = extra.setdefault(names[j], base + len(extra))
        return np.asarray(out, dtype=np.int64).reshape(-1)


class PredIndex:
    """Predictions sorted by (slice key, file order), with per-slice segments.

    ``rows`` (N,): the row of the Predictions at each sorted position; per distinct slice:
    ``ukeys``, ``starts``, ``counts`` (segments of the sorted order).  Boxes and scores stay
    in file order (``file_cols``: :class:`BoxCols` of views of the Predictions' columns when
    they are column-major, as the readers give them; ``file_scores``): sorted position ``i``
    has box ``file_cols[file_rows(i)]``.  The order is built from the runs of equal slices in
    the file (a predictions file lists a slice's boxes together), and nothing of DeepLesion's
    3.4 million boxes is gathered into sorted order (~0.1 s per label command with its page
    faults).
    """

    def __init__(self, preds: Predictions) -> None:
        code, sl = preds.series_index, preds.slices
        self.file_cols = BoxCols(preds.boxes, areas=False)
        self.file_scores = np.asarray(preds.scores, dtype=np.float64)
        n = len(sl)
        change = np.zeros(n, dtype=bool)       # the first row of each run of one slice
        if n:
            change[0] = True
            np.not_equal(sl[1:], sl[:-1], out=change[1:])
            change[1:] |= code[1:] != code[:-1]
        head = np.flatnonzero(change)
        run_keys, run_len = slice_keys(code[head], sl[head]), np.diff(np.append(head, n))
        self.identity = bool(np.all(run_keys[1:] > run_keys[:-1]))     # file already grouped by slice
        if self.identity:
            self.rows = np.arange(n, dtype=np.int64)
            self.ukeys, self.starts, self.counts = run_keys, head, run_len
        else:                                   # runs in (key, file order): a stable sort of the runs
            order = np.argsort(run_keys, kind="stable")
            k, length, first = run_keys[order], run_len[order], head[order]
            at = np.cumsum(length) - length     # sorted position of each run
            self.rows = np.repeat(first - at, length) + np.arange(n, dtype=np.int64)
            new = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
            self.ukeys, self.starts, self.counts = k[new], at[new], np.add.reduceat(length, new)

    def file_rows(self, pos: np.ndarray) -> np.ndarray:
        """Sorted positions -> rows of the Predictions (indices into ``file_cols``, ``file_scores``)."""
        return pos if self.identity else self.rows[pos]

    @classmethod
    def of(cls, preds: Predictions) -> "PredIndex":
        """The index of ``preds``, built once and kept on the object (Predictions are not
        modified in place anywhere in lesionprop)."""
        cached = getattr(preds, "_index", None)
        if cached is None or cached[0] != len(preds):
            cached = (len(preds), cls(preds))
            preds._index = cached  # type: ignore[attr-defined]
        return cached[1]

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(start, count)`` of each slice key (count 0 when no prediction is on it)."""
        keys = np.asarray(keys, dtype=np.int64)
        if self.ukeys.size == 0:
            return np.zeros(keys.shape, np.int64), np.zeros(keys.shape, np.int64)
        pos = np.clip(np.searchsorted(self.ukeys, keys), 0, self.ukeys.size - 1)
        hit = self.ukeys[pos] == keys
        return np.where(hit, self.starts[pos], 0), np.where(hit, self.counts[pos], 0)

    def above(self, score: float) -> "SubIndex":
        """The sorted predictions scoring above ``score``, with the same segments."""
        keep = self.file_scores > score
        return SubIndex(self, keep if self.identity else keep[self.rows])


class SubIndex:
    """A filtered :class:`PredIndex` (e.g. score > alpha) that maps segments of the parent;
    ``rows``, ``scores`` and ``cols`` in its (sorted, filtered) order."""

    def __init__(self, parent: PredIndex, mask: np.ndarray) -> None:
        self.sel = np.flatnonzero(mask)
        self.cum = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        self.rows = parent.rows[self.sel]
        self.scores = parent.file_scores[self.rows]
        self.cols = parent.file_cols.take(self.rows)       # in the filtered sorted order
        self.boxes = self.cols.boxes()

    def segments(self, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parent segments -> segments of the filtered arrays."""
        s = self.cum[start]
        return s, self.cum[start + count] - s


@dataclass
class KeySlices(KeySliceGroups):
    """Annotation rows grouped by key slice (:meth:`Annotations.by_key_slice`), with each key
    slice's place among the predictions' slices.

    Besides the groups (``rows``, ``start``, ``count``, ``file_names``, ``series``,
    ``slices``): ``codes`` (K,) series codes of a :class:`Vocab`, ``keys`` (K,) slice keys,
    ``boxes`` (R, 4) the boxes of ``rows``, ``cols`` the same as :class:`BoxCols`.
    """

    codes: np.ndarray
    keys: np.ndarray
    boxes: np.ndarray

    @property
    def cols(self) -> BoxCols:
        if not hasattr(self, "_cols"):
            self._cols = BoxCols(self.boxes)
        return self._cols


def key_slices(ann: Annotations, vocab: Vocab) -> KeySlices:
    """Group the rows of ``ann`` (e.g. ``Annotations.select(...)``) by key slice (File_name)."""
    g = ann.by_key_slice()
    codes = vocab.codes(g.series)
    slices = g.slices.astype(np.int64)
    return KeySlices(g.rows, g.start, g.count, g.file_names, g.series, slices, codes, slice_keys(codes, slices),
                     ann.boxes[g.rows])
