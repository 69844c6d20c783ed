"""Reading what real exports look like (dicom_cases.py builds each from the real series):
anonymised, no FrameOfReferenceUID, stray files, Enhanced (multi-frame) CT, gantry tilt,
Pixel Padding Value, two series in one folder or in subfolders."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_cases import (
    add_stray_files, by_position, enhanced_ct, identified, no_frame_of_reference, padded, renamed, second_series,
    tilted, write_series,
)
from lesionprop.cli import main
from lesionprop.data.dicom_scan import scan_folder
from lesionprop.data.dicom_series import AIR_HU, load_series
from lesionprop.data.volumes import VolumeError, load_ct, voxel_to_patient


@pytest.fixture(scope="module")
def six(shared_data, tmp_path_factory):
    """(the 6 most superior real slices, their volume as read from an untouched copy)."""
    files = by_position(shared_data)[:6]
    return files, load_ct(write_series(files, tmp_path_factory.mktemp("ref") / "ref"))


def test_anonymised_series_gets_stable_generated_uids(six, tmp_path):
    files, ref = six
    assert ref.dicom.generated.keys() == {"StudyInstanceUID", "SeriesInstanceUID"}   # the real series is anonymised
    again = load_ct(write_series(files, tmp_path / "again"))
    assert again.dicom.ids == ref.dicom.ids and ref.dicom.ids["StudyInstanceUID"].startswith("2.25.")
    assert ref.dicom.ids["FrameOfReferenceUID"] == "1.3.12.2.1107.5.1.4.60064.30000022120807274275100000041"
    other = load_ct(write_series(files[:5], tmp_path / "five"))                   # other files, other UIDs
    assert other.dicom.ids["SeriesInstanceUID"] != ref.dicom.ids["SeriesInstanceUID"]
    def blank_sop(i, ds):                                                      # not even in the file meta
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = ""
    bare = load_ct(write_series(files, tmp_path / "bare", blank_sop))
    assert bare.dicom.generated["SOPInstanceUID"] == "6 generated"
    uids = [s.sop_instance_uid for s in bare.dicom.slices]
    assert len(set(uids)) == 6 and all(u.startswith("2.25.") for u in uids)
    assert uids == [s.sop_instance_uid for s in load_ct(tmp_path / "bare").dicom.slices]     # stable
    named = load_ct(write_series(files, tmp_path / "named", identified))
    assert named.dicom.generated == {} and named.dicom.ids["SeriesInstanceUID"] == "1.2.826.0.1.3680043.10.1234.2"
    np.testing.assert_array_equal(named.hu, ref.hu)


def test_no_frame_of_reference_is_generated(six, tmp_path):
    files, ref = six
    vol = load_ct(write_series(files, tmp_path / "nofor", no_frame_of_reference))
    assert "FrameOfReferenceUID" in vol.dicom.generated
    assert vol.dicom.ids["FrameOfReferenceUID"] == vol.dicom.generated["FrameOfReferenceUID"] != ""
    np.testing.assert_array_equal(vol.hu, ref.hu)


def test_stray_files_are_skipped_and_counted(six, shared_data, tmp_path, capsys):
    files, ref = six
    folder = write_series(files, tmp_path / "stray")
    add_stray_files(folder, shared_data)
    vol = load_ct(folder)
    np.testing.assert_array_equal(vol.hu, ref.hu)
    assert vol.notes == (f"{folder}: skipped 3 files that are not a DICOM image (DICOMDIR, README.txt, "
                         "thumbnail.jpg: a DICOMDIR (media index); not DICOM)",)
    assert main(["import", str(folder), "--out", str(tmp_path / "ds")]) == 0
    assert "lesionprop import: note: " + vol.notes[0] in capsys.readouterr().err


def test_enhanced_multiframe_ct_reads_like_its_slices(six, tmp_path):
    files, ref = six
    shuffled = [files[i] for i in (3, 0, 5, 1, 4, 2)]                    # frame order is not slice order
    path = enhanced_ct(shuffled, tmp_path / "mf" / "enhanced.dcm")
    vol = load_ct(path.parent)
    np.testing.assert_array_equal(vol.hu, ref.hu)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-6)
    assert vol.spacing == pytest.approx(ref.spacing)
    import pydicom

    mf = pydicom.dcmread(path, stop_before_pixels=True)
    assert sorted(s.frame for s in vol.dicom.slices) == [1, 2, 3, 4, 5, 6]
    for z, s in enumerate(vol.dicom.slices):                              # display slice -> the frame there
        frame = mf.PerFrameFunctionalGroupsSequence[s.frame - 1]
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, ref.dicom.positions[z])
    assert {s.sop_class_uid for s in vol.dicom.slices} == {"1.2.840.10008.5.1.4.1.1.2.2"}
    assert vol.dicom.multiframe and len({s.sop_instance_uid for s in vol.dicom.slices}) == 1


def test_pixel_padding_value_becomes_air(six, tmp_path):
    files, ref = six
    vol = load_ct(padded(files, tmp_path / "pad", value=-2000, radius_px=230))
    rr, cc = np.mgrid[:512, :512]
    outside = (rr - 256) ** 2 + (cc - 256) ** 2 > 230 ** 2
    assert int(vol.hu.min()) == AIR_HU and not (vol.hu == -2000 - 1024).any()
    assert np.all(vol.hu[:, outside] == AIR_HU)
    np.testing.assert_array_equal(vol.hu[:, ~outside], ref.hu[:, ~outside])     # the field of view untouched
    assert vol.notes == (f"{tmp_path / 'pad'}: {6 * int(outside.sum())} pixels of Pixel Padding Value -2000 (outside "
                         f"the reconstructed field of view) set to {AIR_HU} HU",)


ROD = np.array([40.0, -190.0, -770.0])            # LPS mm, in soft tissue of the real slices


@pytest.mark.parametrize("how", ["planes", "positions"])
def test_gantry_tilt_is_resampled_so_a_rod_along_the_normal_stands_straight(six, tmp_path, how):
    """A spot where a line along the planes' normal crosses each tilted slice: in the sheared stack it
    drifts by ~0.55 px a slice; after resampling it sits on the same pixel of every slice, and the
    affine puts it on the line."""
    files, _ = six
    with_rod = load_ct(tilted(files, tmp_path / "rod", 15.0, how, ROD))
    without = load_ct(tilted(files, tmp_path / "plain", 15.0, how))
    assert with_rod.dicom.tilt_deg == pytest.approx(15.0, abs=1e-3)
    (note,) = with_rod.notes
    assert note.startswith(f"warning: {tmp_path / 'rod'}: gantry tilt of 15.0 degrees; Gantry/Detector Tilt says 15: "
                           "resampled to an orthogonal grid")
    spot = with_rod.hu.astype(np.float64) - without.hu
    yy, xx = np.mgrid[: spot.shape[1], : spot.shape[2]]
    centres = np.array([[(s * xx).sum() / s.sum(), (s * yy).sum() / s.sum()] for s in np.clip(spot, 0, None)])
    assert np.abs(centres - centres.mean(axis=0)).max() < 0.05            # straight, in pixels
    a = with_rod.affine
    assert abs(np.dot(a[:3, 0], a[:3, 2])) < 1e-6 and abs(np.dot(a[:3, 1], a[:3, 2])) < 1e-6   # orthogonal grid
    normal = a[:3, 2] / np.linalg.norm(a[:3, 2])
    for z, (x, y) in enumerate(centres):
        p = voxel_to_patient(a, [x, y, z])[0] - ROD
        assert np.linalg.norm(p - (p @ normal) * normal) < 0.1            # on the rod, in mm
    import pydicom

    rows = []                                                             # the spot in the stored frames drifts
    for f in sorted((tmp_path / "rod").iterdir()):
        a, b = (pydicom.dcmread(d / f.name) for d in (tmp_path / "rod", tmp_path / "plain"))
        s = np.clip(a.pixel_array.astype(float) - b.pixel_array, 0, None)
        rows.append((float(a.ImagePositionPatient[2]), (s * yy[:512]).sum() / s.sum()))
    drift = np.abs(np.diff([r for _, r in sorted(rows)]))
    assert np.allclose(drift, drift.mean(), atol=0.05) and drift.mean() > 0.5   # ~0.53 px a slice


def test_gantry_tilt_that_is_not_one_tilt_or_too_steep_is_refused(six, tmp_path):
    files, _ = six
    with pytest.raises(VolumeError, match=r"jitter: slice positions sheared by [0-9.]+ degrees \(gantry tilt; "
                                          r"Gantry/Detector Tilt says 10\): the slices' in-plane offsets stray"):
        load_ct(tilted(files, tmp_path / "jitter", 10.0, "positions", jitter_mm=0.5))
    with pytest.raises(VolumeError, match=r"steep: slice positions sheared by 35.0 degrees .*more than 30 degrees"):
        load_ct(tilted(files, tmp_path / "steep", 35.0, "positions"))


def test_two_series_in_one_folder_are_told_apart(six, tmp_path):
    """Anonymised (no SeriesInstanceUID), interleaved 1 mm apart: two series, not one at 1 mm."""
    files, ref = six
    folder = write_series(files, tmp_path / "both")
    renamed(folder, "_a")
    write_series(files, folder, second_series(shift_mm=1.0))
    scan = scan_folder(folder)
    assert [len(s.files) for s in scan.series] == [6, 6]
    assert scan.notes == (f"{folder}: 12 files without SeriesInstanceUID, told apart by SeriesNumber, "
                          "SeriesDescription, ConvolutionKernel into 2 series",)
    second, first = (load_series(s) for s in scan.series)                # series number 3 before none
    np.testing.assert_array_equal(first.hu, ref.hu)
    np.testing.assert_allclose(np.array(second.z_positions) - np.array(first.z_positions), 1.0)
    assert second.dicom.series["SeriesDescription"] == "CT Lung 1.0" and first.spacing[2] == pytest.approx(2.0)
    with pytest.raises(VolumeError, match=r"mixed series in .*both \(2 series: "):
        load_ct(folder)


def test_two_series_nothing_tells_apart_are_refused(six, tmp_path):
    files, _ = six
    folder = write_series(files, tmp_path / "same")
    renamed(folder, "_a")

    def moved(i, ds):                                   # same series attributes, positions 1 mm apart
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 1.0]
    write_series(files, folder, moved)
    with pytest.raises(VolumeError, match=r"InstanceNumber \d+ also in .*: two series without SeriesInstanceUID"):
        load_ct(folder)


def test_a_study_folder_is_scanned_series_by_series(six, tmp_path):
    files, _ = six
    write_series(files[:3], tmp_path / "study" / "CT_abdomen")
    write_series(files[3:], tmp_path / "study" / "CT_lung", second_series(uid="1.2.826.0.1.3680043.10.1234.77"))
    (tmp_path / "study" / "notes.txt").write_text("scanned on Monday\n")
    scan = scan_folder(tmp_path / "study")
    assert [(s.folder.name, len(s.files), s.series_uid) for s in scan.series] == [
        ("CT_abdomen", 3, ""), ("CT_lung", 3, "1.2.826.0.1.3680043.10.1234.77")]
    assert [p.path.name for p in scan.skipped] == ["notes.txt"]
    with pytest.raises(VolumeError, match=r"study: no DICOM image files in the folder itself, but 2 series in its "
                                          r"subfolders \(e.g. .*CT_abdomen\): give one series folder"):
        load_ct(tmp_path / "study")                      # import reads one series folder
