"""Figures of the ``detect`` page: windowed slices with the lesion's box and a scale bar.

Boxes are in the pixel frame of the display-orientation slices (0-based continuous, see
:mod:`lesionprop.scan.lesions`).  Every figure is written once per window preset
(:data:`WINDOWS`), so the page can switch windows without a script.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lesionprop.fileio import atomic_write

#: name -> (label, level, width) in HU
WINDOWS: dict[str, tuple[str, float, float]] = {
    "soft": ("soft tissue (W 400, L 40)", 40.0, 400.0),
    "lung": ("lung (W 1500, L -600)", -600.0, 1500.0),
    "bone": ("bone (W 1800, L 400)", 400.0, 1800.0),
}
WINDOW = WINDOWS["soft"][1:]  # level, width: the default
THUMB = 256                   # px, whole slice
CROP = 160                    # px, close-ups
BOX_BGR = (40, 220, 255)
BAR_MM = (1, 2, 5, 10, 20, 50, 100, 200)


def window_u8(hu: np.ndarray, level: float = WINDOW[0], width: float = WINDOW[1]) -> np.ndarray:
    """HU -> uint8 grey (soft-tissue window by default)."""
    lo = level - width / 2
    return (np.clip((np.asarray(hu, dtype=np.float32) - lo) / width, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())


def _draw(grey: np.ndarray, box: np.ndarray | None, scale: float, offset=(0.0, 0.0)) -> np.ndarray:
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if box is not None:
        x1, y1, x2, y2 = ((np.asarray(box, dtype=float) - np.r_[offset, offset]) * scale).tolist()
        cv2.rectangle(img, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), BOX_BGR, 1,
                      cv2.LINE_AA)
    return img


def bar_length_mm(mm_per_px: float, width_px: int) -> int:
    """The longest of :data:`BAR_MM` that fits in a quarter of the image width (at least the shortest)."""
    fits = [b for b in BAR_MM if b / mm_per_px <= width_px / 4]
    return fits[-1] if fits else BAR_MM[0]


def scale_bar(img: np.ndarray, mm_per_px: float) -> np.ndarray:
    """A horizontal bar of :func:`bar_length_mm` with its length written above it, bottom left (in place)."""
    h, w = img.shape[:2]
    mm = bar_length_mm(mm_per_px, w)
    length = max(1, int(round(mm / mm_per_px)))
    x0, y0 = 6, h - 7
    for colour, thick in (((0, 0, 0), 4), ((255, 255, 255), 2)):
        cv2.line(img, (x0, y0), (x0 + length, y0), colour, thick)
    label = f"{mm} mm"
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(img, label, (x0, y0 - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, thick, cv2.LINE_AA)
    return img


def _crop_window(box: np.ndarray, shape_yx: tuple[int, int]) -> tuple[int, int, int]:
    """Square window (x0, y0, side) around a box: 3x its larger side, at least 48 px, inside the slice."""
    h, w = shape_yx
    side = int(min(max(48, 3 * max(box[2] - box[0], box[3] - box[1])), h, w))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side


def lesion_figures(fig_dir: Path, lesion_id: int, hu: np.ndarray, key_z: int, key_box: np.ndarray,
                   boxes_by_z: dict[int, np.ndarray], mm_per_px: float = 1.0) -> dict[str, dict[str, str]]:
    """Write this lesion's figures in every window; returns ``{"slice" | "above" | "key" | "below":
    {window: relative path}}``.  ``mm_per_px``: the slice's column spacing (for the scale bars)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    h, w = hu.shape[1:]
    out: dict[str, dict[str, str]] = {}
    scale = THUMB / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    x0, y0, side = _crop_window(key_box, (h, w))
    s = CROP / side
    views = [("slice", key_z, None)] + [(tag, z, (x0, y0)) for tag, z in
                                        (("above", key_z - 1), ("key", key_z), ("below", key_z + 1))
                                        if 0 <= z < hu.shape[0]]
    for tag, z, corner in views:
        out[tag] = {}
        for name, (_, level, width) in WINDOWS.items():
            if corner is None:
                grey = cv2.resize(window_u8(hu[z], level, width), size, interpolation=cv2.INTER_AREA)
                img = scale_bar(_draw(grey, key_box, scale), mm_per_px / scale)
            else:
                crop = window_u8(hu[z, y0:y0 + side, x0:x0 + side], level, width)
                crop = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
                img = scale_bar(_draw(crop, boxes_by_z.get(z), s, corner), mm_per_px / s)
            file = f"lesion_{lesion_id:03d}_{tag}_{name}.png"
            _write_png(fig_dir / file, img)
            out[tag][name] = f"figures/{file}"
    return out
