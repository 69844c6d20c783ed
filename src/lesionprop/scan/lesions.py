"""3D lesions from linked per-slice boxes: the lesion table and the label volume (pure numpy).

Box and voxel conventions
-------------------------
Input boxes are xyxy in the **pixel frame** of the display-orientation slices
(0-based continuous, ``file - 1``; pixel column ``c`` covers ``[c, c + 1)``), one
per row with its slice index ``z`` (0-based position in the volume, slice 0 the
most superior).  Voxel index ``i`` has its centre at pixel-frame ``i + 0.5``, so:

* a box covers the voxels whose centres lie inside it, ``ceil(x1 - 0.5) ..
  floor(x2 - 0.5)`` (inclusive); a box smaller than a voxel covers the voxel
  holding its centre;
* its edges in voxel coordinates are ``x1 - 0.5`` and ``x2 - 0.5`` (fractional),
  and slices ``z1..z2`` extend from ``z1 - 0.5`` to ``z2 + 0.5``; the patient box
  is the min / max of the 8 corners mapped by the volume's affine (LPS mm).

Per lesion: ``score`` = its best box score; key slice = the slice of its largest
box; long / short axis = the longer / shorter side of that box in mm: the long and
short axis (RECIST-style) of the lesion's model on its key slice, the ellipse inscribed
in the box (a contour of the lesion itself would give other diameters); volume = sum
over its boxes of the inscribed ellipse's area times the slice interval, in mL; mean /
max HU over its mask voxels (:func:`lesion_hu`).  Reported voxel boxes are on the
input's own grid (:func:`file_voxel_box`).

A lesion's **mask** is the union of its boxes' voxels (:func:`lesion_masks`): what its
own DICOM SEG segment holds, overlaps with other lesions included.  The label volume
(:func:`label_volume`) holds one id per voxel, so where boxes of several lesions overlap
the better box score wins, and a lesion can lose some or all of its voxels there:
:func:`label_coverage` counts, per lesion, its mask voxels, how many of them carry its
id in the label volume, and which lesions hold the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionprop.data.volumes import voxel_to_patient


@dataclass(frozen=True)
class LesionTable:
    """One entry per lesion, ordered by score (best first); ``id`` = 1, 2, ...

    ``box_lesion`` (B,) maps every input box to its lesion's row (-1: dropped).
    """

    id: np.ndarray               # (L,) int
    score: np.ndarray            # (L,) float
    n_boxes: np.ndarray          # (L,) int
    key_z: np.ndarray            # (L,) int, slice of the largest box
    key_box: np.ndarray          # (L, 4) pixel frame, the largest box
    voxel_box: np.ndarray        # (L, 6) int inclusive x1, y1, z1, x2, y2, z2
    patient_box: np.ndarray      # (L, 6) mm, LPS min x, y, z, max x, y, z
    long_mm: np.ndarray          # (L,)
    short_mm: np.ndarray         # (L,)
    volume_ml: np.ndarray        # (L,)
    box_lesion: np.ndarray       # (B,) int

    def __len__(self) -> int:
        return int(self.id.shape[0])


def box_voxels(boxes: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """``(N, 4)`` pixel-frame boxes -> ``(N, 4)`` inclusive voxel ranges x1, y1, x2, y2 (see module docstring)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.ceil(b[:, :2] - 0.5)
    hi = np.floor(b[:, 2:] - 0.5)
    centre = np.floor((b[:, :2] + b[:, 2:]) / 2)
    empty = hi < lo
    lo = np.where(empty, centre, lo)
    hi = np.where(empty, centre, hi)
    limit = np.array([shape_yx[1] - 1, shape_yx[0] - 1], dtype=np.float64)
    lo = np.clip(lo, 0, limit)
    hi = np.clip(hi, 0, limit)
    return np.column_stack([lo, hi]).astype(np.int64)


