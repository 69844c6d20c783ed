"""One synthetic series: anatomy (phantom or real background), lesions, per-slice truth boxes.

Box convention (used for every truth row and every label, see :mod:`lesionprop.boxes`):
a lesion's box on a slice is the extent of its mask *pixels* on that slice in the
continuous pixel frame (``[col_min - 0.5, col_max + 0.5]`` with 0-based pixel
centres), padded by ``box_pad`` pixels on every side, clipped to the image, then
converted to the 1-based file frame (+1).  ``box_pad`` defaults to 5 px at 512 px
(DeepLesion pads the RECIST extent by ~5 px) and scales with the image size so
the padding in millimetres stays the same.

The RECIST axes (``Measurement_coordinates``: long-axis endpoints then short-axis
endpoints, file frame) are measured on the key slice from the convex hull of the
mask's pixel corners: the long axis is the hull's diameter, the short axis the
longest hull chord perpendicular to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lesionprop.synth import phantom as ph
from lesionprop.data.volumes import write_slices

# lesion type (DeepLesion's Coarse_lesion_type) of the tissue at the lesion centre
_BODY_WALL = {ph.MUSCLE, ph.SKIN}
_ABDOMEN = {ph.SPLEEN, ph.BOWEL, ph.GAS, ph.VESSEL}
# how often a tissue hosts a lesion, per unit of its area (phantom mode)
# (fat is by far the largest tissue by area, hence its low weight: nodes and masses in fat are common, not dominant)
_TISSUE_WEIGHT = {ph.LIVER: 3.0, ph.LUNG: 2.0, ph.FAT: 0.45, ph.MUSCLE: 0.4, ph.SPLEEN: 1.5, ph.KIDNEY: 4.0,
                  ph.BOWEL: 1.2, ph.HEART: 0.5, ph.MARROW: 1.0, ph.BONE: 0.3, ph.BLADDER: 0.5, ph.SKIN: 0.2}
# TotalSegmentator labels -> phantom tissue (background mode with an organ mask)
_TOTALSEG_TISSUE = {1: ph.SPLEEN, 2: ph.KIDNEY, 3: ph.KIDNEY, 5: ph.LIVER, 10: ph.LUNG, 11: ph.LUNG, 12: ph.LUNG,
                    13: ph.LUNG, 14: ph.LUNG}


def lesion_type(tissue: int, s_mm: float) -> int:
    """Coarse lesion type 1..8 of a lesion centred in ``tissue`` at body position ``s_mm``."""
    if tissue == ph.LIVER:
        return 4
    if tissue == ph.LUNG:
        return 5
    if tissue == ph.KIDNEY:
        return 6
    if tissue in (ph.BONE, ph.MARROW, ph.DISC):
        return 1
    if tissue == ph.HEART or (tissue == ph.FAT and s_mm < 215):
        return 3
    if tissue == ph.BLADDER or s_mm > 390:
        return 8
    if tissue in _BODY_WALL:
        return 7
    return 2


def lesion_target_hu(rng: np.random.Generator, tissue: int, local_hu: float) -> tuple[float, float]:
    """(target HU, core HU) of a lesion in ``tissue`` whose surroundings read ``local_hu``."""
    if tissue in (ph.LUNG, ph.GAS):
        return float(rng.uniform(-40, 60)), 0.0                 # solid nodule in air
    if tissue == ph.FAT:
        return float(rng.uniform(10, 60)), 0.0                  # node / mass in fat
    if tissue in (ph.BONE, ph.MARROW, ph.DISC):
        if rng.random() < 0.55:
            return float(rng.uniform(0, 80)), 0.0               # lytic
        return local_hu + float(rng.uniform(250, 500)), 0.0     # sclerotic
    if rng.random() < 0.65:
        delta = -float(rng.uniform(20, 75))                     # hypodense (most metastases, cysts)
        core = -float(rng.uniform(10, 30)) if rng.random() < 0.4 else 0.0
        return local_hu + delta, core
    return local_hu + float(rng.uniform(20, 60)), 0.0           # hyperdense / enhancing


@dataclass
class SeriesTask:
    """What one worker needs to make a series.  ``seed``: the dataset seed in the high bits (it picks
    the noise field and the patient's anatomy), this series' own random stream in the low 31 bits."""

    index: int
    name: str
    patient: int
    seed: int
    out: str
    image_size: int
    interval: float
    fov_mm: float
    n_slices: int
    n_lesions: int
    near_share: float
    box_pad: float
    noise_hu: float
    diameter_mu: float
    diameter_sigma: float
    organ_labels: tuple[int, ...] = ()


@dataclass
class SynthLesion:
    """One lesion's truth: boxes (file frame) per slice index, RECIST on the key slice."""

    local_id: int
    key_slice: int
    boxes: dict[int, tuple[float, float, float, float]]
    extents: dict[int, tuple[float, float, float, float]]   # unpadded mask extent, file frame
    areas: dict[int, int]
    recist: tuple[float, ...]
    diameters: tuple[float, float]
    location: tuple[float, float, float]
    lesion_type: int
    tissue: int
    long_mm: float


@dataclass
class SeriesResult:
    name: str
    spacing: tuple[float, float, float]
    image_size: tuple[int, int]
    slice_range: tuple[int, int]
    lesions: list[SynthLesion] = field(default_factory=list)
    dropped: int = 0
    cpu_seconds: float = 0.0


# ---------------------------------------------------------------- geometry helpers

def mask_box(mask2d: np.ndarray, y0: int, x0: int, pad: float, size: tuple[int, int]
             ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(padded box, unpadded extent) in the file frame of a 2D mask whose [0, 0] is pixel (y0, x0)."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    ext = (x0 + cols[0] - 0.5, y0 + rows[0] - 0.5, x0 + cols[-1] + 0.5, y0 + rows[-1] + 0.5)
    h, w = size
    box = (max(ext[0] - pad, -0.5), max(ext[1] - pad, -0.5), min(ext[2] + pad, w - 0.5), min(ext[3] + pad, h - 0.5))
    return tuple(float(v) + 1.0 for v in box), tuple(float(v) + 1.0 for v in ext)


def recist_axes(mask2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Long and short axis endpoints ``(2, 2)`` as (x, y) in the mask's pixel frame, and their lengths."""
    cnts, _ = cv2.findContours(mask2d.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in cnts]).astype(np.float64)
    corners = (pts[:, None, :] + np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])[None]).reshape(-1, 2)
    hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    d = np.linalg.norm(hull[:, None] - hull[None], axis=2)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    long_len = float(d[i, j])
    u = (hull[j] - hull[i]) / long_len
    v = np.array([-u[1], u[0]])
    U, V = hull @ u, hull @ v
    U1, V1 = np.roll(U, -1), np.roll(V, -1)
    t = np.linspace(U.min(), U.max(), 65)[1:-1][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (t - U) / (U1 - U)
    vals = np.where((a >= 0) & (a <= 1) & np.isfinite(a), V + a * (V1 - V), np.nan)
    vmax, vmin = np.nanmax(vals, axis=1), np.nanmin(vals, axis=1)
    k = int(np.nanargmax(vmax - vmin))
    short_len = float(vmax[k] - vmin[k])
    tk = float(t[k, 0])
    short = np.array([tk * u + vmin[k] * v, tk * u + vmax[k] * v])
    return np.array([hull[i], hull[j]]), short, long_len, short_len


# ---------------------------------------------------------------- background (real CT) resampling

def resample_background(rng: np.random.Generator, hu: np.ndarray, spacing: tuple[float, float, float],
                        organs: np.ndarray | None, size: int, px: float, dz: float, n: int
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A random sub-block (random z window, in-plane shift, left-right flip) of a real CT at the series grid.

    Returns HU ``(n', size, size)`` float32, organ labels (nearest) or None, and the
    fractional background slice of each output slice.  ``n'`` is ``n`` or fewer when
    the background is shorter than the series.
    """
    zb, yb, xb = hu.shape
    length = (zb - 1) * spacing[2]
    n = max(1, min(n, int(length // dz) + 1))
    z0 = float(rng.uniform(0, max(0.0, length - (n - 1) * dz)))
    fz = (z0 + np.arange(n) * dz) / spacing[2]
    flip = rng.random() < 0.5
    a, d = px / spacing[0] * (-1 if flip else 1), px / spacing[1]
    ox, oy = rng.uniform(-0.08, 0.08) * xb, rng.uniform(-0.08, 0.08) * yb
    m = np.array([[a, 0, (xb - 1) / 2 + ox - a * (size - 1) / 2], [0, d, (yb - 1) / 2 + oy - d * (size - 1) / 2]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = np.empty((n, size, size), np.float32)
    lab = np.empty((n, size, size), np.uint16) if organs is not None else None
    for i, f in enumerate(fz):
        k0 = min(int(np.floor(f)), zb - 1)
        k1, w = min(k0 + 1, zb - 1), f - np.floor(f)
        sl = (1 - w) * hu[k0].astype(np.float32) + w * hu[k1].astype(np.float32)
        out[i] = cv2.warpAffine(sl, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=-1000)
        if lab is not None:
            kk = min(int(np.rint(f)), zb - 1)
            lab[i] = cv2.warpAffine(organs[kk].astype(np.float32), m, (size, size),
                                    flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.uint16)
    return out, lab, fz


def hu_tissue(hu_value: float) -> int:
    """Tissue class of a real-CT voxel from its (smoothed) HU."""
    if hu_value < -400:
        return ph.LUNG
    if hu_value < -30:
        return ph.FAT
    if hu_value > 250:
        return ph.MARROW
    return ph.SOFT


# ---------------------------------------------------------------- lesion placement

def _place(rng, task: SeriesTask, hu, tissue_at, candidates, placed, radius_mm, radii, px, dz):
    """A centre (z, y, x) for a new lesion, or None: near an existing lesion or from the candidates."""
    n, size = hu.shape[0], hu.shape[1]
    margin = max(1, int(round(0.2 * (n - 1)))) if n > 4 else 0
    rz = radii[2]
    for attempt in range(60):
        if placed and rng.random() < task.near_share and attempt < 30:
            other = placed[int(rng.integers(len(placed)))]
            oc, orad = other
            dist = (orad + radius_mm) * float(rng.uniform(1.05, 1.5))
            ang = float(rng.uniform(0, 2 * np.pi))
            dzmm = float(rng.uniform(-0.25, 0.25)) * min(rz, orad)
            c = np.array([oc[0] + dzmm / dz, oc[1] + dist * np.sin(ang) / px, oc[2] + dist * np.cos(ang) / px])
        else:
            c = np.asarray(candidates(rng), dtype=float)
            if c.size == 0:
                return None
        zi, yi, xi = int(round(c[0])), int(round(c[1])), int(round(c[2]))
        if not (margin <= zi <= n - 1 - margin and 0 <= yi < size and 0 <= xi < size):
            continue
        edge = radius_mm / px
        if min(yi, xi, size - 1 - yi, size - 1 - xi) < edge:
            continue
        if tissue_at(zi, yi, xi) is None:
            continue
        ok = all(np.linalg.norm((c - oc) * np.array([dz, px, px])) > (orad + radius_mm) * 1.02 for oc, orad in placed)
        if ok:
            return c
    return None


def make_series(task: SeriesTask, bank: np.ndarray, background=None) -> SeriesResult:
    """Generate, write (PNGs) and describe one series.  ``background``: (hu, spacing, organs|None) or None."""
    rng = np.random.default_rng(task.seed)
    size, dz = task.image_size, task.interval
    px = round(task.fov_mm / size, 6)
    if background is None:
        anat = ph.random_anatomy(np.random.default_rng([task.seed >> 32, 5, task.patient]), task.fov_mm)
        span = (task.n_slices - 1) * dz
        # series centred between the upper chest and the upper pelvis (DeepLesion: mostly chest and abdomen CT)
        s0 = float(np.clip(rng.uniform(30, 440) - span / 2, 0, max(0.0, ph.BODY_LENGTH_MM - span)))
        s_pos = s0 + np.arange(task.n_slices) * dz
        hu, labels = ph.phantom_volume(anat, s_pos, size, px, bank, rng, task.noise_hu)
        organs = None
    else:
        bg_hu, bg_spacing, bg_organs = background
        hu, organs, fz = resample_background(rng, bg_hu, bg_spacing, bg_organs, size, px, dz, task.n_slices)
        hu += 0.5 * task.noise_hu * np.stack([ph._noise_crop(bank, (size, size), rng) for _ in range(len(hu))])
        # the body position of a real scan is unknown: types come from the tissue alone (s = 300: abdomen),
        # the normalised z location is the position within the background volume
        s_pos = np.full(len(fz), 300.0)
        z_norm = fz / max(1, bg_hu.shape[0] - 1)
        labels = None
    n = hu.shape[0]

    def tissue_at(z, y, x):
        if labels is not None:
            t = int(labels[z, y, x])
            return None if t in (ph.AIR, ph.TABLE, ph.GAS, ph.CANAL, ph.VESSEL, ph.DISC) else t
        if organs is not None and task.organ_labels:
            lab = int(organs[z, y, x])
            return _TOTALSEG_TISSUE.get(lab, ph.SOFT) if lab in task.organ_labels else None
        v = float(np.median(hu[z, max(0, y - 2):y + 3, max(0, x - 2):x + 3]))
        return None if v < -900 else hu_tissue(v)

    if labels is not None:
        def candidates(r):
            zz = r.integers(0, n, 256)
            yy, xx = r.integers(0, size, 256), r.integers(0, size, 256)
            w = np.array([_TISSUE_WEIGHT.get(int(t), 0.0) for t in labels[zz, yy, xx]])
            if w.sum() <= 0:
                return np.empty(0)
            k = int(r.choice(256, p=w / w.sum()))
            return zz[k], yy[k], xx[k]
    elif organs is not None and task.organ_labels:
        zz_all, yy_all, xx_all = np.nonzero(np.isin(organs, task.organ_labels))

        def candidates(r):
            if zz_all.size == 0:
                return np.empty(0)
            k = int(r.integers(zz_all.size))
            return zz_all[k], yy_all[k], xx_all[k]
    else:
        def candidates(r):
            for _ in range(20):
                z, y, x = int(r.integers(n)), int(r.integers(size)), int(r.integers(size))
                if hu[z, y, x] > -900:
                    return z, y, x
            return np.empty(0)

    diam = ph.sample_long_diameters(rng, task.n_lesions, task.diameter_mu, task.diameter_sigma,
                                    (ph.LESION_DIAMETER_RANGE_MM[0], min(150.0, 0.3 * task.fov_mm)))
    placed: list[tuple[np.ndarray, float]] = []
    specs: list[tuple[ph.LesionSpec, int, float]] = []
    for d in sorted(diam.tolist(), reverse=True):
        radii, angle, tilt, harm, border = ph.random_shape(rng, d)
        radius = max(radii) * (1 + sum(h[3] for h in harm))
        c = _place(rng, task, hu, tissue_at, candidates, placed, radius, radii, px, dz)
        if c is None:
            continue
        zi, yi, xi = (int(round(v)) for v in c)
        tissue = tissue_at(zi, yi, xi)
        local = float(np.median(hu[zi, max(0, yi - 2):yi + 3, max(0, xi - 2):xi + 3]))
        target, core = lesion_target_hu(rng, tissue, local)
        specs.append((ph.LesionSpec(tuple(c), radii, angle, tilt, harm, border, target, core), tissue, d))
        placed.append((c, radius))
    pad = task.box_pad * size / 512.0
    result = SeriesResult(task.name, (px, px, dz), (size, size), (1, n))
    for spec, tissue, d in specs:
        block, mask = ph.render_lesion(hu, spec, (px, px, dz))
        areas = mask.sum(axis=(1, 2))
        if areas.max() == 0:
            result.dropped += 1
            continue
        kz = int(np.argmax(areas))
        z0, y0, x0 = block[0].start, block[1].start, block[2].start
        boxes, extents, area_d = {}, {}, {}
        for k in np.flatnonzero(areas):
            boxes[z0 + k + 1], extents[z0 + k + 1] = mask_box(mask[k], y0, x0, pad, (size, size))
            area_d[z0 + k + 1] = int(areas[k])
        long_ax, short_ax, l_len, s_len = recist_axes(mask[kz])
        off = np.array([x0 + 1.0, y0 + 1.0])
        recist = tuple(float(v) for v in np.concatenate([(long_ax + off).ravel(), (short_ax + off).ravel()]))
        key = z0 + kz + 1
        bx = boxes[key]
        zloc = z_norm[key - 1] if background is not None else np.clip(s_pos[key - 1] / ph.BODY_LENGTH_MM, 0, 1)
        loc = ((bx[0] + bx[2]) / 2 / size, (bx[1] + bx[3]) / 2 / size, float(zloc))
        result.lesions.append(SynthLesion(len(result.lesions), key, boxes, extents, area_d, recist,
                                          (l_len, s_len), loc, lesion_type(tissue, float(s_pos[key - 1])),
                                          tissue, float(d)))
    write_slices(task.out, task.name, hu)
    return result
