import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lesionprop.data.sample import (
    SampleGeometry, border_box, build_sample, flip_sample, slice_positions,
)
from lesionprop.data.layout import write_slice
from lesionprop.data.slices import SliceReader

SERIES = "000001_01_01"
H, W = 6, 8
YY, XX = np.mgrid[0:H, 0:W]
GRID = (XX + 10 * YY).astype(np.float64)


def v(i: int) -> float:
    """HU of slice i (plus GRID): non-linear in i so wrong interpolation weights show."""
    return 10.0 * i * i


def window(hu):
    return np.clip((np.asarray(hu, np.float64) + 1024) * 255 / 4095, 0, 255)


@pytest.fixture
def reader(tmp_path):
    for i in range(1, 12):
        write_slice(tmp_path, SERIES, i, v(i) + GRID)
    return SliceReader(tmp_path)


def sample(reader, z, center=6, **kw):
    kw = {"target_spacing_mm": 0.8, "max_size": 512, **kw}
    return build_sample(reader, SERIES, center, z, 0.8, **kw)


def check(img, hus):
    assert img.shape == (len(hus), H, W) and img.dtype == np.float32
    for ch, hu in enumerate(hus):
        np.testing.assert_allclose(img[ch], window(hu + GRID), atol=1e-3, err_msg=f"channel {ch}")


def test_interval_2mm_reads_slices_directly(reader):
    img, geom = sample(reader, 2.0)
    check(img, [v(i) for i in range(2, 11)])
    assert geom.offset == (0, 0) and geom.scale == (1, 1) and geom.size == (H, W)


def test_interval_1mm_with_series_edges(reader):
    # offsets -8..8 slices by 2: -2, 0 -> slice 1 (nearest toward 6); 12, 14 -> slice 11
    with pytest.warns(UserWarning, match="slice -2 is missing, using slice 1"):
        img, _ = sample(reader, 1.0)
    check(img, [v(1), v(1), v(2), v(4), v(6), v(8), v(10), v(11), v(11)])
    assert reader.fallbacks == 4


def test_interval_5mm_interpolates_every_neighbour(reader):
    # positions 6 + 0.4 k: 4.4, 4.8, 5.2, 5.6, 6, 6.4, 6.8, 7.2, 7.6 (by hand from v = 10 i^2)
    img, _ = sample(reader, 5.0)
    check(img, [196, 232, 272, 316, 360, 412, 464, 520, 580])


def test_interval_0p8mm_half_positions_and_edges(reader):
    # positions 6 + 2.5 k: -4, -1.5, 1, 3.5, 6, 8.5, 11, 13.5, 16
    with pytest.warns(UserWarning, match="missing"):
        img, _ = sample(reader, 0.8)
    check(img, [10, 10, 10, 125, 360, 725, 1210, 1210, 1210])


def test_interval_3mm_thirds(reader):
    # positions 6 + 2k/3; e.g. 3.333 = 2/3 v(3) + 1/3 v(4)
    img, _ = sample(reader, 3.0)
    exp = []
    for k in range(-4, 5):
        t = 6 + 2 * k / 3
        f = math.floor(t + 1e-9)
        w = t - f if abs(t - round(t)) > 1e-9 else 0.0
        exp.append((1 - w) * v(f) + w * v(f + 1))
    assert exp[0] == pytest.approx(2 / 3 * 90 + 1 / 3 * 160)
    check(img, exp)


@pytest.mark.parametrize("z", [float("nan"), 0.0, -1.0])
def test_unknown_interval_repeats_centre(reader, z):
    img, _ = sample(reader, z)
    check(img, [v(6)] * 9)


def test_missing_middle_slice_and_three_slices(reader, tmp_path):
    os.remove(tmp_path / "Images_png" / SERIES / "005.png")
    with pytest.warns(UserWarning, match="slice 5 is missing"):
        img, _ = sample(reader, 2.0, num_slices=3)
    check(img, [v(6), v(6), v(7)])
    with pytest.raises(ValueError, match="odd"):
        sample(reader, 2.0, num_slices=6)
    assert slice_positions(6, 2.5, 3, 2.0) == [5.2, 6, 6.8]


def test_window_mapping_and_clipping(tmp_path):
    hu = np.array([[-2000, -1024, 0, 1000, 3071, 5000]], np.float64)
    write_slice(tmp_path, SERIES, 1, hu)
    r = SliceReader(tmp_path)
    img, _ = build_sample(r, SERIES, 1, 2.0, 0.8, num_slices=1)
    np.testing.assert_allclose(img[0, 0], [0, 0, 1024 * 255 / 4095, 2024 * 255 / 4095, 255, 255], atol=1e-3)
    img, _ = build_sample(r, SERIES, 1, 2.0, 0.8, num_slices=1, window=(-160, 240))
    np.testing.assert_allclose(img[0, 0], [0, 0, 160 * 255 / 400, 255, 255, 255], atol=1e-3)


