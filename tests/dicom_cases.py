"""What real DICOM exports look like, built from the real series in ../shared/data/realct/dicom_series.

Every builder writes into a folder it is given (a pytest tmp dir) and never touches the shared
files.  The real series is itself anonymised: Study / Series Instance UIDs and the datasets'
SOP Instance UIDs are empty (the file meta keeps the SOP Instance UIDs); it has a
FrameOfReferenceUID.  :func:`identified` fills the UIDs for the cases that need them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STUDY_UID, SERIES_UID = "1.2.826.0.1.3680043.10.1234.1", "1.2.826.0.1.3680043.10.1234.2"


def real_files(shared: Path) -> list[Path]:
    return sorted((shared / "realct" / "dicom_series").glob("*.dcm"))


def by_position(shared: Path) -> list[Path]:
    """The real files, most superior first."""
    import pydicom

    return sorted(real_files(shared), key=lambda f: -float(pydicom.dcmread(f, stop_before_pixels=True)
                                                              .ImagePositionPatient[2]))


def write_series(files: list[Path], folder: Path, edit=None, decompress: bool = False) -> Path:
    """Copy ``files`` into ``folder`` through pydicom, applying ``edit(i, ds)`` to each."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if decompress:
            ds.decompress()
        if edit is not None:
            edit(i, ds)
        ds.save_as(folder / f.name)
    return folder


def identified(i: int, ds) -> None:
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, SERIES_UID
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyID, ds.SeriesNumber = "P0001", "1", 2


def no_frame_of_reference(i: int, ds) -> None:
    del ds.FrameOfReferenceUID


def add_stray_files(folder: Path, shared: Path) -> list[str]:
    """A README, a JPEG thumbnail and a real DICOMDIR (pydicom's FileSet over an identified slice)."""
    import cv2
    import pydicom
    from pydicom.fileset import FileSet

    (folder / "README.txt").write_text("exported by the PACS for research\n")
    ds = pydicom.dcmread(real_files(shared)[0])
    grey = np.clip((ds.pixel_array.astype(np.float32) - 600) / 2000 * 255, 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "thumbnail.jpg"), cv2.resize(grey, (64, 64)))
    media = folder.parent / f"{folder.name}_media"
    identified(0, ds)
    fs = FileSet()
    fs.add(ds)
    fs.write(media)
    (folder / "DICOMDIR").write_bytes((media / "DICOMDIR").read_bytes())
    return ["README.txt", "thumbnail.jpg", "DICOMDIR"]


def enhanced_ct(files: list[Path], path: Path) -> Path:
    """One Legacy Converted Enhanced CT image (highdicom) holding ``files`` as frames, per-frame
    functional groups for position and rescale; frames in the order of ``files``."""
    import highdicom as hd
    import pydicom

    datasets = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.decompress()
        identified(i, ds)
        datasets.append(ds)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=SERIES_UID + ".9", series_number=7,
        sop_instance_uid=hd.UID(), instance_number=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    return path


def tilted(files: list[Path], folder: Path, degrees: float, how: str, rod: np.ndarray | None = None,
           jitter_mm: float = 0.0) -> Path:
    """A gantry-tilted copy: ``how`` = "planes" (Image Orientation tilted about the patient's x axis,
    positions still along the table, as scanners store a tilt) or "positions" (axial planes, each
    slice's position moved along y by its table offset x tan(angle)).  With ``rod`` (a point, LPS
    mm): a Gaussian spot is added where a line through it along the planes' normal crosses each
    slice, at sub-pixel accuracy, so a correct resampling stacks the spots straight."""
    t = np.radians(degrees)
    if how == "planes":
        iop = np.array([1.0, 0, 0, 0, np.cos(t), np.sin(t)])
    else:
        iop = np.array([1.0, 0, 0, 0, 1.0, 0])
    u, v = iop[:3], iop[3:]
    normal = np.cross(u, v)
    z0 = None

    def edit(i, ds):
        nonlocal z0
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        z0 = ipp[2] if z0 is None else z0
        if how == "positions":
            ipp[1] += (ipp[2] - z0) * np.tan(t)
        ipp[1] += jitter_mm * (i % 2)
        ds.ImagePositionPatient = [float(f"{x:.6f}") for x in ipp]
        ds.ImageOrientationPatient = [float(f"{x:.8f}") for x in iop]
        ds.GantryDetectorTilt = f"{degrees:g}"
        if rod is not None:
            dr, dc = (float(s) for s in ds.PixelSpacing)
            p = rod + ((ipp - rod) @ normal) * normal            # the rod's point in this plane
            c, r = (p - ipp) @ u / dc, (p - ipp) @ v / dr      # index coordinates: IPP is the first pixel's centre
            rr, cc = np.mgrid[: int(ds.Rows), : int(ds.Columns)]
            spot = 1500.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 2.0 ** 2))
            stored = ds.pixel_array.astype(np.float64) + spot
            ds.PixelData = np.rint(stored).clip(0, 4095).astype(np.uint16).tobytes()
    return write_series(files, folder, edit, decompress=True)


def padded(files: list[Path], folder: Path, value: int = -2000, radius_px: float = 230.0) -> Path:
    """Signed 16-bit copies whose pixels outside a circle are ``value``, declared as Pixel Padding Value."""
    def edit(i, ds):
        stored = ds.pixel_array.astype(np.int16)
        rr, cc = np.mgrid[: int(ds.Rows), : int(ds.Columns)]
        outside = (rr - ds.Rows / 2) ** 2 + (cc - ds.Columns / 2) ** 2 > radius_px ** 2
        stored[outside] = value
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                del ds[tag]
        ds.PixelPaddingValue = value
        ds["PixelPaddingValue"].VR = "SS"
        ds.PixelData = stored.tobytes()
    return write_series(files, folder, edit, decompress=True)


def second_series(number: int = 3, description: str = "CT Lung 1.0", shift_mm: float = 0.0, uid: str = ""):
    """An edit making a slice part of another reconstruction: new SOP Instance UID, number,
    description and kernel, optionally moved ``shift_mm`` along z (interleaved with the first)."""
    def edit(i, ds):
        from pydicom.uid import generate_uid

        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(ds.file_meta.MediaStorageSOPInstanceUID),
                                                                             str(number)])
        ds.SOPInstanceUID = ""
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber, ds.SeriesDescription, ds.ConvolutionKernel = number, description, "Bl64f"
        if shift_mm:
            ipp = [float(x) for x in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + shift_mm]
            ds.SliceLocation = ipp[2] + shift_mm
    return edit


def renamed(folder: Path, suffix: str) -> None:
    """Give every file of ``folder`` a suffix, so two series can share one folder."""
    for f in list(folder.iterdir()):
        f.rename(f.with_name(f.stem + suffix + f.suffix))
