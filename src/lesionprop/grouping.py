"""Vectorised grouping of boxes by slice, shared by the label tools (labels/) and the evaluation (eval/).

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`); IoU is continuous
(area = (x2 - x1) * (y2 - y1), no +1), so the frame does not matter.

A slice is identified by an int64 *key* ``series_code << 32 | slice`` where
``series_code`` indexes a vocabulary of series names shared by the annotations and
the predictions.  :class:`PredIndex` sorts predictions by (key, file order) once;
each slice is then a contiguous segment ``[start, start + count)`` found with
``searchsorted``.  Pairs of boxes between two families of segments are generated in
bounded chunks (:func:`segment_pairs`) and their IoUs computed in one batched
operation (:func:`pair_iou`): no Python loop per box or per slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from lesionprop.annotations import Annotations
from lesionprop.errors import InputError
from lesionprop.predictions import Predictions

_SHIFT = np.int64(1 << 32)
#: pairs per chunk in :func:`segment_pairs` (bounds the memory of a batch of IoUs)
CHUNK_PAIRS = 1 << 18


def slice_keys(series_code: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """int64 key of (series code, slice); a negative code gives a key that matches nothing."""
    code = np.asarray(series_code, dtype=np.int64)
    s = np.asarray(slices, dtype=np.int64)
    keys = code * _SHIFT
    keys += s
    if code.size and code.min() < 0:
        keys = np.where(code >= 0, keys, np.int64(-1) - np.abs(s))
    return keys


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned ``(P, 4)`` boxes -> ``(P,)`` (same formula as :func:`boxes.box_iou`)."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class BoxCols:
    """Boxes stored column-wise (contiguous x1, y1, x2, y2) with their areas, for fast gathers.

    ``areas=False`` leaves the areas to be computed for the pairs that need them
    (:meth:`area_at`, same values bit for bit): for DeepLesion's 3.4 million predictions,
    of which the label tools compare a fraction, that saves two 27 MB arrays per command.
    """

    def __init__(self, boxes: np.ndarray, rows: np.ndarray | None = None, *, areas: bool = True) -> None:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if rows is None:
            self.x1, self.y1, self.x2, self.y2 = (np.ascontiguousarray(b[:, j]) for j in range(4))
        else:
            self.x1, self.y1, self.x2, self.y2 = (b[:, j][rows] for j in range(4))
        self._area = self._areas(self.x1, self.y1, self.x2, self.y2) if areas else None

    @staticmethod
    def _areas(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
        w = np.subtract(x2, x1)                  # in place: fewer DeepLesion-size temporaries
        h = np.subtract(y2, y1)
        np.maximum(w, 0.0, out=w)                # not np.clip: slow
        np.maximum(h, 0.0, out=h)
        w *= h
        return w

    @property
    def area(self) -> np.ndarray:
        if self._area is None:
            self._area = self._areas(self.x1, self.y1, self.x2, self.y2)
        return self._area

    def area_at(self, idx: np.ndarray) -> np.ndarray:
        """``area[idx]``, computed for these boxes only when the areas were not made."""
        if self._area is not None:
            return self._area[idx]
        return self._areas(self.x1[idx], self.y1[idx], self.x2[idx], self.y2[idx])

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` xyxy array."""
        return np.stack([self.x1, self.y1, self.x2, self.y2], 1)

    def take(self, idx: np.ndarray) -> "BoxCols":
        out = BoxCols.__new__(BoxCols)
        out.x1, out.y1, out.x2, out.y2 = (a[idx] for a in (self.x1, self.y1, self.x2, self.y2))
        out._area = self.area_at(idx)
        return out


