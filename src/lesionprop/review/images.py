"""A slice as the reviewer sees it: HU -> a grey PNG through a window preset.

The image is the stored slice at its own size (pixel frame: column c spans c .. c + 1, i.e.
c + 1 .. c + 2 in the file frame of the boxes); the page draws the boxes over it.
"""

from __future__ import annotations

import cv2
import numpy as np

from lesionprop.errors import InputError

#: name -> (level, width) in HU: the usual radiology presets
WINDOWS: dict[str, tuple[float, float]] = {
    "soft": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def window_u8(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU -> uint8 grey: level - width / 2 is black, level + width / 2 is white."""
    lo = level - width / 2.0
    grey = (np.asarray(hu, np.float32) - lo) * (255.0 / width)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def slice_png(hu: np.ndarray, window: str) -> bytes:
    """The PNG bytes of one HU slice in the window preset ``window`` (a key of :data:`WINDOWS`)."""
    if window not in WINDOWS:
        raise InputError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    ok, buf = cv2.imencode(".png", window_u8(hu, *WINDOWS[window]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:              # encoding a uint8 2-D array only fails on a broken OpenCV
        raise RuntimeError(f"OpenCV could not encode a {hu.shape} slice as PNG")
    return buf.tobytes()
