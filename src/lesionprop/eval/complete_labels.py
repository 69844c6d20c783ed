"""Complete-label test sets on sub-volumes: readers for truth.csv, the LENS pickle and the
Lesion Harvester pickles, LENS-style prediction pickles, and linked prediction CSVs.

Conventions (all readers return them):

* A *unit* is a sub-volume ``{series}_{top}-{bottom}`` (slice indices of the whole
  series, both ends included; names written with 3-digit indices, ``000001_01_01_103-115``).
* 3D boxes are ``[x1, y1, z1, x2, y2, z2]``: x, y in the file frame of the slices
  (DL_info ``Bounding_boxes`` numbers, see :mod:`lesionprop.boxes`), z = slice indices
  of the whole series.  2D boxes are ``[x1, y1, x2, y2]`` with their series slice.
* The LENS pickle ``{'val'|'test': {unit: n x 6 [x1, y1, z1, x2, y2, z2]}}`` has series
  z already.  The Lesion Harvester pickles have z = 0-based positions INSIDE the
  sub-volume: series slice = top + z.  Their 2D file ``{unit[.annot]: {z: [[x1, y1, x2,
  y2, z, z], ...]}}``; their ``3D-Box.pkl`` ``{unit: [[x1, y1, x2, y2, z1, z2], ...]}``
  (note the axis order).  LENS-style prediction pickles add a score column (n x 7),
  with or without the ``'val'|'test'`` level.

Pickles are read with :class:`RestrictedUnpickler`: dicts, lists, tuples, numbers,
strings, bytes and numpy arrays / scalars only; any other object is an error naming
the file, and nothing in the file runs.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesionprop.annotations import Source, as_annotations, read_annotations
from lesionprop.errors import InputError
from lesionprop.fileio import require_file
from lesionprop.predictions import read_predictions
from lesionprop.segments import segment_pairs

UNIT_RE = re.compile(r"^(\d{6}_\d{2}_\d{2})_(\d+)-(\d+)(?:\.annot)?$")
FORMATS = ("truth-csv", "lens", "harvester-2d", "harvester-3d")
#: what a truth.csv is, for errors about one (e.g. DL_info.csv given as ``--truth``)
TRUTH_HINT = ("; --truth expects a complete-label file (every lesion boxed on every slice, with a Lesion_id "
              "column naming the lesion, like the truth.csv `lesionprop synth` writes), not DL_info.csv")

#: the only globals a pickle may name (numpy array / scalar reconstruction; bytes of Python 2 pickles)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`_ALLOWED` (no code runs)."""

    def __init__(self, file, path: str | Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise InputError(f"{self.path}: the pickle holds a {module}.{name} object; only dicts, lists, tuples, "
                         "numbers, strings and numpy arrays are read (nothing in the file was run)")

    def persistent_load(self, pid: Any) -> Any:
        raise InputError(f"{self.path}: the pickle refers to a persistent object; refused")


def load_pickle(path: str | Path) -> Any:
    """Read a pickle through :class:`RestrictedUnpickler`; object arrays are refused too."""
    path = require_file(path, "pickle file")
    try:
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except ValueError:
        raise
    except Exception as exc:          # truncated or not a pickle
        raise InputError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    _check_plain(obj, path)
    return obj


_PLAIN = (dict, list, tuple, str, bytes, int, float, bool, type(None), np.generic)


def _check_plain(obj: Any, path) -> None:
    """Refuse anything but dicts, lists, tuples, numbers, strings and numpy arrays (a set or
    bytearray is built by opcodes, not by a global: caught here)."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                stack.extend(x.ravel().tolist())
            continue
        if not isinstance(x, _PLAIN):
            raise InputError(f"{path}: the pickle holds a {type(x).__name__}; only dicts, lists, tuples, "
                             "numbers, strings and numpy arrays are read")
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def parse_unit(name: str, path: str | Path = "") -> tuple[str, int, int]:
    """``'{series}_{top}-{bottom}[.annot]'`` -> (series, top, bottom)."""
    m = UNIT_RE.match(str(name))
    if not m or int(m.group(3)) < int(m.group(2)):
        raise InputError(f"{path}: sub-volume name {name!r} is not '{{series}}_{{top}}-{{bottom}}' "
                         "(e.g. 000001_01_01_103-115)")
    return m.group(1), int(m.group(2)), int(m.group(3))


def unit_name(series: str, top: int, bottom: int) -> str:
    return f"{series}_{int(top):03d}-{int(bottom):03d}"


@dataclass
class CompleteLabels:
    """Ground truth on sub-volumes (see the module docstring for frames).

    Units: ``units`` (U,) names, ``unit_series`` (U,) str, ``unit_top`` / ``unit_bottom`` (U,),
    ``unit_interval`` (U,) slice interval mm (NaN unknown).  3D lesions: ``boxes3d`` (M, 6),
    ``lesion_unit`` (M,), ``lesion_long_mm`` (M,) long diameter (NaN unknown).  2D boxes:
    ``boxes2d`` (K, 4), ``box_slice`` (K,) series slice, ``box_unit`` (K,), ``box_long_mm`` (K,).
    ``has3d`` / ``has2d``: which kinds the source holds.
    """

    source: str
    units: np.ndarray
    unit_series: np.ndarray
    unit_top: np.ndarray
    unit_bottom: np.ndarray
    boxes3d: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    lesion_unit: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    box_slice: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    box_unit: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    has3d: bool = False
    has2d: bool = False
    unit_interval: np.ndarray | None = None
    lesion_long_mm: np.ndarray | None = None
    box_long_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        u = len(self.units)
        if self.unit_interval is None:
            self.unit_interval = np.full(u, np.nan)
        if self.lesion_long_mm is None:
            self.lesion_long_mm = np.full(len(self.lesion_unit), np.nan)
        if self.box_long_mm is None:
            self.box_long_mm = np.full(len(self.box_unit), np.nan)

    @property
    def unit_patient(self) -> np.ndarray:
        """Patient index of each unit (from the series name), for resampling by patient."""
        return np.asarray([int(s[:6]) for s in self.unit_series], dtype=np.int64)


def _units(names: Sequence[str], path) -> tuple[np.ndarray, ...]:
    parsed = [parse_unit(n, path) for n in names]
    canon = [unit_name(*p) for p in parsed]
    if len(set(canon)) != len(canon):
        dup = next(c for c in canon if canon.count(c) > 1)
        raise InputError(f"{path}: sub-volume {dup} appears twice")
    return (np.asarray(canon, dtype=object), np.asarray([p[0] for p in parsed], dtype=object),
            np.asarray([p[1] for p in parsed], dtype=np.int64), np.asarray([p[2] for p in parsed], dtype=np.int64))


def _rows(value: Any, ncol: int, where: str) -> np.ndarray:
    """A list / array of boxes -> float (n, ncol); a clear error otherwise."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a list of {ncol}-number boxes, got {type(value).__name__}") from None
    if arr.size == 0:
        return np.zeros((0, ncol))
    if arr.ndim != 2 or arr.shape[1] != ncol:
        raise InputError(f"{where}: expected an n x {ncol} array of boxes, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: non-finite number in {arr[~np.isfinite(arr).all(1)][0].tolist()}")
    return arr


