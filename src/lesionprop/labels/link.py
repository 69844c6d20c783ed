"""Linking per-slice boxes of a series into 3D lesions (tracklets).

Boxes are xyxy in any one frame shared by all of them (the prediction CSVs use
the file frame, see :mod:`lesionprop.boxes`); the IoU is continuous (area =
(x2 - x1) * (y2 - y1), no +1), the same rule as Algorithm 1
(:mod:`lesionprop.labels.propagate`), so the frame does not matter.  Slices are
the integer slice indices of the series (DeepLesion's PNG numbers).

The rule (:func:`link_boxes`):

* slices of a series are visited in increasing order; a lesion's *tail* is its
  box on the highest slice so far;
* a box on slice ``z`` may join a lesion of the same series whose tail is on
  ``z - d`` for ``1 <= d <= max_gap`` (``max_gap = 1``: consecutive slices only;
  ``2``: one missing slice is bridged) when IoU(tail, box) > ``iou``;
* greedy by score: the boxes of a slice take their pick in decreasing score
  (ties: input order); each box takes the free candidate lesion with the highest
  IoU (ties: the nearer tail, then the tail first in (score desc, input order));
  a lesion takes at most one box per slice; a box without a free candidate starts a new lesion.

Lesion ids are ``0..L-1`` in the order of each lesion's first box when the boxes
are sorted by (series code, slice, -score, input order).

Vectorised: candidate pairs and their IoUs are computed for all slices at once;
only the greedy assignment walks the distinct slice indices (vectorised over the
series and boxes of one slice index, a few rounds of proposals per slice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionprop.boxes import pair_iou
from lesionprop.errors import InputError
from lesionprop.segments import segment_pairs

_SHIFT = np.int64(1 << 32)


def _check_inputs(series, slices, boxes, scores) -> tuple[np.ndarray, ...]:
    series = np.asarray(series).reshape(-1)
    slices = np.asarray(slices).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = series.shape[0]
    if not (slices.shape[0] == boxes.shape[0] == scores.shape[0] == n):
        raise ValueError(f"link_boxes: lengths differ: series {n}, slices {slices.shape[0]}, "
                         f"boxes {boxes.shape[0]}, scores {scores.shape[0]}")
    for name, arr in (("series", series), ("slices", slices)):
        if arr.size and arr.dtype.kind not in "iu":
            if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"link_boxes: {name} must be integers, got dtype {arr.dtype}")
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise ValueError("link_boxes: boxes and scores must be finite")
    return series.astype(np.int64), slices.astype(np.int64), boxes, scores


def candidate_pairs(series: np.ndarray, slices: np.ndarray, boxes: np.ndarray, *, iou: float,
                    max_gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (earlier box ``c``, later box ``b``) of one series with ``1 <= slice[b] -
    slice[c] <= max_gap`` and IoU > ``iou``.  Returns ``(c, b, iou, gap)``, arrays of
    indices into the inputs (any order)."""
    series_code = np.unique(series, return_inverse=True)[1].astype(np.int64)
    keys = series_code * _SHIFT + (slices - slices.min(initial=0))
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    parts = []
    for gap in range(1, max_gap + 1):
        lo = np.searchsorted(skeys, keys - gap, side="left")
        hi = np.searchsorted(skeys, keys - gap, side="right")
        for _, ib, ic in segment_pairs(np.arange(keys.size), np.ones(keys.size, np.int64), lo, hi - lo):
            c = order[ic]
            v = pair_iou(boxes[c], boxes[ib])
            keep = v > iou
            parts.append((c[keep], ib[keep], v[keep], np.full(int(keep.sum()), gap, np.int64)))
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), z
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def _greedy(b: np.ndarray, lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of boxes to lesions.  ``b`` (box priority: lower
    first) and ``lesion`` are edges already sorted by (b, preference).  Equivalent to
    letting each box, in priority order, take its most preferred free lesion; done in
    rounds: an edge is accepted when it is its box's best remaining edge and its box
    is the highest-priority box left that still wants that lesion."""
    out_b, out_l = [], []
    while b.size:
        first = np.concatenate(([True], b[1:] != b[:-1]))          # each box's best remaining
        ul, inv = np.unique(lesion, return_inverse=True)
        top = np.full(ul.size, np.iinfo(np.int64).max)
        np.minimum.at(top, inv, b)                                  # best box wanting each lesion
        acc = first & (top[inv] == b)
        ab, al = b[acc], lesion[acc]
        out_b.append(ab)
        out_l.append(al)
        keep = ~(np.isin(b, ab) | np.isin(lesion, al))
        b, lesion = b[keep], lesion[keep]
    if not out_b:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_b), np.concatenate(out_l)


def link_boxes(series: np.ndarray, slices: np.ndarray, boxes: np.ndarray, scores: np.ndarray, *,
               iou: float = 0.5, max_gap: int = 1) -> np.ndarray:
    """series (N,) int codes, slices (N,) int, boxes (N,4) xyxy, scores (N,) -> lesion id (N,) int64, 0..L-1

    See the module docstring for the rule.  ``iou`` in [0, 1); ``max_gap >= 1``.
    """
    series, slices, boxes, scores = _check_inputs(series, slices, boxes, scores)
    iou = float(iou)
    if not 0.0 <= iou < 1.0:
        raise InputError(f"link_boxes: iou must be in [0, 1), got {iou!r}")
    if int(max_gap) != max_gap or max_gap < 1:
        raise InputError(f"link_boxes: max_gap must be an integer >= 1, got {max_gap!r}")
    n = series.size
    if n == 0:
        return np.zeros(0, np.int64)
    # rank = position in the processing order (series, slice, -score, input order)
    order = np.lexsort((np.arange(n), -scores, slices, series))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    c, b, v, gap = candidate_pairs(series, slices, boxes, iou=iou, max_gap=int(max_gap))
    c, b = rank[c], rank[b]                      # work in rank space from here on
    label = np.arange(n, dtype=np.int64)         # lesion of each box = rank of its first box
    tail = np.arange(n, dtype=np.int64)          # tail box (rank) of each lesion
    # edges by slice of the later box, then box priority, then preference
    z = slices[order][b]
    eo = np.lexsort((c, gap, -v, b, z))
    c, b, z = c[eo], b[eo], z[eo]
    bounds = np.flatnonzero(np.concatenate(([True], z[1:] != z[:-1], [True])))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        ec, eb = c[lo:hi], b[lo:hi]
        lesion = label[ec]
        live = tail[lesion] == ec                # c is still its lesion's last box
        mb, ml = _greedy(eb[live], lesion[live])
        label[mb] = ml
        tail[ml] = mb
    ids = np.unique(label, return_inverse=True)[1].astype(np.int64)
    return ids[rank]


@dataclass
class LesionSummary:
    """One row per lesion (arrays of length L, ordered by lesion id).

    ``lesion_id``, ``series`` (code), ``z1``/``z2`` first and last slice, ``box``
    (L, 4) the 2D box spanning all its boxes, ``score`` the maximum of its boxes'
    scores, ``n_slices`` its number of boxes (one per slice).
    """

    lesion_id: np.ndarray
    series: np.ndarray
    z1: np.ndarray
    z2: np.ndarray
    box: np.ndarray
    score: np.ndarray
    n_slices: np.ndarray

    def __len__(self) -> int:
        return int(self.lesion_id.size)


def summarize_lesions(lesion_id: np.ndarray, series: np.ndarray, slices: np.ndarray, boxes: np.ndarray,
                      scores: np.ndarray) -> LesionSummary:
    """Per-lesion 3D extent and score from per-box arrays (any non-negative int ids;
    a lesion's boxes must share one series)."""
    lid = np.asarray(lesion_id, dtype=np.int64).reshape(-1)
    series = np.asarray(series, dtype=np.int64).reshape(-1)
    slices = np.asarray(slices, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if lid.size == 0:
        z = np.zeros(0, np.int64)
        return LesionSummary(z, z, z, z, np.zeros((0, 4)), np.zeros(0), z)
    order = np.argsort(lid, kind="stable")
    ls = lid[order]
    starts = np.flatnonzero(np.concatenate(([True], ls[1:] != ls[:-1])))
    ser = series[order]
    mixed = np.minimum.reduceat(ser, starts) != np.maximum.reduceat(ser, starts)
    if mixed.any():
        raise ValueError(f"lesion {int(ls[starts[np.argmax(mixed)]])} has boxes in more than one series")
    sl, bx = slices[order], boxes[order]
    box = np.stack([np.minimum.reduceat(bx[:, 0], starts), np.minimum.reduceat(bx[:, 1], starts),
                    np.maximum.reduceat(bx[:, 2], starts), np.maximum.reduceat(bx[:, 3], starts)], 1)
    return LesionSummary(ls[starts], ser[starts], np.minimum.reduceat(sl, starts),
                         np.maximum.reduceat(sl, starts), box, np.maximum.reduceat(scores[order], starts),
                         np.diff(np.append(starts, ls.size)).astype(np.int64))


def drop_short(lesion_id: np.ndarray, min_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the boxes of lesions with at least ``min_slices`` boxes.  Returns ``(keep
    mask, new ids)``: new ids ``0..L'-1`` for the kept boxes, in the old ids' order."""
    lid = np.asarray(lesion_id, dtype=np.int64).reshape(-1)
    if lid.size == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    uniq, inv, counts = np.unique(lid, return_inverse=True, return_counts=True)
    keep = counts[inv] >= int(min_slices)
    new = np.unique(lid[keep], return_inverse=True)[1].astype(np.int64)
    return keep, new
