"""The DeepLesion file layout: names, paths, the HU offset, 16-bit slice PNGs, series listing.

The one place these are written down (every other module imports them from here)::

    ROOT/Images_png/PPPPPP_SS_SS/III.png   16-bit PNG, stored value = HU + 32768
    ROOT/DL_info.csv                       one row per lesion (lesionprop.annotations)
    ROOT/series_info.csv                   optional: geometry of series (lesionprop.data.deeplesion)

A slice is named ``PPPPPP_SS_SS_III.png`` in annotation and prediction files
(patient, study, series; III = slice index, at least 3 digits, as DeepLesion's
``Key_slice_index``) and stored as ``Images_png/PPPPPP_SS_SS/III.png``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write

#: Offset of DeepLesion's 16-bit PNGs: stored value = HU + 32768.
HU_OFFSET = 32768
IMAGES_DIR = "Images_png"
#: a slice name: group 1 (``series``) = ``PPPPPP_SS_SS``, group 2 (``slice``) = slice index digits
SLICE_NAME_PATTERN = r"^(?P<series>\d{6}_\d{2}_\d{2})_(?P<slice>\d{3,})\.png$"
SERIES_PATTERN = r"^\d{6}_\d{2}_\d{2}$"
_SLICE_NAME = re.compile(SLICE_NAME_PATTERN)
_SERIES = re.compile(SERIES_PATTERN)


class SliceReadError(InputError):
    """A slice PNG that is missing, unreadable or not a single-channel 16-bit image."""


def series_name(patient: int, study: int, series_id: int) -> str:
    """``(89, 1, 1)`` -> ``'000089_01_01'``."""
    return f"{patient:06d}_{study:02d}_{series_id:02d}"


def check_series_name(name: str) -> str:
    if not _SERIES.match(name):
        raise InputError(f"series name must look like PPPPPP_SS_SS (patient_study_series), got {name!r}")
    return name


def slice_file_name(series: str, slice_index: int) -> str:
    """``('000089_01_01', 38)`` -> ``'000089_01_01_038.png'``."""
    return f"{series}_{slice_index:03d}.png"


def parse_file_name(name: str) -> tuple[str, int]:
    """``'000089_01_01_038.png'`` -> ``('000089_01_01', 38)``; ValueError otherwise."""
    m = _SLICE_NAME.match(name)
    if not m:
        raise InputError(f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {name!r}")
    return m.group(1), int(m.group(2))


def series_dir(root: str | os.PathLike, series: str) -> Path:
    """``ROOT/Images_png/SERIES``."""
    return Path(root) / IMAGES_DIR / series


def slice_path(root: str | os.PathLike, series: str, slice_index: int) -> Path:
    """Path of one slice PNG: ``ROOT/Images_png/SERIES/III.png``."""
    return series_dir(root, series) / f"{slice_index:03d}.png"


def list_series(root: str | os.PathLike) -> list[str]:
    """Series folders under ``ROOT/Images_png`` (sorted; other entries ignored; [] when absent)."""
    try:
        entries = os.scandir(Path(root) / IMAGES_DIR)
    except FileNotFoundError:
        return []
    with entries:
        return sorted(e.name for e in entries if e.is_dir() and _SERIES.match(e.name))


def list_slices(folder: str | os.PathLike) -> dict[int, os.DirEntry]:
    """Slice index -> directory entry of every ``III.png`` in a series folder ({} when absent)."""
    out: dict[int, os.DirEntry] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return out
    for e in entries:
        if e.name.endswith(".png") and e.name[:-4].isdigit():
            out[int(e.name[:-4])] = e
    return out


def decode_png(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one DeepLesion slice PNG -> ``(H, W)`` int16 HU.  Errors name the file.

    ``shape``: the ``(rows, cols)`` the annotations give (``Image_size``); a PNG of
    another size is refused rather than read against boxes meant for another grid.
    """
    import cv2                  # imported where used: ~20 ms of every command's start
    path = Path(path)
    if not path.is_file():
        raise SliceReadError(f"slice file not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise SliceReadError(f"cannot decode slice PNG (corrupt or not a PNG): {path}")
    if raw.ndim != 2:
        raise SliceReadError(f"slice PNG must be single-channel, got shape {raw.shape}: {path}")
    if raw.dtype != np.uint16:
        raise SliceReadError(f"slice PNG must be 16-bit (HU + 32768), got {raw.dtype}: {path}")
    if shape is not None and raw.shape != tuple(int(v) for v in shape):
        raise SliceReadError(f"slice PNG is {raw.shape[0]}x{raw.shape[1]}, the annotations' Image_size "
                             f"says {shape[0]}x{shape[1]}: {path}")
    # uint16 v -> int16 (v - 32768) is a flip of the top bit, done in place.
    np.bitwise_xor(raw, np.uint16(0x8000), out=raw)
    return raw.view(np.int16)


def encode_hu(hu: np.ndarray) -> np.ndarray:
    """HU -> the stored uint16 (``HU + 32768``, clipped to 0..65535; float HU rounded to nearest)."""
    hu = np.asarray(hu)
    if hu.dtype.kind == "f":
        return np.clip(np.rint(hu) + HU_OFFSET, 0, 65535).astype(np.uint16)
    return np.clip(hu.astype(np.int32) + HU_OFFSET, 0, 65535).astype(np.uint16)


def write_png16(path: str | os.PathLike, hu: np.ndarray) -> Path:
    """Write one ``(H, W)`` HU slice as a 16-bit PNG, atomically (no partial file on a crash)."""
    import cv2                  # imported where used: ~20 ms of every command's start
    path = Path(path)
    ok, buf = cv2.imencode(".png", encode_hu(hu))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())
    return path


def write_slice(root: str | os.PathLike, series: str, slice_index: int, hu: np.ndarray) -> Path:
    """Write one ``(H, W)`` HU slice as ``ROOT/Images_png/SERIES/III.png``; returns the path."""
    return write_png16(slice_path(root, series, slice_index), hu)
