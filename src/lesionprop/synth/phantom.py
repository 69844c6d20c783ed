"""Procedural CT body phantom and lesion blobs (vectorised numpy / OpenCV).

Geometry: a slice is ``(H, W)`` in display orientation (columns: patient right
-> left, rows: anterior -> posterior, see :mod:`lesionprop.data.volumes`).  In-plane
millimetre coordinates ``(x, y)`` are measured from the image centre; the body axis
coordinate ``s`` (mm) runs from the lung apex (0) to the pelvic floor (~520), so
slice order (superior first) is increasing ``s``.

The anatomy of one series is drawn with :func:`cv2.fillPoly` per slice (one call per
structure), mapped to HU by a lookup table, blurred a little (partial volume),
and given correlated noise taken as random crops of a pre-computed noise bank.
Every structure's size and position are smooth functions of ``s`` (and the ribs and
vertebrae periodic), so neighbouring slices change smoothly.

Lesions are ellipsoids with a noise-perturbed radius (a sum of random smooth
functions of the direction) and a sigmoid border; the lesion *mask* (used for the
truth boxes) is the 0.5 level of that soft border.  A lesion replaces the local
mean of its tissue by ``target`` HU while keeping the noise texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from lesionprop.errors import InputError

# tissue labels of the phantom label map
# (SOFT: unspecified soft tissue of a real-CT background; the phantom does not draw it)
AIR, FAT, MUSCLE, LIVER, SPLEEN, KIDNEY, BONE, MARROW, LUNG, GAS, BOWEL, HEART, VESSEL, BLADDER, TABLE, SKIN, \
    CANAL, DISC, SOFT = range(19)
TISSUE_HU = np.array([-1000, -100, 50, 60, 50, 150, 700, 230, -850, -950, 30, 40, 170, 10, 250, 40, 20, 80, 40],
                     dtype=np.float32)
BODY_LENGTH_MM = 520.0

# long diameter of lesions: log-normal in mm (median exp(MU) = 17 mm, 90% in ~5-58 mm), clipped
LESION_LOGNORMAL_MU = float(np.log(17.0))
LESION_LOGNORMAL_SIGMA = 0.75
LESION_DIAMETER_RANGE_MM = (3.0, 150.0)


# ---------------------------------------------------------------- noise

def noise_bank(seed: int, size: int = 1024, sigma_px: float = 0.8) -> np.ndarray:
    """A ``(size, size)`` float32 field: unit-variance correlated noise (CT-like grain)."""
    rng = np.random.default_rng([seed, 7919])
    white = rng.standard_normal((size, size), dtype=np.float32)
    field = cv2.GaussianBlur(white, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    field /= field.std()
    return field


def _noise_crop(bank: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    if bank.shape[0] < h or bank.shape[1] < w:
        raise InputError(f"noise bank {bank.shape} smaller than the slice {shape}")
    y = int(rng.integers(0, bank.shape[0] - h + 1))
    x = int(rng.integers(0, bank.shape[1] - w + 1))
    crop = bank[y:y + h, x:x + w]
    return crop if rng.random() < 0.5 else crop.T if h == w else crop[::-1]


# ---------------------------------------------------------------- anatomy

@dataclass(frozen=True)
class Structure:
    """An ellipse-like structure: centre and semi-axes in units of the body semi-axes (a, b)."""

    label: int
    cx: float
    cy: float
    ra: float
    rb: float
    s0: float                      # present for s0 < s < s1 (mm along the body)
    s1: float
    angle: float = 0.0             # degrees
    harmonics: tuple = ()          # ((k, amplitude, phase), ...) radius perturbation
    period: float = 0.0            # > 0: present only where sin(2 pi (s - phase_s) / period) > duty
    phase_s: float = 0.0
    duty: float = -1.0
    absolute_mm: bool = False      # ra / rb in mm instead of body units


@dataclass(frozen=True)
class Anatomy:
    """Per-series random anatomy: body size and the list of structures (drawing order)."""

    a_mm: float                    # lateral semi-axis of the body at its widest
    b_mm: float                    # antero-posterior semi-axis
    cx_mm: float
    cy_mm: float
    structures: tuple[Structure, ...]
    hu: np.ndarray                 # per-label HU (series-specific contrast phase)
    harmonics: tuple = ()


def _harm(rng: np.random.Generator, amp: float, n: int = 3) -> tuple:
    return tuple((k, float(rng.uniform(0, amp)) / k, float(rng.uniform(0, 2 * np.pi))) for k in range(2, 2 + n))


def random_anatomy(rng: np.random.Generator, fov_mm: float) -> Anatomy:
    """Draw one patient's anatomy that fits a field of view of ``fov_mm``."""
    a = min(float(rng.uniform(135, 185)), 0.46 * fov_mm)
    b = a * float(rng.uniform(0.62, 0.78))
    j = lambda v, d=0.04: float(v + rng.uniform(-d, d))  # noqa: E731  (small per-patient jitter)
    st: list[Structure] = []
    # layers: subcutaneous fat, abdominal wall muscle, cavity (visceral fat)
    fat_t, mus_t = float(rng.uniform(0.06, 0.16)), float(rng.uniform(0.05, 0.09))
    st += [Structure(FAT, 0, 0, 1 - 0.015, 1 - 0.02, -1e3, 1e4),
           Structure(MUSCLE, 0, 0, 1 - fat_t, 1 - fat_t * 1.2, -1e3, 1e4),
           Structure(FAT, 0, j(0.03), 1 - fat_t - mus_t, 1 - (fat_t + mus_t) * 1.25, -1e3, 1e4)]
    # chest
    for side in (-1, 1):
        st.append(Structure(LUNG, side * j(0.42), j(0.02), j(0.36), j(0.62), 0, j(250, 15), harmonics=_harm(rng, 0.06)))
    st += [Structure(FAT, j(0.05), j(-0.1), 0.26, 0.45, 40, 215),
           Structure(HEART, j(0.1), j(-0.08), j(0.22), j(0.36), 80, j(205, 10), angle=float(rng.uniform(-30, 0)),
                     harmonics=_harm(rng, 0.05))]
    # abdomen
    st += [Structure(LIVER, j(-0.34), j(0.0), j(0.46), j(0.66), j(175, 10), j(320, 15),
                     angle=float(rng.uniform(-15, 15)),
                     harmonics=_harm(rng, 0.08)),
           Structure(SPLEEN, j(0.55), j(0.3), j(0.15), j(0.3), j(185, 10), j(275, 10), angle=30,
                     harmonics=_harm(rng, 0.08)),
           Structure(BOWEL, j(0.22), j(-0.3), j(0.26), j(0.24), j(205, 10), j(290, 10), harmonics=_harm(rng, 0.1)),
           Structure(GAS, j(0.24), j(-0.48), j(0.12), j(0.07), j(210, 10), j(270, 10))]
    for _ in range(int(rng.integers(14, 22))):           # small bowel / colon loops, some with gas
        cx, cy, s0 = float(rng.uniform(-0.55, 0.55)), float(rng.uniform(-0.55, 0.3)), float(rng.uniform(250, 440))
        r = float(rng.uniform(0.08, 0.16))
        st.append(Structure(BOWEL, cx, cy, r, r * 0.8, s0, s0 + float(rng.uniform(40, 110)), harmonics=_harm(rng, 0.1)))
        if rng.random() < 0.5:
            st.append(Structure(GAS, cx, cy - r * 0.3, r * 0.5, r * 0.35, s0 + 5, s0 + float(rng.uniform(20, 60))))
    for side in (-1, 1):
        st.append(Structure(KIDNEY, side * j(0.42), j(0.38), j(0.13), j(0.2), j(255, 10), j(355, 10), angle=side * -25,
                            harmonics=_harm(rng, 0.05)))
    # pelvis
    st += [Structure(BLADDER, j(0.0), j(-0.25), j(0.24), j(0.22), j(425, 10), 560, harmonics=_harm(rng, 0.05))]
    for side in (-1, 1):
        st.append(Structure(BONE, side * 0.55, 0.25, 0.34, 0.085, 375, 465, angle=side * 35))
        st.append(Structure(MARROW, side * 0.55, 0.25, 0.3, 0.05, 375, 465, angle=side * 35))
        st.append(Structure(BONE, side * 0.5, 0.1, 24, 24, 470, 560, absolute_mm=True))
        st.append(Structure(MARROW, side * 0.5, 0.1, 20, 20, 470, 560, absolute_mm=True))
    # vessels
    st += [Structure(VESSEL, j(0.06, 0.02), 0.45, 12, 12, 60, 420, absolute_mm=True),
           Structure(VESSEL, -0.12, 0.38, 10, 9, 170, 400, absolute_mm=True)]
    # spine: paraspinal muscles, vertebral body (cortex, marrow) or disc, posterior elements, canal
    st += [Structure(MUSCLE, s * 0.17, 0.78, 0.13, 0.14, -1e3, 1e4) for s in (-1, 1)]
    vr = float(rng.uniform(16, 22))
    period, phase = float(rng.uniform(26, 34)), float(rng.uniform(0, 30))
    st += [Structure(BONE, 0, 0.62, vr, vr * 0.85, -1e3, 1e4, absolute_mm=True),
           Structure(MARROW, 0, 0.62, vr - 2.5, vr * 0.85 - 2.5, -1e3, 1e4, absolute_mm=True),
           Structure(DISC, 0, 0.62, vr - 0.5, vr * 0.85 - 0.5, -1e3, 1e4, absolute_mm=True, period=period,
                     phase_s=phase, duty=0.75),
           Structure(BONE, 0, 0.86, 6, 14, -1e3, 1e4, absolute_mm=True),
           Structure(CANAL, 0, 0.76, 7, 6, -1e3, 1e4, absolute_mm=True)]
    # ribs and sternum
    for ang in np.linspace(-150, -30, 5).tolist() + np.linspace(30, 150, 5).tolist():
        r = 1 - fat_t - mus_t * 0.5
        st.append(Structure(BONE, r * np.cos(np.radians(ang + 90)), -r * np.sin(np.radians(ang + 90)) * -1.0,
                            6, 4, 0, 300, angle=ang, absolute_mm=True, period=28, phase_s=float(rng.uniform(0, 28)),
                            duty=0.2))
    st.append(Structure(BONE, 0, -(1 - fat_t - 0.02), 14, 5, 30, 190, absolute_mm=True))
    hu = TISSUE_HU.copy()
    hu[LIVER] += rng.uniform(-10, 15)
    hu[SPLEEN] += rng.uniform(-10, 15)
    hu[VESSEL] += rng.uniform(-60, 60)
    hu[KIDNEY] += rng.uniform(-70, 40)
    cx = float(rng.uniform(-0.04, 0.04) * fov_mm)
    cy = float(rng.uniform(-0.06, 0.02) * fov_mm)
    return Anatomy(a, b, cx, cy, tuple(st), hu, _harm(rng, 0.04))


