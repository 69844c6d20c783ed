"""Bootstrap over patients of the FROC sensitivities (MULAN protocol), exact and vectorised.

The input is :class:`lesionprop.eval.froc.Outcomes`, not boxes: the
outcome of every ranked detection of one evaluation (false positive, or the number of
lesions it found first), computed once by :func:`lesionprop.eval.froc.evaluate`.

Why one evaluation is enough: a detection's outcome depends only on its own image
(IoU with that image's lesions, and the higher-scored detections of the same image).
A bootstrap resample draws patients with replacement; each image then appears as
many times as its patient was drawn (its *weight*, 0 when not drawn) and so does each
of its detections and lesions.  The pooled score order is unchanged (copies of one
detection share its score and outcome), so the resampled curve after each detection is

    FPs(b, d) = cumsum_d(w[b, image(d)] * fp(d)),  found(b, d) = cumsum_d(w[b, image(d)] * found(d))

over ``images(b) = sum w[b, image]`` and ``lesions(b) = sum w[b, image] * lesions(image)``:
one ``(B, D)`` cumsum for all B resamples (in chunks of B to bound memory).  It is read
at each FP rate with the point estimate's rule (``numpy.interp``: the last point of equal
FP rate, the final value past the end).  The points this skips (between the copies of
one detection, or of a detection with weight 0) lie on a horizontal or vertical segment
of the curve or repeat a point, so they never change that reading.  3DCE's reading (the
first point of equal FP rate) would see them: the bootstrap supports the MULAN rule only.

Resampling units are integers ``0..U-1`` (patients; ``(seed, patient)`` when several
runs are pooled, see :mod:`lesionprop.eval.compare`).  Confidence intervals are
percentile intervals of the resampled values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lesionprop.errors import InputError
from lesionprop.eval.froc import Outcomes, sensitivity_at

#: the field's headline average: mean sensitivity at these FPs per image
MEAN_FPS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
#: elements of one (rows x detections) block of the cumsum
CHUNK_ELEMENTS = 1 << 22


def draw_weights(n_units: int, n_boot: int, rng: np.random.Generator | int | None) -> np.ndarray:
    """``(n_boot, n_units)`` int64 multiplicities: each row draws ``n_units`` units with replacement."""
    if n_units < 1 or n_boot < 1:
        raise InputError(f"need at least one unit and one resample, got {n_units} units, {n_boot} resamples")
    rng = np.random.default_rng(rng)
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = draws + (np.arange(n_boot, dtype=np.int64) * n_units)[:, None]
    return np.bincount(flat.reshape(-1), minlength=n_boot * n_units).reshape(n_boot, n_units)


def _max_count(rate: float, n: np.ndarray) -> np.ndarray:
    """Largest integer k with ``k / n <= rate`` in float64 (the comparison the point estimate makes)."""
    k = np.floor(rate * n).astype(np.int64)
    for _ in range(2):
        k = np.where((k + 1) / n <= rate, k + 1, k)
        k = np.where((k >= 0) & (k / n > rate), k - 1, k)
    return k


def resampled_sensitivity(outcomes: Outcomes, weights: np.ndarray, rates: Sequence[float],
                          chunk_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """Sensitivity at each FP rate of every resample: ``(B, R)`` (NaN where a resample has no lesion).

    ``weights`` (B, U): multiplicity of each unit in each resample (all ones = the point
    estimate, equal to ``evaluate``'s up to float rounding of the interpolation).
    """
    w = np.asarray(weights, dtype=np.int64)
    if w.ndim != 2 or w.shape[1] != outcomes.units.size:
        raise ValueError(f"weights must be (B, {outcomes.units.size}) for {outcomes.units.size} units, got {w.shape}")
    rates = np.asarray(rates, dtype=np.float64).reshape(-1)
    img_w = w[:, outcomes.image_unit]
    n_img = img_w.sum(1)
    n_les = img_w @ np.asarray(outcomes.image_lesions, dtype=np.int64)
    keep = outcomes.det_fp | (outcomes.det_found > 0)       # "neither" detections repeat a point
    det_unit = outcomes.image_unit[outcomes.det_image[keep]]
    fp_inc = outcomes.det_fp[keep].astype(np.int64)
    tp_inc = outcomes.det_found[keep].astype(np.int64)
    n_boot, n_det = w.shape[0], det_unit.size
    out = np.zeros((n_boot, rates.size))
    if n_det == 0:
        return np.where(n_les[:, None] > 0, out, np.nan)
    uniq, back = np.unique(rates, return_inverse=True)
    rows = max(1, chunk_elements // n_det)
    for lo in range(0, n_boot, rows):
        hi = min(n_boot, lo + rows)
        b = hi - lo
        wd = np.take(w[lo:hi], det_unit, axis=1)          # C order: the cumsums run along rows
        fpc = np.cumsum(wd * fp_inc, axis=1)
        tpc = np.cumsum(wd * tp_inc, axis=1)
        del wd
        n, les = n_img[lo:hi].astype(np.float64), n_les[lo:hi].astype(np.float64)
        # last curve point with FP rate <= r, per row and rate: rows are non-decreasing integers, so
        # offsetting row i by i * span makes one sorted array and one searchsorted answers all
        span = int(fpc[:, -1].max()) + 2
        offs = np.arange(b, dtype=np.int64) * span
        fpc += offs[:, None]
        k = np.stack([_max_count(r, n) for r in uniq], 1)                     # (b, R')
        last = np.searchsorted(fpc.reshape(-1), np.clip(k, -1, span - 2) + offs[:, None], side="right") \
            - (np.arange(b, dtype=np.int64) * n_det)[:, None] - 1
        fpc -= offs[:, None]
        row = np.arange(b)[:, None]
        idx, nxt = np.clip(last, 0, n_det - 1), np.clip(last + 1, 0, n_det - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            x0, x1 = fpc[row, idx] / n[:, None], fpc[row, nxt] / n[:, None]
            y0, y1 = tpc[row, idx] / les[:, None], tpc[row, nxt] / les[:, None]
            inner = (last >= 0) & (last < n_det - 1)
            slope = (y1 - y0) / np.where(inner, x1 - x0, 1.0)
            y = np.where(inner, slope * (uniq[None, :] - x0) + y0, y0)
        out[lo:hi] = np.where(les[:, None] > 0, y, np.nan)[:, back]
    return out


def percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``samples`` along axis 0 (NaN resamples ignored)."""
    if not 0.0 < level < 1.0:
        raise InputError(f"confidence level must be in (0, 1), got {level!r}")
    q = np.nanquantile(np.asarray(samples, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return q[0], q[1]


@dataclass
class BootstrapCI:
    """Percentile CIs of the sensitivity at ``fps`` and of the mean over :data:`MEAN_FPS`.

    ``samples`` (B, R) and ``mean_samples`` (B,) are the resampled values; ``mean`` is the
    point estimate of the mean (from the all-ones weights).
    """

    fps: tuple[float, ...]
    level: float
    n_boot: int
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean: float
    mean_ci: tuple[float, float]
    samples: np.ndarray
    mean_samples: np.ndarray

    def to_dict(self) -> dict:
        return {"ci_low": [float(x) for x in self.ci_low], "ci_high": [float(x) for x in self.ci_high],
                "mean": float(self.mean), "mean_ci": [float(x) for x in self.mean_ci],
                "ci_level": float(self.level), "bootstrap": int(self.n_boot)}


def point_sensitivity(outcomes: Outcomes, rates: Sequence[float]) -> np.ndarray:
    """Sensitivity at ``rates`` on the evaluation's own curve (``evaluate``'s numbers exactly)."""
    n_img, n_les = outcomes.image_unit.size, int(np.sum(outcomes.image_lesions))
    fp = np.cumsum(outcomes.det_fp) / float(n_img)
    sens = np.cumsum(outcomes.det_found) / float(n_les)
    return sensitivity_at(fp, sens, rates, "mulan")


def sample_statistics(outcomes: Outcomes, weights: np.ndarray, fps: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(sensitivity at fps (B, R), mean over MEAN_FPS (B,))`` of each resample."""
    fps = tuple(float(f) for f in fps)
    both = resampled_sensitivity(outcomes, weights, fps + MEAN_FPS)
    return both[:, :len(fps)], both[:, len(fps):].mean(1)


def bootstrap_ci(outcomes: Outcomes, fps: Sequence[float], *, level: float = 0.95, n_boot: int = 1000,
                 seed: int | None = 0, weights: np.ndarray | None = None) -> BootstrapCI:
    """Bootstrap over the units (patients) of one evaluation; ``weights`` overrides the draw."""
    if weights is None:
        weights = draw_weights(outcomes.units.size, n_boot, seed)
    samples, mean_samples = sample_statistics(outcomes, weights, fps)
    point_mean = point_sensitivity(outcomes, MEAN_FPS).mean()
    lo, hi = percentile_ci(samples, level)
    mlo, mhi = percentile_ci(mean_samples, level)
    return BootstrapCI(tuple(float(f) for f in fps), float(level), int(weights.shape[0]), lo, hi,
                       float(point_mean), (float(mlo), float(mhi)), samples, mean_samples)
