"""Paired comparison of several detectors on one test set: a bootstrap over patients.

The boxes are matched once per variant by :func:`lesionprop.eval.froc.evaluate` (its box
conventions apply); this module resamples the outcomes of those matches.

Paired: every resample draws ONE set of patients and every variant is re-read on it
(:func:`lesionprop.eval.bootstrap.resampled_sensitivity` with the same weights), so the
difference of variant v to the first variant is computed within each resample; its
percentile interval and the share of resamples where it is > 0 (``p_gt_0``) follow.
Identical predictions give a difference of exactly 0 in every resample.

Several runs (e.g. seeds of a benchmark, each with its own test set and detectors) are
pooled by :func:`pooled_comparison`: each run's patients are resampled within that run
(units = (run, patient), stratified by run), and the statistic is the mean over runs of
each run's sensitivity (and difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lesionprop.errors import InputError
from lesionprop.eval.bootstrap import MEAN_FPS, draw_weights, percentile_ci, point_sensitivity, sample_statistics
from lesionprop.eval.froc import Outcomes, evaluate


@dataclass
class Comparison:
    """Per variant (rows in ``names`` order) and per FP rate (columns in ``fps`` order).

    ``sensitivity``, ``ci_low``, ``ci_high`` (V, R); ``mean`` (V,) and ``mean_ci`` (V, 2): the
    mean over :data:`MEAN_FPS`; ``diff``, ``diff_low``, ``diff_high``, ``p_gt_0`` (V, R) and
    ``mean_diff`` (V,), ``mean_diff_ci`` (V, 2), ``mean_p_gt_0`` (V,): to the first variant
    (row 0 is all zeros).
    """

    fps: tuple[float, ...]
    names: list[str]
    level: float
    n_boot: int
    units: int
    sensitivity: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean: np.ndarray
    mean_ci: np.ndarray
    diff: np.ndarray
    diff_low: np.ndarray
    diff_high: np.ndarray
    p_gt_0: np.ndarray
    mean_diff: np.ndarray
    mean_diff_ci: np.ndarray
    mean_p_gt_0: np.ndarray
    images: int = 0
    lesions: int = 0

    def to_dict(self) -> dict:
        def fl(a) -> list[float]:
            return [float(x) for x in a]

        variants = {n: {"sensitivity": fl(self.sensitivity[i]), "ci_low": fl(self.ci_low[i]),
                        "ci_high": fl(self.ci_high[i]), "mean": float(self.mean[i]), "mean_ci": fl(self.mean_ci[i])}
                    for i, n in enumerate(self.names)}
        diffs = {n: {"diff": fl(self.diff[i]), "ci_low": fl(self.diff_low[i]), "ci_high": fl(self.diff_high[i]),
                     "p_gt_0": fl(self.p_gt_0[i]), "mean_diff": float(self.mean_diff[i]),
                     "mean_ci": fl(self.mean_diff_ci[i]), "mean_p_gt_0": float(self.mean_p_gt_0[i])}
                 for i, n in enumerate(self.names) if i > 0}
        return {"fps": fl(self.fps), "names": list(self.names), "variants": variants, "differences": diffs,
                "ci_level": float(self.level), "bootstrap": int(self.n_boot), "units": int(self.units),
                "images": int(self.images), "lesions": int(self.lesions)}


def _p_gt_0(d: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(d)
    return np.sum((d > 0) & ok, axis=0) / np.maximum(np.sum(ok, axis=0), 1)


def summarize(fps: Sequence[float], names: Sequence[str], point: np.ndarray, point_mean: np.ndarray,
              samples: np.ndarray, mean_samples: np.ndarray, level: float, units: int) -> Comparison:
    """Intervals from point values (V, R), (V,) and paired resamples (V, B, R), (V, B)."""
    if len(names) != point.shape[0]:
        raise ValueError(f"{len(names)} names for {point.shape[0]} variants")
    lo, hi = percentile_ci(np.moveaxis(samples, 1, 0), level)
    mlo, mhi = percentile_ci(mean_samples.T, level)
    d = samples - samples[:1]
    md = mean_samples - mean_samples[:1]
    dlo, dhi = percentile_ci(np.moveaxis(d, 1, 0), level)
    mdlo, mdhi = percentile_ci(md.T, level)
    return Comparison(tuple(float(f) for f in fps), list(names), float(level), int(samples.shape[1]), int(units),
                      point, lo, hi, point_mean, np.stack([mlo, mhi], 1), point - point[:1], dlo, dhi,
                      np.stack([_p_gt_0(x) for x in d]), point_mean - point_mean[0], np.stack([mdlo, mdhi], 1),
                      np.asarray([_p_gt_0(x[:, None])[0] for x in md]))


def paired_samples(outcomes: Sequence[Outcomes], fps: Sequence[float], weights: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(point (V, R), point_mean (V,), samples (V, B, R), mean_samples (V, B))`` with one weight matrix."""
    units = outcomes[0].units
    for o in outcomes[1:]:
        if o.units.shape != units.shape or not np.array_equal(o.units, units) \
                or not np.array_equal(o.image_unit, outcomes[0].image_unit):
            raise InputError("paired comparison needs the same test images and patients for every variant")
    point = np.stack([point_sensitivity(o, fps) for o in outcomes])
    point_mean = np.asarray([point_sensitivity(o, MEAN_FPS).mean() for o in outcomes])
    both = [sample_statistics(o, weights, fps) for o in outcomes]
    return point, point_mean, np.stack([b[0] for b in both]), np.stack([b[1] for b in both])


