"""The DeepLesion annotation file (``DL_info.csv``) and on-disk layout.

Layout of a dataset root::

    ROOT/Images_png/PPPPPP_SS_SS/III.png   16-bit PNG, value = HU + 32768
    ROOT/DL_info.csv                       one row per lesion (18 columns)
    ROOT/series_info.csv                   optional: spacing of series without lesions
    ROOT/truth.csv                         synthetic data only: every lesion on every slice

Boxes in the file (``Bounding_boxes``) are in the *file frame* (see
:mod:`lesionprop.boxes`): the reference loaders treat them as 1-based.  This module
keeps them in the file frame; convert with :func:`lesionprop.boxes.file_to_pixel`.

Rows keep the exact field strings they were read with, so writing a table back
reproduces the input byte for byte (header, column order, quoting, number
formats).  Two optional trailing columns, ``Source`` and ``Score``, mark
pseudo-labels; any further trailing column (``Lesion_id`` in ``truth.csv``) is
kept as text.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lesionprop.fileio import atomic_write

COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)
SOURCE_COLUMNS: tuple[str, ...] = ("Source", "Score")
SOURCES = ("human", "mined", "propagated", "distilled")
SPLITS = {"train": 1, "val": 2, "test": 3}
LESION_TYPES = {
    1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung",
    6: "kidney", 7: "soft tissue", 8: "pelvis", -1: "unknown",
}
_FILE_RE = re.compile(r"^(\d{6})_(\d{2})_(\d{2})_(\d{3,})\.png$")


class AnnotationError(ValueError):
    """A malformed annotation file: the message names file, line, column and value."""


@dataclass(frozen=True)
class Lesion:
    """One row of ``DL_info.csv`` (typed), plus its original field strings.

    ``box`` is in the file frame.  ``spacing`` is (x, y, z) in mm, z being the
    slice interval.  ``age`` is NaN when the file leaves it empty or NaN.
    """

    file_name: str
    patient: int
    study: int
    series_id: int
    key_slice: int
    measurement: tuple[float, ...]
    box: tuple[float, float, float, float]
    diameters: tuple[float, ...]
    location: tuple[float, ...]
    lesion_type: int
    noisy: int
    slice_range: tuple[int, int]
    spacing: tuple[float, float, float]
    image_size: tuple[int, int]
    windows: tuple[float, ...]
    gender: str
    age: float
    split: int
    source: str = "human"
    score: float = float("nan")
    extras: dict[str, str] = field(default_factory=dict, compare=False)
    raw: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def series(self) -> str:
        """Series folder name ``PPPPPP_SS_SS``."""
        return series_name(self.patient, self.study, self.series_id)

    @property
    def split_name(self) -> str:
        return {v: k for k, v in SPLITS.items()}.get(self.split, str(self.split))

    def fields(self) -> list[str]:
        """The 18 DL_info fields as strings (original text when unchanged)."""
        if self.raw is not None:
            return list(self.raw[: len(COLUMNS)])
        return _format_fields(self)


def series_name(patient: int, study: int, series_id: int) -> str:
    return f"{patient:06d}_{study:02d}_{series_id:02d}"


def slice_file_name(series: str, slice_index: int) -> str:
    """``('000089_01_01', 38)`` -> ``'000089_01_01_038.png'``."""
    return f"{series}_{slice_index:03d}.png"


def parse_file_name(name: str) -> tuple[str, int]:
    """``'000089_01_01_038.png'`` -> ``('000089_01_01', 38)``; ValueError otherwise."""
    m = _FILE_RE.match(name)
    if not m:
        raise ValueError(f"not a DeepLesion slice name (PPPPPP_SS_SS_III.png): {name!r}")
    return f"{m.group(1)}_{m.group(2)}_{m.group(3)}", int(m.group(4))


def slice_path(root: str | os.PathLike, series: str, slice_index: int) -> Path:
    """Path of one slice PNG: ``ROOT/Images_png/SERIES/III.png``."""
    return Path(root) / "Images_png" / series / f"{slice_index:03d}.png"


# ---------------------------------------------------------------- parsing

def _floats(text: str, n: int | None, col: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    vals = tuple(float(p) for p in parts)
    if n is not None and len(vals) != n:
        raise ValueError(f"expected {n} numbers in {col}, got {len(vals)}")
    return vals


def _parse_row(values: Sequence[str], header: Sequence[str]) -> Lesion:
    v = dict(zip(header, values))
    age_text = v["Patient_age"].strip()
    age = float(age_text) if age_text and age_text.lower() != "nan" else float("nan")
    source = v.get("Source", "").strip() or "human"
    if source not in SOURCES:
        raise ValueError(f"Source must be one of {', '.join(SOURCES)}, got {source!r}")
    score_text = v.get("Score", "").strip()
    score = float(score_text) if score_text else float("nan")
    box = _floats(v["Bounding_boxes"], 4, "Bounding_boxes")
    if not all(math.isfinite(x) for x in box) or box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"Bounding_boxes must be finite x1, y1, x2, y2 with x2 >= x1, y2 >= y1, got {box}")
    sr = _floats(v["Slice_range"], 2, "Slice_range")
    size = _floats(v["Image_size"], 2, "Image_size")
    extras = {k: v[k] for k in header[len(COLUMNS):] if k not in SOURCE_COLUMNS}
    name = v["File_name"].strip()
    parse_file_name(name)
    return Lesion(
        file_name=name,
        patient=int(v["Patient_index"]),
        study=int(v["Study_index"]),
        series_id=int(v["Series_ID"]),
        key_slice=int(v["Key_slice_index"]),
        measurement=_floats(v["Measurement_coordinates"], None, "Measurement_coordinates"),
        box=box,  # type: ignore[arg-type]
        diameters=_floats(v["Lesion_diameters_Pixel_"], None, "Lesion_diameters_Pixel_"),
        location=_floats(v["Normalized_lesion_location"], None, "Normalized_lesion_location"),
        lesion_type=int(float(v["Coarse_lesion_type"])),
        noisy=int(float(v["Possibly_noisy"])),
        slice_range=(int(sr[0]), int(sr[1])),
        spacing=_floats(v["Spacing_mm_px_"], 3, "Spacing_mm_px_"),  # type: ignore[arg-type]
        image_size=(int(size[0]), int(size[1])),
        windows=_floats(v["DICOM_windows"], None, "DICOM_windows"),
        gender=v["Patient_gender"].strip(),
        age=age,
        split=int(float(v["Train_Val_Test"])),
        source=source,
        score=score,
        extras=extras,
        raw=tuple(values),
    )


def read_annotations(path: str | os.PathLike) -> list[Lesion]:
    """Read a ``DL_info.csv``-schema file (with or without Source/Score, extras).

    Raises :class:`AnnotationError` naming the file, line, column and value of
    the first malformed row, or FileNotFoundError for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise AnnotationError(f"{path}: empty file, expected the DL_info.csv header") from None
        if tuple(header[: len(COLUMNS)]) != COLUMNS:
            missing = [c for c in COLUMNS if c not in header]
            raise AnnotationError(
                f"{path}, line 1: header is not the DL_info.csv schema "
                f"(missing or out of order: {missing or 'column order differs'})"
            )
        lesions = []
        for values in reader:
            line = reader.line_num
            if not values or all(not x.strip() for x in values):
                continue
            if len(values) != len(header):
                raise AnnotationError(
                    f"{path}, line {line}: expected {len(header)} fields, got {len(values)}: {values[:3]}..."
                )
            try:
                lesions.append(_parse_row(values, header))
            except (ValueError, KeyError) as exc:
                col, val = _locate_bad_field(values, header)
                raise AnnotationError(f"{path}, line {line}, column {col} = {val!r}: {exc}") from None
    return lesions


