"""The pure geometry of DICOM frames (hand-computed values), the page's scale bar, and voxel indices
in the input's own order."""

from __future__ import annotations

import numpy as np
import pytest

from lesionprop.data.dicom_geometry import (
    check_steps, display_to_stored, display_transform, grid_positions, plane_name, shear_of, superior_first, unshear,
)


def test_display_transform_and_plane_names():
    assert display_transform([1, 0, 0, 0, 1, 0]) == (False, False, False)
    assert display_transform([-1, 0, 0, 0, 1, 0]) == (False, False, True)
    assert display_transform([0, 1, 0, 1, 0, 0]) == (True, False, False)
    assert display_transform([0, 1, 0, 0, 0, -1]) is None
    t = np.radians(20)
    assert display_transform([1, 0, 0, 0, np.cos(t), np.sin(t)]) == (False, False, False)   # a tilted plane
    assert [plane_name(o) for o in ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1],
                                    [1, 0, 0, 0, np.cos(0.7), np.sin(0.7)])] == [
        "axial", "coronal", "sagittal", "oblique"]


def test_superior_first_and_step_checks():
    pos = np.array([[0, 0, -4.0], [0, 0, 0.0], [0, 0, -2.0]])
    order, proj, sign = superior_first(pos, [1, 0, 0, 0, 1, 0])
    assert order.tolist() == [1, 2, 0] and proj.tolist() == [0.0, -2.0, -4.0] and sign == 1.0
    assert check_steps(proj).kind == "" and check_steps(proj).median == 2.0
    assert check_steps([0, -2, -2, -4]).kind == "duplicate"
    assert (check_steps([0, -2, -6, -8]).kind, check_steps([0, -2, -6, -8]).i) == ("gap", 1)
    assert check_steps([0, -2, -4, -6.5]).kind == "uneven"


def test_shear_is_measured_from_positions():
    # axial planes 2 mm apart, each 0.5 mm further along +y (rows): atan(0.5 / 2) = 14.04 degrees
    pos = np.array([[0, 0.5 * k, -2.0 * k] for k in range(4)])
    s = shear_of(pos, [1, 0, 0, 0, 1, 0], [0.5, 0.8])
    assert s.sheared and s.angle_deg == pytest.approx(np.degrees(np.arctan(0.25)))
    np.testing.assert_allclose(s.shift_px, [[0, 0], [1, 0], [2, 0], [3, 0]])      # rows of 0.5 mm
    assert s.jitter_mm < 1e-12
    assert not shear_of(pos * [0, 0, 1], [1, 0, 0, 0, 1, 0], [0.5, 0.8]).sheared


def test_unshear_moves_each_frame_and_places_the_grid():
    frames = np.zeros((3, 4, 5), dtype=np.float32)
    frames[:, 1, 2] = 100.0                                   # the same stored pixel in every frame
    shift = np.array([[0.0, 0.0], [1.0, 0.0], [-1.5, 0.0]])  # frame k moved by shift_k rows in its plane
    out, lo = unshear(frames, shift, fill=-1024.0)
    assert out.shape == (3, 4 + 3, 5) and lo.tolist() == [-2.0, 0.0]
    assert out[0, 3, 2] == 100.0 and out[1, 4, 2] == 100.0    # row 1 + shift - lo
    assert out[2, 1, 2] == pytest.approx(50.0) and out[2, 2, 2] == pytest.approx(50.0)   # half a pixel: linear
    assert out[0, 0, 0] == -1024.0 and out[0, 6, 0] == -1024.0
    pos = np.array([[0, 0, 0.0], [0, 1.0, -2.0], [0, -1.5, -4.0]])     # positions that made those shifts
    grid = grid_positions(pos, np.array([1, 0, 0, 0, 1, 0.0]), [1.0, 1.0], shift, lo)
    np.testing.assert_allclose(grid, [[0, -2, 0], [0, -2, -2], [0, -2, -4]])    # stacked along the normal


@pytest.mark.parametrize("transform", [(False, False, False), (False, True, False), (False, False, True),
                                       (True, False, False), (True, True, True)])
def test_display_to_stored_undoes_the_display_transform(transform):
    from lesionprop.data.volumes import to_stored

    stored = np.arange(3 * 4).reshape(1, 3, 4)               # rows x columns as stored
    display = stored
    transpose, flip_r, flip_c = transform
    if transpose:
        display = display.transpose(0, 2, 1)
    if flip_r:
        display = display[:, ::-1]
    if flip_c:
        display = display[:, :, ::-1]
    meta = {"transpose": transpose, "flip_rows": flip_r, "flip_cols": flip_c}
    np.testing.assert_array_equal(to_stored(display, meta), stored)
    for y in range(display.shape[1]):
        for x in range(display.shape[2]):                    # a pixel's centre lands on its stored pixel's centre
            c, r = display_to_stored([[x + 0.5, y + 0.5]], (3, 4), transform)[0]
            assert stored[0, int(r), int(c)] == display[0, y, x]


def test_scale_bar_is_drawn_to_scale():
    from lesionprop.scan.figures import bar_length_mm, scale_bar

    assert bar_length_mm(0.5, 160) == 20 and bar_length_mm(2.0, 256) == 100
    assert bar_length_mm(100.0, 40) == 200 and bar_length_mm(1.0, 2) == 1          # too small: the shortest
    img = scale_bar(np.zeros((160, 160, 3), np.uint8), 0.5)  # 20 mm = 40 px
    line = np.flatnonzero((img[160 - 7] == 255).all(axis=1))
    assert 5 <= line.min() <= 6 and 40 <= line.max() - line.min() + 1 <= 43      # 40 px, thick line ends


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("L", "P", "I"), ("A", "S", "R")])
def test_file_voxel_index_is_the_nifti_files_own(tmp_path, codes):
    """A marker voxel found in display orientation maps back to its (i, j, k) in the file."""
    import nibabel as nib

    from lesionprop.data.volumes import file_voxel_index, load_ct

    data = np.full((5, 6, 7), -1000, np.int16)
    data[1, 4, 2] = 500
    ornt = nib.orientations.axcodes2ornt(codes)
    affine = nib.orientations.inv_ornt_aff(ornt, data.shape) @ np.diag([0.8, 0.9, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "v.nii.gz"))
    vol = load_ct(tmp_path / "v.nii.gz")
    (z, y, x), = np.argwhere(vol.hu == 500)
    assert file_voxel_index(vol, [[x, y, z]]).tolist() == [[1, 4, 2]]
