"""CT volumes: DICOM series / NIfTI -> HU array, and HU volume -> DeepLesion layout.

Every volume is returned in one display orientation, the usual radiological one:

* ``hu[z, y, x]`` int16 Hounsfield units;
* ``x`` (columns) runs from the patient's right to the patient's left,
  ``y`` (rows) from anterior to posterior;
* ``z`` (slices) runs from superior (head) to inferior (feet): slice 0 is the
  most superior.  This is the order DeepLesion's slice numbers follow for
  head-first series, and it is used by :func:`write_series` (first slice = 001).

DICOM: slices are sorted by ``ImagePositionPatient`` projected on the slice
normal (``row x column`` cosines); HU come from pydicom's own
``apply_modality_lut`` (rescale slope/intercept or a modality LUT), rounded to
int16.  The in-plane axes are flipped / transposed to the display orientation
above when the direction cosines ask for it (only axis-aligned series are
accepted; oblique or non-axial ones are refused).  NIfTI: nibabel's
nearest-axis reorientation (``io_orientation``), no resampling; an oblique
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionprop.data.deeplesion import SeriesInfo, read_series_info, write_series_info
from lesionprop.data.layout import check_series_name, list_slices, series_dir, write_slice
from lesionprop.errors import InputError, MissingInputError
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeError(InputError):
    """Bad CT input: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class CTVolume:
    """An HU volume in display orientation (see module docstring)."""

    hu: np.ndarray                                  # (Z, Y, X) int16
    spacing: tuple[float, float, float]             # (x, y, z) mm
    files: tuple[str, ...]                          # source file(s), slice order for DICOM
    z_positions: tuple[float, ...] = ()             # mm along the superior axis, one per slice
    source: str = ""                                # "dicom" | "nifti"
    meta: dict = field(default_factory=dict, compare=False)
    affine: np.ndarray | None = field(default=None, compare=False)   # display voxel (x, y, z) -> LPS mm


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

def _dicom_files(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.name.upper() != "DICOMDIR")
    if not files:
        raise VolumeError(f"{folder}: no files in the DICOM series folder")
    return files