def _locate_bad_field(values: Sequence[str], header: Sequence[str]) -> tuple[str, str]:
    """Best effort: the first field that fails its own parse (for error messages)."""
    checks = {
        "File_name": lambda s: parse_file_name(s.strip()),
        "Patient_index": int, "Study_index": int, "Series_ID": int, "Key_slice_index": int,
        "Bounding_boxes": lambda s: _floats(s, 4, "Bounding_boxes"),
        "Coarse_lesion_type": float, "Possibly_noisy": float, "Train_Val_Test": float,
        "Slice_range": lambda s: _floats(s, 2, "Slice_range"),
        "Spacing_mm_px_": lambda s: _floats(s, 3, "Spacing_mm_px_"),
        "Image_size": lambda s: _floats(s, 2, "Image_size"),
        "Score": lambda s: float(s) if s.strip() else None,
        "Source": lambda s: SOURCES.index(s.strip() or "human"),
    }
    for col, val in zip(header, values):
        fn = checks.get(col)
        if fn is None:
            continue
        try:
            fn(val)
        except (ValueError, TypeError):
            return col, val
    return "Bounding_boxes", dict(zip(header, values)).get("Bounding_boxes", "")


# ---------------------------------------------------------------- writing

def _num(x: float, decimals: int = 4) -> str:
    """Format a number with at most ``decimals`` decimals, integers without a point."""
    if isinstance(x, (int, np.integer)) or float(x).is_integer():
        return str(int(x))
    return f"{float(x):.{decimals}f}".rstrip("0").rstrip(".")


def _join(xs: Iterable[float], decimals: int = 4) -> str:
    return ", ".join(_num(x, decimals) for x in xs)


