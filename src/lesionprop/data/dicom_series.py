"""One DICOM CT series (single-frame slices or an Enhanced / Legacy Converted multi-frame
image) -> :class:`lesionprop.data.ct.CTVolume` in display orientation.

* Frames come from each file (one frame) or from a multi-frame image's per-frame / shared
  functional groups (Plane Position, Plane Orientation, Pixel Measures, Pixel Value
  Transformation).
* HU: pydicom's ``apply_modality_lut`` for single frames, the frame's rescale slope /
  intercept for multi-frame images; stored values marked by Pixel Padding Value (and Range
  Limit) become :data:`AIR_HU` instead of their rescaled value.
* Geometry (:mod:`lesionprop.data.dicom_geometry`): frames sorted superior first; duplicate
  positions, gaps and uneven steps refused; a gantry tilt is measured from the positions and
  undone by resampling each frame in its own plane (a warning names the angle), a shear over
  :data:`~lesionprop.data.dicom_geometry.MAX_TILT_DEG` or one that is not a single tilt is refused.
* UIDs: a StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID or SOPInstanceUID the
  source lacks is generated (:func:`content_uid`: the same files give the same UID) and listed
  in :attr:`DicomSeries.generated`.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from pathlib import Path

import numpy as np

from lesionprop.data.ct import CTVolume, DicomSeries, SliceRef, VolumeError
from lesionprop.data.dicom_geometry import (
    MAX_TILT_DEG, SHEAR_JITTER_MM, check_steps, dicom_affine, display_transform, grid_positions, shear_of,
    superior_first, unshear,
)
from lesionprop.data.dicom_scan import CT_SOP_CLASSES, SeriesFiles

AIR_HU = -1024              # what padding (outside the reconstructed field of view) becomes
CT_IMAGE_STORAGE = CT_SOP_CLASSES[0]
_UID_NAMESPACE = uuid.UUID("6f1c2a4e-95c1-4f0e-9a57-4c65736e7072")

STUDY_TEXT = ("PatientID", "PatientName", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "StudyID")
SERIES_TEXT = ("SeriesNumber", "SeriesDescription", "SeriesDate", "Modality", "Manufacturer",
               "ManufacturerModelName", "BodyPartExamined", "ConvolutionKernel", "SliceThickness")


def content_uid(*parts: str) -> str:
    """A UID derived from ``parts`` (a name-based UUID under 2.25, PS3.5 B.2): same parts, same UID."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"


def _read(f: Path):
    import pydicom

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(f)
        truncated = [w for w in caught if "end of file" in str(w.message).lower()]
        if truncated:
            raise VolumeError(f"{f}: unreadable DICOM file (truncated: {truncated[0].message})")
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
    return ds


def _group(ds, frame: int, name: str):
    """Item ``name`` of frame ``frame``'s functional groups (per-frame first, then shared), or None."""
    for seq, i in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(seq)
        if items is not None and len(items) > i and items[i].get(name):
            return items[i].get(name)[0]
    return None


def _uid(ds, name: str, meta_name: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get(name, "") or (meta.get(meta_name, "") if meta is not None else "") or "").strip()


