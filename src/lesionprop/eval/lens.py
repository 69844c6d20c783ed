"""The LENS protocol (complete 3D labels on sub-volumes) and the parts it shares with the
Lesion Harvester protocol (:mod:`lesionprop.eval.harvester`).

Boxes: 3D ``[x1, y1, z1, x2, y2, z2]``, x and y in the file frame of the slices
(DL_info numbers, see :mod:`lesionprop.boxes`), z in slice indices of the whole
series; DeepLesion's +1 convention on every axis: a box from x1 to x2 spans
``x2 - x1 + 1`` pixels, from z1 to z2 ``z2 - z1 + 1`` slices.

Rules (``lens``):

* units are sub-volumes; a detection is a 3D box with a score, in one unit;
* overlap = intersection over the PREDICTED box's volume (IoBB, +1 on every axis);
  a detection hits a lesion of its own unit when IoBB >= 0.3;
* detections of all units are pooled and ranked by score (descending, ties in input
  order); one that hits no lesion is a false positive; otherwise it finds every lesion
  it hits, and one that only hits lesions already found is neither TP nor FP
  (the key-slice protocol's duplicate rule, :mod:`lesionprop.eval.froc`);
* after each detection the curve has the point (FPs / units, found / lesions); the
  sensitivity at 2^-3 ... 2^3 FPs per unit is read by linear interpolation: 0 below the
  curve's first point, the last value past its end, and where several points share
  the requested rate exactly, the LAST of them (MULAN's reading,
  :func:`~lesionprop.eval.froc.sensitivity_at`); the headline is their mean.

Breakdowns: by slice interval (``<= 2 mm`` / ``> 2 mm``, a separate evaluation on the
units of that interval) and by lesion size (MULAN's groups, the fraction of the group's
lesions found along the pooled curve), where the truth knows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from lesionprop.errors import InputError
from lesionprop.eval.bootstrap import draw_weights, percentile_ci
from lesionprop.eval.froc import SIZE_GROUPS, Outcomes, SubResult, curve, sensitivity_at, size_group
from lesionprop.segments import segment_pairs

LENS_FPS: tuple[float, ...] = tuple(2.0 ** p for p in range(-3, 4))
LENS_IOBB = 0.3
#: how each protocol reads its curve at a rate (:func:`~lesionprop.eval.froc.sensitivity_at`)
READING = {"lens": "mulan", "harvester": "harvester"}


def ap_from_found(found: np.ndarray, n_gt: int) -> float:
    """AP from the number of boxes each ranked detection finds first (0: a false positive for AP)."""
    found = np.asarray(found, dtype=np.float64)
    n = found.size
    if n_gt <= 0 or n == 0:
        return 0.0
    precision = np.cumsum(found > 0) / np.arange(1, n + 1, dtype=np.float64)
    mrec = np.concatenate(([0.0], np.cumsum(found) / float(n_gt), [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))



def iobb3d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-aligned ``(P, 6)`` boxes -> intersection over the predicted box's volume, +1 per axis."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 6)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 6)
    side = np.minimum(pred[:, 3:], gt[:, 3:]) - np.maximum(pred[:, :3], gt[:, :3]) + 1.0
    inter = np.prod(np.clip(side, 0, None), axis=1)
    vol = np.prod(np.clip(pred[:, 3:] - pred[:, :3] + 1.0, 0, None), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(vol > 0, inter / np.where(vol > 0, vol, 1.0), 0.0)


def unit_pairs(det_unit: np.ndarray, gt_unit: np.ndarray):
    """Chunks ``(det, gt)`` of every detection/lesion pair of the same unit."""
    det_unit = np.asarray(det_unit, dtype=np.int64)
    gt_unit = np.asarray(gt_unit, dtype=np.int64)
    order = np.argsort(gt_unit, kind="stable")
    start = np.searchsorted(gt_unit[order], det_unit, side="left")
    count = np.searchsorted(gt_unit[order], det_unit, side="right") - start
    for _, d, pos in segment_pairs(np.arange(det_unit.size), np.ones(det_unit.size, np.int64), start, count):
        yield d, order[pos]


def rank_and_match(scores: np.ndarray, n_gt: int, hit_det: np.ndarray, hit_gt: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank detections (score descending, ties in input order) given their hits.

    ``hit_det`` / ``hit_gt``: the (detection, lesion) pairs that count as a hit.  Returns
    ``(order (D,), is_fp (D,) input order, found_at (G,))``: the ranking, whether each
    detection hits nothing, and per lesion the rank of its first hit (D when never hit).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    hit_det = np.asarray(hit_det, dtype=np.int64)
    is_fp = np.bincount(hit_det, minlength=n)[:n] == 0
    found_at = np.full(int(n_gt), n, dtype=np.int64)
    np.minimum.at(found_at, np.asarray(hit_gt, dtype=np.int64), rank[hit_det])
    return order, is_fp, found_at


@dataclass
class ProtocolResult:
    """One complete-label evaluation: sensitivity (fractions) at ``fps`` FPs per unit."""

    protocol: str
    fps: tuple[float, ...]
    sensitivity: np.ndarray
    units: int
    lesions: int
    fp_curve: np.ndarray
    sens_curve: np.ndarray
    mean: float | None = None
    ap: float | None = None
    by_interval: dict[str, SubResult] = field(default_factory=dict)
    by_size: dict[str, SubResult] = field(default_factory=dict)
    outcomes: Outcomes | None = field(default=None, repr=False)

    def to_dict(self, breakdown: bool = False) -> dict:
        out = {"protocol": self.protocol, "fps": [float(f) for f in self.fps],
               "sensitivity": [float(s) for s in self.sensitivity], "units": int(self.units),
               "lesions": int(self.lesions)}
        if self.mean is not None:
            out["mean"] = float(self.mean)
        if self.ap is not None:
            out["ap"] = float(self.ap)
        if breakdown:
            out["by_interval"] = {k: vars(v) for k, v in self.by_interval.items()}
            out["by_size"] = {k: vars(v) for k, v in self.by_size.items()}
        return out


@dataclass
class ProtocolCI:
    """Percentile CIs from a bootstrap over patients: at each rate, of the mean over the rates
    (lens) and of AP (harvester); ``samples`` (B, R) the resampled sensitivities."""

    level: float
    n_boot: int
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean_ci: tuple[float, float]
    ap_ci: tuple[float, float] | None
    samples: np.ndarray

    def to_dict(self) -> dict:
        out = {"ci_low": [float(x) for x in self.ci_low], "ci_high": [float(x) for x in self.ci_high],
               "mean_ci": [float(x) for x in self.mean_ci], "ci_level": float(self.level),
               "bootstrap": int(self.n_boot)}
        if self.ap_ci is not None:
            out["ap_ci"] = [float(x) for x in self.ap_ci]
        return out


def bootstrap_protocol(result: ProtocolResult, *, level: float = 0.95, n_boot: int = 1000,
                       seed: int | None = 0, weights: np.ndarray | None = None) -> ProtocolCI:
    """Bootstrap over patients of a ``lens`` / ``harvester`` result, exact by construction.

    A resample draws patients with replacement; every detection of a drawn patient's units
    appears once per draw with its own outcome (a detection's outcome depends only on its
    unit), so each resample's ranked outcomes are the originals repeated by their weight;
    its curve is read with the protocol's own rule (:data:`READING`).
    One numpy pass per resample (no loop over detections).  ``weights`` (B, patients)
    overrides the draw.
    """
    o = result.outcomes
    weights = draw_weights(o.units.size, n_boot, seed) if weights is None else np.asarray(weights, np.int64)
    n_boot = weights.shape[0]
    unit_w = weights[:, o.image_unit]                                # (B, units)
    n_units = unit_w.sum(1)
    n_les = unit_w @ np.asarray(o.image_lesions, dtype=np.int64)
    sens = np.full((n_boot, len(result.fps)), np.nan)
    ap = np.full(n_boot, np.nan)
    for b in range(n_boot):
        if n_les[b] == 0:
            continue
        det_w = unit_w[b, o.det_image]
        fp = np.repeat(o.det_fp, det_w)
        found = np.repeat(o.det_found, det_w)
        sens[b] = sensitivity_at(np.cumsum(fp) / float(n_units[b]), np.cumsum(found) / float(n_les[b]),
                                 result.fps, READING[result.protocol])
        if result.ap is not None:
            ap[b] = ap_from_found(found, int(n_les[b]))
    lo, hi = percentile_ci(sens, level)
    mlo, mhi = percentile_ci(sens.mean(1), level)
    ap_ci = tuple(float(x) for x in percentile_ci(ap, level)) if result.ap is not None else None
    return ProtocolCI(float(level), int(n_boot), lo, hi, (float(mlo), float(mhi)), ap_ci, sens)


def lens_hits(det_unit, det_boxes, gt_unit, gt_boxes, iobb: float = LENS_IOBB) -> tuple[np.ndarray, np.ndarray]:
    """(detection, lesion) pairs of one unit with IoBB >= ``iobb``."""
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 6)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 6)
    ds, gs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for d, g in unit_pairs(det_unit, gt_unit):
        hit = iobb3d(det_boxes[d], gt_boxes[g]) >= iobb
        ds.append(d[hit])
        gs.append(g[hit])
    return np.concatenate(ds), np.concatenate(gs)


def protocol_result(protocol: str, scores: np.ndarray, det_unit: np.ndarray, gt_unit: np.ndarray,
                    hit_det: np.ndarray, hit_gt: np.ndarray, n_units: int, fps: Sequence[float]
                    ) -> tuple[ProtocolResult, np.ndarray, np.ndarray]:
    """The pooled curve and sensitivities from the hits; also ``(order, found_at)``."""
    if len(gt_unit) == 0:
        raise InputError(f"no lesions to evaluate in {n_units} sub-volume(s)")
    order, is_fp, found_at = rank_and_match(scores, len(gt_unit), hit_det, hit_gt)
    fp, sens, found = curve(order, is_fp, found_at, n_units)
    result = ProtocolResult(protocol, tuple(float(f) for f in fps), sensitivity_at(fp, sens, fps, READING[protocol]),
                            int(n_units), int(len(gt_unit)), fp, sens)
    result.outcomes = Outcomes(np.asarray(det_unit, np.int64)[order], is_fp[order], found,
                               np.arange(n_units, dtype=np.int64),
                               np.bincount(np.asarray(gt_unit, np.int64), minlength=n_units), np.arange(n_units))
    return result, order, found_at


def add_breakdowns(result: ProtocolResult, found_at: np.ndarray, gt_unit: np.ndarray, gt_long_mm: np.ndarray,
                   unit_interval: np.ndarray, run: Callable[[np.ndarray], ProtocolResult]) -> None:
    """By slice interval (``run(unit_mask)`` re-evaluates on those units) and lesion size."""
    interval = np.asarray(unit_interval, dtype=np.float64)
    gt_unit = np.asarray(gt_unit, dtype=np.int64)
    for label, mask in (("<= 2 mm", interval <= 2.0), ("> 2 mm", interval > 2.0)):
        if mask.any() and mask[gt_unit].any():
            sub = run(mask)
            result.by_interval[label] = SubResult(sub.units, sub.lesions, sub.sensitivity.tolist())
    n = result.fp_curve.size
    groups = size_group(gt_long_mm)
    for k, label in enumerate(SIZE_GROUPS):
        m = groups == k
        if m.any():
            hit = np.bincount(found_at[m][found_at[m] < n], minlength=n)[:n]
            sens = sensitivity_at(result.fp_curve, np.cumsum(hit) / float(m.sum()), result.fps,
                                  READING[result.protocol])
            result.by_size[label] = SubResult(int(np.unique(gt_unit[m]).size), int(m.sum()), sens.tolist())


def lens_froc(det_unit: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, gt_unit: np.ndarray,
              gt_boxes: np.ndarray, n_units: int, *, iobb: float = LENS_IOBB,
              fps: Sequence[float] = LENS_FPS) -> tuple[ProtocolResult, np.ndarray]:
    """LENS FROC on arrays (unit ids in ``[0, n_units)``).  Returns the result and ``found_at``."""
    if int(n_units) <= 0:
        raise InputError("no sub-volumes to evaluate")
    hd, hg = lens_hits(det_unit, det_boxes, gt_unit, gt_boxes, iobb)
    result, _, found_at = protocol_result("lens", det_scores, det_unit, gt_unit, hd, hg, n_units, fps)
    result.mean = float(np.mean(result.sensitivity)) if len(result.fps) else float("nan")
    return result, found_at


def _subset_units(mask: np.ndarray, det_unit: np.ndarray, gt_unit: np.ndarray):
    new_id = np.cumsum(mask) - 1
    dm, gm = mask[det_unit], mask[gt_unit]
    return new_id, dm, gm


def evaluate_lens(labels, dets, *, iobb: float = LENS_IOBB, fps: Sequence[float] = LENS_FPS) -> ProtocolResult:
    """LENS protocol on :class:`~lesionprop.eval.complete_labels.CompleteLabels` (3D boxes) and
    :class:`~lesionprop.eval.complete_labels.Detections3D`, with breakdowns and bootstrap outcomes
    (resampling unit: the patient)."""
    if not labels.has3d:
        raise InputError(f"the lens protocol needs 3D ground-truth boxes; the {labels.source} truth has "
                         "per-slice boxes only (use --protocol harvester)")
    n_units = len(labels.units)
    result, found_at = lens_froc(dets.unit, dets.boxes3d, dets.scores, labels.lesion_unit, labels.boxes3d,
                                 n_units, iobb=iobb, fps=fps)

    def run(mask: np.ndarray) -> ProtocolResult:
        new_id, dm, gm = _subset_units(mask, dets.unit, labels.lesion_unit)
        return lens_froc(new_id[dets.unit[dm]], dets.boxes3d[dm], dets.scores[dm], new_id[labels.lesion_unit[gm]],
                         labels.boxes3d[gm], int(mask.sum()), iobb=iobb, fps=fps)[0]

    add_breakdowns(result, found_at, labels.lesion_unit, labels.lesion_long_mm, labels.unit_interval, run)
    patients, unit_patient = np.unique(labels.unit_patient, return_inverse=True)
    result.outcomes.image_unit = unit_patient.reshape(-1).astype(np.int64)
    result.outcomes.units = patients
    return result
