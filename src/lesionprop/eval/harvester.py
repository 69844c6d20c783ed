"""The Lesion Harvester protocol: complete 2D labels on sub-volumes, 3D detections.

Boxes: ground truth is 2D ``[x1, y1, x2, y2]`` on a slice (series slice index); a
detection is a 3D lesion made of per-slice boxes (what ``lesionprop link`` writes), all
in the file frame (DL_info numbers, see :mod:`lesionprop.boxes`); 2D IoU with
DeepLesion's +1 convention (a box from x1 to x2 spans ``x2 - x1 + 1`` pixels).

Rules (``harvester``):

* a detection hits a ground-truth box of its own unit when it has a box on that box's
  slice with 2D IoU (+1) >= 0.5; a detection without a box on that slice never hits it;
* a detection's score is the maximum over its slices; detections of all units are
  pooled and ranked by score (descending, ties in input order);
* FROC: one that hits nothing is a false positive; otherwise it finds every box it
  hits, and one that only hits boxes already found is neither TP nor FP; FPs per unit;
  sensitivity at 0.125, 0.25, ..., 16 by linear interpolation, 0 below the curve's first
  point, the last value past its end, and where several curve points share the
  requested rate exactly, the FIRST of them (the Harvester script's reading; its linear
  extrapolation past the end is NOT followed: it can overshoot 1 or divide by zero
  where the curve ends flat);
* AP (Pascal VOC, all points): precision = TPs / detections, recall = boxes found /
  boxes, area under the precision envelope; for AP a detection is a TP only when it
  finds a box not found before, so a second hit on an already found box counts as a
  false positive (not so for the FROC).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lesionprop.boxes import pair_iou
from lesionprop.errors import InputError
from lesionprop.eval.lens import ProtocolResult, add_breakdowns, ap_from_found, protocol_result, unit_pairs
from lesionprop.slice_index import slice_keys

HARVESTER_FPS: tuple[float, ...] = tuple(2.0 ** p for p in range(-3, 5))
HARVESTER_IOU = 0.5


def harvester_hits(box_lesion: np.ndarray, box_unit: np.ndarray, box_slice: np.ndarray, boxes: np.ndarray,
                   gt_unit: np.ndarray, gt_slice: np.ndarray, gt_boxes: np.ndarray, *,
                   iou: float = HARVESTER_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (detection, gt box) pairs where a box of the detection on the gt box's slice
    (same unit) has IoU (+1) >= ``iou``.  ``box_*``: the detections' per-slice boxes."""
    box_key = slice_keys(box_unit, box_slice)
    gt_key = slice_keys(gt_unit, gt_slice)
    # unit_pairs groups by an int id: the (unit, slice) key works the same way
    ds, gs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    for q, g in unit_pairs(box_key, gt_key):
        hit = pair_iou(boxes[q], gt_boxes[g], 1.0) >= iou
        ds.append(np.asarray(box_lesion, np.int64)[q[hit]])
        gs.append(g[hit])
    d, g = np.concatenate(ds), np.concatenate(gs)
    if d.size:
        pairs = np.unique(np.stack([d, g], 1), axis=0)
        d, g = pairs[:, 0], pairs[:, 1]
    return d, g


def voc_ap(order: np.ndarray, hit_det: np.ndarray, hit_gt: np.ndarray, n_gt: int) -> float:
    """Pascal VOC all-point AP with the duplicate rule of the module docstring."""
    n = order.size
    if n_gt == 0 or n == 0:
        return 0.0
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    first = np.full(int(n_gt), n, np.int64)
    np.minimum.at(first, hit_gt, rank[hit_det])
    return ap_from_found(np.bincount(first[first < n], minlength=n)[:n], n_gt)


def harvester_froc(det_unit: np.ndarray, det_scores: np.ndarray, box_lesion: np.ndarray, box_slice: np.ndarray,
                   boxes: np.ndarray, gt_unit: np.ndarray, gt_slice: np.ndarray, gt_boxes: np.ndarray,
                   n_units: int, *, iou: float = HARVESTER_IOU, fps: Sequence[float] = HARVESTER_FPS
                   ) -> tuple[ProtocolResult, np.ndarray]:
    """Harvester FROC and AP on arrays.  Detections: ``det_unit`` (P,), ``det_scores`` (P,)
    (the maximum over their slices); their per-slice boxes ``box_lesion`` (Q,) into P,
    ``box_slice`` (Q,), ``boxes`` (Q, 4).  Returns the result and ``found_at``."""
    if int(n_units) <= 0:
        raise InputError("no sub-volumes to evaluate")
    det_unit = np.asarray(det_unit, dtype=np.int64)
    box_lesion = np.asarray(box_lesion, dtype=np.int64)
    hd, hg = harvester_hits(box_lesion, det_unit[box_lesion], box_slice, boxes, gt_unit, gt_slice, gt_boxes,
                            iou=iou)
    result, order, found_at = protocol_result("harvester", det_scores, det_unit, gt_unit, hd, hg, n_units, fps)
    result.ap = voc_ap(order, hd, hg, len(gt_unit))
    return result, found_at


def evaluate_harvester(labels, dets, *, iou: float = HARVESTER_IOU,
                       fps: Sequence[float] = HARVESTER_FPS) -> ProtocolResult:
    """Harvester protocol on :class:`~lesionprop.eval.complete_labels.CompleteLabels` (2D boxes)
    and :class:`~lesionprop.eval.complete_labels.Detections3D` (with per-slice boxes)."""
    if not labels.has2d:
        raise InputError(f"the harvester protocol needs per-slice ground-truth boxes; the {labels.source} truth "
                         "has 3D boxes only (use --protocol lens)")
    if not dets.has2d:
        raise InputError("the harvester protocol needs each detection's per-slice boxes (a CSV from "
                         "lesionprop link), not 3D boxes only")
    n_units = len(labels.units)
    result, found_at = harvester_froc(dets.unit, dets.scores, dets.box_lesion, dets.box_slice, dets.boxes2d,
                                      labels.box_unit, labels.box_slice, labels.boxes2d, n_units, iou=iou, fps=fps)

    def run(mask: np.ndarray) -> ProtocolResult:
        new_id = np.cumsum(mask) - 1
        keep = mask[dets.unit]
        det_new = np.full(len(dets.unit), -1, np.int64)
        det_new[keep] = np.arange(int(keep.sum()))
        q = keep[dets.box_lesion]
        gm = mask[labels.box_unit]
        return harvester_froc(new_id[dets.unit[keep]], dets.scores[keep], det_new[dets.box_lesion[q]],
                              dets.box_slice[q], dets.boxes2d[q], new_id[labels.box_unit[gm]],
                              labels.box_slice[gm], labels.boxes2d[gm], int(mask.sum()), iou=iou, fps=fps)[0]

    add_breakdowns(result, found_at, labels.box_unit, labels.box_long_mm, labels.unit_interval, run)
    patients, unit_patient = np.unique(labels.unit_patient, return_inverse=True)
    result.outcomes.image_unit = unit_patient.reshape(-1).astype(np.int64)
    result.outcomes.units = patients
    return result
