"""Box conventions and IoU helpers.

Every box in lesionprop is ``xyxy`` in continuous pixel coordinates of the
*stored* slice (the PNG as written on disk), with ``x`` to the right and ``y``
down.  Two coordinate frames exist:

* **file frame**: the numbers written in ``DL_info.csv`` ``Bounding_boxes``,
  ``truth.csv`` and prediction CSVs.  The reference DeepLesion loaders treat
  these as 1-based pixel indices and subtract 1, so pixel column ``c`` (0-based)
  is ``c + 1`` in the file frame.
* **pixel frame**: 0-based, ``file - 1``.  Images, samples and the detector use
  it.

IoU is translation invariant, so the label tools and the evaluation work in the
file frame directly.  The label tools' IoU is continuous: area = (x2 - x1) * (y2 - y1),
no "+1"; the key-slice evaluation adds a pad to every width and height
(:func:`pair_iou`'s ``pad``, see :mod:`lesionprop.eval.froc`).

Shapes: ``boxes`` is ``(N, 4)``; ``box_iou(a, b)`` is ``(N, M)``; ``pair_iou(a, b)`` of
row-aligned boxes is ``(N,)``.  :class:`BoxCols` and :func:`overlap_iou` are the kernel
for millions of pairs (the label tools on DeepLesion's predictions).
"""

from __future__ import annotations

import numpy as np

#: Offset added to a pixel-frame coordinate to get the file frame.
FILE_OFFSET = 1.0


def file_to_pixel(boxes: np.ndarray) -> np.ndarray:
    """File-frame boxes (1-based, as in DL_info.csv) -> 0-based pixel frame."""
    return np.asarray(boxes, dtype=np.float64) - FILE_OFFSET


def pixel_to_file(boxes: np.ndarray) -> np.ndarray:
    """0-based pixel-frame boxes -> file frame (1-based, as in DL_info.csv)."""
    return np.asarray(boxes, dtype=np.float64) + FILE_OFFSET


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of ``(N, 4)`` xyxy boxes; degenerate boxes have area 0."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``.

    Boxes that touch along an edge have IoU 0.  A pair whose union is empty
    (two degenerate boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def pair_iou(a: np.ndarray, b: np.ndarray, pad: float | np.ndarray = 0.0) -> np.ndarray:
    """IoU of row-aligned ``(P, 4)`` boxes -> ``(P,)``, ``pad`` (scalar or ``(P,)``) added to
    every width and height (both boxes and the intersection).

    ``pad=0`` is :func:`box_iou`'s continuous IoU; ``pad=1`` is DeepLesion's, 3DCE's and
    MULAN's +1 in their own frame.
    """
    sides = [np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]),       # intersection w, h
             np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]),
             a[:, 2] - a[:, 0], a[:, 3] - a[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]]
    pad = np.asarray(pad, dtype=np.float64)
    if pad.ndim or pad != 0:            # the label tools' continuous IoU skips six additions of 0
        for side in sides:
            side += pad
    iw, ih, wa, ha, wb, hb = (np.clip(x, 0, None) for x in sides)
    inter = iw * ih
    union = wa * ha + wb * hb - inter
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
    values equal :func:`pair_iou`'s (``pad=0``) bit for bit; pruning on x first makes a test
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
