"""The 3DCE multi-slice sample of one slice (key or adjacent), and its box geometry.

A sample of slice ``c`` is ``num_slices = 3 x M`` channels resampled to a fixed
z spacing (``slice_interval_mm``, default 2 mm): channel ``k`` (``k`` from
``-(n-1)/2`` to ``(n-1)/2``, most negative offset first, slice ``c`` in the
middle) is the slice at the fractional position ``t = c + k * 2 / interval``.
An integer ``t`` reads that slice; otherwise the two slices around it are mixed
linearly with weights ``(1 - w, w)``, ``w = t - floor(t)``, computed for every
channel (3DCE computes it once and gets all but the first pair wrong).  A NaN,
zero or negative interval repeats the centre slice.  A missing neighbour file is
replaced by the nearest existing slice toward ``c`` (:class:`SliceReader`).

Then: window ``[lo, hi]`` HU -> 0..255 float32 (clipped); optional border clip
(foreground ``HU > -768``, i.e. raw > 32000, 7x7 binary opening, crop to its
bounding box; the whole slice when nothing survives); rescale to
``target_spacing_mm`` per pixel, capped so the longer side is at most
``max_size``, times an extra ``scale`` (augmentation / test-time scales).

Boxes: xyxy, continuous coordinates.  The *pixel frame* is the stored slice's
0-based frame (pixel column ``j`` covers ``[j, j + 1)``); the *sample frame* is the
same after crop (a shift moves the crop window), rescale and optional horizontal flip.
:class:`SampleGeometry` maps between them exactly (``to_stored`` inverts
``to_sample``).  The resize uses cv2's half-pixel-centre convention, for which
edges map as ``x' = (x - x0) * sx`` with ``sx = out_width / crop_width``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lesionprop.data.layout import HU_OFFSET
from lesionprop.errors import InputError

if TYPE_CHECKING:
    from lesionprop.config import DataConfig
    from lesionprop.data.deeplesion import SeriesInfo
    from lesionprop.data.slices import SliceReader

#: Border clip: foreground is HU above this (raw PNG value 32000).
CLIP_THRESHOLD_HU = 32000 - HU_OFFSET
CLIP_OPENING = 7
_INT_EPS = 1e-6


@dataclass(frozen=True)
class SampleGeometry:
    """Where a sample's pixels come from in the stored slice.

    ``offset`` (x0, y0): origin of the crop window in the stored pixel frame (a
    shifted window may start outside the slice).  ``scale`` (sx, sy): sample
    pixels per stored pixel.  ``size`` (H, W) of the sample.  ``stored_size``
    (H, W) of the stored slice.  ``flipped``: mirrored left-right after the rescale.
    """

    offset: tuple[float, float]
    scale: tuple[float, float]
    size: tuple[int, int]
    stored_size: tuple[int, int]
    flipped: bool = False

    def to_sample(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` pixel-frame boxes of the stored slice -> sample frame (float64, not clipped)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        (x0, y0), (sx, sy) = self.offset, self.scale
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - x0) * sx
        out[:, 1::2] = (b[:, 1::2] - y0) * sy
        if self.flipped:
            w = self.size[1]
            out[:, [0, 2]] = w - out[:, [2, 0]]
        return out

    def to_stored(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` sample-frame boxes -> pixel frame of the stored slice (float64, not clipped)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        (x0, y0), (sx, sy) = self.offset, self.scale
        if self.flipped:
            w = self.size[1]
            b[:, [0, 2]] = w - b[:, [2, 0]]
        out = np.empty_like(b)
        out[:, 0::2] = b[:, 0::2] / sx + x0
        out[:, 1::2] = b[:, 1::2] / sy + y0
        return out

    def flip(self) -> "SampleGeometry":
        """Geometry of the left-right mirrored sample."""
        return replace(self, flipped=not self.flipped)


def slice_positions(center: int, z_interval_mm: float, num_slices: int,
                    slice_interval_mm: float) -> list[float]:
    """Fractional slice positions of the ``num_slices`` channels (centre in the middle)."""
    if num_slices < 1 or num_slices % 2 == 0:
        raise InputError(f"num_slices must be odd and positive (3 x M with M odd), got {num_slices}")
    half = num_slices // 2
    z = float(z_interval_mm)
    if not math.isfinite(z) or z <= 0:
        return [float(center)] * num_slices
    rel = float(slice_interval_mm) / z
    return [center + k * rel for k in range(-half, half + 1)]


def border_box(hu: np.ndarray) -> tuple[int, int, int, int]:
    """Body bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of an HU slice; whole slice if empty."""
    mask = (hu > CLIP_THRESHOLD_HU).view(np.uint8)
    kernel = np.ones((CLIP_OPENING, CLIP_OPENING), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0, 0, hu.shape[1], hu.shape[0]
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def output_scale(height: int, width: int, pixel_spacing_mm: float, target_spacing_mm: float,
                 max_size: int, scale: float = 1.0) -> float:
    """Resize factor: to ``target_spacing_mm`` pixels, longer side capped at ``max_size``, times ``scale``."""
    s = 1.0
    if target_spacing_mm > 0 and math.isfinite(pixel_spacing_mm) and pixel_spacing_mm > 0:
        s = pixel_spacing_mm / target_spacing_mm
    if max_size > 0 and max(height, width) * s > max_size:
        s = max_size / max(height, width)
    return s * scale


def build_sample(reader: "SliceReader", series: str, slice_index: int, z_interval_mm: float,
                 pixel_spacing_mm: float, *, num_slices: int = 9, slice_interval_mm: float = 2.0,
                 window: tuple[float, float] = (-1024.0, 3071.0), clip_border: bool = False,
                 target_spacing_mm: float = 0.8, max_size: int = 512, scale: float = 1.0,
                 shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, SampleGeometry]:
    """The windowed, rescaled 3DCE sample of one slice -> ``(image (C, H, W) float32 0..255, geometry)``.

    ``shift`` (dx, dy): move the content by whole stored-slice pixels (augmentation);
    it moves the crop window, whose part outside the slice is 0.
    """
    c = int(slice_index)
    center = reader.read_hu(series, c)
    stored_h, stored_w = center.shape
    x0, y0, x1, y1 = border_box(center) if clip_border else (0, 0, stored_w, stored_h)
    h, w = y1 - y0, x1 - x0
    dx, dy = int(shift[0]), int(shift[1])
    x0, x1, y0, y1 = x0 - dx, x1 - dx, y0 - dy, y1 - dy           # crop window, maybe partly outside
    sx0, sx1, sy0, sy1 = max(x0, 0), min(x1, stored_w), max(y0, 0), min(y1, stored_h)   # inside part
    inside = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))    # where it lands in the crop
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise InputError(f"window must have hi > lo, got {window}")
    gain = 255.0 / (hi - lo)
    bias = -lo * gain

    def plane(idx: int) -> np.ndarray:
        hu = center if idx == c else reader.read_hu(series, idx, toward=c)
        if hu.shape != center.shape:
            raise InputError(f"series {series}: slice {idx} has shape {hu.shape}, slice {c} {center.shape}")
        return hu[sy0:sy1, sx0:sx1]

    positions = slice_positions(c, z_interval_mm, num_slices, slice_interval_mm)
    stack = np.empty((len(positions), h, w), np.float32)
    if sx1 > sx0 and sy1 > sy0:
        done: dict[tuple[int, float], int] = {}
        for ch, t in enumerate(positions):
            f = math.floor(t)
            frac = t - f
            key = (int(round(t)), 0.0) if frac < _INT_EPS or frac > 1 - _INT_EPS else (f, frac)
            dst = stack[ch][inside]
            if key in done:                      # e.g. a NaN interval: the centre repeated
                dst[...] = stack[done[key]][inside]
                continue
            done[key] = ch
            a = plane(key[0])
            if key[1] == 0.0:
                cv2.addWeighted(a, gain, a, 0.0, bias, dst=dst, dtype=cv2.CV_32F)
            else:                               # window((1 - w) a + w b) in one pass
                b = plane(key[0] + 1)
                cv2.addWeighted(a, (1.0 - frac) * gain, b, frac * gain, bias, dst=dst, dtype=cv2.CV_32F)
        np.clip(stack, 0.0, 255.0, out=stack)
        # the part of the window outside the slice (a shift) is 0
        stack[:, : inside[0].start] = 0
        stack[:, inside[0].stop:] = 0
        stack[:, inside[0], : inside[1].start] = 0
        stack[:, inside[0], inside[1].stop:] = 0
    else:
        stack[:] = 0

    s = output_scale(h, w, pixel_spacing_mm, target_spacing_mm, max_size, scale)
    out_w, out_h = max(1, int(round(w * s))), max(1, int(round(h * s)))
    if (out_h, out_w) != (h, w):
        image = np.empty((len(positions), out_h, out_w), np.float32)
        for ch in range(len(positions)):
            cv2.resize(stack[ch], (out_w, out_h), dst=image[ch], interpolation=cv2.INTER_LINEAR)
    else:
        image = stack
    geom = SampleGeometry(offset=(float(x0), float(y0)), scale=(out_w / w, out_h / h),
                          size=(out_h, out_w), stored_size=(stored_h, stored_w))
    return image, geom


def sample_for(reader: "SliceReader", series: str, slice_index: int, info: "SeriesInfo",
               cfg: "DataConfig", scale: float = 1.0,
               shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, SampleGeometry]:
    """:func:`build_sample` with the settings of a :class:`DataConfig` and a series' spacing."""
    return build_sample(reader, series, slice_index, info.spacing[2], info.spacing[0],
                        num_slices=cfg.num_slices, slice_interval_mm=cfg.slice_interval_mm,
                        window=cfg.window, clip_border=cfg.clip_border,
                        target_spacing_mm=cfg.target_spacing_mm, max_size=cfg.max_size, scale=scale,
                        shift=shift)