def _body_scale(s: float) -> tuple[float, float]:
    """Body semi-axis factors along s: narrower at the apex, widest at the hips."""
    wa = 0.82 + 0.12 * np.clip(s / 120, 0, 1) + 0.06 * np.clip((s - 380) / 80, 0, 1)
    wb = 0.9 + 0.1 * np.sin(np.clip(s / BODY_LENGTH_MM, 0, 1) * np.pi)
    return float(wa), float(wb)


def _profile(st: Structure, s: float) -> float:
    """Size factor (0 = absent) of a structure at s: a smooth dome over (s0, s1)."""
    if not (st.s0 < s < st.s1):
        return 0.0
    if st.period > 0 and np.sin(2 * np.pi * (s - st.phase_s) / st.period) <= st.duty:
        return 0.0
    if st.s0 < -100 or st.s1 > 1000 or st.period > 0 or st.absolute_mm:
        return 1.0
    t = (s - st.s0) / (st.s1 - st.s0)
    return float(np.sqrt(max(0.0, 1 - (2 * t - 1) ** 2)) ** 0.6)


_ANGLES = np.linspace(0, 2 * np.pi, 48, endpoint=False)


def _polygon(cx: float, cy: float, ra: float, rb: float, angle_deg: float, harmonics: tuple, s: float) -> np.ndarray:
    r = np.ones_like(_ANGLES)
    for k, amp, ph in harmonics:
        r = r + amp * np.cos(k * _ANGLES + ph + s / 90.0)
    x, y = ra * r * np.cos(_ANGLES), rb * r * np.sin(_ANGLES)
    c, sn = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.stack([cx + c * x - sn * y, cy + sn * x + c * y], axis=1)


