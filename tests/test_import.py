"""``lesionprop import`` and DICOM / NIfTI loading on the shared real CT, plus bad inputs built in tmp dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesionprop.cli import main
from lesionprop.data.deeplesion import read_series_info
from lesionprop.data.volumes import VolumeError, load_ct, load_label_volume


def _dicoms(shared_data) -> list[Path]:
    return sorted((shared_data / "realct" / "dicom_series").glob("*.dcm"))


def _copy(files, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def test_import_dicom_matches_pydicom_rescale(shared_data, tmp_path):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files = _dicoms(shared_data)
    assert len(files) == 20
    out = tmp_path / "ds"
    assert main(["import", str(files[0].parent), "--out", str(out), "--series-name", "000007_01_02"]) == 0
    info = read_series_info(out / "series_info.csv")["000007_01_02"]
    assert info.slice_range == (1, 20) and info.image_size == (512, 512)
    assert info.spacing == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-6)
    # expected order: most superior (largest patient z) first
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: -float(d.ImagePositionPatient[2]))
    for i, ds in enumerate(dss, start=1):
        png = cv2.imread(str(out / "Images_png" / "000007_01_02" / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16
        expected = apply_modality_lut(ds.pixel_array, ds)
        np.testing.assert_array_equal(png.astype(np.int32) - 32768, expected.astype(np.int32))
    # refuses to overwrite without --overwrite, accepts with it
    assert main(["import", str(files[0].parent), "--out", str(out), "--series-name", "000007_01_02"]) == 2
    assert main(["import", str(files[0].parent), "--out", str(out), "--series-name", "000007_01_02",
                 "--overwrite"]) == 0


def test_dicom_slice_order_is_independent_of_file_names(shared_data, tmp_path):
    files = _dicoms(shared_data)[:4]
    folder = tmp_path / "renamed"
    folder.mkdir()
    for i, f in enumerate(files):           # reverse the name order
        shutil.copy(f, folder / f"s{len(files) - i}.dcm")
    vol = load_ct(folder)
    assert np.all(np.diff(vol.z_positions) < 0)          # superior first
    assert vol.spacing[2] == pytest.approx(2.0)


def test_import_nifti_and_label_map(shared_data, tmp_path):
    src = shared_data / "realct" / "ct_small_3mm.nii.gz"
    out = tmp_path / "ds"
    assert main(["import", str(src), "--out", str(out)]) == 0
    info = read_series_info(out / "series_info.csv")["000001_01_01"]
    assert info.spacing == (3.0, 3.0, 3.0) and info.slice_range == (1, 30) and info.image_size == (101, 122)
    vol = load_ct(src)
    png = cv2.imread(str(out / "Images_png" / "000001_01_01" / "015.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png.astype(np.int32) - 32768, vol.hu[14])
    labels, spacing = load_label_volume(shared_data / "realct" / "ct_small_3mm_organs.nii.gz")
    assert labels.shape == vol.hu.shape and spacing == vol.spacing
    # display orientation: the liver (label 5) lies on the image's left half (patient right)
    zz, yy, xx = np.nonzero(labels == 5)
    assert xx.mean() < labels.shape[2] / 2
    # a second import gets the next patient number
    assert main(["import", str(src), "--out", str(out)]) == 0
    assert "000002_01_01" in read_series_info(out / "series_info.csv")


def test_bad_inputs_name_the_file(shared_data, tmp_path):
    import pydicom

    files = _dicoms(shared_data)
    # a folder with nothing but a non-DICOM file
    d = tmp_path / "junk"
    d.mkdir()
    (d / "notes.txt").write_text("not a dicom file")
    with pytest.raises(VolumeError, match=r"junk: no DICOM image files in the series folder \(skipped 1 file that "
                                          r"is not a DICOM image \(notes\.txt: not DICOM\)\)"):
        load_ct(d)
    # Modality MR
    d = _copy(files[:2], tmp_path / "mr")
    ds = pydicom.dcmread(d / files[1].name)
    ds.Modality = "MR"
    ds.save_as(d / files[1].name)
    with pytest.raises(VolumeError, match=rf"{files[1].name}: not a CT image \(Modality = 'MR'\)"):
        load_ct(d)
    # two series mixed
    d = _copy(files[:3], tmp_path / "mixed")
    ds = pydicom.dcmread(d / files[2].name)
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.save_as(d / files[2].name)
    with pytest.raises(VolumeError, match=rf"{files[2].name}: mixed series"):
        load_ct(d)
    # a removed middle slice
    d = _copy(files[:2] + files[3:5], tmp_path / "gap")
    with pytest.raises(VolumeError, match="missing slices between"):
        load_ct(d)
    # a truncated file
    d = _copy(files[:2], tmp_path / "trunc")
    data = (d / files[1].name).read_bytes()
    (d / files[1].name).write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match=rf"{files[1].name}: (unreadable DICOM|cannot decode)"):
        load_ct(d)
    # the CLI turns these into one-line errors, exit status 2
    assert main(["import", str(tmp_path / "gap"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "Images_png").exists()


def test_not_a_volume(tmp_path):
    bad = tmp_path / "x.nii.gz"
    bad.write_bytes(b"garbage")
    with pytest.raises(VolumeError, match=r"x\.nii\.gz: unreadable NIfTI"):
        load_ct(bad)
    other = tmp_path / "x.txt"
    other.write_text("?")
    with pytest.raises(VolumeError, match="expected a DICOM series folder or a NIfTI file"):
        load_ct(other)
    with pytest.raises(FileNotFoundError):
        load_ct(tmp_path / "missing")


def _edit(files, folder: Path, edit) -> Path:
    """Copy ``files`` into ``folder`` and apply ``edit(index, dataset)`` to each before saving."""
    import pydicom

    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        edit(i, ds)
        ds.save_as(folder / f.name)
    return folder


def test_spacing_pixel_data_and_orientation_checks(shared_data, tmp_path):
    files = _dicoms(shared_data)[:4]
    ref = load_ct(_copy(files, tmp_path / "ref"))

    def shift_last(i, ds):                      # last step 1.3 x the others: inconsistent, not a gap
        if i == 3:
            p = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [p[0], p[1], p[2] - 0.6]
    with pytest.raises(VolumeError, match="inconsistent slice spacing"):
        load_ct(_edit(files, tmp_path / "steps", shift_last))

    def spacing(i, ds):
        if i == 2:
            ds.PixelSpacing = [0.8, 0.8]
    with pytest.raises(VolumeError, match=rf"{files[2].name}: inconsistent spacing"):
        load_ct(_edit(files, tmp_path / "px", spacing))

    def no_pixels(i, ds):
        if i == 1:
            del ds.PixelData
    with pytest.raises(VolumeError, match=rf"{files[1].name}: not a CT image \(no pixel data\)"):
        load_ct(_edit(files, tmp_path / "nopix", no_pixels))

    def mirrored(i, ds):                        # columns run toward the patient's right
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    flipped = load_ct(_edit(files, tmp_path / "mirror", mirrored))
    # the normal flips too (-z), so the superior-first order and the display columns must be restored
    np.testing.assert_array_equal(flipped.hu, ref.hu[:, :, ::-1])

    def sagittal(i, ds):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(VolumeError, match="only axial"):
        load_ct(_edit(files, tmp_path / "sag", sagittal))


def test_a_label_map_imported_as_ct_is_noted(tmp_path, capsys):
    import nibabel as nib

    from lesionprop.data.volumes import label_map_hint

    labels = np.zeros((6, 20, 24), np.int16)
    labels[2:4, 5:9, 6:12] = 5
    labels[1, 0:3, 0:3] = 117
    src = tmp_path / "organs.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), np.diag([0.8, 0.8, 3.0, 1.0])), src)
    assert main(["import", str(src), "--out", str(tmp_path / "ds")]) == 0
    captured = capsys.readouterr()
    assert "24 x 20 pixels (width x height)" in captured.out
    assert f"note: {src}: no value below 0 HU and 3 distinct integer values (0..117)" in captured.err
    ct = labels.astype(np.float32) * 40 - 1000                      # air at -1000 HU: a CT
    assert label_map_hint(ct) == ""
    assert label_map_hint(np.linspace(0, 100, 1000).reshape(10, 10, 10)) == ""     # not integers


def test_the_shared_label_map_is_noted_and_its_ct_is_not(shared_data, tmp_path, capsys):
    for name, noted in (("ct_small_3mm_organs.nii.gz", True), ("ct_small_3mm.nii.gz", False)):
        assert main(["import", str(shared_data / "realct" / name), "--out", str(tmp_path / name)]) == 0
        assert ("looks like a label map" in capsys.readouterr().err) is noted


def test_import_out_that_is_a_file_is_refused_before_reading(tmp_path, capsys):
    target = tmp_path / "DL_info.csv"
    target.write_text("keep\n")
    assert main(["import", str(tmp_path / "no_such_series"), "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"lesionprop import: error: --out {target} is a file, expected a folder\n"
    assert target.read_text() == "keep\n" and sorted(p.name for p in tmp_path.iterdir()) == ["DL_info.csv"]
