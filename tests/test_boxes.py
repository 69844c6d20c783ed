"""Box conventions (file vs pixel frame) and IoU, including the vectorised pair IoUs."""

import numpy as np

from lesionprop.boxes import BoxCols, box_area, box_iou, file_to_pixel, overlap_iou, pair_iou, pixel_to_file


def test_frames_round_trip():
    b = np.array([[1.0, 1.0, 10.0, 20.0]])
    assert file_to_pixel(b).tolist() == [[0.0, 0.0, 9.0, 19.0]]
    assert pixel_to_file(file_to_pixel(b)).tolist() == b.tolist()


def test_iou_continuous_touching_and_degenerate():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 5], [10, 0, 20, 10], [0, 0, 10, 10], [5, 5, 5, 5]], float)
    assert box_iou(a, b).tolist() == [[0.5, 0.0, 1.0, 0.0]]
    assert box_iou(b[3:], b[3:]).tolist() == [[0.0]]
    assert box_area(b).tolist() == [50, 100, 100, 0]
    assert pair_iou(np.repeat(a, 4, 0), b).tolist() == [0.5, 0.0, 1.0, 0.0]


def test_overlap_iou_equals_pair_iou_bit_for_bit():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, (300, 2)).astype(float)
    a = np.hstack([a, a + rng.integers(0, 8, (300, 2))])
    b = np.roll(a, 7, 0) + rng.choice([0.0, 0.5, 1.0], (300, 4))
    ia = np.arange(300)
    k, v = overlap_iou(BoxCols(a), ia, BoxCols(b), ia)
    full = pair_iou(a, b)
    assert np.array_equal(full[k], v) and np.all(np.delete(full, k) == 0) and np.all(v > 0)