def anatomy_labels(anat: Anatomy, s: float, size: int, spacing: float) -> np.ndarray:
    """The ``(size, size)`` uint8 tissue label map of the slice at body position ``s`` mm."""
    lab = np.zeros((size, size), np.uint8)
    shift = 4
    to_px = lambda p: np.round((p / spacing + size / 2 - 0.5) * (1 << shift)).astype(np.int32)  # noqa: E731
    wa, wb = _body_scale(s)
    a, b = anat.a_mm * wa, anat.b_mm * wb
    # couch below the body, then the body (skin)
    ty = anat.cy_mm + b + 6
    table = np.array([[-0.45 * size * spacing, ty], [0.45 * size * spacing, ty],
                      [0.45 * size * spacing, ty + 8], [-0.45 * size * spacing, ty + 8]])
    cv2.fillPoly(lab, [to_px(table)], TABLE, lineType=cv2.LINE_8, shift=shift)
    cv2.fillPoly(lab, [to_px(_polygon(anat.cx_mm, anat.cy_mm, a, b, 0, anat.harmonics, s))], SKIN, shift=shift)
    for st in anat.structures:
        f = _profile(st, s)
        if f <= 0.05:
            continue
        ra, rb = (st.ra, st.rb) if st.absolute_mm else (st.ra * a * f, st.rb * b * f)
        poly = _polygon(anat.cx_mm + st.cx * a, anat.cy_mm + st.cy * b, ra, rb, st.angle,
                        st.harmonics or anat.harmonics, s)
        cv2.fillPoly(lab, [to_px(poly)], st.label, shift=shift)
    return lab