def paired_comparison(outcomes: Sequence[Outcomes], names: Sequence[str], fps: Sequence[float], *,
                      level: float = 0.95, n_boot: int = 1000, seed: int | None = 0,
                      weights: np.ndarray | None = None) -> Comparison:
    """Paired bootstrap over the patients shared by every variant's evaluation."""
    if not outcomes:
        raise InputError("nothing to compare")
    if weights is None:
        weights = draw_weights(outcomes[0].units.size, n_boot, seed)
    point, pmean, samples, msamples = paired_samples(outcomes, fps, weights)
    out = summarize(fps, names, point, pmean, samples, msamples, level, outcomes[0].units.size)
    out.images, out.lesions = int(outcomes[0].image_unit.size), int(np.sum(outcomes[0].image_lesions))
    return out


def pooled_comparison(runs: Sequence[Sequence[Outcomes]], names: Sequence[str], fps: Sequence[float], *,
                      level: float = 0.95, n_boot: int = 1000, seed: int | None = 0) -> Comparison:
    """Pool several runs (each a list of per-variant outcomes on its own test set).

    Each resample draws every run's patients with replacement within that run (the same
    draw for all variants of the run); the statistic is the mean over runs.
    """
    if not runs:
        raise InputError("no runs to pool")
    rng = np.random.default_rng(seed)
    parts = [paired_samples(r, fps, draw_weights(r[0].units.size, n_boot, rng)) for r in runs]
    point, pmean, samples, msamples = (np.mean([p[i] for p in parts], axis=0) for i in range(4))
    out = summarize(fps, names, point, pmean, samples, msamples, level, sum(r[0].units.size for r in runs))
    out.images = sum(int(r[0].image_unit.size) for r in runs)
    out.lesions = sum(int(np.sum(r[0].image_lesions)) for r in runs)
    return out


def compare(lesions, predictions: Sequence, names: Sequence[str], *, split: str = "test", truth=None,
            fps: Sequence[float] = MEAN_FPS, iou: float = 0.5, level: float = 0.95, n_boot: int = 1000,
            seed: int | None = 0) -> Comparison:
    """Evaluate each of ``predictions`` on the same annotations, then :func:`paired_comparison`."""
    results = [evaluate(lesions, p, split=split, iou=iou, fps=fps, truth=truth) for p in predictions]
    return paired_comparison([r.outcomes for r in results], names, fps, level=level, n_boot=n_boot, seed=seed)
