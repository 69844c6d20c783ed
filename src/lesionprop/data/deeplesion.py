"""DeepLesion's number lists and ``series_info.csv``: the geometry of series folders.

``DL_info.csv`` writes lists of numbers as ``"x, y, z"`` text; :func:`floats_text`,
:func:`num_text` and :func:`join_text` read and write them (the annotation table,
:mod:`lesionprop.annotations`, uses them too).  ``ROOT/series_info.csv`` holds one row per
series folder (spacing, size, slice range), for series without lesions (imported CT).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write


class AnnotationError(InputError):
    """A malformed annotation or series file: the message names file, line, column and value."""


def num_text(x: float, decimals: int = 4) -> str:
    """A number with at most ``decimals`` decimals, integers without a point."""
    if isinstance(x, (int, np.integer)) or float(x).is_integer():
        return str(int(x))
    text = f"{float(x):.{decimals}f}"
    return text.rstrip("0").rstrip(".") if decimals else text     # '.0f' has no point to trim to


def join_text(xs: Iterable[float], decimals: int = 4) -> str:
    """``(1.0, 2.5)`` -> ``'1, 2.5'``."""
    return ", ".join(num_text(x, decimals) for x in xs)


def floats_text(text: str, n: int | None, col: str) -> tuple[float, ...]:
    """``'1, 2.5'`` -> ``(1.0, 2.5)``; ValueError when not ``n`` numbers."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    vals = tuple(float(p) for p in parts)
    if n is not None and len(vals) != n:
        raise InputError(f"expected {n} numbers in {col}, got {len(vals)}")
    return vals


# ---------------------------------------------------------------- series_info.csv

SERIES_COLUMNS: tuple[str, ...] = ("Series", "Spacing_mm_px_", "Image_size", "Slice_range", "Source")


@dataclass(frozen=True)
class SeriesInfo:
    """Geometry of one series folder: (x, y, z) spacing in mm, (rows, cols), first/last slice."""

    series: str
    spacing: tuple[float, float, float]
    image_size: tuple[int, int]
    slice_range: tuple[int, int]
    source: str = ""


def write_series_info(path: str | os.PathLike, infos: Sequence[SeriesInfo]) -> None:
    """Write ``series_info.csv`` atomically (one row per series folder)."""
    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SERIES_COLUMNS)
        for s in infos:
            w.writerow([s.series, join_text(s.spacing, 6), join_text(s.image_size), join_text(s.slice_range), s.source])


def read_series_info(path: str | os.PathLike) -> dict[str, SeriesInfo]:
    """Read ``series_info.csv`` -> ``{series: SeriesInfo}``; errors name file and line."""
    path = Path(path)
    out: dict[str, SeriesInfo] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or list(reader.fieldnames[:4]) != list(SERIES_COLUMNS[:4]):
            raise AnnotationError(f"{path}, line 1: expected header {','.join(SERIES_COLUMNS)}")
        for row in reader:
            try:
                sp = floats_text(row["Spacing_mm_px_"], 3, "Spacing_mm_px_")
                size = floats_text(row["Image_size"], 2, "Image_size")
                sr = floats_text(row["Slice_range"], 2, "Slice_range")
            except (ValueError, TypeError) as exc:
                raise AnnotationError(f"{path}, line {reader.line_num}: {exc}") from None
            if not 1 <= sr[0] <= sr[1]:
                raise AnnotationError(f"{path}, line {reader.line_num}, column Slice_range = {row['Slice_range']!r}: "
                                      "expected first <= last, both >= 1")
            if not (size[0] >= 1 and size[1] >= 1 and all(v > 0 for v in sp)):
                raise AnnotationError(f"{path}, line {reader.line_num}: Image_size {row['Image_size']!r} and "
                                      f"Spacing_mm_px_ {row['Spacing_mm_px_']!r} must be positive")
            out[row["Series"]] = SeriesInfo(row["Series"], sp, (int(size[0]), int(size[1])),  # type: ignore[arg-type]
                                            (int(sr[0]), int(sr[1])), row.get("Source") or "")
    return out
