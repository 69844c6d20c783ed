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

from lesionprop.boxes import box_iou

TTA_MODES = ("none", "flip", "scales", "flip+scales")


def tta_views(mode: str, scales: tuple[float, ...]) -> list[tuple[float, bool]]:
    """``(scale, flipped)`` pairs of a TTA mode."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
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
    boxes, scores = _concat(views)
    n_views = max(1, len(views))
    order = np.argsort(-scores, kind="stable")
    members: list[list[int]] = []
    fused = np.zeros((0, 4))
    for i in order:
        if len(fused):
            ious = box_iou(boxes[i:i + 1], fused)[0]
            j = int(np.argmax(ious))
            if ious[j] > iou:
                members[j].append(i)
                w = scores[members[j]]
                fused[j] = (boxes[members[j]] * w[:, None]).sum(0) / max(w.sum(), 1e-12)
                continue
        members.append([i])
        fused = np.vstack([fused, boxes[i]])
    out_scores = np.array([scores[m].mean() * min(len(m), n_views) / n_views for m in members])
    order = np.argsort(-out_scores, kind="stable")[:max_boxes]
    return fused[order].reshape(-1, 4), out_scores[order].reshape(-1)


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
    raise ValueError(f"predict.merge must be wbf or nms, got {method!r}")