def _read_dicom(f: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(f)
        truncated = [w for w in caught if "end of file" in str(w.message).lower()]
        if truncated:
            raise VolumeError(f"{f}: unreadable DICOM file (truncated: {truncated[0].message})")
    except InvalidDicomError:
        raise VolumeError(f"{f}: not a DICOM file") from None
    except VolumeError:
        raise
    except Exception as exc:  # truncated or corrupt file: pydicom raises many types
        raise VolumeError(f"{f}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None
    modality = str(getattr(ds, "Modality", "")).upper()
    if modality != "CT":
        raise VolumeError(f"{f}: not a CT image (Modality = {modality or 'missing'!r})")
    if "PixelData" not in ds:
        raise VolumeError(f"{f}: not a CT image (no pixel data)")
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
    if "LOCALIZER" in image_type:
        raise VolumeError(f"{f}: a localizer (scout) image, not an axial CT slice (ImageType = {image_type})")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if tag not in ds:
            raise VolumeError(f"{f}: missing {tag}, cannot place the slice in the volume")
    return ds


def _display_transform(f: Path, orient: np.ndarray) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip cols) taking the stored slice to display orientation."""
    row, col = orient[:3], orient[3:]
    ax_r, ax_c = int(np.argmax(np.abs(row))), int(np.argmax(np.abs(col)))
    if abs(row[ax_r]) < 0.9 or abs(col[ax_c]) < 0.9 or {ax_r, ax_c} != {0, 1}:
        raise VolumeError(f"{f}: only axial, axis-aligned series are supported "
                          f"(ImageOrientationPatient = {orient.tolist()})")
    transpose = ax_r == 1                 # stored columns run along patient y
    # after an optional transpose, columns must run +x (toward patient left, LPS) and rows +y (posterior)
    x_dir = row[0] if not transpose else col[0]
    y_dir = col[1] if not transpose else row[1]
    return transpose, y_dir < 0, x_dir < 0


def load_dicom_series(folder: str | os.PathLike) -> CTVolume:
    """One DICOM CT series (a folder with one file per slice) -> :class:`CTVolume`."""
    from pydicom.pixels import apply_modality_lut

    folder = Path(folder)
    files = _dicom_files(folder)
    datasets = [_read_dicom(f) for f in files]
    first = datasets[0]
    ref = {
        "SeriesInstanceUID": str(getattr(first, "SeriesInstanceUID", "")),
        "ImageOrientationPatient": np.asarray(first.ImageOrientationPatient, dtype=float),
        "size": (int(first.Rows), int(first.Columns)),
        "PixelSpacing": np.asarray(first.PixelSpacing, dtype=float),
    }
    for f, ds in zip(files[1:], datasets[1:]):
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        if uid != ref["SeriesInstanceUID"]:
            raise VolumeError(f"{f}: mixed series in {folder} (SeriesInstanceUID {uid!r} "
                              f"differs from {ref['SeriesInstanceUID']!r} of {files[0].name})")
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), ref["ImageOrientationPatient"],
                           atol=1e-4):
            raise VolumeError(f"{f}: mixed series in {folder} (ImageOrientationPatient differs from {files[0].name})")
        if (int(ds.Rows), int(ds.Columns)) != ref["size"]:
            raise VolumeError(f"{f}: mixed series in {folder} (image size {int(ds.Rows)}x{int(ds.Columns)} "
                              f"differs from {ref['size'][0]}x{ref['size'][1]} of {files[0].name})")
        if not np.allclose(np.asarray(ds.PixelSpacing, dtype=float), ref["PixelSpacing"], rtol=1e-4):
            raise VolumeError(f"{f}: inconsistent spacing in {folder} (PixelSpacing {list(ds.PixelSpacing)} "
                              f"differs from {ref['PixelSpacing'].tolist()} of {files[0].name})")
    orient = ref["ImageOrientationPatient"]
    transpose, flip_r, flip_c = _display_transform(files[0], orient)
    normal = np.cross(orient[:3], orient[3:])
    proj = np.array([float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)) for ds in datasets])
    # slice 0 = most superior: sort by patient z (LPS +z = superior), i.e. along the normal's z sign
    sign = 1.0 if normal[2] >= 0 else -1.0
    order = np.argsort(-sign * proj, kind="stable")
    proj = proj[order]
    files = [files[i] for i in order]
    datasets = [datasets[i] for i in order]
    if len(files) > 1:
        steps = np.abs(np.diff(proj))
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            i = int(dup[0])
            raise VolumeError(f"{files[i + 1]}: same slice position as {files[i].name} ({proj[i]:.3f} mm): "
                              "duplicate slice or mixed series")
        med = float(np.median(steps))
        gaps = np.flatnonzero(steps > 1.5 * med)
        if gaps.size:
            i = int(gaps[0])
            raise VolumeError(f"{folder}: missing slices between {files[i].name} and {files[i + 1].name} "
                              f"(gap {steps[i]:.3f} mm, median step {med:.3f} mm)")
        bad = np.flatnonzero(np.abs(steps - med) > 0.1 * med)
        if bad.size:
            i = int(bad[0])
            raise VolumeError(f"{files[i + 1]}: inconsistent slice spacing in {folder} "
                              f"(step {steps[i]:.3f} mm from {files[i].name}, median {med:.3f} mm)")
        dz = med
    else:
        dz = float(getattr(first, "SliceThickness", 0) or 0)
    slices = []
    for f, ds in zip(files, datasets):
        try:
            hu = apply_modality_lut(ds.pixel_array, ds)
        except Exception as exc:  # decoder errors on truncated pixel data
            raise VolumeError(f"{f}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None
        if hu.ndim != 2:
            raise VolumeError(f"{f}: expected one 2D frame, got pixel data of shape {hu.shape}")
        slices.append(hu)
    vol = np.rint(np.stack(slices)).clip(-32768, 32767).astype(np.int16)
    if transpose:
        vol = vol.transpose(0, 2, 1)
    if flip_r:
        vol = vol[:, ::-1, :]
    if flip_c:
        vol = vol[:, :, ::-1]
    sy, sx = (float(v) for v in ref["PixelSpacing"])     # DICOM: (row spacing, column spacing)
    if transpose:
        sx, sy = sy, sx
    affine = _dicom_affine([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in datasets], orient,
                           ref["PixelSpacing"], ref["size"], (transpose, flip_r, flip_c), dz)
    return CTVolume(np.ascontiguousarray(vol), (sx, sy, dz), tuple(str(f) for f in files),
                    tuple(float(sign * v) for v in proj), "dicom",
                    {"transpose": transpose, "flip_rows": flip_r, "flip_cols": flip_c}, affine)


def _dicom_affine(positions: list[np.ndarray], orient: np.ndarray, pixel_spacing: np.ndarray,
                  size: tuple[int, int], transform: tuple[bool, bool, bool], dz: float) -> np.ndarray:
    """Display voxel (x, y, z) -> LPS mm, for slices already in display order.

    A stored pixel (row r, column c) of slice k lies at ``IPP_k + c * dc * rowcos + r * dr * colcos``
    (``PixelSpacing`` = (dr, dc)).  The display grid's first pixel and unit steps are found by
    applying the display transform to the stored (r, c) index grid itself.
    """
    def display_grid(rows: int, cols: int) -> np.ndarray:
        """(row, column) of the stored pixel behind each display pixel."""
        grid = np.stack(np.mgrid[:rows, :cols], axis=-1)
        transpose, flip_r, flip_c = transform
        if transpose:
            grid = grid.transpose(1, 0, 2)
        if flip_r:
            grid = grid[::-1, :]
        if flip_c:
            grid = grid[:, ::-1]
        return grid

    dr, dc = (float(v) for v in pixel_spacing)
    to_mm = np.column_stack([orient[3:] * dr, orient[:3] * dc])          # (3, 2): (r, c) -> mm
    origin_rc = display_grid(*size)[0, 0].astype(float)
    steps = display_grid(2, 2)               # the steps do not depend on the size (1-px images too)
    x_step = to_mm @ (steps[0, 1] - steps[0, 0])
    y_step = to_mm @ (steps[1, 0] - steps[0, 0])
    if len(positions) > 1:
        z_step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        normal = np.cross(orient[:3], orient[3:])
        z_step = -abs(dz) * normal * (1.0 if normal[2] >= 0 else -1.0)   # slice order: superior first
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = x_step, y_step, z_step
    aff[:3, 3] = positions[0] + to_mm @ origin_rc
    return aff


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_to_patient(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """``(N, 3)`` display voxel coordinates (x, y, z; may be fractional) -> ``(N, 3)`` mm via ``affine``."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return p @ affine[:3, :3].T + affine[:3, 3]


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """LPS affine of a volume known only by its spacing (display orientation, origin at voxel 0)."""
    sx, sy, sz = (float(v) for v in spacing)
    return np.diag([sx, sy, -sz, 1.0])     # x -> left, y -> posterior, slices run superior -> inferior


def to_source_grid(vol: CTVolume, data_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ``(Z, Y, X)`` display-orientation array -> (array on the input's voxel grid, its RAS affine).

    NIfTI input: the inverse of the load's reorientation, with the file's own affine, so
    the array lines up voxel for voxel with the input file.  Otherwise: the display grid
    as ``(x, y, z)`` with ``LPS_TO_RAS @ vol.affine`` (same geometry as the DICOM series).
    """
    import nibabel as nib

    xyz = np.asarray(data_zyx).transpose(2, 1, 0)
    if vol.source == "nifti" and "source_affine" in vol.meta:
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("L", "P", "I")),
                                               vol.meta["source_ornt"])
        return np.ascontiguousarray(nib.orientations.apply_orientation(xyz, back)), vol.meta["source_affine"]
    affine = vol.affine if vol.affine is not None else spacing_affine(vol.spacing)
    return np.ascontiguousarray(xyz), LPS_TO_RAS @ affine


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


__all__ = ["CTVolume", "VolumeError", "load_ct", "voxel_to_patient", "spacing_affine", "to_source_grid",
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