def lesion_table(ids: np.ndarray, z: np.ndarray, boxes: np.ndarray, scores: np.ndarray, affine: np.ndarray,
                 spacing: tuple[float, float, float], shape_zyx: tuple[int, int, int],
                 max_lesions: int | None = None) -> LesionTable:
    """Group boxes by linked ``ids`` (any integers) into lesions; keep the ``max_lesions`` best-scoring."""
    ids = np.asarray(ids).reshape(-1)
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = ids.size
    if not (n == z.size == len(b) == s.size):
        raise ValueError(f"lesion_table: {n} ids, {z.size} slices, {len(b)} boxes, {s.size} scores")
    sx, sy, sz = (float(v) for v in spacing)
    uniq, grp = np.unique(ids, return_inverse=True)
    g = uniq.size
    best = np.full(g, -np.inf)
    np.maximum.at(best, grp, s)
    order = np.lexsort((np.arange(g), -best))            # best score first, ties by linked id
    if max_lesions is not None:
        order = order[:max_lesions]
    rank = np.full(g, -1, dtype=np.int64)
    rank[order] = np.arange(order.size)
    row = rank[grp] if n else np.zeros(0, dtype=np.int64)
    keep = row >= 0
    L = order.size
    bk, zk, rk, sk = b[keep], z[keep], row[keep], s[keep]
    w_mm = (bk[:, 2] - bk[:, 0]) * sx
    h_mm = (bk[:, 3] - bk[:, 1]) * sy
    area = w_mm * h_mm
    # largest box per lesion: sort by (lesion, -area), first of each lesion
    by = np.lexsort((-area, rk))
    first = by[np.r_[True, rk[by][1:] != rk[by][:-1]]] if by.size else by
    key = np.empty(L, dtype=np.int64)
    key[rk[first]] = first
    vox = box_voxels(bk, shape_zyx[1:])
    vbox = np.empty((L, 6), dtype=np.int64)
    vbox[:, :2] = np.iinfo(np.int64).max
    vbox[:, 3:5] = np.iinfo(np.int64).min
    np.minimum.at(vbox[:, 0], rk, vox[:, 0])
    np.minimum.at(vbox[:, 1], rk, vox[:, 1])
    np.maximum.at(vbox[:, 3], rk, vox[:, 2])
    np.maximum.at(vbox[:, 4], rk, vox[:, 3])
    zmin = np.full(L, np.iinfo(np.int64).max)
    zmax = np.full(L, np.iinfo(np.int64).min)
    np.minimum.at(zmin, rk, zk)
    np.maximum.at(zmax, rk, zk)
    vbox[:, 2], vbox[:, 5] = zmin, zmax
    # continuous extent in voxel coordinates -> 8 corners -> patient mm
    ext_lo = np.full((L, 2), np.inf)
    ext_hi = np.full((L, 2), -np.inf)
    np.minimum.at(ext_lo, rk, bk[:, :2])
    np.maximum.at(ext_hi, rk, bk[:, 2:])
    lo = np.column_stack([ext_lo - 0.5, zmin - 0.5])
    hi = np.column_stack([ext_hi - 0.5, zmax + 0.5])
    corners = np.stack([np.where(np.array([(c >> k) & 1 for k in range(3)], dtype=bool), hi, lo)
                        for c in range(8)], axis=1)                       # (L, 8, 3)
    mm = voxel_to_patient(affine, corners.reshape(-1, 3)).reshape(L, 8, 3)
    n_boxes = np.bincount(rk, minlength=L)
    vol = np.bincount(rk, weights=np.pi / 4 * area * sz, minlength=L) / 1000.0
    return LesionTable(
        id=np.arange(1, L + 1), score=best[order], n_boxes=n_boxes, key_z=zk[key], key_box=bk[key],
        voxel_box=vbox, patient_box=np.column_stack([mm.min(1), mm.max(1)]),
        long_mm=np.maximum(w_mm, h_mm)[key], short_mm=np.minimum(w_mm, h_mm)[key], volume_ml=vol,
        box_lesion=np.where(keep, row, -1))


