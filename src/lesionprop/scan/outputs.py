"""Files of ``lesionprop detect``: lesions.csv / lesions.json, lesions.nii.gz, lesions_seg.dcm.

Arrays arrive in display orientation (``(Z, Y, X)``, see :mod:`lesionprop.data.volumes`).
``lesions.nii.gz`` goes back onto the input's voxel grid with the input's affine
(:func:`lesionprop.data.volumes.to_source_grid`); the DICOM SEG's frames are the
slices holding a lesion, in their stored row / column order (the display transform
undone), optionally cropped in-plane to the lesions' union box, each placed by its Plane
Position (a resampled gantry tilt's frames lie in their source slices' planes, moved as the
grid was).  The SEG references the source images with the UIDs of :func:`source_datasets`
(generated ones where an anonymised source has none).  One segment per lesion (segment number
= lesion id), in one of two forms (:func:`plan_seg`): each segment the lesion's whole mask
(segments may overlap) while that fits the memory budget, else the label volume's ids.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesionprop import __version__
from lesionprop.data.volumes import CTVolume, to_source_grid, to_stored
from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write
from lesionprop.scan.lesions import COLUMNS, LabelCoverage, LesionMask


def write_tables(out: Path, rows: list[dict], header: dict) -> None:
    """``lesions.csv`` (one row per lesion, :data:`COLUMNS`; lists as ``;``-separated ids) and
    ``lesions.json`` (``header`` + ``lesions``)."""
    with atomic_write(out / "lesions.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows({k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    with atomic_write(out / "lesions.json") as fh:
        json.dump({**header, "lesions": rows}, fh, indent=1)
        fh.write("\n")


def write_label_nifti(path: Path, vol: CTVolume, labels_zyx: np.ndarray) -> None:
    """The label volume as NIfTI on the input's grid (uint16, sform = qform = the input's affine)."""
    import nibabel as nib

    data, affine = to_source_grid(vol, labels_zyx)
    img = nib.Nifti1Image(data.astype(np.uint16), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_intent("label")
    with atomic_write(path, "wb") as fh:
        fh.write(gzip.compress(img.to_bytes(), compresslevel=6))


def _stored_orientation(labels_zyx: np.ndarray, meta: dict) -> np.ndarray:
    """Undo the load's display transform (flips, then transpose): frames as the DICOM files store them.
    ``(Z, Y, X, ...)``: trailing axes are kept."""
    return to_stored(labels_zyx, meta)


def source_datasets(vol: CTVolume) -> list:
    """The source images as the derived objects reference them: headers (no pixel data) with the
    volume's Study / Series / Frame of Reference UIDs and each image's SOP Class / Instance UIDs
    (generated ones where the source has none, :attr:`lesionprop.data.ct.DicomSeries.generated`).

    One dataset per display slice for single-frame series (display order), one for a multi-frame
    image.  The files on disk are not changed."""
    import pydicom

    if vol.dicom is None:
        raise InputError("a DICOM SEG / SR needs a DICOM series as input")
    out, seen = [], {}
    for ref in vol.dicom.slices:
        if ref.file in seen:
            continue
        ds = pydicom.dcmread(ref.file, stop_before_pixels=True)
        for name, uid in vol.dicom.ids.items():
            setattr(ds, name, uid)
        ds.SOPClassUID, ds.SOPInstanceUID = ref.sop_class_uid, ref.sop_instance_uid
        seen[ref.file] = ds
        out.append(ds)
    return out


# ---------------------------------------------------------------- DICOM SEG

SEG_MEMORY_GIB = 1.0
"""Default memory budget (GiB, 2**30 bytes) of the stacked SEG form (``detect --seg-memory-gb``).
Read at call time: tests lower it."""

STACKED = "stacked"        # one whole mask per lesion, segments may overlap
LABEL_MAP = "label_map"    # lesions.nii.gz's labels: one lesion per voxel, a better score wins


def stacked_seg_bytes(frames: int, rows: int, columns: int, lesions: int, segment_frames: int) -> int:
    """Working memory (bytes) of writing the stacked SEG form, estimated before building it.

    ``frames`` slices x ``rows`` x ``columns`` (the cropped frame) positions, ``lesions``
    segments, at most ``segment_frames`` (segment, slice) frames holding a lesion:

    * the ``(frames, rows, columns, lesions)`` uint8 stack highdicom takes: ``lesions`` bytes a position;
    * highdicom's overlap check (``stack.sum(axis=-1)`` as uint64, then ``> 1``): 9 bytes a position;
    * its empty-frame check (``np.any`` of one slice's ``rows x columns x lesions``);
    * the bit-packed frames, once as a list and once joined into Pixel Data: 2 x ``segment_frames``
      x ceil(rows x columns / 8).

    Not counted: the ~60 MiB of DICOM tables highdicom loads once, whatever the form (measured
    with tracemalloc on the real 20-slice series, 100 lesions: estimate 336 MiB, peak 409 MiB of
    which 61 MiB are those tables).
    """
    positions = int(frames) * int(rows) * int(columns)
    plane = int(rows) * int(columns) * int(lesions) if frames else 0
    packed = 2 * int(segment_frames) * -(-int(rows) * int(columns) // 8)
    return positions * (int(lesions) + 9) + plane + packed


@dataclass(frozen=True)
class SegPlan:
    """Which SEG form :func:`write_dicom_seg` writes, and its frame geometry.

    ``frames``: the slices ``z`` holding any lesion voxel (ascending); ``box``: the frames'
    region of the STORED slice, rows ``r1:r2`` and columns ``c1:c2`` (the union of the
    lesions' boxes, columns widened to a multiple of 8 when the slice allows: whole bytes per
    frame); ``stacked_bytes``: :func:`stacked_seg_bytes` of it; ``form``: :data:`STACKED` when
    that fits ``budget_bytes``, else :data:`LABEL_MAP`.
    """

    form: str
    frames: np.ndarray
    box: tuple[int, int, int, int]
    stored_shape: tuple[int, int]
    stacked_bytes: int
    budget_bytes: int

    @property
    def frame_shape(self) -> tuple[int, int]:
        r1, r2, c1, c2 = self.box
        return r2 - r1, c2 - c1


def _stored_placement(m: LesionMask, shape_yx: tuple[int, int], meta: dict) -> tuple[int, int]:
    """(row, column) of a lesion mask's first voxel in the stored slice (the mask taken through
    :func:`_stored_orientation`)."""
    _, y, x = m.origin
    _, dy, dx = m.mask.shape
    if meta.get("flip_cols"):
        x = shape_yx[1] - x - dx
    if meta.get("flip_rows"):
        y = shape_yx[0] - y - dy
    return (x, y) if meta.get("transpose") else (y, x)


def _display_region(box: tuple[int, int, int, int], shape_yx: tuple[int, int], meta: dict) -> tuple[slice, slice]:
    """The display-orientation (rows, columns) region whose :func:`_stored_orientation` is the stored ``box``."""
    r1, r2, c1, c2 = box
    (y1, y2), (x1, x2) = ((c1, c2), (r1, r2)) if meta.get("transpose") else ((r1, r2), (c1, c2))
    if meta.get("flip_rows"):
        y1, y2 = shape_yx[0] - y2, shape_yx[0] - y1
    if meta.get("flip_cols"):
        x1, x2 = shape_yx[1] - x2, shape_yx[1] - x1
    return slice(y1, y2), slice(x1, x2)


def _widen(lo: int, hi: int, size: int, multiple: int) -> tuple[int, int]:
    """``lo:hi`` grown (right, then left) to a length that is a multiple of ``multiple``, if ``size`` allows."""
    want = -(-(hi - lo) // multiple) * multiple
    if want > size:
        return lo, hi
    hi = min(size, lo + want)
    return hi - want, hi


def plan_seg(masks: list[LesionMask], shape_zyx: tuple[int, int, int], meta: dict,
             budget_bytes: int | None = None, crop: bool = False) -> SegPlan:
    """The SEG's frames, crop box and form (see :class:`SegPlan`); ``budget_bytes`` None: :data:`SEG_MEMORY_GIB`.

    ``crop`` False (default): frames are whole slices, which every viewer places; True: frames
    cover only the lesions' union box (less memory; highdicom and pydicom read them, but some
    viewers mishandle SEG frames smaller than their images: OHIF/Viewers#1761, Weasis#693)."""
    if budget_bytes is None:
        budget_bytes = int(SEG_MEMORY_GIB * 2 ** 30)
    shape_yx = tuple(int(v) for v in shape_zyx[1:])
    stored = shape_yx[::-1] if meta.get("transpose") else shape_yx
    if not masks:
        return SegPlan(STACKED, np.zeros(0, dtype=np.int64), (0, 0, 0, 0), stored, 0, int(budget_bytes))
    frames = np.unique(np.concatenate([np.arange(m.origin[0], m.origin[0] + m.mask.shape[0]) for m in masks]))
    corners = []
    for m in masks:
        r, c = _stored_placement(m, shape_yx, meta)
        h, w = m.mask.shape[1:][::-1] if meta.get("transpose") else m.mask.shape[1:]
        corners.append((r, r + h, c, c + w))
    a = np.array(corners)
    c1, c2 = _widen(int(a[:, 2].min()), int(a[:, 3].max()), stored[1], 8) if crop else (0, stored[1])
    box = (int(a[:, 0].min()), int(a[:, 1].max()), c1, c2) if crop else (0, stored[0], 0, stored[1])
    need = stacked_seg_bytes(frames.size, box[1] - box[0], c2 - c1, len(masks),
                             sum(m.mask.shape[0] for m in masks))
    form = STACKED if need <= budget_bytes else LABEL_MAP
    return SegPlan(form, frames, box, stored, need, int(budget_bytes))


