"""Files of ``lesionprop detect``: lesions.csv / lesions.json, lesions.nii.gz, lesions_seg.dcm.

Arrays arrive in display orientation (``(Z, Y, X)``, see :mod:`lesionprop.data.volumes`).
``lesions.nii.gz`` goes back onto the input's voxel grid with the input's affine
(:func:`lesionprop.data.volumes.to_source_grid`); the DICOM SEG's frames are the
source slices in their stored row / column order (the display transform undone), one
segment per lesion with its whole mask (segment number = lesion id; segments may overlap).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np

from lesionprop import __version__
from lesionprop.data.volumes import CTVolume, to_source_grid
from lesionprop.fileio import atomic_write
from lesionprop.scan.lesions import COLUMNS, LesionMask


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
    a = labels_zyx
    if meta.get("flip_cols"):
        a = a[:, :, ::-1]
    if meta.get("flip_rows"):
        a = a[:, ::-1]
    if meta.get("transpose"):
        a = a.swapaxes(1, 2)
    return np.ascontiguousarray(a)


def sop_uids(ds) -> tuple[str, str]:
    """(SOPClassUID, SOPInstanceUID) of a source image: the dataset's, else its file meta's (some
    anonymisers blank the dataset's copies)."""
    meta = getattr(ds, "file_meta", None)
    cls = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    inst = str(ds.get("SOPInstanceUID", "") or (meta.get("MediaStorageSOPInstanceUID", "") if meta else ""))
    return cls, inst


def _referenceable(ds, f):
    """The in-memory dataset with SOP class / instance UIDs filled from the file meta when blank."""
    cls, inst = sop_uids(ds)
    if not cls or not inst:
        raise ValueError(f"{f}: no SOPClassUID / SOPInstanceUID (dataset or file meta): a DICOM SEG cannot "
                         "reference this slice")
    ds.SOPClassUID, ds.SOPInstanceUID = cls, inst
    return ds


def segment_stack(masks: list[LesionMask], shape_zyx: tuple[int, int, int], meta: dict
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(frames, stack): the slices ``z`` holding any lesion (ascending) and a ``(F, rows, columns, L)``
    uint8 array in the stored orientation, ``stack[..., k]`` = lesion ``k + 1``'s whole mask.

    Memory: F x rows x columns x L bytes (20 slices x 512 x 512 x 56 lesions: 0.3 GB).
    """
    frames = np.unique(np.concatenate([np.arange(m.origin[0], m.origin[0] + m.mask.shape[0]) for m in masks]))
    row = np.full(shape_zyx[0], -1, dtype=np.int64)
    row[frames] = np.arange(frames.size)
    one = np.zeros((frames.size, *shape_zyx[1:]), dtype=bool)
    stack = None
    for k, m in enumerate(masks):
        one[:] = False
        _, ys, xs = m.region()
        one[row[m.origin[0]]:row[m.origin[0]] + m.mask.shape[0], ys, xs] = m.mask
        stored = _stored_orientation(one, meta)
        if stack is None:
            stack = np.zeros((*stored.shape, len(masks)), dtype=np.uint8)
        stack[..., k] = stored
    return frames, stack


def write_dicom_seg(path: Path, vol: CTVolume, masks: list[LesionMask], lesion_ids: np.ndarray,
                    scores: np.ndarray) -> int:
    """A DICOM SEG (highdicom, BINARY) referencing ``vol``'s DICOM series: one segment per lesion.

    Segment number = lesion id (ids must be 1..L, the table's); each segment holds the lesion's
    whole mask (:func:`lesionprop.scan.lesions.lesion_masks`), so segments overlap where lesions
    do.  Tracking id ``lesion <id>``.  Frames: the slices holding a lesion; every slice of the
    series is referenced.  Returns the number of segments (0: nothing written).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if vol.source != "dicom":
        raise ValueError("a DICOM SEG needs a DICOM series as input")
    ids = np.asarray(lesion_ids).reshape(-1)
    if len(masks) != ids.size or not np.array_equal(ids, np.arange(1, ids.size + 1)):
        raise ValueError(f"write_dicom_seg: lesion ids must be 1..{len(masks)} (one per mask), got {ids.tolist()}")
    if not masks:
        return 0
    frames, stack = segment_stack(masks, vol.hu.shape, vol.meta)
    sources = [_referenceable(pydicom.dcmread(f), f) for f in vol.files]   # display order = frame order
    algorithm = hd.AlgorithmIdentificationSequence(name="lesionprop", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=int(lid), segment_label=f"lesion {int(lid)} (score {float(s):.2f})",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"lesion {int(lid)}")
        for lid, s in zip(ids, scores)]
    used = set(frames.tolist())
    others = [ds for z, ds in enumerate(sources) if z not in used]
    seg = hd.seg.Segmentation(
        source_images=[sources[z] for z in frames], pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="lesionprop", manufacturer_model_name="lesionprop detect", software_versions=__version__,
        device_serial_number="0", series_description="lesionprop lesions", further_source_images=others or None)
    with atomic_write(path, "wb") as fh:
        seg.save_as(fh)
    return len(masks)
