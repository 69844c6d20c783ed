"""Geometry of a stack of DICOM frames (pure numpy, no file I/O).

A stored frame's pixel (row r, column c) lies at ``IPP + c * dc * u + r * dr * v`` (LPS mm),
``u`` = the first three Image Orientation (Patient) cosines (along a row, columns increase),
``v`` = the last three (down a column, rows increase), ``PixelSpacing`` = (dr, dc); the slice
normal is ``u x v``.  Pixel coordinates here are continuous with pixel (r, c) covering
``[r, r + 1) x [c, c + 1)`` (DICOM SR's SCOORD convention and the project's pixel frame).

**Gantry tilt.** The frames of a tilted acquisition are parallel planes, but each one's
Image Position moves along the table rather than along the plane normal, so the stack is
sheared: frame k sits ``d_k`` along the normal and is shifted in its own plane by ``(a_k, b_k)``
mm along (u, v).  :func:`shear_of` measures that from the positions (the Gantry/Detector Tilt
attribute is nominal and "not intended for mathematical computations", PS3.3 C.8.15.3.3), and
:func:`unshear` moves each frame back in its plane by linear interpolation onto a grid
whose frames are stacked along the normal, enlarged so no pixel of any frame is cut off:
the same correction dcm2niix writes as its ``_Tilt`` output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AXIAL_COSINE = 0.9          # a frame's axes must lie within ~25.8 degrees of the patient's x / y axes
STEP_TOLERANCE = 0.1        # a step may differ from the median by 10 %
SHEAR_DRIFT_PX = 0.05       # in-plane drift over the whole stack below this: not sheared
SHEAR_JITTER_MM = 0.05      # positions must follow one shear to this (else: not a tilt we can undo)
MAX_TILT_DEG = 30.0


def display_transform(orient: np.ndarray) -> tuple[bool, bool, bool] | None:
    """(transpose, flip rows, flip cols) taking a stored frame to display orientation (columns
    toward the patient's left, rows toward posterior); None when the frame is not near-axial."""
    orient = np.asarray(orient, dtype=float)
    row, col = orient[:3], orient[3:]
    ax_r, ax_c = int(np.argmax(np.abs(row))), int(np.argmax(np.abs(col)))
    if abs(row[ax_r]) < AXIAL_COSINE or abs(col[ax_c]) < AXIAL_COSINE or {ax_r, ax_c} != {0, 1}:
        return None
    transpose = ax_r == 1                 # stored columns run along patient y
    x_dir = row[0] if not transpose else col[0]
    y_dir = col[1] if not transpose else row[1]
    return transpose, bool(y_dir < 0), bool(x_dir < 0)


def plane_name(orient: np.ndarray) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique': the patient axis closest to the frame normal."""
    orient = np.asarray(orient, dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < AXIAL_COSINE:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def superior_first(positions: np.ndarray, orient: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(order, distance along the normal of each sorted frame, sign): frames sorted so the first is
    the most superior; ``sign * distance`` runs along LPS +z (superior)."""
    orient = np.asarray(orient, dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    proj = np.asarray(positions, dtype=float).reshape(-1, 3) @ normal
    sign = 1.0 if normal[2] >= 0 else -1.0
    order = np.argsort(-sign * proj, kind="stable")
    return order, proj[order], sign


@dataclass(frozen=True)
class StepCheck:
    """What is wrong with the spacing of sorted frames (``kind`` '' = nothing), at step ``i``
    (between frames i and i + 1), and the median step (mm)."""

    kind: str
    i: int
    step: float
    median: float


def check_steps(proj: np.ndarray) -> StepCheck:
    """Duplicate positions, gaps (a step > 1.5 x the median) or uneven steps among sorted frames."""
    steps = np.abs(np.diff(np.asarray(proj, dtype=float)))
    if steps.size == 0:
        return StepCheck("", -1, 0.0, 0.0)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        return StepCheck("duplicate", int(dup[0]), float(steps[dup[0]]), float(np.median(steps)))
    med = float(np.median(steps))
    for kind, bad in (("gap", steps > 1.5 * med), ("uneven", np.abs(steps - med) > STEP_TOLERANCE * med)):
        hit = np.flatnonzero(bad)
        if hit.size:
            return StepCheck(kind, int(hit[0]), float(steps[hit[0]]), med)
    return StepCheck("", -1, med, med)


@dataclass(frozen=True)
class Shear:
    """In-plane offsets of sorted frames relative to the first: ``shift_px`` (N, 2) in (rows,
    columns); ``angle_deg``: between the stacking direction and the normal; ``jitter_mm``: how
    far the offsets stray from one straight line (a tilt is one line)."""

    shift_px: np.ndarray
    angle_deg: float
    jitter_mm: float

    @property
    def sheared(self) -> bool:
        return bool(np.abs(self.shift_px).max(initial=0.0) >= SHEAR_DRIFT_PX)


def shear_of(positions: np.ndarray, orient: np.ndarray, pixel_spacing: np.ndarray) -> Shear:
    """Measure the shear of frames already sorted along the normal (module docstring)."""
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    orient = np.asarray(orient, dtype=float)
    u, v = orient[:3], orient[3:]
    n = np.cross(u, v)
    rel = p - p[0]
    d, a, b = rel @ n, rel @ u, rel @ v                      # normal, along columns, along rows (mm)
    dr, dc = (float(s) for s in pixel_spacing)
    if p.shape[0] < 2 or not np.any(d):
        return Shear(np.zeros((p.shape[0], 2)), 0.0, 0.0)
    # least squares through the first frame: a = ka * d, b = kb * d
    ka, kb = float(a @ d / (d @ d)), float(b @ d / (d @ d))
    jitter = float(np.hypot(a - ka * d, b - kb * d).max())
    angle = float(np.degrees(np.arctan(np.hypot(ka, kb))))
    return Shear(np.column_stack([b / dr, a / dc]), angle, jitter)


def unshear(frames: np.ndarray, shift_px: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, R, C) moved back in their planes onto an orthogonal grid (linear interpolation).

    Frame k's pixel (r, c) is at the grid's ``(r - shift_k + lo)`` where ``lo`` (2,) = the
    smallest shift (per axis): the grid is enlarged by ``ceil(max - min)`` rows / columns so every
    source pixel lands inside it; new pixels get ``fill``.  Returns (grid frames float32,
    ``lo`` in pixels): grid pixel (r, c) of frame k = source pixel ``(r, c) + lo - shift_k``.
    """
    from scipy import ndimage

    frames = np.asarray(frames, dtype=np.float32)
    shift = np.asarray(shift_px, dtype=float)
    lo, hi = np.floor(shift.min(axis=0)), shift.max(axis=0)
    extra = np.ceil(hi - lo).astype(int)
    n, rows, cols = frames.shape
    out = np.empty((n, rows + extra[0], cols + extra[1]), dtype=np.float32)
    for k in range(n):
        padded = np.full(out.shape[1:], fill, dtype=np.float32)
        padded[:rows, :cols] = frames[k]
        ndimage.shift(padded, shift[k] - lo, output=out[k], order=1, mode="constant", cval=fill, prefilter=False)
    return out, lo


def grid_positions(positions: np.ndarray, orient: np.ndarray, pixel_spacing: np.ndarray,
                   shift_px: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Image Position (Patient) of the unsheared grid's pixel (0, 0) in each frame (N, 3)."""
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    u, v = np.asarray(orient[:3], dtype=float), np.asarray(orient[3:], dtype=float)
    dr, dc = (float(s) for s in pixel_spacing)
    delta = (np.asarray(lo, dtype=float) - np.asarray(shift_px, dtype=float))   # (rows, cols) px
    return p + delta[:, :1] * dr * v + delta[:, 1:] * dc * u


def _display_grid(rows: int, cols: int, transform: tuple[bool, bool, bool]) -> np.ndarray:
    """(row, column) of the stored pixel behind each display pixel."""
    grid = np.stack(np.mgrid[:rows, :cols], axis=-1)
    transpose, flip_r, flip_c = transform
    if transpose:
        grid = grid.transpose(1, 0, 2)
    if flip_r:
        grid = grid[::-1, :]
    if flip_c:
        grid = grid[:, ::-1]
    return grid


def dicom_affine(positions: np.ndarray, orient: np.ndarray, pixel_spacing: np.ndarray,
                 size: tuple[int, int], transform: tuple[bool, bool, bool], dz: float) -> np.ndarray:
    """Display voxel (x, y, z) -> LPS mm, for frames already in display order (superior first).

    The display grid's first pixel and unit steps come from applying the display transform to
    the stored (row, column) index grid itself; ``positions`` are the stored pixel (0, 0)'s.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    orient = np.asarray(orient, dtype=float)
    dr, dc = (float(v) for v in pixel_spacing)
    to_mm = np.column_stack([orient[3:] * dr, orient[:3] * dc])          # (3, 2): (r, c) -> mm
    origin_rc = _display_grid(*size, transform)[0, 0].astype(float)
    steps = _display_grid(2, 2, transform)        # the steps do not depend on the size (1-px images too)
    x_step = to_mm @ (steps[0, 1] - steps[0, 0])
    y_step = to_mm @ (steps[1, 0] - steps[0, 0])
    if len(positions) > 1:
        z_step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        normal = np.cross(orient[:3], orient[3:])
        z_step = -abs(dz) * normal * (1.0 if normal[2] >= 0 else -1.0)   # slice order: superior first
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = x_step, y_step, z_step
    aff[:3, 3] = positions[0] + to_mm @ origin_rc
    return aff


def display_to_stored(xy: np.ndarray, stored_shape: tuple[int, int],
                      transform: tuple[bool, bool, bool]) -> np.ndarray:
    """Continuous display (x, y) points -> the stored frame's continuous (column, row).

    The display image is the stored one transposed (if asked), then flipped (rows, then
    columns), so the inverse undoes the flips first.  ``stored_shape`` = (rows, columns).
    """
    transpose, flip_r, flip_c = transform
    p = np.asarray(xy, dtype=float).reshape(-1, 2).copy()
    rows, cols = stored_shape
    h, w = (cols, rows) if transpose else (rows, cols)      # the display image's size
    if flip_c:
        p[:, 0] = w - p[:, 0]
    if flip_r:
        p[:, 1] = h - p[:, 1]
    if transpose:
        p = p[:, ::-1]
    return p