def segment_stack(masks: list[LesionMask], shape_zyx: tuple[int, int, int], meta: dict, plan: SegPlan
                  ) -> np.ndarray:
    """``(F, rows, columns, L)`` uint8 in the stored orientation over ``plan``'s frames and box:
    ``stack[..., k]`` = lesion ``k + 1``'s whole mask.  Memory: :func:`stacked_seg_bytes`."""
    r1, r2, c1, c2 = plan.box
    row = np.full(shape_zyx[0], -1, dtype=np.int64)
    row[plan.frames] = np.arange(plan.frames.size)
    stack = np.zeros((plan.frames.size, r2 - r1, c2 - c1, len(masks)), dtype=np.uint8)
    for k, m in enumerate(masks):
        r, c = _stored_placement(m, tuple(shape_zyx[1:]), meta)
        mine = _stored_orientation(m.mask, meta)
        f = row[m.origin[0]]
        stack[f:f + mine.shape[0], r - r1:r - r1 + mine.shape[1], c - c1:c - c1 + mine.shape[2], k] = mine
    return stack


def label_frames(labels_zyx: np.ndarray, meta: dict, plan: SegPlan) -> np.ndarray:
    """``(F, rows, columns)`` lesion ids of the label volume over ``plan``'s frames and box, stored orientation."""
    ys, xs = _display_region(plan.box, labels_zyx.shape[1:], meta)
    return _stored_orientation(labels_zyx[plan.frames][:, ys, xs], meta)