def test_border_clip(tmp_path):
    hu = np.full((24, 30), -1024.0)
    hu[5:15, 8:20] = 40                 # body
    hu[0:3, 26:29] = 500                # 3x3 speck: removed by the 7x7 opening
    assert border_box(hu) == (8, 5, 20, 15)
    assert border_box(np.full((5, 6), -1024)) == (0, 0, 6, 5)     # nothing survives: whole slice
    for i in (1, 2, 3):
        write_slice(tmp_path, SERIES, i, hu + i)
    r = SliceReader(tmp_path)
    img, geom = build_sample(r, SERIES, 2, 2.0, 0.8, num_slices=3, clip_border=True)
    assert img.shape == (3, 10, 12) and geom.offset == (8, 5) and geom.stored_size == (24, 30)
    np.testing.assert_allclose(img[1], window(np.full((10, 12), 42)), atol=1e-3)
    box = np.array([[8, 5, 20, 15]])
    np.testing.assert_allclose(geom.to_sample(box), [[0, 0, 12, 10]])


def test_rescale_spacing_and_max_size(tmp_path):
    write_slice(tmp_path, SERIES, 1, np.zeros((20, 30)))
    r = SliceReader(tmp_path)
    img, geom = build_sample(r, SERIES, 1, 2.0, 0.4, num_slices=1)         # 0.4 mm -> 0.8 mm: half
    assert img.shape == (1, 10, 15) and geom.scale == (0.5, 0.5)
    img, geom = build_sample(r, SERIES, 1, 2.0, 1.6, num_slices=1, max_size=50)
    assert img.shape == (1, 33, 50) and geom.scale == (50 / 30, 33 / 20)
    img, geom = build_sample(r, SERIES, 1, 2.0, 1.6, num_slices=1, max_size=50, scale=0.5)
    assert img.shape == (1, 17, 25)          # 20 * 5/3 * 0.5 = 16.7


def test_boxes_follow_image_content(tmp_path):
    """A bright block's extent in the sample equals its pixel-frame box mapped by the geometry."""
    hu = np.full((40, 60), -1024.0)
    hu[4:36, 5:55] = 0
    hu[10:20, 30:46] = 2000             # pixel-frame box (30, 10, 46, 20)
    write_slice(tmp_path, SERIES, 1, hu)
    r = SliceReader(tmp_path)
    img, geom = build_sample(r, SERIES, 1, 2.0, 1.2, num_slices=1, clip_border=True,    # x1.5, crop
                             shift=(3, -2))
    img, geom = flip_sample(img, geom)
    box = geom.to_sample(np.array([[30, 10, 46, 20]]))[0]
    ys, xs = np.nonzero(img[0] > window(1000))
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    np.testing.assert_allclose(geom.to_stored(box)[0], [30, 10, 46, 20])


def test_shift_moves_crop_window_and_zero_fills(tmp_path):
    hu = np.arange(4 * 5, dtype=np.float64).reshape(4, 5) * 100
    write_slice(tmp_path, SERIES, 1, hu)
    r = SliceReader(tmp_path)
    base, _ = build_sample(r, SERIES, 1, 2.0, 0.8, num_slices=1)
    img, geom = build_sample(r, SERIES, 1, 2.0, 0.8, num_slices=1, shift=(2, -1))
    np.testing.assert_allclose(img[:, 0:3, 2:5], base[:, 1:4, 0:3], atol=1e-4)
    assert img[:, 3].sum() == 0 and img[:, :, :2].sum() == 0 and geom.offset == (-2, 1)
    np.testing.assert_allclose(geom.to_sample(np.array([[0, 1, 3, 4]])), [[2, 0, 5, 3]])
    img, _ = build_sample(r, SERIES, 1, 2.0, 0.8, num_slices=1, shift=(0, 9))
    assert img.shape == (1, 4, 5) and img.sum() == 0
    flipped, g = flip_sample(base, geom)
    np.testing.assert_array_equal(flipped, base[:, :, ::-1])
    assert g.flipped and not geom.flipped


finite = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(ox=st.floats(-20, 100), oy=st.floats(-20, 100), sx=st.floats(0.1, 4), sy=st.floats(0.1, 4),
       flipped=st.booleans(),
       h=st.integers(1, 800), w=st.integers(1, 800),
       boxes=st.lists(st.tuples(finite, finite, finite, finite), max_size=5))
def test_geometry_round_trip(ox, oy, sx, sy, flipped, h, w, boxes):
    g = SampleGeometry((ox, oy), (sx, sy), (h, w), (1000, 1000), flipped)
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    b[:, 2:] = b[:, :2] + np.abs(b[:, 2:])              # valid xyxy
    s = g.to_sample(b)
    assert np.all(s[:, 2] >= s[:, 0] - 1e-9) and np.all(s[:, 3] >= s[:, 1] - 1e-9)
    np.testing.assert_allclose(g.to_stored(s), b, atol=1e-6)
    np.testing.assert_allclose(g.to_sample(g.to_stored(s)), s, atol=1e-6)
