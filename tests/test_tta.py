"""Weighted box fusion: hand-computed clusters and agreement with ensemble_boxes."""

import warnings

import numpy as np
import pytest

from lesionprop.engine.tta import merge_views, weighted_box_fusion


def test_clusters_follow_the_moving_fused_box():
    views = [(np.array([[0.0, 0, 10, 10]]), np.array([0.8])),
             (np.array([[0.0, 0, 10, 15]]), np.array([0.4])),
             (np.array([[0.0, 0, 10, 7]]), np.array([0.6]))]
    boxes, scores = weighted_box_fusion(views, 0.6, 10)
    # by score: a, then c joins a (IoU 0.7); the fused box ends at y = (10 * 0.8 + 7 * 0.6) / 1.4;
    # b overlapped a alone by 100 / 150 = 0.67 but the fused box by 87.1 / 150 = 0.58: a cluster of its own
    y2 = (10 * 0.8 + 7 * 0.6) / 1.4
    assert np.allclose(boxes, [[0, 0, 10, y2], [0, 0, 10, 15]])
    assert np.allclose(scores, [0.7 * 2 / 3, 0.4 / 3])
    one, one_s = weighted_box_fusion(views[:1] + [(np.zeros((0, 4)), np.zeros(0))], 0.5, 10)
    assert one.tolist() == [[0, 0, 10, 10]] and one_s.tolist() == [0.4]   # found by 1 of 2 views: halved
    assert weighted_box_fusion([(np.zeros((0, 4)), np.zeros(0))] * 2, 0.5, 10)[0].shape == (0, 4)
    assert merge_views(views, "wbf", 0.5, max_boxes=1)[0].shape == (1, 4)


def test_same_boxes_as_ensemble_boxes_on_random_slices():
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    rng = np.random.default_rng(1)
    for _ in range(40):
        centres, sizes = rng.uniform(40, 470, (6, 2)), rng.uniform(8, 60, (6, 2))
        views = []
        for _ in range(4):
            k = rng.integers(0, 6, 30)
            c = centres[k] + rng.normal(0, 3, (30, 2))
            wh = sizes[k] * rng.uniform(0.85, 1.15, (30, 2))
            views.append((np.concatenate([c - wh / 2, c + wh / 2], 1), rng.uniform(0.05, 1, 30)))
        ours_b, ours_s = weighted_box_fusion(views, 0.55, 1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eb, es, _ = ensemble_boxes.weighted_boxes_fusion(
                [b / 512 for b, _ in views], [s for _, s in views], [np.zeros(len(s)) for _, s in views],
                iou_thr=0.55)
        assert ours_b.shape == eb.shape
        assert np.allclose(ours_b, eb * 512, atol=1e-3) and np.allclose(ours_s, es, atol=1e-6)