def write_dicom_seg(path: Path, vol: CTVolume, masks: list[LesionMask], lesion_ids: np.ndarray,
                    scores: np.ndarray, *, plan: SegPlan | None = None, labels_zyx: np.ndarray | None = None,
                    coverage: LabelCoverage | None = None):
    """:func:`build_dicom_seg`, written to ``path``; returns the number of segments (0: nothing written)."""
    seg = build_dicom_seg(vol, masks, lesion_ids, scores, plan=plan, labels_zyx=labels_zyx, coverage=coverage)
    if seg is None:
        return 0
    with atomic_write(path, "wb") as fh:
        seg.save_as(fh)
    return len(masks)


def _frame_geometry(vol: CTVolume, plan: SegPlan) -> dict:
    """Plane Position of every frame (the grid's own slice positions, moved to the crop box),
    the series' orientation and pixel measures: frames are placed by geometry, and highdicom links
    each one to the source image in its plane."""
    import highdicom as hd

    info = vol.dicom
    r1, _, c1, _ = plan.box
    iop = info.orientation
    dr, dc = (float(v) for v in info.pixel_spacing)
    shift = c1 * dc * iop[:3] + r1 * dr * iop[3:]
    thickness = _number_or_none(info.series.get("SliceThickness"))
    return dict(
        plane_positions=[hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                                  (info.positions[int(z)] + shift).tolist()) for z in plan.frames],
        plane_orientation=hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in iop]),
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=[dr, dc], slice_thickness=thickness or vol.spacing[2],
                                                spacing_between_slices=float(vol.spacing[2])))