def _check_3d(boxes: np.ndarray, where: str) -> None:
    bad = np.flatnonzero((boxes[:, 3] < boxes[:, 0]) | (boxes[:, 4] < boxes[:, 1]) | (boxes[:, 5] < boxes[:, 2]))
    if bad.size:
        raise InputError(f"{where}: box {int(bad[0])} = {boxes[bad[0]].tolist()} has an end before its start")


def labels_from_3d(names: Sequence[str], per_unit: Sequence[np.ndarray], *, source: str, path) -> CompleteLabels:
    """Units and their (n, 6) ``[x1, y1, z1, x2, y2, z2]`` boxes in series z."""
    units, series, top, bottom = _units(names, path)
    boxes = np.concatenate([np.zeros((0, 6))] + list(per_unit))
    unit = np.repeat(np.arange(len(units), dtype=np.int64), [len(b) for b in per_unit])
    _check_3d(boxes, str(path))
    return CompleteLabels(source, units, series, top, bottom, boxes3d=boxes, lesion_unit=unit, has3d=True)


def lens_labels(obj: Any, path, split: str = "test") -> CompleteLabels:
    """The LENS pickle ``{'val'|'test': {unit: n x 6 [x1, y1, z1, x2, y2, z2]}}`` (series z)."""
    if not isinstance(obj, dict) or split not in obj:
        keys = list(obj)[:4] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: a LENS pickle has a {split!r} part; found {keys}")
    part = obj[split]
    if not isinstance(part, dict):
        raise InputError(f"{path}: [{split!r}] is a {type(part).__name__}, expected a dict of sub-volumes")
    names = list(part)
    return labels_from_3d(names, [_rows(part[n], 6, f"{path}: [{split!r}][{n!r}]") for n in names],
                          source="lens", path=path)


