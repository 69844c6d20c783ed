"""CT volumes: DICOM series / NIfTI -> HU array, and HU volume -> DeepLesion layout.

Every volume is returned in one display orientation, the usual radiological one:

* ``hu[z, y, x]`` int16 Hounsfield units;
* ``x`` (columns) runs from the patient's right to the patient's left,
  ``y`` (rows) from anterior to posterior;
* ``z`` (slices) runs from superior (head) to inferior (feet): slice 0 is the
  most superior.  This is the order DeepLesion's slice numbers follow for
  head-first series, and it is used by :func:`write_series` (first slice = 001).

DICOM (:mod:`lesionprop.data.dicom_series`; finding the series: :mod:`lesionprop.data.dicom_scan`):
single-frame slices or an Enhanced / Legacy Converted multi-frame CT, sorted by
``ImagePositionPatient`` projected on the slice normal (``row x column`` cosines); HU
from the modality LUT / rescale, Pixel Padding Value -> air, rounded to int16.  The
in-plane axes are flipped / transposed to the display orientation above when the
direction cosines ask for it; frames more than ~25.8 degrees from axial are refused.  A
gantry tilt (a sheared stack) is resampled to an orthogonal grid with a warning.  NIfTI:
nibabel's nearest-axis reorientation (``io_orientation``), no resampling; an oblique
affine is reoriented to its closest axes.

``spacing`` is ``(x, y, z)`` in mm, ``z`` being the slice interval.

Geometry: ``CTVolume.affine`` (4 x 4) maps a display voxel index ``(x, y, z, 1)``
(column, row, slice; integer = voxel centre) to patient coordinates in mm in the
DICOM patient system **LPS** (+x left, +y posterior, +z superior).  DICOM: from
``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing`` of the
sorted slices; NIfTI: the reoriented file affine (RAS) with x and y negated.
:func:`to_source_grid` puts a display-orientation array (e.g. a label volume)
back on the input's own voxel grid with the input's affine, for NIfTI output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionprop.data.ct import CTVolume, DicomSeries, SliceRef, VolumeError
from lesionprop.data.deeplesion import SeriesInfo, read_series_info, write_series_info
from lesionprop.data.layout import check_series_name, list_slices, series_dir, write_slice
from lesionprop.errors import InputError, MissingInputError

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def load_ct(path: str | os.PathLike) -> CTVolume:
    """Read a DICOM series folder or a NIfTI file into a :class:`CTVolume`."""
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"CT input not found: {p}")
    if p.is_dir():
        return load_dicom_series(p)
    if is_nifti(p):
        return load_nifti(p)
    raise VolumeError(f"{p}: expected a DICOM series folder or a NIfTI file (.nii / .nii.gz)")


# ---------------------------------------------------------------- DICOM

def load_dicom_series(folder: str | os.PathLike) -> CTVolume:
    """One DICOM CT series folder -> :class:`CTVolume` (:func:`lesionprop.data.dicom_series.load_series`).

    Files that are not DICOM images are skipped and counted in ``notes``; a folder holding
    several image series is refused (``lesionprop detect`` reads a study folder series by series).
    """
    from dataclasses import replace

    from lesionprop.data.dicom_scan import scan_folder
    from lesionprop.data.dicom_series import load_series

    folder = Path(folder)
    scan = scan_folder(folder, recursive=False)
    if not scan.series:
        below = scan_folder(folder).series
        if below:
            raise VolumeError(f"{folder}: no DICOM image files in the folder itself, but {len(below)} series in its "
                              f"subfolders (e.g. {below[0].folder}): give one series folder, or run "
                              "`lesionprop detect` on the whole folder")
        what = f" ({scan.skipped_note().split(': ', 1)[1]})" if scan.skipped else ""
        raise VolumeError(f"{folder}: no DICOM image files in the series folder{what}")
    if len(scan.series) > 1:
        first, other = scan.series[0], scan.series[1]
        listed = "; ".join(f"{_series_label(s)}: {len(s.files)} file{'s' if len(s.files) != 1 else ''}"
                           for s in scan.series[:4])
        raise VolumeError(f"{other.files[0] if other.files else other.folder}: mixed series in {folder} "
                          f"({len(scan.series)} series: {listed}); `lesionprop detect` reads each series of a "
                          f"study folder, `import` one series folder")
    vol = load_series(scan.series[0])
    notes = [n for n in (scan.skipped_note(), *scan.notes) if n]
    return replace(vol, notes=tuple(notes) + vol.notes) if notes else vol


def _series_label(s) -> str:
    uid = s.series_uid or "no SeriesInstanceUID"
    number, text = s.attr("SeriesNumber"), s.attr("SeriesDescription")
    return " ".join(v for v in (number, repr(text) if text else "", f"({uid})") if v)


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_to_patient(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """``(N, 3)`` display voxel coordinates (x, y, z; may be fractional) -> ``(N, 3)`` mm via ``affine``."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return p @ affine[:3, :3].T + affine[:3, 3]


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """LPS affine of a volume known only by its spacing (display orientation, origin at voxel 0)."""
    sx, sy, sz = (float(v) for v in spacing)
    return np.diag([sx, sy, -sz, 1.0])     # x -> left, y -> posterior, slices run superior -> inferior


