"""Find the DICOM image series in a folder or a folder tree, from the headers alone.

What real exports hold besides the slices is skipped and counted, not an error: files that
are not DICOM (a README, a JPEG thumbnail), a DICOMDIR, and DICOM objects without pixel data
(structured reports, presentation states).  A file that is DICOM but cannot be parsed is
kept as *unreadable* so that the series it belongs to can say so.

Series are told apart by SeriesInstanceUID.  Files without one (anonymised exports) are
grouped per folder by what a series shares (:data:`SERIES_TRAITS`: number, description,
kernel, slice thickness, ...); when that splits one folder's files into several series, the scan
notes which attributes told them apart.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lesionprop.data.dicom_geometry import plane_name

#: SOP classes read as CT volumes: CT Image, Enhanced CT Image, Legacy Converted Enhanced CT Image
CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")

#: What the slices of one series share: files without SeriesInstanceUID are grouped by these
#: a file with one of these suffixes that does not parse is a broken slice, not a stray file
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

#: what identifies a reconstruction; not its geometry, Modality or ImageType: a slice of another
#: size, spacing or orientation, a stray MR or localizer slice is the loader's to name
SERIES_TRAITS = ("StudyInstanceUID", "SeriesNumber", "SeriesDescription", "ConvolutionKernel", "SliceThickness",
                 "FrameOfReferenceUID")


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class SeriesFiles:
    """One series' files with their headers (pydicom datasets read without pixel data).

    ``key``: the SeriesInstanceUID, or for files without one ``"<folder>#<n>"``;
    ``folder``: the deepest folder holding all of its files."""

    key: str
    folder: Path
    files: tuple[Path, ...]
    headers: tuple = field(repr=False, compare=False)
    series_uid: str = ""
    unreadable: tuple[Skipped, ...] = ()

    def attr(self, name: str) -> str:
        """An attribute of the first header as text ('' when absent or empty)."""
        value = self.headers[0].get(name, "") if self.headers else ""
        return "" if value is None else str(value).strip()

    def frames(self) -> int:
        return sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)


@dataclass(frozen=True)
class DicomScan:
    root: Path
    series: tuple[SeriesFiles, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...]

    def skipped_note(self) -> str:
        """One line counting the skipped files and naming a few ('' when none)."""
        if not self.skipped:
            return ""
        names = ", ".join(s.path.name for s in self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
        kinds = sorted({s.reason for s in self.skipped})
        n = len(self.skipped)
        return (f"{self.root}: skipped {n} file{'s' if n != 1 else ''} that {'are' if n != 1 else 'is'} not a DICOM "
                f"image ({names}: {'; '.join(kinds)})")


def _read_header(path: Path):
    """(dataset without pixel data | None, why it is skipped | None, why it is unreadable | None)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if path.name.upper() == "DICOMDIR":
        return None, "a DICOMDIR (media index)", None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if path.suffix.lower() in DICOM_SUFFIXES:        # named as DICOM: a broken slice, not a stray file
            return None, None, f"unreadable DICOM file (named {path.suffix}, but no DICOM header: truncated?)"
        return None, "not DICOM", None
    except Exception as exc:  # a corrupt header: pydicom raises many types
        return None, None, f"unreadable DICOM file ({type(exc).__name__}: {' '.join(str(exc).split())})"
    sop_class = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop_class == "1.2.840.10008.1.3.10":
        return None, "a DICOMDIR (media index)", None
    # Pixel Data is not read (stop_before_pixels): a CT class is an image; other objects need its tag
    if sop_class not in CT_SOP_CLASSES and not _has_pixel_data(path):
        return None, f"DICOM without pixel data (Modality {ds.get('Modality', '') or 'missing'})", None
    return ds, None, None


def _has_pixel_data(path: Path) -> bool:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, specific_tags=["PixelData", "FloatPixelData", "DoubleFloatPixelData"])
    except Exception:
        return False
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).strip()


def _traits(ds) -> tuple[str, ...]:
    out = []
    for name in SERIES_TRAITS:
        out.append(_text(ds.get(name, "")))
    return tuple(out)