def harvester3d_labels(obj: dict, path) -> CompleteLabels:
    """``3D-Box.pkl``: ``{unit: [[x1, y1, x2, y2, z1, z2], ...]}``, z inside the sub-volume."""
    names = list(obj)
    per_unit = []
    for n in names:
        r = _rows(obj[n], 6, f"{path}: [{n!r}]")
        top = parse_unit(n, path)[1]
        per_unit.append(np.stack([r[:, 0], r[:, 1], r[:, 4] + top, r[:, 2], r[:, 3], r[:, 5] + top], 1))
    return labels_from_3d(names, per_unit, source="harvester-3d", path=path)


def harvester2d_labels(obj: dict, path) -> CompleteLabels:
    """``{unit[.annot]: {z: [[x1, y1, x2, y2, z, z], ...]}}``, z inside the sub-volume."""
    names = list(obj)
    units, series, top, bottom = _units(names, path)
    boxes, slices, unit = [], [], []
    for u, n in enumerate(names):
        per_slice = obj[n]
        if not isinstance(per_slice, dict):
            raise InputError(f"{path}: [{n!r}] is a {type(per_slice).__name__}, expected {{slice z: boxes}}")
        for z, value in per_slice.items():
            where = f"{path}: [{n!r}][{z!r}]"
            if isinstance(z, (bool, str, bytes)) or not np.isfinite(float(z)) or float(z) != int(float(z)):
                raise InputError(f"{where}: slice key must be an integer position inside the sub-volume")
            r = _rows(value, 6, where)
            if r.size and ((r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1])).any():
                raise InputError(f"{where}: a box has x2 < x1 or y2 < y1: {r[0].tolist()}")
            zz = int(float(z))
            if not 0 <= zz <= bottom[u] - top[u]:
                raise InputError(f"{where}: slice {zz} is outside the sub-volume (0..{bottom[u] - top[u]})")
            boxes.append(r[:, :4])
            slices.append(np.full(len(r), top[u] + zz, np.int64))
            unit.append(np.full(len(r), u, np.int64))
    cat = (lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape))
    return CompleteLabels("harvester-2d", units, series, top, bottom, boxes2d=cat(boxes, (0, 4)),
                          box_slice=cat(slices, 0).astype(np.int64), box_unit=cat(unit, 0).astype(np.int64),
                          has2d=True)


def detect_format(obj: Any, path) -> str:
    """``lens`` / ``harvester-2d`` / ``harvester-3d`` from a loaded pickle's layout."""
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict at the top of the pickle, got {type(obj).__name__}")
    keys = set(obj)
    if keys and keys <= {"val", "test", "train"}:
        return "lens"
    first = next(iter(obj.values()), None)
    if isinstance(first, dict):
        return "harvester-2d"
    if first is None or isinstance(first, (list, tuple, np.ndarray)):
        return "harvester-3d"
    raise InputError(f"{path}: cannot tell the pickle's layout (values are {type(first).__name__}); "
                     "give --truth-format")