def _number(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _frames(f: Path, ds) -> list[dict]:
    """One dict per stored frame: position, orientation, spacing, rescale, reference."""
    sop_class = _uid(ds, "SOPClassUID", "MediaStorageSOPClassUID")
    sop_inst = _uid(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID")
    instance = _number(ds.get("InstanceNumber"))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if n == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds or not ds[tag].value:
                raise VolumeError(f"{f}: missing {tag}, cannot place the slice in the volume")
        return [dict(file=f, ds=ds, frame=None, position=np.asarray(ds.ImagePositionPatient, dtype=float),
                     orientation=np.asarray(ds.ImageOrientationPatient, dtype=float),
                     spacing=np.asarray(ds.PixelSpacing, dtype=float), rescale=None, sop_class=sop_class,
                     sop_instance=sop_inst, instance=instance, location=_number(ds.get("SliceLocation")))]
    out = []
    for k in range(n):
        pos, ori, px = (_group(ds, k, s) for s in ("PlanePositionSequence", "PlaneOrientationSequence",
                                                     "PixelMeasuresSequence"))
        for item, tag in ((pos, "ImagePositionPatient"), (ori, "ImageOrientationPatient"), (px, "PixelSpacing")):
            if item is None or tag not in item:
                raise VolumeError(f"{f}: frame {k + 1} of {n} has no {tag} in its functional groups, "
                                  "cannot place it in the volume")
        pvt = _group(ds, k, "PixelValueTransformationSequence")
        rescale = ((float(pvt.get("RescaleSlope", 1) or 1), float(pvt.get("RescaleIntercept", 0) or 0))
                   if pvt is not None else (float(ds.get("RescaleSlope", 1) or 1),
                                            float(ds.get("RescaleIntercept", 0) or 0)))
        frame_type = _group(ds, k, "CTImageFrameTypeSequence")
        if frame_type is not None and "LOCALIZER" in [str(v).upper() for v in frame_type.get("FrameType", [])]:
            raise VolumeError(f"{f}: frame {k + 1} is a localizer (scout), not an axial CT slice")
        out.append(dict(file=f, ds=ds, frame=k + 1, position=np.asarray(pos.ImagePositionPatient, dtype=float),
                        orientation=np.asarray(ori.ImageOrientationPatient, dtype=float),
                        spacing=np.asarray(px.PixelSpacing, dtype=float), rescale=rescale, sop_class=sop_class,
                        sop_instance=sop_inst, instance=instance, location=None))
    return out


def _where(fr: dict) -> str:
    return f"{fr['file']}" + (f" frame {fr['frame']}" if fr["frame"] else "")


def _check_same(frames: list[dict], folder: Path) -> None:
    first = frames[0]
    size = (int(first["ds"].Rows), int(first["ds"].Columns))
    label = Path(first["file"]).name + (f" frame {first['frame']}" if first["frame"] else "")
    for fr in frames[1:]:
        if not np.allclose(fr["orientation"], first["orientation"], atol=1e-4):
            raise VolumeError(f"{_where(fr)}: mixed series in {folder} (ImageOrientationPatient differs from {label})")
        rc = (int(fr["ds"].Rows), int(fr["ds"].Columns))
        if rc != size:
            raise VolumeError(f"{_where(fr)}: mixed series in {folder} (image size {rc[0]}x{rc[1]} differs from "
                              f"{size[0]}x{size[1]} of {label})")
        if not np.allclose(fr["spacing"], first["spacing"], rtol=1e-4):
            raise VolumeError(f"{_where(fr)}: inconsistent spacing in {folder} (PixelSpacing {fr['spacing'].tolist()} "
                              f"differs from {first['spacing'].tolist()} of {label})")


def _check_instance_numbers(frames: list[dict], folder: Path) -> None:
    """Files without SeriesInstanceUID that share an InstanceNumber are two series nothing else told
    apart (:data:`lesionprop.data.dicom_scan.SERIES_TRAITS`): stacking them would mix them silently."""
    seen: dict[float, Path] = {}
    for fr in frames:
        if fr["frame"] is None and fr["instance"] is not None:
            if fr["instance"] in seen:
                raise VolumeError(f"{fr['file']}: InstanceNumber {fr['instance']:g} also in {seen[fr['instance']].name}: "
                                  f"two series without SeriesInstanceUID in {folder} that nothing else tells apart "
                                  "(same SeriesNumber, SeriesDescription, kernel, thickness); put each in its own folder")
            seen[fr["instance"]] = Path(fr["file"])


def padding_mask(stored: np.ndarray, ds) -> np.ndarray | None:
    """Stored values that Pixel Padding Value (up to Pixel Padding Range Limit) marks as padding."""
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1

    def as_stored(v) -> int:        # an unsigned-read value of a signed image
        v = int(v)
        return v - (1 << bits) if signed and v >= 1 << (bits - 1) else v
    lo = hi = as_stored(ds.PixelPaddingValue)
    if ds.get("PixelPaddingRangeLimit") is not None:
        lo, hi = sorted((lo, as_stored(ds.PixelPaddingRangeLimit)))
    return (stored >= lo) & (stored <= hi)


def _hu(frames: list[dict]) -> tuple[np.ndarray, int]:
    """(HU (N, R, C) float32 in ``frames`` order, how many padding pixels were set to air)."""
    from pydicom.pixels import apply_modality_lut

    decoded: dict[int, np.ndarray] = {}
    out, padded = [], 0
    for fr in frames:
        ds = fr["ds"]
        if id(ds) not in decoded:
            try:
                decoded[id(ds)] = ds.pixel_array
            except Exception as exc:  # decoder errors on truncated pixel data
                raise VolumeError(f"{fr['file']}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None
        arr = decoded[id(ds)]
        stored = arr[fr["frame"] - 1] if fr["frame"] and arr.ndim == 3 else arr
        if stored.ndim != 2:
            raise VolumeError(f"{fr['file']}: expected one 2D frame, got pixel data of shape {stored.shape}")
        if fr["rescale"] is None:
            hu = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        else:
            slope, intercept = fr["rescale"]
            hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        pad = padding_mask(stored, ds)
        if pad is not None and pad.any():
            hu[pad] = AIR_HU
            padded += int(pad.sum())
        out.append(hu)
    return np.stack(out), padded


def _identify(series: SeriesFiles, frames: list[dict], study_uid: str | None) -> tuple[dict, dict, list]:
    """(ids used by derived objects, generated ones, per-frame (class, instance) UIDs)."""
    generated: dict[str, str] = {}
    refs = []
    for fr in frames:
        cls = fr["sop_class"] or CT_IMAGE_STORAGE
        if not fr["sop_class"]:
            generated.setdefault("SOPClassUID", cls)
        inst = fr["sop_instance"]
        if not inst:
            inst = content_uid("SOPInstanceUID", hashlib.sha256(Path(fr["file"]).read_bytes()).hexdigest())
            generated["SOPInstanceUID"] = f"{sum(1 for f in frames if not f['sop_instance'])} generated"
        refs.append((cls, inst))
    entropy = sorted({inst for _, inst in refs})
    first = frames[0]["ds"]
    ids = {}
    for name, given in (("StudyInstanceUID", str(first.get("StudyInstanceUID", "") or "")),
                        ("SeriesInstanceUID", series.series_uid or str(first.get("SeriesInstanceUID", "") or "")),
                        ("FrameOfReferenceUID", str(first.get("FrameOfReferenceUID", "") or ""))):
        if given.strip():
            ids[name] = given.strip()
        else:
            ids[name] = generated[name] = (study_uid if name == "StudyInstanceUID" and study_uid
                                           else content_uid(name, *entropy))
    return ids, generated, refs


def _describe(ds, names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        value = ds.get(name)
        if value is None or value == "":
            continue
        out[name] = "\\".join(map(str, value)) if type(value).__name__ == "MultiValue" else str(value)
    return out


def load_series(series: SeriesFiles, study_uid: str | None = None) -> CTVolume:
    """Read one scanned series (:func:`lesionprop.data.dicom_scan.scan_folder`) into a volume.

    ``study_uid``: the StudyInstanceUID to give the series when its files have none (a study run
    generates one for the series that belong together); None: generated from this series alone."""
    folder = series.folder
    if series.unreadable:
        bad = series.unreadable[0]
        raise VolumeError(f"{bad.path}: {bad.reason}")
    frames = [fr for f in series.files for fr in _frames(f, _read(f))]
    _check_same(frames, folder)
    if not series.series_uid:
        _check_instance_numbers(frames, folder)
    orient = frames[0]["orientation"]
    transform = display_transform(orient)
    if transform is None:
        raise VolumeError(f"{frames[0]['file']}: only axial, axis-aligned series are supported "
                          f"(ImageOrientationPatient = {orient.tolist()})")
    order, proj, sign = superior_first(np.stack([fr["position"] for fr in frames]), orient)
    frames = [frames[i] for i in order]
    step = check_steps(proj)
    if step.kind:
        a, b = _where(frames[step.i]), Path(frames[step.i + 1]["file"]).name
        b += f" frame {frames[step.i + 1]['frame']}" if frames[step.i + 1]["frame"] else ""
        if step.kind == "duplicate":
            raise VolumeError(f"{_where(frames[step.i + 1])}: same slice position as {Path(a).name} "
                              f"({proj[step.i]:.3f} mm): duplicate slice or mixed series")
        if step.kind == "gap":
            raise VolumeError(f"{folder}: missing slices between {Path(a).name} and {b} "
                              f"(gap {step.step:.3f} mm, median step {step.median:.3f} mm)")
        raise VolumeError(f"{_where(frames[step.i + 1])}: inconsistent slice spacing in {folder} "
                          f"(step {step.step:.3f} mm from {Path(a).name}, median {step.median:.3f} mm)")
    dz = step.median if len(frames) > 1 else float(frames[0]["ds"].get("SliceThickness", 0) or 0)
    spacing_rc = frames[0]["spacing"]
    positions = np.stack([fr["position"] for fr in frames])
    hu, padded = _hu(frames)
    notes = []
    if padded:
        value = frames[0]["ds"].PixelPaddingValue
        notes.append(f"{folder}: {padded} pixels of Pixel Padding Value {value} (outside the reconstructed field "
                     f"of view) set to {AIR_HU} HU")
    shear = shear_of(positions, orient, spacing_rc)
    shift = np.zeros((len(frames), 2))
    tilt = 0.0
    if shear.sheared:
        tilt = shear.angle_deg
        nominal = frames[0]["ds"].get("GantryDetectorTilt")
        said = f"; Gantry/Detector Tilt says {float(nominal):g}" if _number(nominal) is not None else ""
        if shear.jitter_mm > SHEAR_JITTER_MM or tilt > MAX_TILT_DEG:
            why = (f"the slices' in-plane offsets stray {shear.jitter_mm:.2f} mm from one tilt"
                   if shear.jitter_mm > SHEAR_JITTER_MM else f"more than {MAX_TILT_DEG:g} degrees")
            raise VolumeError(f"{folder}: slice positions sheared by {tilt:.1f} degrees (gantry tilt{said}): {why}, "
                              "cannot resample it to an orthogonal grid")
        hu, lo = unshear(hu, shear.shift_px, AIR_HU)
        shift = lo - shear.shift_px
        positions = grid_positions(positions, orient, spacing_rc, shear.shift_px, lo)
        moved = float(np.abs(shear.shift_px * spacing_rc).max())
        notes.append(f"warning: {folder}: gantry tilt of {tilt:.1f} degrees{said}: resampled to an orthogonal grid "
                     f"(each slice moved in its own plane by up to {moved:.1f} mm, linear interpolation, "
                     f"{hu.shape[1]} rows x {hu.shape[2]} columns), as dcm2niix's tilt correction does")
        dz = float(abs(proj[-1] - proj[0]) / (len(proj) - 1))
    vol = np.rint(hu).clip(-32768, 32767).astype(np.int16)
    stored_shape = (int(vol.shape[1]), int(vol.shape[2]))
    transpose, flip_r, flip_c = transform
    if transpose:
        vol = vol.transpose(0, 2, 1)
    if flip_r:
        vol = vol[:, ::-1, :]
    if flip_c:
        vol = vol[:, :, ::-1]
    sy, sx = (float(v) for v in spacing_rc)     # DICOM: (row spacing, column spacing)
    if transpose:
        sx, sy = sy, sx
    affine = dicom_affine(positions, orient, spacing_rc, stored_shape, transform, dz)
    ids, generated, refs = _identify(series, frames, study_uid)
    first = frames[0]["ds"]
    slices = tuple(SliceRef(str(fr["file"]), cls, inst, fr["frame"],
                            None if fr["instance"] is None else int(fr["instance"]), fr["location"])
                   for fr, (cls, inst) in zip(frames, refs))
    info = DicomSeries(ids, _describe(first, STUDY_TEXT), _describe(first, SERIES_TEXT), slices, positions,
                       np.asarray(orient, dtype=float), np.asarray(spacing_rc, dtype=float), stored_shape, shift,
                       generated, tilt)
    return CTVolume(np.ascontiguousarray(vol), (sx, sy, dz), tuple(str(fr["file"]) for fr in frames),
                    tuple(float(sign * v) for v in proj), "dicom",
                    {"transpose": transpose, "flip_rows": flip_r, "flip_cols": flip_c}, affine, info, tuple(notes))