def crop_window(size: tuple[int, int], crop: int, boxes: np.ndarray, u: tuple[float, float, float]
                ) -> tuple[int, int, int, int]:
    """Where to cut a ``crop`` x ``crop`` training window from a sample of ``size`` (H, W).

    ``boxes``: the sample-frame boxes; ``u``: three uniform numbers in [0, 1).  With
    boxes, the window holds the centre of the box picked by ``u[0]``, anywhere along
    each axis (``u[1]``, ``u[2]``); without, it is placed uniformly.  An axis shorter
    than ``crop`` is kept whole.  Returns ``(x0, y0, x1, y1)`` in sample pixels.
    """
    if crop < 3:
        raise InputError(f"crop size must be at least 3 pixels, got {crop}")
    h, w = int(size[0]), int(size[1])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = None
    if len(b):
        pick = b[min(int(u[0] * len(b)), len(b) - 1)]
        centre = ((pick[0] + pick[2]) / 2, (pick[1] + pick[3]) / 2)

    def axis(length: int, c: float | None, v: float) -> tuple[int, int]:
        if length <= crop:
            return 0, length
        lo, hi = 0, length - crop                       # allowed window starts
        if c is not None:                               # keep the centre inside, 1 px from the edges
            c = min(max(c, 1.0), length - 1.0)          # (a centre on the border: as if 1 px in)
            lo, hi = max(lo, math.ceil(c + 1 - crop)), min(hi, math.floor(c - 1))
        start = lo + min(int(v * (hi - lo + 1)), hi - lo)
        return start, start + crop

    x0, x1 = axis(w, None if centre is None else centre[0], u[1])
    y0, y1 = axis(h, None if centre is None else centre[1], u[2])
    return x0, y0, x1, y1


def crop_sample(image: np.ndarray, geom: SampleGeometry, window: tuple[int, int, int, int]
                ) -> tuple[np.ndarray, SampleGeometry]:
    """Cut ``window`` (x0, y0, x1, y1, sample pixels) out of an unflipped sample; geometry follows."""
    if geom.flipped:
        raise ValueError("crop before flipping")
    x0, y0, x1, y1 = window
    (ox, oy), (sx, sy) = geom.offset, geom.scale
    out = np.ascontiguousarray(image[:, y0:y1, x0:x1])
    return out, replace(geom, offset=(ox + x0 / sx, oy + y0 / sy), size=(y1 - y0, x1 - x0))


def flip_sample(image: np.ndarray, geom: SampleGeometry) -> tuple[np.ndarray, SampleGeometry]:
    """Mirror a ``(C, H, W)`` sample left-right (into a new array)."""
    out = np.empty_like(image)
    for ch in range(image.shape[0]):          # cv2.flip: ~6x faster than a reversed-view copy
        cv2.flip(image[ch], 1, dst=out[ch])
    return out, geom.flip()