def overlap_iou(a: BoxCols, ia: np.ndarray, b: BoxCols, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of the pairs ``(a[ia[k]], b[ib[k]])`` that overlap (positive intersection).

    Returns ``(k, iou)`` for those pairs only; every other pair has IoU 0.  The
    values equal :func:`pair_iou`'s bit for bit; pruning on x first makes a test
    like ``IoU > tau`` (tau >= 0) over millions of pairs cheap.
    """
    iw = np.minimum(a.x2[ia], b.x2[ib])
    iw -= np.maximum(a.x1[ia], b.x1[ib])
    k = np.flatnonzero(iw > 0)
    ia, ib, iw = ia[k], ib[k], iw[k]
    ih = np.minimum(a.y2[ia], b.y2[ib])
    ih -= np.maximum(a.y1[ia], b.y1[ib])
    m = ih > 0
    k, ia, ib = k[m], ia[m], ib[m]
    inter = iw[m] * ih[m]
    union = a.area_at(ia) + b.area_at(ib) - inter
    return k, inter / union


def segment_pairs(a_start: np.ndarray, a_count: np.ndarray, b_start: np.ndarray, b_count: np.ndarray,
                  chunk: int = CHUNK_PAIRS) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All pairs ``(a_start[g] + i, b_start[g] + j)`` for every group ``g``, in chunks.

    Yields ``(group, ia, ib)`` int64 arrays, pairs ordered by group then ``i`` then
    ``j``.  A chunk holds whole groups and about ``chunk`` pairs (one group larger
    than ``chunk`` makes one larger chunk).
    """
    a_start = np.asarray(a_start, dtype=np.int64)
    b_start = np.asarray(b_start, dtype=np.int64)
    a_count = np.asarray(a_count, dtype=np.int64)
    b_count = np.asarray(b_count, dtype=np.int64)
    n = a_count * b_count
    unit_a = bool(np.all(a_count <= 1))
    groups = np.flatnonzero(n > 0)
    if groups.size == 0:
        return
    n = n[groups]
    ends = np.cumsum(n)
    cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]), chunk), side="left") + 1
    bounds = np.unique(np.concatenate(([0], cuts, [groups.size])))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        g = groups[lo:hi]
        ng = n[lo:hi]
        total = int(ng.sum())
        grp = np.repeat(g, ng)
        first = np.repeat(np.cumsum(ng) - ng, ng)
        t = np.arange(total, dtype=np.int64) - first
        if unit_a:
            yield grp, a_start[grp], b_start[grp] + t
        else:
            bc = b_count[grp]
            yield grp, a_start[grp] + t // bc, b_start[grp] + t % bc


def expand_segments(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(group, position)`` of every element of every segment, in group order."""
    start = np.asarray(start, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    grp = np.repeat(np.arange(count.size, dtype=np.int64), count)
    first = np.repeat(np.cumsum(count) - count, count)
    return grp, start[grp] + np.arange(grp.size, dtype=np.int64) - first


def first_per_group(group: np.ndarray) -> np.ndarray:
    """Indices of the first element of each run of equal values in a sorted ``group``."""
    if group.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))


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
class KeySlices:
    """Annotation rows grouped by key slice (``File_name``), in order of first appearance.

    ``rows`` (R,) index into the annotation rows grouped by key slice
    (file order inside a key slice); ``start``/``count`` (K,) segments of ``rows``;
    ``keys`` (K,) slice keys; ``series`` (K,) codes; ``slices`` (K,) ints;
    ``boxes`` (R, 4) of ``rows``.
    """

    rows: np.ndarray
    start: np.ndarray
    count: np.ndarray
    keys: np.ndarray
    series: np.ndarray
    slices: np.ndarray
    boxes: np.ndarray

    @property
    def cols(self) -> BoxCols:
        if not hasattr(self, "_cols"):
            self._cols = BoxCols(self.boxes)
        return self._cols

    @property
    def first_row(self) -> np.ndarray:
        """Index (into the annotation rows) of the first row of each key slice."""
        return self.rows[self.start]


def key_slices(ann: Annotations, vocab: Vocab) -> KeySlices:
    """Group the rows of ``ann`` (e.g. ``Annotations.select(...)``) by key slice (File_name)."""
    g = ann.by_key_slice()
    codes = vocab.codes(g.series)
    slices = g.slices.astype(np.int64)
    return KeySlices(g.rows, g.start, g.count, slice_keys(codes, slices), codes, slices, ann.boxes[g.rows])


def check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return value


def check_iou(value: float) -> float:
    """An IoU threshold in [0, 1) (a test ``IoU > tau`` with tau < 0 would pass every pair)."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise InputError(f"iou must be in [0, 1), got {value!r}")
    return value


def check_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(o) for o in offsets)
    if not out or any(o == 0 for o in out) or len(set(out)) != len(out):
        raise InputError(f"offsets must be distinct non-zero integers, got {list(offsets)}")
    return out
