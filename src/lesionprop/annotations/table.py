"""Lesion annotations in the DeepLesion ``DL_info.csv`` schema, held column-wise.

Boxes (``Annotations.boxes``, ``Bounding_boxes``) are xyxy in the **file frame** (see
:mod:`lesionprop.boxes`): DeepLesion's reference loaders treat them as 1-based; convert
with :func:`lesionprop.boxes.file_to_pixel`.  Slice indices are those of the PNG names.

:class:`Annotations` holds one row per lesion box, in file order, as numpy columns, with
ONE selection method (:meth:`Annotations.select`: split, sources, noisy rows dropped) and
one grouping by key slice (:meth:`Annotations.by_key_slice`).  Pseudo-labels are made
with :meth:`Annotations.derive` and appended with :func:`concat`.

Every row keeps the text of its 18 DL_info fields (``text``), so writing a table back
reproduces the input byte for byte (column order, quoting, number formats).  Two optional
trailing columns, ``Source`` and ``Score``, mark pseudo-labels; any further trailing
column (``Lesion_id`` in ``truth.csv``) is kept as text (``extras``).  The reader and the
writer are :mod:`lesionprop.annotation_csv`.  :class:`Lesion` is the row type (one row,
typed), for code that builds or reports single rows.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lesionprop.annotations.arrow_text import (
    arrow_bools, arrow_ints, arrow_strings, int_texts, join_texts, lit, num_texts, objects_of, reformat_texts,
    repeat_text,
)
from lesionprop.data.deeplesion import (  # noqa: F401  (AnnotationError: re-exported)
    AnnotationError, SeriesInfo, floats_text, join_text, num_text, read_series_info,
)
from lesionprop.data.layout import parse_file_name, series_name, slice_file_name
from lesionprop.errors import InputError

COLUMNS: tuple[str, ...] = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age", "Train_Val_Test",
)
SOURCE_COLUMNS: tuple[str, ...] = ("Source", "Score")
LESION_TYPES = {
    1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung",
    6: "kidney", 7: "soft tissue", 8: "pelvis", -1: "unknown",
}


class Split(enum.IntEnum):
    """``Train_Val_Test``."""

    TRAIN = 1
    VAL = 2
    TEST = 3

    @classmethod
    def parse(cls, value: "Split | str | int | None") -> "Split | None":
        """``'train'|'val'|'test'|1|2|3`` -> the split; ``'all'`` or None -> None (every split)."""
        if value is None or value == "all":
            return None
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in (1, 2, 3):
            return cls(int(value))
        raise InputError(f"split must be one of train, val, test, all; got {value!r}")


class Source(str, enum.Enum):
    """Who made a row (``Source`` column; empty or absent = ``human``).  ``reviewed``: a
    pseudo-label a person accepted or redrew in ``lesionprop review``."""

    HUMAN = "human"
    MINED = "mined"
    PROPAGATED = "propagated"
    DISTILLED = "distilled"
    REVIEWED = "reviewed"

    def __str__(self) -> str:
        return self.value


SOURCES: tuple[str, ...] = tuple(s.value for s in Source)


# ---------------------------------------------------------------- the row type

@dataclass(frozen=True)
class Lesion:
    """One row of ``DL_info.csv`` (typed).  ``box`` is in the file frame; ``spacing`` is
    (x, y, z) mm; ``age`` is NaN when empty; ``raw`` holds the original field strings."""

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

    def fields(self) -> list[str]:
        """The 18 DL_info fields as strings (original text when read from a file)."""
        if self.raw is not None:
            return list(self.raw[: len(COLUMNS)])
        age = "" if math.isnan(self.age) else num_text(self.age)
        return [self.file_name, str(self.patient), str(self.study), str(self.series_id), str(self.key_slice),
                join_text(self.measurement), join_text(self.box), join_text(self.diameters),
                join_text(self.location, 6), str(self.lesion_type), str(self.noisy), join_text(self.slice_range),
                join_text(self.spacing, 6), join_text(self.image_size), join_text(self.windows), self.gender, age,
                str(self.split)]


def derived_lesion(template: Lesion, *, slice_index: int, box: Sequence[float], source: Source | str,
                   score: float, lesion_type: int = -1) -> Lesion:
    """One pseudo-label row, the row-by-row definition of :meth:`Annotations.derive` (which
    makes many at once): ``template``'s series, slice ``slice_index``, ``box`` (file frame)."""
    x1, y1, x2, y2 = (float(c) for c in box)
    w, h = template.image_size[1], template.image_size[0]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    loc_z = template.location[2] if len(template.location) == 3 else float("nan")
    return replace(template, file_name=slice_file_name(template.series, slice_index), key_slice=int(slice_index),
                   measurement=(x1, cy, x2, cy, cx, y1, cx, y2), box=(x1, y1, x2, y2),
                   diameters=(max(x2 - x1, y2 - y1), min(x2 - x1, y2 - y1)),
                   location=(cx / max(w, 1), cy / max(h, 1), loc_z), lesion_type=int(lesion_type), noisy=0,
                   source=Source(source).value, score=float(score), extras={}, raw=None)