def phantom_volume(anat: Anatomy, s_positions: np.ndarray, size: int, spacing: float, bank: np.ndarray,
                   rng: np.random.Generator, noise_hu: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """HU ``(Z, size, size)`` float32 and tissue labels (uint8) of the slices at ``s_positions`` mm."""
    z = len(s_positions)
    hu = np.empty((z, size, size), np.float32)
    labels = np.empty((z, size, size), np.uint8)
    blur = max(0.35, 0.45 / spacing)               # ~0.45 mm partial-volume blur
    scaled = bank * np.float32(noise_hu)
    for i, s in enumerate(s_positions):
        lab = anatomy_labels(anat, float(s), size, spacing)
        labels[i] = lab
        img = cv2.GaussianBlur(anat.hu[lab], (0, 0), blur)
        np.add(img, _noise_crop(scaled, (size, size), rng), out=hu[i])
    return hu, labels


# ---------------------------------------------------------------- lesions

@dataclass(frozen=True)
class LesionSpec:
    """One lesion: centre (z index float, row, col in pixels), semi-axes in mm, shape and contrast."""

    center: tuple[float, float, float]          # (z slice index, y px, x px), continuous
    radii_mm: tuple[float, float, float]        # in-plane long, in-plane short, z
    angle: float                                # in-plane rotation (radians)
    tilt: float                                 # rotation about the y axis (radians)
    harmonics: tuple                            # ((wx, wy, wz, amp, phase), ...)
    border_mm: float                            # sigmoid border width
    target_hu: float                            # HU inside the lesion (before noise)
    core_hu: float = 0.0                        # extra HU in the centre (necrosis < 0)


def sample_long_diameters(rng: np.random.Generator, n: int, mu: float = LESION_LOGNORMAL_MU,
                          sigma: float = LESION_LOGNORMAL_SIGMA,
                          clip: tuple[float, float] = LESION_DIAMETER_RANGE_MM) -> np.ndarray:
    """Long diameters (mm) from the log-normal fit; values outside ``clip`` are redrawn."""
    out = rng.lognormal(mu, sigma, n)
    bad = (out < clip[0]) | (out > clip[1])
    while bad.any():
        out[bad] = rng.lognormal(mu, sigma, int(bad.sum()))
        bad = (out < clip[0]) | (out > clip[1])
    return out


def random_shape(rng: np.random.Generator, long_mm: float
                 ) -> tuple[tuple[float, float, float], float, float, tuple, float]:
    """Semi-axes (mm), angle, tilt, radius harmonics and border width for a lesion of ``long_mm``."""
    short = long_mm * float(rng.uniform(0.55, 0.95))
    zd = long_mm * float(rng.uniform(0.6, 1.0))
    amp_total = float(rng.uniform(0.03, 0.12))
    harm = []
    for _ in range(4):
        w = rng.normal(size=3)
        w = w / np.linalg.norm(w) * float(rng.uniform(1.5, 3.5))
        harm.append((float(w[0]), float(w[1]), float(w[2]), amp_total / 2, float(rng.uniform(0, 2 * np.pi))))
    return ((long_mm / 2, short / 2, zd / 2), float(rng.uniform(0, np.pi)), float(rng.uniform(-0.25, 0.25)),
            tuple(harm), float(rng.uniform(0.4, 1.2)))


def lesion_extent_px(spec: LesionSpec, spacing: tuple[float, float, float]) -> np.ndarray:
    """Half-size of the lesion's bounding block ``(dz, dy, dx)`` in voxels (radius x 1.3 + 6 border widths)."""
    r = max(spec.radii_mm) * 1.3 + 6 * spec.border_mm        # the soft border is < 0.3% of the contrast there
    return np.array([r / spacing[2], r / spacing[1], r / spacing[0]])


def render_lesion(hu: np.ndarray, spec: LesionSpec, spacing: tuple[float, float, float]
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Blend the lesion into ``hu`` (Z, Y, X) in place; return its block and hard mask (bool, block-shaped).

    ``spacing`` is (x, y, z) mm.  The mask is ``soft >= 0.5``.
    """
    ext = lesion_extent_px(spec, spacing)
    c = np.asarray(spec.center, dtype=np.float64)
    lo = np.maximum(np.floor(c - ext).astype(int), 0)
    hi = np.minimum(np.ceil(c + ext).astype(int) + 1, hu.shape)
    block = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    if any(b <= a for a, b in zip(lo, hi)):
        return block, np.zeros([max(0, b - a) for a, b in zip(lo, hi)], bool)
    zz, yy, xx = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)), indexing="ij")
    # millimetres from the centre: x right, y down, z along the slices
    px = (xx - c[2]) * spacing[0]
    py = (yy - c[1]) * spacing[1]
    pz = (zz - c[0]) * spacing[2]
    ca, sa = np.cos(spec.angle), np.sin(spec.angle)
    u = ca * px + sa * py
    v = -sa * px + ca * py
    ct, st = np.cos(spec.tilt), np.sin(spec.tilt)
    u, w = ct * u + st * pz, -st * u + ct * pz
    ra, rb, rc = spec.radii_mm
    rho = np.sqrt((u / ra) ** 2 + (v / rb) ** 2 + (w / rc) ** 2) + 1e-6
    du, dv, dw = u / (ra * rho), v / (rb * rho), w / (rc * rho)
    pert = np.ones_like(rho)
    for wx, wy, wz, amp, ph in spec.harmonics:
        pert += amp * np.sin(wx * du + wy * dv + wz * dw + ph)
    edge = rho / pert                          # 1 on the lesion border
    r_mean = (ra * rb * rc) ** (1 / 3)
    soft = 1.0 / (1.0 + np.exp(np.clip((edge - 1.0) * r_mean / spec.border_mm, -30, 30)))
    sub = hu[block]
    local = ndimage.gaussian_filter(sub, sigma=(0, 2.0, 2.0), mode="nearest")
    change = spec.target_hu - local
    if spec.core_hu:
        change = change + spec.core_hu * np.clip(1 - edge / 0.6, 0, 1)
    sub += (soft * change).astype(np.float32)
    return block, soft >= 0.5
