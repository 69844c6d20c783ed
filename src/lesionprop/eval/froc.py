"""Sensitivity at false positives per image (FROC), the MULAN / AlignShift protocol.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`).

IoU as MULAN and AlignShift compute it: their IoU adds +1 pixel to every width and
height (both boxes and the intersection) in the frame where they evaluate, slices
resampled to 0.8 mm pixels; in the file's pixels that is ``+ 0.8 / spacing`` with
``spacing`` the image's ``Spacing_mm_px_`` x (:func:`lesionprop.boxes.pair_iou`'s ``pad``).  MULAN also
caps the resampled slice at 512 px after clipping the black border, so on a large
field of view its pad is smaller than ``0.8 / spacing``: a box file cannot know the
border, so we use the uncapped pad.  The label tools keep continuous IoU.

Protocol (``convention="mulan"``): ground truth = the split's rows with Source
``human``; images = key slices that keep a lesion after dropping
``Possibly_noisy != 0``; lesions = those rows.  Predictions on other slices are
ignored.  All detections are pooled and ranked by score (descending; equal scores
keep prediction-file order).  A detection whose best IoU with its image's lesions
is below ``iou`` is a false positive; otherwise it finds every lesion of its image
with IoU >= ``iou`` (one that only overlaps found lesions is neither TP nor FP).
After each detection the curve has the point (FPs / images, found / lesions); the
sensitivity at a rate is ``numpy.interp(rate, fp_curve, sens_curve)``: the last
point of equal FP rate, the final sensitivity past the end, 0 with no detection.

``convention="3dce"`` reproduces 3DCE's script: +1 file pixel in the IoU, the
first point of equal FP rate, linear extrapolation past either end (a flat end
segment, where 3DCE's scipy call would divide by zero, gives that segment's value).

``truth`` (complete labels, e.g. ``truth.csv`` of a synthetic dataset): the images
are still the key slices above, but an image's lesions are ALL truth rows on that
slice (any Source, any Possibly_noisy).

Breakdowns: by slice interval (``<= 2 mm`` / ``> 2 mm`` from ``Spacing_mm_px_`` z),
each a separate evaluation on its images; by lesion type and by lesion size (MULAN's
groups: long diameter < 10 mm, 10-30 mm, > 30 mm, from ``Lesion_diameters_Pixel_``
times ``Spacing_mm_px_`` x), the fraction of that group's lesions found along the
pooled curve at each FP rate (FPs cannot be given a type or size).

``FrocResult.outcomes`` keeps what the bootstrap (:mod:`lesionprop.eval.bootstrap`)
needs: each ranked detection's image and outcome, each image's patient and lesion
count.  A detection's outcome depends only on its own image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from lesionprop.annotations import LESION_TYPES, Annotations, Lesion, Source, as_annotations
from lesionprop.boxes import pair_iou
from lesionprop.errors import InputError
from lesionprop.predictions import Predictions
from lesionprop.segments import segment_pairs
from lesionprop.slice_index import KeySlices, Vocab, key_slices, slice_keys

DEFAULT_FPS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
CONVENTIONS = ("mulan", "3dce")
#: MULAN / AlignShift evaluate on slices resampled to this pixel size (mm)
MULAN_PIXEL_MM = 0.8
#: MULAN's lesion size groups by long diameter: < 10 mm, 10-30 mm (both ends included), > 30 mm
SIZE_GROUPS = ("< 10 mm", "10-30 mm", "> 30 mm")


def size_group(long_mm: np.ndarray) -> np.ndarray:
    """Index into :data:`SIZE_GROUPS` of each long diameter (mm); -1 where it is not finite."""
    d = np.asarray(long_mm, dtype=np.float64)
    return np.select([d < 10.0, d <= 30.0, d > 30.0], [0, 1, 2], -1)


@dataclass
class Outcomes:
    """Per-detection outcomes of one evaluation, in rank order (what a bootstrap re-weights).

    ``det_image`` (D,) image of each ranked detection; ``det_fp`` (D,) bool false positive;
    ``det_found`` (D,) number of lesions it found first; ``image_unit`` (I,) resampling unit
    (patient) of each image; ``image_lesions`` (I,) lesions per image; ``units`` (U,) the
    unit ids (sorted ``Patient_index``), ``image_unit`` indexes them.
    """

    det_image: np.ndarray
    det_fp: np.ndarray
    det_found: np.ndarray
    image_unit: np.ndarray
    image_lesions: np.ndarray
    units: np.ndarray


def match_detections(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, gt_image: np.ndarray,
                     gt_boxes: np.ndarray, *, iou: float = 0.5, pad: float | np.ndarray = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank detections and match them to lesions of their own image.

    ``pad``: scalar or per image (``pad[image]``), see :func:`lesionprop.boxes.pair_iou`.  Returns
    ``(order (D,), is_fp (D,) in input order, found_at (G,))``: the ranking (score
    descending, ties in input order), whether each detection is a false positive, and
    per lesion the rank of the detection that found it (D when never found).
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    gt_image = np.asarray(gt_image, dtype=np.int64)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pad = np.asarray(pad, dtype=np.float64)
    n_det, n_gt = det_image.size, gt_image.size
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable")
    rank = np.empty(n_det, dtype=np.int64)
    rank[order] = np.arange(n_det)
    gt_order = np.argsort(gt_image, kind="stable")
    gt_sorted = gt_image[gt_order]
    g_start = np.searchsorted(gt_sorted, det_image, side="left")
    g_count = np.searchsorted(gt_sorted, det_image, side="right") - g_start
    best = np.zeros(n_det)
    found_at = np.full(n_gt, n_det, dtype=np.int64)
    for d, _, gpos in segment_pairs(np.arange(n_det), np.ones(n_det, np.int64), g_start, g_count):
        v = pair_iou(det_boxes[d], gt_boxes[gt_order[gpos]], pad if pad.ndim == 0 else pad[det_image[d]])
        np.maximum.at(best, d, v)
        hit = v >= iou
        np.minimum.at(found_at, gt_order[gpos[hit]], rank[d[hit]])
    return order, best < iou, found_at


def curve(order: np.ndarray, is_fp: np.ndarray, found_at: np.ndarray, n_images: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC points after each ranked detection: ``(fp_curve, sens_curve, found_per_rank)``
    (``match_detections``' outcomes; an image is a key slice or a sub-volume)."""
    n = order.size
    found = np.bincount(found_at[found_at < n], minlength=n)[:n]
    fp = np.cumsum(is_fp[order]) / float(max(n_images, 1))
    sens = np.cumsum(found) / float(found_at.size) if found_at.size else np.zeros(n)
    return fp, sens, found


