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
file frame directly.  IoU everywhere is continuous: area = (x2 - x1) * (y2 - y1),
no "+1".

Shapes: ``boxes`` is ``(N, 4)``; ``box_iou(a, b)`` is ``(N, M)``.
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
