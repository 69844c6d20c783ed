"""``detect`` on every real-export case: the DICOM SEG and the SR (TID 1500) are valid (highdicom reads
them everywhere; Debian's dciodvfy finds no error where it is installed) and say the same as
lesions.csv; nothing fails after the detection, no highdicom warning leaks."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from dicom_cases import (
    add_stray_files, by_position, enhanced_ct, no_frame_of_reference, padded, renamed, second_series, tilted,
    write_series,
)
from lesionprop.cli import main
from lesionprop.data.volumes import load_ct

DETECT = ["--checkpoint", "synthetic-cpu-detector", "--score", "0.3", "--max-lesions", "3", "--device", "cpu"]


def _case(name: str, files: list[Path], root: Path, shared: Path) -> Path:
    if name == "anonymised":
        return write_series(files, root / name)
    if name == "no_frame_of_reference":
        return write_series(files, root / name, no_frame_of_reference)
    if name == "stray_files":
        folder = write_series(files, root / name)
        add_stray_files(folder, shared)
        return folder
    if name == "enhanced_multiframe":
        return enhanced_ct(files, root / name / "enhanced.dcm").parent
    if name == "gantry_tilt":
        return tilted(files, root / name, 12.0, "planes")
    if name == "pixel_padding":
        return padded(files, root / name)
    raise ValueError(name)


CASES = ["anonymised", "no_frame_of_reference", "stray_files", "enhanced_multiframe", "gantry_tilt", "pixel_padding"]


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path`` ([] when it finds none); skips the test where it is not installed."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    done = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def _source_frame_geometry(vol, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IPP, IOP, PixelSpacing) of the stored source frame behind display slice ``z``, read from its file."""
    import pydicom

    ref = vol.dicom.slices[z]
    ds = pydicom.dcmread(ref.file, stop_before_pixels=True)
    if ref.frame is None:
        return (np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float),
                np.asarray(ds.PixelSpacing, float))
    fg, shared = ds.PerFrameFunctionalGroupsSequence[ref.frame - 1], ds.SharedFunctionalGroupsSequence[0]

    def get(name):
        return (fg if name in fg else shared)[name][0]
    return (np.asarray(get("PlanePositionSequence").ImagePositionPatient, float),
            np.asarray(get("PlaneOrientationSequence").ImageOrientationPatient, float),
            np.asarray(get("PixelMeasuresSequence").PixelSpacing, float))


def check_seg_and_sr(out: Path, vol) -> None:
    """The SEG and SR of one detect run, against lesions.json and the source series."""
    import highdicom as hd

    meta = json.loads((out / "lesions.json").read_text())
    rows = meta["lesions"]
    assert rows and meta["dicom_sr"] == "lesions_sr.dcm"
    ids = vol.dicom.ids
    assert meta["dicom_series"]["SeriesInstanceUID"] == ids["SeriesInstanceUID"]
    seg = hd.seg.segread(out / "lesions_seg.dcm")
    sr = hd.sr.srread(out / "lesions_sr.dcm")
    for obj in (seg, sr):
        assert obj.StudyInstanceUID == ids["StudyInstanceUID"] != ""
    assert seg.FrameOfReferenceUID == ids["FrameOfReferenceUID"] != ""
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ids["SeriesInstanceUID"]
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        s.sop_instance_uid for s in vol.dicom.slices}
    volume = seg.get_volume(segment_numbers=[r["id"] for r in rows], combine_segments=False)   # placeable
    assert [int(volume.array[..., k].sum()) for k in range(len(rows))] == [r["voxels"] for r in rows]
    tracking = {int(s.SegmentNumber): str(s.TrackingUID) for s in seg.SegmentSequence}
    planar = sr.content.get_planar_roi_measurement_groups()
    volumetric = sr.content.get_volumetric_roi_measurement_groups()
    assert len(planar) == len(volumetric) == len(rows)
    for row, p, v in zip(rows, planar, volumetric):
        assert p.tracking_identifier == v.tracking_identifier == f"lesion {row['id']}"
        assert p.tracking_uid == v.tracking_uid == tracking[row["id"]]
        got = {m.name.meaning: (m.value, m.unit.value) for m in p.get_measurements()}
        assert got == {"Long axis": (row["long_axis_mm"], "mm"), "Short axis": (row["short_axis_mm"], "mm"),
                       "Certainty of Finding": (row["score"], "1")}
        z = row["key_slice"] - 1
        key = vol.dicom.slices[z]
        region = p.roi
        image = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == key.sop_instance_uid
        assert image.get("ReferencedFrameNumber") == key.frame
        # the box, placed by the source frame's own geometry, lies in the lesion's LPS box on the key slice
        ipp, iop, spacing = _source_frame_geometry(vol, z)
        cr = np.asarray(region.value, dtype=float).reshape(-1, 2)             # (column, row), corner convention
        mm = ipp + (cr[:, :1] - 0.5) * spacing[1] * iop[:3] + (cr[:, 1:] - 0.5) * spacing[0] * iop[3:]
        lo = np.array([row["lps_x_min_mm"], row["lps_y_min_mm"], row["lps_z_min_mm"]])
        hi = np.array([row["lps_x_max_mm"], row["lps_y_max_mm"], row["lps_z_max_mm"]])
        assert np.all(mm >= lo - 0.01) and np.all(mm <= hi + 0.01), (mm, lo, hi)
        segment = v.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_segment_numbers == [row["id"]]
        vm = {(m.name.meaning, m.derivation.meaning if m.derivation else None): m.value for m in v.get_measurements()}
        assert vm == {("Volume", None): row["volume_ml"], ("Attenuation Coefficient", "Mean"): row["hu_mean"],
                      ("Attenuation Coefficient", "Maximum"): row["hu_max"]}
    for path in (out / "lesions_seg.dcm", out / "lesions_sr.dcm"):
        assert dciodvfy_errors(path) == [], path


