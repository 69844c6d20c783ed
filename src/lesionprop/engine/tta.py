"""Test-time augmentation views and per-slice merging (weighted box fusion or NMS).

Boxes are xyxy float arrays; ``hflip_boxes`` works in any frame whose image spans
``[0, width]`` (continuous pixel coordinates, no "+1").  The merge functions are
pure: lists of per-view ``(boxes (N, 4), scores (N,))`` in the *stored slice's
pixel frame* in, one ``(boxes, scores)`` out, highest score first.

Weighted box fusion (the default) clusters boxes of all views greedily by score
(IoU with the cluster's fused box > ``iou``), fuses each cluster's coordinates
as a score-weighted mean and scores it ``mean score x min(n, V) / V`` for ``V``
views, so a box found by one view only is down-weighted.  NMS keeps the best box
of each overlapping group with its own score.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torchvision.ops import nms

from lesionprop.errors import InputError

TTA_MODES = ("none", "flip", "scales", "flip+scales")


def tta_views(mode: str, scales: tuple[float, ...]) -> list[tuple[float, bool]]:
    """``(scale, flipped)`` pairs of a TTA mode."""
    if mode not in TTA_MODES:
        raise InputError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    ss = tuple(scales) if "scales" in mode else (1.0,)
    flips = (False, True) if "flip" in mode else (False,)
    return list(itertools.product(ss, flips))


def hflip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Mirror ``(N, 4)`` boxes left-right in an image of width ``width``: ``x -> width - x``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


def _concat(views: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b, _ in views]) if views else np.zeros((0, 4))
    scores = np.concatenate([np.asarray(s, np.float64).reshape(-1) for _, s in views]) if views else np.zeros(0)
    return boxes, scores


def merge_nms(views: list[tuple[np.ndarray, np.ndarray]], iou: float, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    boxes, scores = _concat(views)
    if len(boxes) == 0:
        return boxes, scores
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()[:max_boxes]
    return boxes[keep], scores[keep]


def weighted_box_fusion(views: list[tuple[np.ndarray, np.ndarray]], iou: float,
                        max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy weighted box fusion (see the module docstring).

    Boxes are visited by score (ties: view order, then order within a view); each joins
    the cluster whose current fused box it overlaps most when that IoU is > ``iou``.
    The fused boxes live in one ``(4, n)`` array, so each visit is a few array
    operations on the clusters so far.
    """
    boxes, scores = _concat(views)
    n_views = max(1, len(views))
    order = np.argsort(-scores, kind="stable")
    fused = np.empty((4, len(order)))           # rows x1, y1, x2, y2 of each cluster's fused box
    area = np.empty(len(order))
    members: list[list[int]] = []
    m = 0
    for i in order.tolist():
        x1, y1, x2, y2 = box = boxes[i].tolist()
        if m:
            lo = np.maximum(fused[:2, :m], ((x1,), (y1,)))
            wh = np.minimum(fused[2:, :m], ((x2,), (y2,)))
            wh -= lo
            np.maximum(wh, 0.0, out=wh)
            inter = wh[0] * wh[1]
            union = area[:m] + (max(x2 - x1, 0.0) * max(y2 - y1, 0.0)) - inter
            ious = np.divide(inter, union, out=np.zeros(m), where=union > 0)
            j = int(np.argmax(ious))
            if ious[j] > iou:
                members[j].append(i)
                w = scores[members[j]]
                f = (boxes[members[j]] * w[:, None]).sum(0) / max(w.sum(), 1e-12)
                fused[:, j] = f
                area[j] = max(f[2] - f[0], 0.0) * max(f[3] - f[1], 0.0)
                continue
        members.append([i])
        fused[:, m] = box
        area[m] = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        m += 1
    out_scores = np.array([scores[g].mean() * min(len(g), n_views) / n_views for g in members])
    keep = np.argsort(-out_scores, kind="stable")[:max_boxes]
    return fused[:, :m].T[keep].reshape(-1, 4), out_scores[keep].reshape(-1)


def merge_views(views: list[tuple[np.ndarray, np.ndarray]], method: str, iou: float,
                max_boxes: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Merge one slice's detections of several TTA views (a single view passes through)."""
    if len(views) == 1:
        b, s = _concat(views)
        return b[:max_boxes], s[:max_boxes]
    if method == "wbf":
        return weighted_box_fusion(views, iou, max_boxes)
    if method == "nms":
        return merge_nms(views, iou, max_boxes)
    raise InputError(f"predict.merge must be wbf or nms, got {method!r}")