def _strings(values: Any, n: int) -> pa.Array:
    """A pyarrow string array of length ``n`` (from a numpy array, a list or a pyarrow array)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = arrow_strings(np.asarray(values, dtype=object).reshape(-1))
    if len(values) != n:
        raise ValueError(f"text column of {len(values)} rows, expected {n}")
    return values


# ---------------------------------------------------------------- grouping

@dataclass
class KeySliceGroups:
    """Rows grouped by key slice (``File_name``), key slices in order of first appearance.

    ``rows`` (R,): row indices grouped by key slice, file order inside one;
    ``start``/``count`` (K,): segments of ``rows``; ``file_names``/``series``/``slices`` (K,).
    """

    rows: np.ndarray
    start: np.ndarray
    count: np.ndarray
    file_names: np.ndarray
    series: np.ndarray
    slices: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def first_row(self) -> np.ndarray:
        """Row index of the first row of each key slice."""
        return self.rows[self.start]


# ---------------------------------------------------------------- the table

#: typed columns: name -> (dtype, trailing shape)
TYPED: dict[str, tuple[Any, tuple[int, ...]]] = {
    "file_name": (object, ()), "series": (object, ()), "slice_index": (np.int64, ()),   # of the File_name
    "patient": (np.int64, ()), "study": (np.int64, ()), "series_id": (np.int64, ()),
    "boxes": (np.float64, (4,)), "diameters_px": (np.float64, (2,)), "location": (np.float64, (3,)),
    "lesion_type": (np.int64, ()), "noisy": (bool, ()), "slice_range": (np.int64, (2,)),
    "spacing": (np.float64, (3,)), "image_size": (np.int64, (2,)), "gender": (object, ()),
    "age": (np.float64, ()), "split": (np.int64, ()), "source": (object, ()), "score": (np.float64, ()),
    "line": (np.int64, ()),
}
#: vector columns -> their DataFrame columns (:meth:`Annotations.to_pandas`); image_size is (height, width)
_SPREAD: dict[str, tuple[str, ...]] = {
    "boxes": ("x1", "y1", "x2", "y2"), "diameters_px": ("long_axis_px", "short_axis_px"),
    "location": ("location_x", "location_y", "location_z"), "slice_range": ("slice_first", "slice_last"),
    "spacing": ("spacing_x", "spacing_y", "spacing_z"), "image_size": ("image_height", "image_width"),
}


class Annotations:
    """Lesion rows as columns (see :data:`TYPED`; ``location`` and ``diameters_px`` are NaN
    where a row has not 3 / 2 numbers), plus ``text`` (column name -> the 18 fields' text)
    and ``extras`` (extra column name -> text), both as pyarrow string arrays (they are only
    written back, never computed on).  ``line``: line in ``path`` (0: not read from a file)."""

    file_name: np.ndarray
    series: np.ndarray
    slice_index: np.ndarray
    patient: np.ndarray
    study: np.ndarray
    series_id: np.ndarray
    boxes: np.ndarray
    diameters_px: np.ndarray
    location: np.ndarray
    lesion_type: np.ndarray
    noisy: np.ndarray
    slice_range: np.ndarray
    spacing: np.ndarray
    image_size: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    split: np.ndarray
    source: np.ndarray
    score: np.ndarray
    line: np.ndarray

    def __init__(self, columns: dict[str, np.ndarray], text: dict[str, np.ndarray],
                 extras: dict[str, np.ndarray] | None = None, path: str | None = None,
                 source_columns: bool = False) -> None:
        n = len(columns["file_name"])
        for name, (dtype, shape) in TYPED.items():
            col = np.asarray(columns[name], dtype=dtype).reshape((n, *shape))
            setattr(self, name, col)
        self.text = {c: _strings(text[c], n) for c in COLUMNS}
        self.extras = {k: _strings(v, n) for k, v in (extras or {}).items()}
        self.path = path
        self.source_columns = source_columns   # the file had Source/Score columns (kept on write)

    def __len__(self) -> int:
        return int(self.file_name.shape[0])

    def __repr__(self) -> str:
        return f"Annotations({len(self)} rows{f' from {self.path}' if self.path else ''})"

    def to_pandas(self):
        """The rows as a pandas DataFrame (one row per box, file order), for looking at in a notebook:
        the typed columns with vector columns spread out (``x1 y1 x2 y2`` file frame, ``spacing_x/y/z``,
        ...), ``split`` as its name, ``lesion_type_name``, then the extra columns (e.g. ``Lesion_id``)
        as text.  A copy: changing it changes nothing here."""
        import pandas as pd

        splits = np.array(["?"] + [s.name.lower() for s in Split], dtype=object)    # index = Train_Val_Test
        cols: dict[str, Any] = {"file_name": self.file_name.astype(str), "series": self.series.astype(str),
                                "slice_index": self.slice_index, "patient": self.patient, "study": self.study,
                                "series_id": self.series_id}
        for name, parts in _SPREAD.items():
            for j, part in enumerate(parts):
                cols[part] = getattr(self, name)[:, j].copy()
        cols.update(lesion_type=self.lesion_type,
                    lesion_type_name=[LESION_TYPES.get(int(t), str(int(t))) for t in self.lesion_type],
                    noisy=self.noisy, gender=self.gender.astype(str), age=self.age,
                    split=splits[np.where((self.split >= 1) & (self.split <= 3), self.split, 0)],
                    source=self.source.astype(str), score=self.score)
        for name in self.extras:
            cols[name] = self.extra(name).astype(str)
        return pd.DataFrame({k: np.array(v, copy=True) for k, v in cols.items()})

    @classmethod
    def empty(cls) -> "Annotations":
        cols = {k: np.zeros((0, *shape), dtype=dtype) for k, (dtype, shape) in TYPED.items()}
        return cls(cols, {c: arrow_strings([]) for c in COLUMNS})

    def _columns(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in TYPED}

    def take(self, index_or_mask: np.ndarray | Sequence[int]) -> "Annotations":
        """The rows at these indices (or where this mask holds), in that order."""
        idx = np.asarray(index_or_mask)
        if idx.dtype != bool:
            idx = idx.astype(np.int64).reshape(-1)
            pick = (lambda a: pc.take(a, arrow_ints(idx)))
        else:
            pick = (lambda a: pc.filter(a, arrow_bools(idx)))
        return Annotations({k: v[idx] for k, v in self._columns().items()},
                           {c: pick(v) for c, v in self.text.items()},
                           {k: pick(v) for k, v in self.extras.items()}, self.path, self.source_columns)

    def extra(self, name: str) -> np.ndarray:
        """Extra column ``name`` (e.g. ``Lesion_id``) as a numpy array of str."""
        if name not in self.extras:
            raise KeyError(f"{self.path or 'annotations'}: no column {name!r} (extra columns: {list(self.extras)})")
        return objects_of(self.extras[name])

    def mask(self, split: Split | str | int | None = None,
             sources: Iterable[Source | str] | None = (Source.HUMAN,), drop_noisy: bool = True) -> np.ndarray:
        """The boolean row mask of :meth:`select`."""
        keep = np.ones(len(self), dtype=bool)
        code = Split.parse(split)
        if code is not None:
            keep &= self.split == int(code)
        if sources is not None:
            keep &= np.isin(self.source, [Source(s).value for s in sources])
        if drop_noisy:
            keep &= ~self.noisy
        return keep

    def select(self, split: Split | str | int | None = None,
               sources: Iterable[Source | str] | None = (Source.HUMAN,), drop_noisy: bool = True) -> "Annotations":
        """Rows of ``split`` (None or ``'all'``: every split) whose Source is in ``sources`` (None:
        any), without ``Possibly_noisy`` rows when ``drop_noisy``; file order kept."""
        return self.take(self.mask(split, sources, drop_noisy))

    def by_key_slice(self) -> KeySliceGroups:
        """Rows grouped by ``File_name``, key slices in order of first appearance."""
        n = len(self)
        if n == 0:
            z = np.zeros(0, np.int64)
            return KeySliceGroups(z, z, z, np.zeros(0, object), np.zeros(0, object), z)
        uniq, first, inv = np.unique(self.file_name.astype(str), return_index=True, return_inverse=True)
        rank = np.empty(uniq.size, np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
        group = rank[inv.reshape(-1)]
        rows = np.argsort(group, kind="stable").astype(np.int64)
        count = np.bincount(group, minlength=uniq.size).astype(np.int64)
        start = np.cumsum(count) - count
        firsts = rows[start]
        return KeySliceGroups(rows, start, count, self.file_name[firsts], self.series[firsts],
                              self.slice_index[firsts])

    def groups(self) -> dict[str, np.ndarray]:
        """``File_name`` -> row indices on that slice (file order); key slices in first-seen order."""
        g = self.by_key_slice()
        return {str(f): g.rows[s:s + c] for f, s, c in zip(g.file_names, g.start.tolist(), g.count.tolist())}

    # ------------------------------------------------------------ rows
    def row(self, i: int) -> Lesion:
        """Row ``i`` as a :class:`Lesion` (original text kept, so it writes back unchanged)."""
        t = {c: self.text[c][i].as_py() for c in COLUMNS}
        return Lesion(
            file_name=str(self.file_name[i]), patient=int(self.patient[i]), study=int(self.study[i]),
            series_id=int(self.series_id[i]), key_slice=int(self.slice_index[i]),
            measurement=floats_text(t["Measurement_coordinates"], None, ""),
            box=tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
            diameters=floats_text(t["Lesion_diameters_Pixel_"], None, ""),
            location=floats_text(t["Normalized_lesion_location"], None, ""),
            lesion_type=int(self.lesion_type[i]), noisy=int(floats_text(t["Possibly_noisy"], 1, "")[0]),
            slice_range=tuple(int(v) for v in self.slice_range[i]),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in self.spacing[i]),  # type: ignore[arg-type]
            image_size=tuple(int(v) for v in self.image_size[i]),  # type: ignore[arg-type]
            windows=floats_text(t["DICOM_windows"], None, ""), gender=str(self.gender[i]), age=float(self.age[i]),
            split=int(self.split[i]), source=str(self.source[i]), score=float(self.score[i]),
            extras={k: v[i].as_py() for k, v in self.extras.items()},
            raw=tuple(t[c] for c in COLUMNS) if self.line[i] > 0 else None)

    def rows(self) -> list[Lesion]:
        return [self.row(i) for i in range(len(self))]

    @classmethod
    def from_lesions(cls, lesions: Iterable[Lesion], path: str | None = None) -> "Annotations":
        """Columns of :class:`Lesion` rows (their text: original when read, formatted otherwise)."""
        rows = list(lesions)
        if not rows:
            return cls.empty()

        def pad(vals: Sequence[float], n: int) -> tuple[float, ...]:
            return tuple(vals) if len(vals) == n else (float("nan"),) * n

        cols = {
            "file_name": [r.file_name for r in rows], "series": [r.series for r in rows],
            "slice_index": [parse_file_name(r.file_name)[1] for r in rows], "patient": [r.patient for r in rows],
            "study": [r.study for r in rows], "series_id": [r.series_id for r in rows],
            "boxes": [r.box for r in rows], "diameters_px": [pad(r.diameters, 2) for r in rows],
            "location": [pad(r.location, 3) for r in rows], "lesion_type": [r.lesion_type for r in rows],
            "noisy": [r.noisy != 0 for r in rows], "slice_range": [r.slice_range for r in rows],
            "spacing": [r.spacing for r in rows], "image_size": [r.image_size for r in rows],
            "gender": [r.gender for r in rows], "age": [r.age for r in rows], "split": [r.split for r in rows],
            "source": [Source(r.source).value for r in rows], "score": [r.score for r in rows],
            "line": [0] * len(rows),
        }
        fields = [r.fields() for r in rows]
        text = {c: [f[j] for f in fields] for j, c in enumerate(COLUMNS)}
        names = list(dict.fromkeys(k for r in rows for k in r.extras))
        extras = {k: [r.extras.get(k, "") for r in rows] for k in names}
        return cls(cols, text, extras, path)

    # ------------------------------------------------------------ pseudo-labels
    def derive(self, template: np.ndarray, *, slices: np.ndarray, boxes: np.ndarray, source: Source | str,
               scores: np.ndarray, lesion_type: np.ndarray | None = None) -> "Annotations":
        """New rows (pseudo-labels): row ``k`` on slice ``slices[k]`` of the series of row
        ``template[k]``, with box ``boxes[k]`` (file frame) and score ``scores[k]``.

        Patient/study/series, spacing, slice range, image size, windows, gender, age and
        split come from the template; measurement, diameters and location are derived from
        the box (RECIST axes unknown: the box width/height are used), ``Possibly_noisy`` is
        0, ``Coarse_lesion_type`` is ``lesion_type`` (default -1).  Extras are empty.
        """
        src = Source(source).value
        t = np.asarray(template, dtype=np.int64).reshape(-1)
        n = t.size
        cols = {k: v[t] for k, v in self._columns().items()}
        b = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        sl = np.asarray(slices, dtype=np.int64).reshape(n)
        types = np.full(n, -1, np.int64) if lesion_type is None else np.asarray(lesion_type, np.int64).reshape(n)
        x1, y1, x2, y2 = b.T
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        w, h = x2 - x1, y2 - y1
        size = cols["image_size"]
        loc = np.stack([cx / np.maximum(size[:, 1], 1), cy / np.maximum(size[:, 0], 1), cols["location"][:, 2]], 1)
        diam = np.stack([np.maximum(w, h), np.minimum(w, h)], 1)
        rows = arrow_ints(t)
        series = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(pc.take(self.text["File_name"], rows)), 0, 12)
        names = pc.binary_join_element_wise(series, lit("_"), pc.utf8_lpad(int_texts(sl), 3, "0"), lit(".png"),
                                            lit(""))
        cols.update(file_name=objects_of(names), slice_index=sl, boxes=b, diameters_px=diam,
                    location=loc, lesion_type=types, noisy=np.zeros(n, bool), source=np.full(n, src, dtype=object),
                    score=np.asarray(scores, np.float64).reshape(n), line=np.zeros(n, np.int64))
        fx1, fy1, fx2, fy2, fcx, fcy = (num_texts(v) for v in (x1, y1, x2, y2, cx, cy))
        age = cols["age"]
        text = {
            "File_name": names, "Patient_index": int_texts(cols["patient"]), "Study_index": int_texts(cols["study"]),
            "Series_ID": int_texts(cols["series_id"]), "Key_slice_index": int_texts(sl),
            "Measurement_coordinates": join_texts([fx1, fcy, fx2, fcy, fcx, fy1, fcx, fy2]),
            "Bounding_boxes": join_texts([fx1, fy1, fx2, fy2]),
            "Lesion_diameters_Pixel_": join_texts([num_texts(diam[:, 0]), num_texts(diam[:, 1])]),
            "Normalized_lesion_location": join_texts([num_texts(loc[:, j], 6) for j in range(3)]),
            "Coarse_lesion_type": int_texts(types), "Possibly_noisy": repeat_text("0", n),
            "Slice_range": reformat_texts(self.text["Slice_range"], t, 4),
            "Spacing_mm_px_": reformat_texts(self.text["Spacing_mm_px_"], t, 6),
            "Image_size": reformat_texts(self.text["Image_size"], t, 4),
            "DICOM_windows": reformat_texts(self.text["DICOM_windows"], t, 4),
            "Patient_gender": pc.utf8_trim_whitespace(pc.take(self.text["Patient_gender"], rows)),
            "Patient_age": pc.if_else(arrow_bools(np.isnan(age)), lit(""), num_texts(np.nan_to_num(age))),
            "Train_Val_Test": int_texts(cols["split"]),
        }
        empty = repeat_text("", n)
        return Annotations(cols, text, {k: empty for k in self.extras}, None, True)


def concat(parts: Sequence[Annotations]) -> Annotations:
    """Rows of ``parts`` one after the other (extra columns: union, empty where absent)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return Annotations.empty()
    names = list(dict.fromkeys(k for p in parts for k in p.extras))
    cols = {k: np.concatenate([getattr(p, k) for p in parts]) for k in TYPED}
    text = {c: pa.concat_arrays([p.text[c] for p in parts]) for c in COLUMNS}
    extras = {k: pa.concat_arrays([p.extras.get(k, repeat_text("", len(p))) for p in parts])
              for k in names}
    return Annotations(cols, text, extras, parts[0].path, any(p.source_columns for p in parts))


def as_annotations(rows: "Annotations | Iterable[Lesion]") -> Annotations:
    """``rows`` as :class:`Annotations` (a list of :class:`Lesion` is converted)."""
    return rows if isinstance(rows, Annotations) else Annotations.from_lesions(rows)


def series_geometry(root: str | os.PathLike, ann: "Annotations | Iterable[Lesion] | None" = None
                    ) -> dict[str, SeriesInfo]:
    """Spacing and size of every known series: ``ROOT/series_info.csv`` if present,
    completed (not overridden) by the first row of each series in ``ann``."""
    path = Path(root) / "series_info.csv"
    out = read_series_info(path) if path.is_file() else {}
    ann = as_annotations(ann) if ann is not None else None
    if ann is not None and len(ann):
        _, first = np.unique(ann.series.astype(str), return_index=True)
        for i in np.sort(first).tolist():
            s = str(ann.series[i])
            if s not in out:
                out[s] = SeriesInfo(s, tuple(float(v) for v in ann.spacing[i]),  # type: ignore[arg-type]
                                    tuple(int(v) for v in ann.image_size[i]),  # type: ignore[arg-type]
                                    tuple(int(v) for v in ann.slice_range[i]), "DL_info")  # type: ignore[arg-type]
    return out
