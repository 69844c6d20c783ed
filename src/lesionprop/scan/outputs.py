"""Files of ``lesionprop detect``: lesions.csv / lesions.json, lesions.nii.gz, lesions_seg.dcm.

Arrays arrive in display orientation (``(Z, Y, X)``, see :mod:`lesionprop.data.volumes`).
``lesions.nii.gz`` goes back onto the input's voxel grid with the input's affine
(:func:`lesionprop.data.volumes.to_source_grid`); the DICOM SEG's frames are the
source slices in their stored row / column order (the display transform undone).
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
from lesionprop.scan.lesions import COLUMNS


def write_tables(out: Path, rows: list[dict], header: dict) -> None:
    """``lesions.csv`` (one row per lesion, :data:`COLUMNS`) and ``lesions.json`` (``header`` + ``lesions``)."""
    with atomic_write(out / "lesions.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
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
    """Undo the load's display transform (flips, then transpose): frames as the DICOM files store them."""
    a = labels_zyx
    if meta.get("flip_cols"):
        a = a[:, :, ::-1]
    if meta.get("flip_rows"):
        a = a[:, ::-1, :]
    if meta.get("transpose"):
        a = a.transpose(0, 2, 1)
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


def write_dicom_seg(path: Path, vol: CTVolume, labels_zyx: np.ndarray, lesion_ids: np.ndarray,
                    scores: np.ndarray) -> int:
    """A DICOM SEG (highdicom, BINARY, one segment per lesion present) referencing ``vol``'s DICOM series.

    Segment ``k`` = the k-th lesion id present in ``labels_zyx`` (ids in order); its
    tracking id is ``lesion <id>``.  Returns the number of segments (0: nothing written).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if vol.source != "dicom":
        raise ValueError("a DICOM SEG needs a DICOM series as input")
    present = np.unique(labels_zyx)
    present = present[present > 0]
    if present.size == 0:
        return 0
    ids = np.asarray(lesion_ids)
    score_of = {int(i): float(s) for i, s in zip(ids, scores)}
    remap = np.zeros(int(labels_zyx.max()) + 1, dtype=np.uint16)
    remap[present] = np.arange(1, present.size + 1, dtype=np.uint16)
    seg_labels = _stored_orientation(remap[labels_zyx], vol.meta)
    sources = [_referenceable(pydicom.dcmread(f), f) for f in vol.files]   # display order = frame order
    algorithm = hd.AlgorithmIdentificationSequence(name="lesionprop", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=k + 1, segment_label=f"lesion {int(lid)} (score {score_of.get(int(lid), float('nan')):.2f})",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"lesion {int(lid)}")
        for k, lid in enumerate(present)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=seg_labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lesionprop",
        manufacturer_model_name="lesionprop detect", software_versions=__version__, device_serial_number="0",
        series_description="lesionprop lesions")
    with atomic_write(path, "wb") as fh:
        seg.save_as(fh)
    return int(present.size)