def label_volume(table: LesionTable, z: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                 shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """``(Z, Y, X)`` uint16: every kept box's voxels set to its lesion id (a better score wins overlaps)."""
    labels = np.zeros(shape_zyx, dtype=np.uint16)
    keep = np.flatnonzero(table.box_lesion >= 0)
    if keep.size == 0:
        return labels
    s = np.asarray(scores, dtype=np.float64)[keep]
    keep = keep[np.argsort(s, kind="stable")]             # ascending score: the best is written last
    vox = box_voxels(np.asarray(boxes)[keep], shape_zyx[1:])
    zs = np.asarray(z, dtype=np.int64)[keep]
    lid = table.id[table.box_lesion[keep]].astype(np.uint16)
    for (x1, y1, x2, y2), k, v in zip(vox, zs, lid):     # one rectangle assignment per box
        labels[k, y1:y2 + 1, x1:x2 + 1] = v
    return labels


@dataclass(frozen=True)
class LesionMask:
    """One lesion's voxels: ``mask`` (bool, ``(z, y, x)``) = the union of its boxes inside its
    voxel box, whose first voxel is ``origin`` (z1, y1, x1) of the volume."""

    origin: tuple[int, int, int]
    mask: np.ndarray

    def region(self) -> tuple[slice, slice, slice]:
        """The mask's place in the volume: ``volume[m.region()]`` has the mask's shape."""
        return tuple(slice(o, o + n) for o, n in zip(self.origin, self.mask.shape))   # type: ignore[return-value]


def lesion_masks(table: LesionTable, z: np.ndarray, boxes: np.ndarray,
                 shape_zyx: tuple[int, int, int]) -> list[LesionMask]:
    """Per lesion (table order) the union of its boxes' voxels, overlaps with other lesions included."""
    vox = box_voxels(np.asarray(boxes).reshape(-1, 4), shape_zyx[1:])
    zs = np.asarray(z, dtype=np.int64).reshape(-1)
    out = []
    for i in range(len(table)):
        x1, y1, z1, x2, y2, z2 = (int(v) for v in table.voxel_box[i])
        mask = np.zeros((z2 - z1 + 1, y2 - y1 + 1, x2 - x1 + 1), dtype=bool)
        for j in np.flatnonzero(table.box_lesion == i):
            bx1, by1, bx2, by2 = vox[j]
            mask[zs[j] - z1, by1 - y1:by2 - y1 + 1, bx1 - x1:bx2 - x1 + 1] = True
        out.append(LesionMask((z1, y1, x1), mask))
    return out


@dataclass(frozen=True)
class LabelCoverage:
    """How much of each lesion (table order) the label volume shows.

    ``voxels`` (L,): its mask's voxels; ``in_label_map`` (L,): those carrying its id in the
    label volume; ``covered_by``: per lesion, the ids (ascending) holding its other voxels.
    """

    voxels: np.ndarray
    in_label_map: np.ndarray
    covered_by: list[tuple[int, ...]]

    def hidden(self, ids: np.ndarray) -> dict[int, tuple[int, ...]]:
        """Lesions with no voxel in the label volume: id -> the ids covering it."""
        return {int(ids[i]): self.covered_by[i] for i in np.flatnonzero(self.in_label_map == 0)}


def label_coverage(table: LesionTable, masks: list[LesionMask], labels: np.ndarray) -> LabelCoverage:
    """Compare each lesion's mask (:func:`lesion_masks`) with the label volume (:func:`label_volume`)."""
    voxels = np.zeros(len(table), dtype=np.int64)
    shown = np.zeros(len(table), dtype=np.int64)
    covered: list[tuple[int, ...]] = []
    for i, m in enumerate(masks):
        under = labels[m.region()][m.mask]
        lid = int(table.id[i])
        voxels[i] = under.size
        shown[i] = int((under == lid).sum())
        covered.append(tuple(int(v) for v in np.unique(under) if v != lid and v != 0))
    return LabelCoverage(voxels, shown, covered)


def lesion_hu(hu: np.ndarray, masks: list[LesionMask]) -> np.ndarray:
    """``(L, 2)`` mean and max HU over each lesion's mask voxels (NaN for an empty mask)."""
    out = np.full((len(masks), 2), np.nan)
    for i, m in enumerate(masks):
        values = hu[m.region()][m.mask]
        if values.size:
            out[i] = float(values.mean(dtype=np.float64)), float(values.max())
    return out


def file_voxel_box(display_box: np.ndarray, to_file) -> np.ndarray:
    """``(L, 6)`` inclusive display voxel boxes (x1, y1, z1, x2, y2, z2) -> the same boxes on the input's
    own grid (i1, j1, k1, i2, j2, k2): both corners mapped by ``to_file`` ((N, 3) -> (N, 3)), then
    min / max per axis (a flipped axis swaps them)."""
    b = np.asarray(display_box, dtype=np.int64).reshape(-1, 6)
    lo, hi = to_file(b[:, :3]), to_file(b[:, 3:])
    return np.column_stack([np.minimum(lo, hi), np.maximum(lo, hi)])


def table_rows(table: LesionTable, slice_numbers: np.ndarray, coverage: LabelCoverage | None = None, *,
               file_box: np.ndarray | None = None, hu: np.ndarray | None = None,
               key_refs: list[dict] | None = None) -> list[dict]:
    """Lesions as JSON-ready dicts (:data:`COLUMNS`); ``slice_numbers[z]`` = the slice's number (1 =
    most superior for an imported scan, the PNG's number in a DeepLesion-layout series).

    ``file_box``: :func:`file_voxel_box` (default: the display voxel box); ``hu``:
    :func:`lesion_hu`; ``key_refs``: per lesion the key slice's ``instance_number``, ``frame`` and
    ``slice_location`` (DICOM); ``coverage``: ``voxels``, ``voxels_in_label_map``, ``covered_by``.
    """
    box = table.voxel_box if file_box is None else np.asarray(file_box)
    rows = []
    for i in range(len(table)):
        z1, z2 = int(table.voxel_box[i, 2]), int(table.voxel_box[i, 5])
        lo, hi = table.patient_box[i, :3], table.patient_box[i, 3:]
        ref = key_refs[i] if key_refs is not None else {}
        row = {
            "id": int(table.id[i]), "score": round(float(table.score[i]), 6), "n_boxes": int(table.n_boxes[i]),
            "key_slice": int(slice_numbers[table.key_z[i]]), "slice_first": int(slice_numbers[z1]),
            "slice_last": int(slice_numbers[z2]),
            "key_instance_number": ref.get("instance_number"), "key_frame": ref.get("frame"),
            "key_slice_location": ref.get("slice_location"),
        }
        row.update({f"voxel_{a}{n}": int(v) for (a, n), v in zip(
            [(a, n) for n in (1, 2) for a in "ijk"], box[i])})
        row.update({
            "lps_x_min_mm": round(float(lo[0]), 3), "lps_y_min_mm": round(float(lo[1]), 3),
            "lps_z_min_mm": round(float(lo[2]), 3), "lps_x_max_mm": round(float(hi[0]), 3),
            "lps_y_max_mm": round(float(hi[1]), 3), "lps_z_max_mm": round(float(hi[2]), 3),
            "long_axis_mm": round(float(table.long_mm[i]), 2), "short_axis_mm": round(float(table.short_mm[i]), 2),
            "volume_ml": round(float(table.volume_ml[i]), 4),
            "hu_mean": None if hu is None or np.isnan(hu[i, 0]) else round(float(hu[i, 0]), 1),
            "hu_max": None if hu is None or np.isnan(hu[i, 1]) else int(round(float(hu[i, 1]))),
        })
        if coverage is not None:
            row.update(voxels=int(coverage.voxels[i]), voxels_in_label_map=int(coverage.in_label_map[i]),
                       covered_by=list(coverage.covered_by[i]))
        rows.append(row)
    return rows


COLUMNS: tuple[str, ...] = (
    "id", "score", "n_boxes", "key_slice", "slice_first", "slice_last",
    "key_instance_number", "key_frame", "key_slice_location",
    "voxel_i1", "voxel_j1", "voxel_k1", "voxel_i2", "voxel_j2", "voxel_k2",
    "lps_x_min_mm", "lps_y_min_mm", "lps_z_min_mm", "lps_x_max_mm", "lps_y_max_mm", "lps_z_max_mm",
    "long_axis_mm", "short_axis_mm", "volume_ml", "hu_mean", "hu_max", "voxels", "voxels_in_label_map", "covered_by",
)