def to_stored(data_zyx: np.ndarray, meta: dict) -> np.ndarray:
    """A ``(Z, Y, X, ...)`` display-orientation array of a DICOM volume -> the stored frames'
    ``(Z, rows, columns, ...)``: the flips, then the transpose of the load (``CTVolume.meta``)
    undone; trailing axes kept."""
    a = np.asarray(data_zyx)
    if meta.get("flip_cols"):
        a = a[:, :, ::-1]
    if meta.get("flip_rows"):
        a = a[:, ::-1]
    if meta.get("transpose"):
        a = a.swapaxes(1, 2)
    return np.ascontiguousarray(a)


def to_source_grid(vol: CTVolume, data_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ``(Z, Y, X)`` display-orientation array -> (array on the input's voxel grid, its RAS affine).

    NIfTI input: the inverse of the load's reorientation, with the file's own affine, so the
    array lines up voxel for voxel with the input file.  DICOM: ``(column, row, slice)`` of the
    stored frames (slices superior first; a resampled tilt's grid), with their geometry.
    Otherwise: the display grid as ``(x, y, z)`` with ``LPS_TO_RAS @ vol.affine``.
    """
    import nibabel as nib

    from lesionprop.data.dicom_geometry import dicom_affine

    if vol.source == "nifti" and "source_affine" in vol.meta:
        xyz = np.asarray(data_zyx).transpose(2, 1, 0)
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("L", "P", "I")),
                                               vol.meta["source_ornt"])
        return np.ascontiguousarray(nib.orientations.apply_orientation(xyz, back)), vol.meta["source_affine"]
    if vol.source == "dicom" and vol.dicom is not None:
        info = vol.dicom
        affine = dicom_affine(info.positions, info.orientation, info.pixel_spacing, info.stored_shape,
                              (False, False, False), vol.spacing[2])
        return np.ascontiguousarray(to_stored(data_zyx, vol.meta).transpose(2, 1, 0)), LPS_TO_RAS @ affine
    affine = vol.affine if vol.affine is not None else spacing_affine(vol.spacing)
    return np.ascontiguousarray(np.asarray(data_zyx).transpose(2, 1, 0)), LPS_TO_RAS @ affine


def file_voxel_index(vol: CTVolume, xyz: np.ndarray) -> np.ndarray:
    """Display voxel indices ``(N, 3)`` (x, y, z) -> the same voxels' ``(i, j, k)`` on the input's own
    grid, the grid :func:`to_source_grid` writes (NIfTI: the file's array; DICOM: stored column,
    row, slice superior first; otherwise the display grid)."""
    import nibabel as nib

    p = np.asarray(xyz, dtype=np.int64).reshape(-1, 3)
    zs, ys, xs = vol.hu.shape
    display_shape = (xs, ys, zs)
    if vol.source == "nifti" and "source_ornt" in vol.meta:
        # file axis a went to display axis xform[a, 0], reversed when xform[a, 1] is -1
        xform = nib.orientations.ornt_transform(vol.meta["source_ornt"], nib.orientations.axcodes2ornt(("L", "P", "I")))
        out = np.empty_like(p)
        for a, (d, flip) in enumerate(xform.astype(int)):
            out[:, a] = p[:, d] if flip > 0 else display_shape[d] - 1 - p[:, d]
        return out
    if vol.source == "dicom":
        x, y, z = p[:, 0].copy(), p[:, 1].copy(), p[:, 2]
        if vol.meta.get("flip_cols"):
            x = xs - 1 - x
        if vol.meta.get("flip_rows"):
            y = ys - 1 - y
        return np.column_stack([y, x, z] if vol.meta.get("transpose") else [x, y, z])
    return p.copy()


# ---------------------------------------------------------------- NIfTI

def _usable_affine(affine: np.ndarray | None) -> bool:
    return (affine is not None and bool(np.all(np.isfinite(affine)))
            and abs(float(np.linalg.det(affine[:3, :3]))) > 1e-9)


def _check_nifti_affines(path: Path, img) -> None:
    """A coded sform / qform that is not finite or singular is an error: nibabel would quietly
    fall back to another affine and every position in mm would be wrong."""
    header = img.header
    for name in ("sform", "qform"):
        getter = getattr(header, f"get_{name}", None)
        if getter is None:
            continue
        with np.errstate(all="ignore"):
            affine, code = getter(coded=True)
        if code and not _usable_affine(affine):
            raise VolumeError(f"{path}: the NIfTI {name} (code {int(code)}) is not a usable affine "
                              "(non-finite or singular): fix the file's geometry")
    if not _usable_affine(np.asarray(img.affine, dtype=float)):
        raise VolumeError(f"{path}: the NIfTI affine is not usable (non-finite or singular)")


def _nifti_display(path: Path, integer_labels: bool, info: dict | None = None
                   ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise VolumeError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{path}: expected a 3D volume, got shape {data.shape}")
    _check_nifti_affines(path, img)
    ornt = nib.orientations.io_orientation(img.affine)
    # target: axis i -> patient Left, j -> Posterior, k -> Inferior (display orientation)
    xform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("L", "P", "I")))
    data = nib.orientations.apply_orientation(data, xform)
    affine = img.affine @ nib.orientations.inv_ornt_aff(xform, img.shape[:3])
    if info is not None:
        info.update(source_affine=np.asarray(img.affine, dtype=float), source_ornt=ornt)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if integer_labels and not np.issubdtype(data.dtype, np.integer):
        if not np.allclose(data, np.rint(data)):
            raise VolumeError(f"{path}: a label map must hold integers, found {data.dtype} values")
    vol = np.ascontiguousarray(data.transpose(2, 1, 0))
    return vol, (float(zooms[0]), float(zooms[1]), float(zooms[2])), affine


def load_nifti(path: str | os.PathLike) -> CTVolume:
    """A NIfTI CT volume (HU after the header's scl_slope/inter) -> :class:`CTVolume`."""
    path = Path(path)
    info: dict = {}
    vol, spacing, affine = _nifti_display(path, integer_labels=False, info=info)
    if vol.dtype.kind == "f" and not np.all(np.isfinite(vol)):
        raise VolumeError(f"{path}: non-finite voxel values")
    lo, hi = float(vol.min()), float(vol.max())
    if lo < -32768 or hi > 32767:
        raise VolumeError(f"{path}: values {lo}..{hi} do not fit HU in int16")
    hu = np.rint(vol).astype(np.int16) if vol.dtype.kind == "f" else vol.astype(np.int16)
    zs = tuple(float(affine[2, 2] * k + affine[2, 3]) for k in range(hu.shape[0]))  # RAS z, superior first
    return CTVolume(hu, spacing, (str(path),), zs, "nifti", {"affine": np.asarray(affine), **info},
                    LPS_TO_RAS @ np.asarray(affine, dtype=float))


def load_label_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI label map (e.g. TotalSegmentator organs) in the same display orientation -> (uint16 labels, spacing)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"label volume not found: {path}")
    if not is_nifti(path):
        raise VolumeError(f"{path}: a label map must be a NIfTI file (.nii / .nii.gz)")
    vol, spacing, _ = _nifti_display(path, integer_labels=True)
    if vol.min() < 0 or vol.max() > 65535:
        raise VolumeError(f"{path}: label values {vol.min()}..{vol.max()} out of 0..65535")
    return np.rint(vol).astype(np.uint16), spacing


# ---------------------------------------------------------------- writing the DeepLesion layout

def write_slices(root: str | os.PathLike, series: str, hu: np.ndarray, first_slice: int = 1,
                 overwrite: bool = False) -> Path:
    """Write ``hu`` (Z, Y, X) as ``ROOT/Images_png/SERIES/III.png``, III = first_slice, first_slice + 1, ..."""
    check_series_name(series)
    hu = np.asarray(hu)
    if hu.ndim != 3 or hu.shape[0] == 0:
        raise InputError(f"series {series}: expected a (Z, Y, X) volume, got shape {hu.shape}")
    folder = series_dir(root, series)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"series folder {folder} already exists (use --overwrite to replace it)")
    if folder.exists() and overwrite:
        for entry in list_slices(folder).values():
            os.unlink(entry.path)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(hu.shape[0]):
        write_slice(root, series, first_slice + i, hu[i])
    return folder


def merge_series_info(root: str | os.PathLike, infos: Sequence[SeriesInfo]) -> Path:
    """Add or replace rows of ``ROOT/series_info.csv`` (atomically), keeping the others, sorted by series."""
    path = Path(root) / "series_info.csv"
    rows = read_series_info(path) if path.is_file() else {}
    for info in infos:
        rows[info.series] = info
    write_series_info(path, [rows[k] for k in sorted(rows)])
    return path


def write_series(root: str | os.PathLike, series_name: str, hu: np.ndarray, spacing: Sequence[float], *,
                 source: str = "", overwrite: bool = False, first_slice: int = 1) -> SeriesInfo:
    """Write one volume in the DeepLesion layout and record it in ``ROOT/series_info.csv``.

    Slices are named from ``first_slice`` (default 1, 3 digits, as DeepLesion's
    ``Key_slice_index``); ``spacing`` is (x, y, z) mm.
    """
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"series {series_name}: spacing must be 3 positive numbers (x, y, z) mm, got {spacing}")
    write_slices(root, series_name, hu, first_slice=first_slice, overwrite=overwrite)
    info = SeriesInfo(series_name, sp, (int(hu.shape[1]), int(hu.shape[2])),  # type: ignore[arg-type]
                      (first_slice, first_slice + hu.shape[0] - 1), source)
    merge_series_info(root, [info])
    return info


__all__ = ["CTVolume", "DicomSeries", "SliceRef", "VolumeError", "load_ct", "voxel_to_patient", "spacing_affine", "to_source_grid", "to_stored", "file_voxel_index",
           "LPS_TO_RAS", "load_dicom_series", "load_nifti", "load_label_volume", "write_series", "write_slices",
           "merge_series_info", "label_map_hint"]


def label_map_hint(hu: np.ndarray, most_labels: int = 256) -> str:
    """A warning when a volume looks like a segmentation rather than a CT: no value below 0 HU
    (a CT holds air, about -1000 HU) and few distinct integer values ('' otherwise)."""
    if hu.size == 0 or float(hu.min()) < 0:
        return ""
    sample = hu.reshape(-1)[:: max(1, hu.size // 1_000_000)]        # a million voxels say enough
    if not np.array_equal(sample, np.round(sample)):
        return ""
    values = np.unique(sample)
    if values.size > most_labels:
        return ""
    return (f"no value below 0 HU and {values.size} distinct integer values ({int(hu.min())}..{int(hu.max())}): "
            "this looks like a label map (segmentation), not a CT in Hounsfield units")