def froc_curve(det_image: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, gt_image: np.ndarray,
               gt_boxes: np.ndarray, n_images: int, *, iou: float = 0.5, plus1: bool = False,
               pad: float | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled FROC curve.

    ``det_image`` (D,) / ``gt_image`` (G,) are image ids in ``[0, n_images)``.  IoU pad:
    ``pad`` (scalar or per image) when given, else 1 with ``plus1``, else 0 (continuous).
    Returns ``(fp_curve (D,), sens_curve (D,), found_at (G,))``: the curve after each
    ranked detection and, per lesion, the rank of the detection that found it (D when
    never found).
    """
    if np.asarray(gt_image).size == 0:
        raise InputError("no lesions to evaluate")
    pad = (1.0 if plus1 else 0.0) if pad is None else pad
    order, is_fp, found_at = match_detections(det_image, det_boxes, det_scores, gt_image, gt_boxes, iou=iou,
                                              pad=pad)
    fp_curve, sens_curve, _ = curve(order, is_fp, found_at, n_images)
    return fp_curve, sens_curve, found_at


#: how a curve is read at a rate (:func:`sensitivity_at`), named for the protocols that read it so
READINGS = ("mulan", "harvester", "3dce")


def sensitivity_at(fp_curve: np.ndarray, sens_curve: np.ndarray, rates: Sequence[float],
                   reading: str = "mulan") -> np.ndarray:
    """Sensitivity at each FP rate read from a curve (points in rank order, FP rate not decreasing).

    ``reading`` (:data:`READINGS`) says which point holds where several share a requested
    rate exactly, and what holds beyond the curve's ends:

    * ``mulan`` (MULAN, AlignShift, LENS): linear interpolation, the LAST point of equal
      rate, 0 below the first point, the last value past the end (``numpy.interp``; a curve
      of ranked detections starts at 0 FPs or with sensitivity 0, so 0 below it is
      ``numpy.interp``'s own reading);
    * ``harvester`` (Lesion Harvester): the same with the FIRST point of equal rate;
    * ``3dce`` (3DCE's script): the first point of equal rate, linear extrapolation past
      either end (a flat end segment, where 3DCE's scipy call would divide by zero, gives
      that segment's value).

    An empty curve reads 0 at every rate.
    """
    if reading not in READINGS:
        raise InputError(f"reading must be one of {', '.join(READINGS)}; got {reading!r}")
    rates = np.asarray(rates, dtype=np.float64)
    fp = np.asarray(fp_curve, dtype=np.float64)
    s = np.asarray(sens_curve, dtype=np.float64)
    if fp.size == 0:
        return np.zeros(rates.shape)
    if reading == "mulan":
        return np.interp(rates, fp, s, left=0.0, right=s[-1])
    if reading == "harvester":
        return _first_of_equal(fp, s, rates)
    return _extrapolated(fp, s, rates)


def _first_of_equal(fp: np.ndarray, s: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """The ``harvester`` reading of :func:`sensitivity_at` (a non-empty curve)."""
    i = np.searchsorted(fp, rates, side="left")
    ic = np.clip(i, 0, fp.size - 1)
    lo = np.clip(i - 1, 0, fp.size - 1)
    dx = fp[ic] - fp[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = s[lo] + (s[ic] - s[lo]) * (rates - fp[lo]) / np.where(dx > 0, dx, 1.0)
    out = np.where(i >= fp.size, s[-1], np.where(fp[ic] == rates, s[ic], lin))
    return np.where((i == 0) & (fp[0] != rates), 0.0, out)


def _extrapolated(fp: np.ndarray, s: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """The ``3dce`` reading of :func:`sensitivity_at` (a non-empty curve)."""
    if fp.size == 1:
        return np.full(rates.shape, s[0])
    hi = np.clip(np.searchsorted(fp, rates, side="left"), 1, fp.size - 1)
    lo = hi - 1
    dx = fp[hi] - fp[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = s[lo] + (s[hi] - s[lo]) / np.where(dx > 0, dx, 1.0) * (rates - fp[lo])
    return np.where(dx > 0, y, np.where(rates >= fp[hi], s[hi], s[lo]))


@dataclass
class SubResult:
    """One breakdown group: its images, lesions and sensitivity at each rate."""

    images: int
    lesions: int
    sensitivity: list[float]


@dataclass
class FrocResult:
    """Sensitivity (fractions) at ``fps`` FPs per image, the full curve and breakdowns."""

    fps: tuple[float, ...]
    sensitivity: np.ndarray
    images: int
    lesions: int
    fp_curve: np.ndarray
    sens_curve: np.ndarray
    split: str = "test"
    iou: float = 0.5
    convention: str = "mulan"
    by_interval: dict[str, SubResult] = field(default_factory=dict)
    by_type: dict[str, SubResult] = field(default_factory=dict)
    by_size: dict[str, SubResult] = field(default_factory=dict)
    outcomes: Outcomes | None = field(default=None, repr=False)
    # per evaluated lesion (the rows of ``lesion_rows``, in that order): the FP-per-image rate
    # of the curve when the detection that found it is reached (inf: never found), i.e. the
    # lesion counts as found at any rate >= this one; for per-lesion analyses
    lesion_fp: np.ndarray | None = field(default=None, repr=False)
    lesion_rows: Annotations | None = field(default=None, repr=False)

    def __repr__(self) -> str:       # the curve and breakdowns are long: to_pandas() shows the breakdowns
        sens = ", ".join(f"{f:g}: {s:.4f}" for f, s in zip(self.fps, self.sensitivity))
        return (f"FrocResult(split={self.split!r}, images={self.images}, lesions={self.lesions}, iou={self.iou:g}, "
                f"convention={self.convention!r}, sensitivity at FPs per image {{{sens}}})")

    def to_pandas(self, breakdown: bool = False):
        """Sensitivity at each rate as a pandas DataFrame: one row ``all`` (columns ``images``,
        ``lesions`` and one per rate, named ``f"{fp:g}"``: ``"0.5"``, ``"1"``, ...); with
        ``breakdown`` also a row per slice interval, lesion type and size group."""
        import pandas as pd

        rates = [f"{f:g}" for f in self.fps]
        rows = {"all": [self.images, self.lesions, *[float(s) for s in self.sensitivity]]}
        if breakdown:
            for kind, groups in (("interval", self.by_interval), ("type", self.by_type), ("size", self.by_size)):
                for name, sub in groups.items():
                    rows[f"{kind} {name}"] = [sub.images, sub.lesions, *[float(s) for s in sub.sensitivity]]
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["images", "lesions", *rates])
        return frame.astype({"images": "int64", "lesions": "int64"})

    def to_dict(self, breakdown: bool = False, curve: bool = False) -> dict:
        out = {"fps": [float(f) for f in self.fps], "sensitivity": [float(s) for s in self.sensitivity],
               "images": int(self.images), "lesions": int(self.lesions)}
        if curve:
            out.update(split=self.split, iou=float(self.iou), convention=self.convention,
                       fp_curve=[float(x) for x in self.fp_curve], sens_curve=[float(x) for x in self.sens_curve])
        if breakdown:
            out["by_interval"] = {k: vars(v) for k, v in self.by_interval.items()}
            out["by_type"] = {k: vars(v) for k, v in self.by_type.items()}
            out["by_size"] = {k: vars(v) for k, v in self.by_size.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "FrocResult":
        """The result written by ``to_dict(curve=True)`` (breakdowns included when written)."""
        return cls(tuple(float(f) for f in d["fps"]), np.asarray(d["sensitivity"], dtype=np.float64),
                   int(d["images"]), int(d["lesions"]), np.asarray(d.get("fp_curve", []), dtype=np.float64),
                   np.asarray(d.get("sens_curve", []), dtype=np.float64), d.get("split", "test"),
                   float(d.get("iou", 0.5)), d.get("convention", "mulan"),
                   {k: SubResult(**v) for k, v in d.get("by_interval", {}).items()},
                   {k: SubResult(**v) for k, v in d.get("by_type", {}).items()},
                   {k: SubResult(**v) for k, v in d.get("by_size", {}).items()})


def image_pads(spacing_x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """MULAN's IoU pad of each image, ``0.8 / Spacing_mm_px_ x`` (file pixels)."""
    sx = np.asarray(spacing_x, dtype=np.float64)
    bad = ~(np.isfinite(sx) & (sx > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"key slice {names[i]}: Spacing_mm_px_ x must be a positive number for the MULAN IoU "
                         f"(+0.8 mm / spacing), got {sx[i]!r}")
    return MULAN_PIXEL_MM / sx


def evaluate(lesions: Annotations | Iterable[Lesion], predictions: Predictions, *, split: str = "test",
             iou: float = 0.5, fps: Sequence[float] = DEFAULT_FPS,
             truth: Annotations | Iterable[Lesion] | None = None, convention: str = "mulan") -> FrocResult:
    """Evaluate ``predictions`` on the key slices of ``split`` (see the module docstring)."""
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    fps = tuple(float(f) for f in fps)
    if not fps or any(not np.isfinite(f) or f < 0 for f in fps):
        raise InputError(f"fps must be non-negative numbers, got {list(fps)}")
    keyrows = as_annotations(lesions).select(split, sources=(Source.HUMAN,), drop_noisy=True)
    images = key_slices(keyrows, Vocab(predictions.series_names))
    if not len(images):
        raise InputError(f"no lesions in split {split!r} after dropping Possibly_noisy != 0 rows")
    gts, gt_img = image_lesions(keyrows, images, truth)
    if gt_img.size == 0:
        raise InputError("no lesions to evaluate")
    det_img = detections_on(images, predictions)
    on = det_img >= 0
    det_img, det_boxes, det_scores = det_img[on], predictions.boxes[on], predictions.scores[on]
    first = images.first_row
    spacing_x = keyrows.spacing[first, 0]
    pad = image_pads(spacing_x, images.file_names.astype(str)) if convention == "mulan" else np.ones(len(images))

    order, is_fp, found_at = match_detections(det_img, det_boxes, det_scores, gt_img, gts.boxes, iou=iou, pad=pad)
    fp_curve, sens_curve, found = curve(order, is_fp, found_at, len(images))
    result = FrocResult(fps, sensitivity_at(fp_curve, sens_curve, fps, convention), len(images), len(gts),
                        fp_curve, sens_curve, split, float(iou), convention)
    n_det = det_img.size
    result.lesion_fp = np.where(found_at < n_det, fp_curve[np.minimum(found_at, max(n_det - 1, 0))]
                                if n_det else np.inf, np.inf)
    result.lesion_rows = gts
    units, image_unit = np.unique(keyrows.patient[first], return_inverse=True)
    result.outcomes = Outcomes(det_img[order], is_fp[order], found, image_unit.reshape(-1),
                               np.bincount(gt_img, minlength=len(images)), units)

    result.by_interval = interval_breakdown(keyrows.spacing[first, 2], det_img, det_boxes, det_scores, gt_img,
                                            gts.boxes, iou=iou, pad=pad, fps=fps, convention=convention)
    types = gts.lesion_type
    for t in np.unique(types):
        result.by_type[LESION_TYPES.get(int(t), str(int(t)))] = along_curve(result, found_at, gt_img, types == t)
    groups = size_group(gts.diameters_px.max(axis=1) * spacing_x[gt_img])      # NaN where not 2 diameters
    for k, label in enumerate(SIZE_GROUPS):
        if (groups == k).any():
            result.by_size[label] = along_curve(result, found_at, gt_img, groups == k)
    return result


def image_lesions(keyrows: Annotations, images: KeySlices, truth: Annotations | Iterable[Lesion] | None
                  ) -> tuple[Annotations, np.ndarray]:
    """The lesions of the images and the image of each: the key rows themselves, or with
    ``truth`` every truth row on an image's slice."""
    if truth is None:
        gt_img = np.empty(len(keyrows), np.int64)
        gt_img[images.rows] = np.repeat(np.arange(len(images)), images.count)
        return keyrows, gt_img
    truth = as_annotations(truth)
    names = images.file_names.astype(str)
    by_name = np.argsort(names)
    pos = np.clip(np.searchsorted(names[by_name], truth.file_name.astype(str)), 0, names.size - 1)
    on_image = names[by_name][pos] == truth.file_name.astype(str)
    return truth.take(on_image), by_name[pos[on_image]]


def detections_on(images: KeySlices, predictions: Predictions) -> np.ndarray:
    """The image of each prediction (-1: not on a key slice, ignored)."""
    if not len(predictions):
        return np.zeros(0, np.int64)
    key_order = np.argsort(images.keys)
    sorted_keys = images.keys[key_order]
    keys = slice_keys(predictions.series_index, predictions.slices)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == keys, key_order[pos], -1)


def interval_breakdown(interval: np.ndarray, det_img: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                       gt_img: np.ndarray, gt_boxes: np.ndarray, *, iou: float, pad: np.ndarray,
                       fps: Sequence[float], convention: str) -> dict[str, SubResult]:
    """By slice interval (``interval`` (I,) mm per image): each group of images is a separate
    evaluation (its own FPs per image)."""
    out = {}
    for label, img_mask in (("<= 2 mm", interval <= 2.0), ("> 2 mm", interval > 2.0)):
        if not img_mask.any() or not img_mask[gt_img].any():
            continue
        new_id = np.cumsum(img_mask) - 1
        dm, gm = img_mask[det_img], img_mask[gt_img]
        f, s, _ = froc_curve(new_id[det_img[dm]], det_boxes[dm], det_scores[dm], new_id[gt_img[gm]],
                             gt_boxes[gm], int(img_mask.sum()), iou=iou, pad=pad[img_mask])
        out[label] = SubResult(int(img_mask.sum()), int(gm.sum()), sensitivity_at(f, s, fps, convention).tolist())
    return out


def along_curve(result: FrocResult, found_at: np.ndarray, gt_img: np.ndarray, mask: np.ndarray) -> SubResult:
    """The lesions of ``mask`` (a type, a size group) read along the pooled curve: FPs
    cannot be given a type or size, so only the found fraction is the group's."""
    n_det = result.fp_curve.size
    hit = np.bincount(found_at[mask][found_at[mask] < n_det], minlength=n_det)[:n_det]
    s = np.cumsum(hit) / float(mask.sum())
    return SubResult(int(np.unique(gt_img[mask]).size), int(mask.sum()),
                     sensitivity_at(result.fp_curve, s, result.fps, result.convention).tolist())