def assign_units(unit_series: np.ndarray, unit_top: np.ndarray, unit_bottom: np.ndarray, series: np.ndarray,
                 slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(box, unit)``: every unit of the box's series whose slices hold the box's slice
    (a box in overlapping units belongs to each; a box outside every unit to none)."""
    unit_series = np.asarray(unit_series, dtype=object)
    series = np.asarray(series, dtype=object)
    slices = np.asarray(slices, dtype=np.int64)
    vocab, codes = np.unique(np.concatenate([unit_series, series]).astype(str), return_inverse=True)
    ucode, bcode = codes[:unit_series.size], codes[unit_series.size:]
    order = np.argsort(ucode, kind="stable")
    start = np.searchsorted(ucode[order], bcode, side="left")
    count = np.searchsorted(ucode[order], bcode, side="right") - start
    parts_b, parts_u = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _, b, pos in segment_pairs(np.arange(series.size), np.ones(series.size, np.int64), start, count):
        u = order[pos]
        inside = (slices[b] >= unit_top[u]) & (slices[b] <= unit_bottom[u])
        parts_b.append(b[inside])
        parts_u.append(u[inside])
    return np.concatenate(parts_b).astype(np.int64), np.concatenate(parts_u).astype(np.int64)


def _groups(unit: np.ndarray, lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (unit, lesion id) pairs (M, 2) sorted, and the group of each element."""
    key = np.stack([np.asarray(unit, np.int64), np.asarray(lesion, np.int64)], 1).reshape(-1, 2)
    if key.shape[0] == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    return uniq.astype(np.int64), inv.reshape(-1).astype(np.int64)


def span3d(group: np.ndarray, m: int, boxes: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """(m, 6) ``[x1, y1, z1, x2, y2, z2]`` spanning the 2D boxes and slices of each group."""
    cols = np.column_stack([boxes[:, 0], boxes[:, 1], slices, boxes[:, 2], boxes[:, 3], slices]).astype(np.float64)
    out = np.concatenate([np.full((m, 3), np.inf), np.full((m, 3), -np.inf)], 1)
    if len(group):
        np.minimum.at(out[:, :3], group, cols[:, :3])
        np.maximum.at(out[:, 3:], group, cols[:, 3:])
    return out


def merge_units(series: Sequence[str], lo: np.ndarray, hi: np.ndarray) -> list[tuple[str, int, int]]:
    """Slice intervals per series, overlapping or touching ones merged, sorted."""
    out: list[tuple[str, int, int]] = []
    for s, a, b in sorted(zip(series, np.asarray(lo).tolist(), np.asarray(hi).tolist())):
        if out and out[-1][0] == s and a <= out[-1][2] + 1:
            out[-1] = (s, out[-1][1], max(out[-1][2], b))
        else:
            out.append((s, int(a), int(b)))
    return out


def units_from_key_slices(lesions: Any, split: str = "test", window: int | None = None
                          ) -> list[tuple[str, int, int]]:
    """Sub-volumes of a split's human key slices: ``Slice_range`` (or K - window ... K + window
    inside it), overlapping ones of a series merged.  ``lesions``: Annotations (or Lesion rows)."""
    rows = as_annotations(lesions).select(split, sources=(Source.HUMAN,), drop_noisy=False)
    lo, hi = rows.slice_range[:, 0], rows.slice_range[:, 1]
    if window is not None:
        lo, hi = np.maximum(lo, rows.slice_index - window), np.minimum(hi, rows.slice_index + window)
    return merge_units(rows.series.tolist(), lo.astype(np.int64), hi.astype(np.int64))


def truth_labels(rows: Any, units: Sequence[tuple[str, int, int]] | None = None, *, split: str = "test",
                 path="truth.csv") -> CompleteLabels:
    """Complete labels from truth.csv rows (every lesion on every slice, ``Lesion_id`` column).

    ``rows``: Annotations (or Lesion rows).  Units: ``units`` when given, else each series'
    ``Slice_range`` of the split's rows.  A lesion's 3D box in a unit spans its boxes on the
    unit's slices; every box is also a 2D box.
    """
    ann = as_annotations(rows)
    if len(ann) and "Lesion_id" not in ann.extras:
        raise InputError(f"{path}, line 1: no Lesion_id column{TRUTH_HINT}")
    texts = ann.extra("Lesion_id") if "Lesion_id" in ann.extras else np.full(len(ann), "", dtype=object)
    for i, text in enumerate(texts.tolist()):
        if not text.strip().lstrip("-").isdigit():
            where = f"line {int(ann.line[i])}" if ann.line[i] > 0 else f"row {i + 1} ({ann.file_name[i]})"
            raise InputError(f"{path}, {where}, column Lesion_id = {text!r}: not an integer{TRUTH_HINT}")
    keep = ann.mask(split, sources=None, drop_noisy=False)
    sel = ann.take(keep)
    ids = [int(t) for t in texts[keep].tolist()]
    series = sel.series
    if units is None:
        units = merge_units(series.tolist(), sel.slice_range[:, 0], sel.slice_range[:, 1])
    u_series = np.asarray([u[0] for u in units], dtype=object)
    u_top = np.asarray([u[1] for u in units], dtype=np.int64)
    u_bottom = np.asarray([u[2] for u in units], dtype=np.int64)
    names = np.asarray([unit_name(*u) for u in units], dtype=object)
    sl = sel.slice_index.astype(np.int64)
    boxes = sel.boxes
    long_mm = sel.diameters_px.max(axis=1) * sel.spacing[:, 0]
    interval = dict(zip(series.tolist(), sel.spacing[:, 2].tolist()))
    r_idx, u_idx = assign_units(u_series, u_top, u_bottom, series, sl)
    lid = np.asarray(ids, dtype=np.int64)[r_idx]
    uniq, les_of = _groups(u_idx, lid)
    b3 = span3d(les_of, len(uniq), boxes[r_idx], sl[r_idx])
    les_long = np.full(len(uniq), -np.inf)
    np.maximum.at(les_long, les_of, np.nan_to_num(long_mm[r_idx], nan=-np.inf))
    return CompleteLabels("truth-csv", names, u_series, u_top, u_bottom, boxes3d=b3,
                          lesion_unit=uniq[:, 0],
                          boxes2d=boxes[r_idx], box_slice=sl[r_idx], box_unit=u_idx.astype(np.int64),
                          has3d=True, has2d=True,
                          unit_interval=np.asarray([interval.get(s, np.nan) for s in u_series], dtype=np.float64),
                          lesion_long_mm=np.where(np.isfinite(les_long), les_long, np.nan),
                          box_long_mm=long_mm[r_idx])


def read_complete_labels(path: str | Path, fmt: str = "auto", *, split: str = "test",
                         units: Sequence[tuple[str, int, int]] | None = None) -> CompleteLabels:
    """Read ground truth in any of :data:`FORMATS` (``auto``: ``.csv`` is truth.csv, a
    pickle's layout tells the rest).  ``split`` picks truth.csv rows and the LENS part;
    ``units`` (truth.csv only) the sub-volumes."""
    path = Path(path)
    if fmt not in FORMATS + ("auto",):
        raise InputError(f"truth format must be one of auto, {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "auto":
        fmt = "truth-csv" if path.suffix.lower() == ".csv" else None
    if fmt == "truth-csv":
        return truth_labels(read_annotations(path), units, split=split, path=path)
    obj = load_pickle(path)
    fmt = fmt or detect_format(obj, path)
    if fmt == "lens":
        return lens_labels(obj, path, split)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of sub-volumes, got {type(obj).__name__}")
    return harvester2d_labels(obj, path) if fmt == "harvester-2d" else harvester3d_labels(obj, path)


@dataclass
class Detections3D:
    """Predicted 3D lesions split by the truth's units.

    ``unit`` (P,), ``boxes3d`` (P, 6) ``[x1, y1, z1, x2, y2, z2]``, ``scores`` (P,); per-slice
    boxes when known (``has2d``): ``boxes2d`` (Q, 4), ``box_slice`` (Q,), ``box_lesion`` (Q,)
    index into P.  ``outside``: input boxes (or lesions) in no unit of the truth.
    """

    unit: np.ndarray
    boxes3d: np.ndarray
    scores: np.ndarray
    boxes2d: np.ndarray
    box_slice: np.ndarray
    box_lesion: np.ndarray
    has2d: bool
    outside: int = 0


def detections_from_boxes(labels: CompleteLabels, series: np.ndarray, slices: np.ndarray, boxes: np.ndarray,
                          scores: np.ndarray, lesion_id: np.ndarray) -> Detections3D:
    """Per-slice boxes with a lesion id -> 3D lesions per unit: a lesion's boxes on a unit's
    slices form one detection, its 3D box spans them, its score is their maximum."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    slices = np.asarray(slices, dtype=np.int64)
    b, u = assign_units(labels.unit_series, labels.unit_top, labels.unit_bottom, series, slices)
    uniq, grp = _groups(u, np.asarray(lesion_id, dtype=np.int64)[b])
    score = np.full(len(uniq), -np.inf)
    np.maximum.at(score, grp, np.asarray(scores, dtype=np.float64)[b])
    outside = int(np.asarray(series).size - np.unique(b).size)
    return Detections3D(uniq[:, 0], span3d(grp, len(uniq), boxes[b], slices[b]), score, boxes[b], slices[b],
                        grp, True, outside)


def read_linked_predictions(path: str | Path, labels: CompleteLabels) -> Detections3D:
    """A per-box prediction CSV with a ``Lesion_id`` column (what ``lesionprop link`` writes)."""
    import pandas as pd

    preds = read_predictions(path)
    ids = pd.read_csv(path, usecols=lambda c: c == "Lesion_id", dtype=str, keep_default_na=False,
                      skip_blank_lines=False)
    if "Lesion_id" not in ids.columns:
        raise InputError(f"{path}, line 1: no Lesion_id column; link the boxes into lesions first "
                         "(lesionprop link --predictions P --out BOXES.csv)")
    text = ids["Lesion_id"].to_numpy(dtype=object)[preds.lines - 2]
    num = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy()
    bad = np.flatnonzero(~np.isfinite(num) | (num != np.round(num)))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}, line {int(preds.lines[i])}: column Lesion_id = {text[i]!r} is not an integer")
    return detections_from_boxes(labels, preds.series_names[preds.series_index], preds.slices, preds.boxes,
                                 preds.scores, num.astype(np.int64))


def read_prediction_pickle(path: str | Path, labels: CompleteLabels, split: str = "test") -> Detections3D:
    """LENS-style predictions ``[{'val'|'test':] {unit: n x 7 [x1, y1, z1, x2, y2, z2, score]}``
    (series z).  Units not in the truth are ignored (counted in ``outside``)."""
    obj = load_pickle(path)
    if isinstance(obj, dict) and set(obj) and set(obj) <= {"val", "test", "train"}:
        if split not in obj:
            raise InputError(f"{path}: no {split!r} part (found {sorted(obj)})")
        obj = obj[split]
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of sub-volumes, got {type(obj).__name__}")
    index = {n: i for i, n in enumerate(labels.units)}
    units, rows, outside = [], [], 0
    for name, value in obj.items():
        r = _rows(value, 7, f"{path}: [{name!r}]")
        _check_3d(r[:, :6], f"{path}: [{name!r}]")
        u = index.get(unit_name(*parse_unit(name, path)))
        if u is None:
            outside += len(r)
            continue
        units.append(np.full(len(r), u, np.int64))
        rows.append(r)
    r = np.concatenate(rows) if rows else np.zeros((0, 7))
    z = np.zeros(0, np.int64)
    return Detections3D(np.concatenate(units) if units else z, r[:, :6], r[:, 6], np.zeros((0, 4)), z, z, False,
                        outside)