def _format_fields(les: Lesion) -> list[str]:
    age = "" if math.isnan(les.age) else _num(les.age)
    return [
        les.file_name, str(les.patient), str(les.study), str(les.series_id), str(les.key_slice),
        _join(les.measurement), _join(les.box), _join(les.diameters), _join(les.location, 6),
        str(les.lesion_type), str(les.noisy), _join(les.slice_range), _join(les.spacing, 6),
        _join(les.image_size), _join(les.windows), les.gender, age, str(les.split),
    ]


def write_annotations(
    path: str | os.PathLike,
    lesions: Sequence[Lesion],
    *,
    with_source: bool | None = None,
    extra_columns: Sequence[str] = (),
) -> None:
    """Write ``lesions`` in the DL_info.csv schema, atomically.

    ``with_source``: add the ``Source`` and ``Score`` columns (default: when any
    row is not human).  ``extra_columns``: further trailing columns, filled
    from each row's ``extras``.  Rows read from a file keep their original text.
    """
    if with_source is None:
        with_source = any(les.source != "human" or not math.isnan(les.score) for les in lesions)
    header = list(COLUMNS) + (list(SOURCE_COLUMNS) if with_source else []) + list(extra_columns)
    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for les in lesions:
            row = les.fields()
            if with_source:
                score = "" if math.isnan(les.score) else f"{les.score:.6f}".rstrip("0").rstrip(".")
                row += [les.source, score]
            row += [les.extras.get(c, "") for c in extra_columns]
            w.writerow(row)


def derived_lesion(
    template: Lesion,
    *,
    slice_index: int,
    box: Sequence[float],
    source: str,
    score: float,
    lesion_type: int = -1,
) -> Lesion:
    """A new row on ``slice_index`` of ``template``'s series (a pseudo-label).

    Patient/study/series, spacing, slice range, image size, windows, gender, age
    and split come from ``template``; measurement, diameters and location are
    derived from the box (RECIST axes unknown: the box diagonals' lengths are not
    claimed, the box width/height are used), ``Possibly_noisy`` is 0.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    x1, y1, x2, y2 = (float(c) for c in box)
    w, h = template.image_size[1], template.image_size[0]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    loc_z = template.location[2] if len(template.location) == 3 else float("nan")
    return replace(
        template,
        file_name=slice_file_name(template.series, slice_index),
        key_slice=int(slice_index),
        measurement=(x1, cy, x2, cy, cx, y1, cx, y2),
        box=(x1, y1, x2, y2),
        diameters=(max(x2 - x1, y2 - y1), min(x2 - x1, y2 - y1)),
        location=(cx / max(w, 1), cy / max(h, 1), loc_z),
        lesion_type=int(lesion_type),
        noisy=0,
        source=source,
        score=float(score),
        extras={},
        raw=None,
    )


# ---------------------------------------------------------------- selections

def select_split(lesions: Iterable[Lesion], split: str) -> list[Lesion]:
    """Rows of ``split`` (``train|val|test|all``)."""
    if split == "all":
        return list(lesions)
    if split not in SPLITS:
        raise ValueError(f"split must be one of train, val, test, all; got {split!r}")
    code = SPLITS[split]
    return [les for les in lesions if les.split == code]


def drop_noisy(lesions: Iterable[Lesion]) -> list[Lesion]:
    """Rows with ``Possibly_noisy == 0``."""
    return [les for les in lesions if les.noisy == 0]


def group_by_slice(lesions: Iterable[Lesion]) -> dict[str, list[Lesion]]:
    """``File_name`` -> rows on that slice, in file order."""
    out: dict[str, list[Lesion]] = {}
    for les in lesions:
        out.setdefault(les.file_name, []).append(les)
    return out


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
            w.writerow([s.series, _join(s.spacing, 6), _join(s.image_size), _join(s.slice_range), s.source])


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
                sp = _floats(row["Spacing_mm_px_"], 3, "Spacing_mm_px_")
                size = _floats(row["Image_size"], 2, "Image_size")
                sr = _floats(row["Slice_range"], 2, "Slice_range")
            except (ValueError, TypeError) as exc:
                raise AnnotationError(f"{path}, line {reader.line_num}: {exc}") from None
            out[row["Series"]] = SeriesInfo(row["Series"], sp, (int(size[0]), int(size[1])),  # type: ignore[arg-type]
                                            (int(sr[0]), int(sr[1])), row.get("Source") or "")
    return out


def series_geometry(root: str | os.PathLike, lesions: Iterable[Lesion] = ()) -> dict[str, SeriesInfo]:
    """Spacing and size of every known series: ``ROOT/series_info.csv`` if present,
    completed (not overridden) by the rows of ``lesions``."""
    path = Path(root) / "series_info.csv"
    out = read_series_info(path) if path.is_file() else {}
    for les in lesions:
        if les.series not in out:
            out[les.series] = SeriesInfo(les.series, les.spacing, les.image_size, les.slice_range, "DL_info")
    return out