@pytest.fixture(scope="module")
def files(shared_data):
    return by_position(shared_data)[:6]


@pytest.mark.parametrize("case", CASES)
def test_detect_writes_a_valid_seg_and_sr(case, files, shared_data, tmp_path, capsys):
    src = _case(case, files, tmp_path, shared_data)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["detect", str(src), "--out", str(out), *DETECT]) == 0
    leaked = [str(w.message) for w in caught if "highdicom" in w.filename or "pydicom" in w.filename]
    assert leaked == []
    err = capsys.readouterr().err
    vol = load_ct(src)
    generated = json.loads((out / "lesions.json").read_text())["generated_uids"]
    assert generated == {k: v for k, v in vol.dicom.generated.items()}
    if case == "enhanced_multiframe":                                  # built with the UIDs filled in
        assert generated == {} and "generated_uids" not in err
    else:
        assert "StudyInstanceUID" in generated and "recorded in lesions.json under generated_uids" in err
    if case == "no_frame_of_reference":
        assert "FrameOfReferenceUID" in generated and "a generated FrameOfReferenceUID places the SEG and SR" in err
    if case == "stray_files":
        assert "skipped 3 files that are not a DICOM image" in err
    if case == "gantry_tilt":
        assert "warning: " in err and "gantry tilt of 12.0 degrees" in err
        import nibabel as nib

        img = nib.load(str(out / "lesions.nii.gz"))
        np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)      # no shear left to lose
    check_seg_and_sr(out, vol)
    assert (out / "index.html").is_file()


def test_detect_on_an_interleaved_pair_checks_both_series(files, tmp_path, capsys):
    """Two anonymised series mixed in one folder: one result each, each SEG / SR valid."""
    folder = write_series(files[:4], tmp_path / "mixed")
    renamed(folder, "_a")
    write_series(files[:4], folder, second_series(shift_mm=1.0))
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--out", str(out), *DETECT]) == 0
    printed = capsys.readouterr()
    assert "told apart by SeriesNumber, SeriesDescription, ConvolutionKernel into 2 series" in printed.err
    from lesionprop.data.dicom_scan import scan_folder
    from lesionprop.data.dicom_series import load_series
    from lesionprop.scan.study import plan_study, shared_study_uids

    scan = scan_folder(folder)
    entries = plan_study(scan)
    assert [e.name for e in entries] == ["3_CT_Lung_1.0", "CT_Body_3.0"]
    uids = shared_study_uids(entries)
    assert len(set(uids.values())) == 1                              # one generated study for both
    for e in entries:
        check_seg_and_sr(out / e.name, load_series(e.series, study_uid=uids[e.series.key]))