def _files(root: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(f for f in root.iterdir() if f.is_file() and not f.name.startswith("."))
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return found


def scan_folder(root: str | os.PathLike, recursive: bool = True) -> DicomScan:
    """Every DICOM image series under ``root`` (``recursive`` False: in ``root`` itself), in a
    stable order (folder, then series number, then key)."""
    root = Path(root)
    skipped: list[Skipped] = []
    by_uid: dict[str, list] = defaultdict(list)
    unreadable: dict[Path, list[Skipped]] = defaultdict(list)
    for path in _files(root, recursive):
        ds, skip, bad = _read_header(path)
        if bad is not None:
            unreadable[path.parent].append(Skipped(path, bad))
        elif ds is None:
            skipped.append(Skipped(path, skip))
        else:
            by_uid[str(ds.get("SeriesInstanceUID", "") or "").strip()].append((path, ds))
    groups: list[tuple[str, str, list]] = [(uid, uid, members) for uid, members in by_uid.items() if uid]
    notes = []
    by_folder: dict[Path, list] = defaultdict(list)
    for path, ds in by_uid.get("", []):
        by_folder[path.parent].append((path, ds))
    for folder, members in sorted(by_folder.items()):
        split: dict[tuple, list] = defaultdict(list)
        for path, ds in members:
            split[_traits(ds)].append((path, ds))
        keys = sorted(split)
        for n, k in enumerate(keys, start=1):
            groups.append((f"{folder}#{n}", "", split[k]))
        if len(keys) > 1:
            differ = [name for i, name in enumerate(SERIES_TRAITS) if len({k[i] for k in keys}) > 1]
            notes.append(f"{folder}: {len(members)} files without SeriesInstanceUID, told apart by "
                         f"{', '.join(differ)} into {len(keys)} series")
    series = []
    for key, uid, members in groups:
        folder = Path(os.path.commonpath([str(p.parent) for p, _ in members]))
        bad = tuple(s for f, items in unreadable.items() if f == folder for s in items)
        series.append(SeriesFiles(key, folder, tuple(p for p, _ in members), tuple(d for _, d in members), uid, bad))
    claimed = {s.folder for s in series}
    for folder, items in unreadable.items():             # unreadable files in a folder of no series
        if folder not in claimed:
            series.append(SeriesFiles(f"{folder}#unreadable", folder, (), (), "", tuple(items)))
    series.sort(key=lambda s: (str(s.folder), _number(s), s.key))
    return DicomScan(root, tuple(series), tuple(skipped), tuple(notes))


def _number(s: SeriesFiles) -> int:
    try:
        return int(float(s.attr("SeriesNumber")))
    except ValueError:
        return 1 << 30


def _frame_orientation(ds) -> np.ndarray | None:
    if "ImageOrientationPatient" in ds:
        return np.asarray(ds.ImageOrientationPatient, dtype=float)
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(group)
        if items and "PlaneOrientationSequence" in items[0]:
            return np.asarray(items[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    return None


def skip_reason(series: SeriesFiles) -> str:
    """Why a study run leaves this series out ('' = a CT series to read): not CT, a localizer,
    not axial.  What is wrong inside a CT series is the loader's to say."""
    if not series.headers:
        return ""
    modalities = sorted({str(h.get("Modality", "") or "missing") for h in series.headers})
    if modalities != ["CT"]:
        return f"not CT (Modality {', '.join(modalities)})"
    types = [[str(v).upper() for v in (h.get("ImageType") or [])] for h in series.headers]
    if all("LOCALIZER" in t for t in types):
        return "a localizer (scout) series"
    orient = _frame_orientation(series.headers[0])
    if orient is not None and orient.size == 6:
        plane = plane_name(orient)
        if plane != "axial":
            return f"not axial ({plane}, ImageOrientationPatient = {[round(float(v), 4) for v in orient]})"
    return ""


def series_fingerprint(series: SeriesFiles) -> str:
    """What identifies a series' content without reading its pixels: its SOP Instance UIDs (file
    meta when the dataset's are blank), else the files' names and sizes."""
    import hashlib

    parts = []
    for path, ds in zip(series.files, series.headers):
        meta = getattr(ds, "file_meta", None)
        uid = str(ds.get("SOPInstanceUID", "") or (meta.get("MediaStorageSOPInstanceUID", "") if meta else ""))
        parts.append(uid.strip() or f"{path.name}:{path.stat().st_size}")
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
