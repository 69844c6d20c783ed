"""data/volumes.py on tiny volumes built in tmp dirs: display orientation, HU storage, series writer."""

from __future__ import annotations

import re

import cv2
import nibabel as nib
import numpy as np
import pytest

from lesionprop.data.deeplesion import SeriesInfo, read_series_info, write_series_info
from lesionprop.data.layout import encode_hu as hu_to_png16
from lesionprop.data.volumes import VolumeError, load_ct, load_label_volume, write_series


def _nifti(path, data, affine, slope=None):
    img = nib.Nifti1Image(data, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("flip", [(1, 1, 1), (-1, 1, 1), (1, -1, -1)])
def test_nifti_display_orientation(tmp_path, flip):
    """A marker at patient right / anterior / superior lands at x = 0, y = 0, z = 0 whatever the affine."""
    shape = (5, 4, 3)                               # i, j, k
    data = np.zeros(shape, np.int16)
    # NIfTI world is RAS+ (x grows toward the patient's right, y anterior, z superior): the voxel that is
    # most right (max x), most anterior (max y) and most superior (max z)
    affine = np.diag([2.0 * flip[0], 3.0 * flip[1], 4.0 * flip[2], 1.0])
    ii = shape[0] - 1 if flip[0] > 0 else 0             # max world x (patient right)
    jj = shape[1] - 1 if flip[1] > 0 else 0             # max world y (anterior)
    kk = shape[2] - 1 if flip[2] > 0 else 0             # max world z (superior)
    data[ii, jj, kk] = 100
    vol = load_ct(_nifti(tmp_path / "v.nii.gz", data, affine))
    assert vol.hu.shape == (3, 4, 5) and vol.spacing == (2.0, 3.0, 4.0)
    assert np.argwhere(vol.hu == 100).tolist() == [[0, 0, 0]]
    assert vol.z_positions[0] > vol.z_positions[-1]     # superior first


def test_nifti_scaling_rounds_to_int16_and_label_checks(tmp_path):
    data = np.array([[[10, 20], [30, 40]]], np.int16)   # HU = 0.5 * stored - 0
    vol = load_ct(_nifti(tmp_path / "s.nii", data, np.eye(4), slope=0.5))
    assert vol.hu.dtype == np.int16 and sorted(vol.hu.ravel().tolist()) == [5, 10, 15, 20]
    frac = _nifti(tmp_path / "f.nii.gz", np.full((2, 2, 2), 1.5, np.float32), np.eye(4))
    with pytest.raises(VolumeError, match="must hold integers"):
        load_label_volume(frac)
    labels, spacing = load_label_volume(_nifti(tmp_path / "l.nii.gz", np.full((2, 2, 2), 5, np.uint8), np.eye(4)))
    assert labels.dtype == np.uint16 and spacing == (1.0, 1.0, 1.0) and np.all(labels == 5)
    with pytest.raises(VolumeError, match="expected a 3D volume"):
        load_ct(_nifti(tmp_path / "2d.nii.gz", np.zeros((3, 3), np.int16), np.eye(4)))


def test_hu_to_png16_offsets_rounds_and_clips():
    hu = np.array([[-32768, -1024, 0], [3071, 40000, -40000]], np.int32)
    np.testing.assert_array_equal(hu_to_png16(hu), [[0, 31744, 32768], [35839, 65535, 0]])
    np.testing.assert_array_equal(hu_to_png16(np.array([-0.6, 0.4, 1.5], np.float32)), [32767, 32768, 32770])


def test_write_series_names_merges_and_refuses(tmp_path):
    write_series_info(tmp_path / "series_info.csv", [SeriesInfo("000009_01_01", (1.0, 1.0, 5.0), (8, 8), (1, 2))])
    hu = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 1000
    info = write_series(tmp_path, "000001_02_03", hu, (0.7, 0.7, 2.5), source="test")
    assert info.slice_range == (1, 3) and info.image_size == (4, 5)
    files = sorted((tmp_path / "Images_png" / "000001_02_03").iterdir())
    assert [f.name for f in files] == ["001.png", "002.png", "003.png"]
    back = cv2.imread(str(files[2]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back.astype(np.int32) - 32768, hu[2])
    rows = read_series_info(tmp_path / "series_info.csv")
    assert set(rows) == {"000001_02_03", "000009_01_01"} and rows["000001_02_03"].spacing == (0.7, 0.7, 2.5)
    with pytest.raises(ValueError, match="already exists"):
        write_series(tmp_path, "000001_02_03", hu, (0.7, 0.7, 2.5))
    write_series(tmp_path, "000001_02_03", hu[:2], (0.7, 0.7, 2.5), overwrite=True)
    assert len(list((tmp_path / "Images_png" / "000001_02_03").iterdir())) == 2
    assert read_series_info(tmp_path / "series_info.csv")["000001_02_03"].slice_range == (1, 2)
    with pytest.raises(ValueError, match="PPPPPP_SS_SS"):
        write_series(tmp_path, "patient1", hu, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        write_series(tmp_path, "000002_01_01", hu, (1, 0, 1))


@pytest.mark.parametrize("row, message", [
    ("000001_01_01,\"0.7, 0.7, 2.5\",\"8, 8\",\"20, 10\"", "line 2, column Slice_range = '20, 10': expected first <= last"),
    ("000001_01_01,\"0.7, 0.7, 2.5\",\"8, 8\",\"0, 10\"", "line 2, column Slice_range = '0, 10'"),
    ("000001_01_01,\"0.7, 0, 2.5\",\"8, 8\",\"1, 10\"", "line 2: Image_size '8, 8' and Spacing_mm_px_ '0.7, 0, 2.5' must be"),
])
def test_series_info_values_are_checked(tmp_path, row, message):
    path = tmp_path / "series_info.csv"
    path.write_text("Series,Spacing_mm_px_,Image_size,Slice_range,Source\n" + row + ",import\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")):
        read_series_info(path)