def _number_or_none(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def build_dicom_seg(vol: CTVolume, masks: list[LesionMask], lesion_ids: np.ndarray, scores: np.ndarray, *,
                    plan: SegPlan | None = None, labels_zyx: np.ndarray | None = None,
                    coverage: LabelCoverage | None = None, sources: list | None = None):
    """A DICOM SEG (highdicom, BINARY) referencing ``vol``'s DICOM series: one segment per lesion.

    Segment number = lesion id (ids must be 1..L, the table's), tracking id ``lesion <id>``, in
    both forms (``plan``, default :func:`plan_seg` with :data:`SEG_MEMORY_GIB`):

    * :data:`STACKED`: each segment holds the lesion's whole mask
      (:func:`lesionprop.scan.lesions.lesion_masks`), so segments overlap where lesions do;
    * :data:`LABEL_MAP` (the stacked form would exceed the memory budget): the segments are
      ``labels_zyx``'s ids (lesions.nii.gz), a better score wins overlaps; a lesion with no voxel
      there is still described, with no frame.  With ``coverage``, such lesions and partly
      covered ones say so in their Segment Description.

    Frames: the slices holding a lesion, cropped in-plane to ``plan.box``, each with its Plane
    Position in the series' frame of reference (:func:`_frame_geometry`; a resampled gantry tilt's
    frames lie on the resampled grid); every image of the series is referenced, with the UIDs of
    :func:`source_datasets` (``sources``: those datasets, when already read).  Returns the highdicom
    Segmentation (None: no lesion).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if vol.source != "dicom" or vol.dicom is None:
        raise InputError("a DICOM SEG needs a DICOM series as input")
    ids = np.asarray(lesion_ids).reshape(-1)
    if len(masks) != ids.size or not np.array_equal(ids, np.arange(1, ids.size + 1)):
        raise ValueError(f"write_dicom_seg: lesion ids must be 1..{len(masks)} (one per mask), got {ids.tolist()}")
    if not masks:
        return None
    if plan is None:
        plan = plan_seg(masks, vol.hu.shape, vol.meta)
    if plan.form == LABEL_MAP and labels_zyx is None:
        raise ValueError("write_dicom_seg: the label-map form needs labels_zyx")
    sources = source_datasets(vol) if sources is None else sources
    if plan.form == STACKED:
        pixels = segment_stack(masks, vol.hu.shape, vol.meta, plan)
    else:
        pixels = label_frames(labels_zyx, vol.meta, plan)
    algorithm = hd.AlgorithmIdentificationSequence(name="lesionprop", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for i, (lid, s) in enumerate(zip(ids, scores)):
        d = hd.seg.SegmentDescription(
            segment_number=int(lid), segment_label=f"lesion {int(lid)} (score {float(s):.2f})",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"lesion {int(lid)}")
        if plan.form == LABEL_MAP and coverage is not None:
            shown, total, by = int(coverage.in_label_map[i]), int(coverage.voxels[i]), coverage.covered_by[i]
            under = (f"under lesion{'s' if len(by) > 1 else ''} {', '.join(map(str, by))}" if by
                     else "under other lesions")
            if shown == 0:
                d.SegmentDescription = f"no voxel in this label-map SEG: all {total} {under}"
            elif shown < total:
                d.SegmentDescription = f"{shown} of {total} voxels in this label-map SEG, the rest {under}"
        descriptions.append(d)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="lesionprop", manufacturer_model_name="lesionprop detect", software_versions=__version__,
        device_serial_number="0", series_description="lesionprop lesions", **_frame_geometry(vol, plan))
    del pixels
    return seg
