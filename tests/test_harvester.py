"""The Lesion Harvester protocol: hand-worked cases for each rule (2D IoU +1 on the truth's
slice, a tracklet without a box on that slice, duplicates, the first-point rule, AP)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from lesionprop.eval.complete_labels import read_complete_labels, read_linked_predictions, truth_labels
from lesionprop.eval.harvester import HARVESTER_FPS, evaluate_harvester, harvester_froc, harvester_hits, voc_ap

# ground truth: unit 0 has g0 (slice 10) and g1 (slice 12); unit 1 has g2 (slice 5)
GT_UNIT = np.array([0, 0, 1])
GT_SLICE = np.array([10, 12, 5])
GT_BOXES = np.array([[10, 10, 19, 19], [30, 30, 39, 39], [10, 10, 12, 12]], float)

# detections (tracklets) and their per-slice boxes
DET_UNIT = np.array([0, 0, 0, 1, 1])
DET_SCORE = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
BOX_LESION = np.array([0, 0, 1, 1, 2, 3, 4])
BOX_SLICE = np.array([9, 11, 10, 11, 10, 5, 6])
BOXES = np.array([[10, 10, 19, 19], [10, 10, 19, 19],      # L0: slices 9 and 11 around g0, none on 10
                  [12, 10, 21, 19], [0, 0, 5, 5],          # L1: g0's slice, IoU(+1) 80/120
                  [10, 10, 19, 19],                        # L2: a second hit on g0
                  [11, 10, 13, 12],                        # L3: IoU(+1) 6/12 = 0.5 (continuous 2/6)
                  [0, 0, 5, 5]], float)                    # L4: nothing


def run(fps=HARVESTER_FPS):
    return harvester_froc(DET_UNIT, DET_SCORE, BOX_LESION, BOX_SLICE, BOXES, GT_UNIT, GT_SLICE, GT_BOXES, 2,
                          fps=fps)


def test_hits_need_a_box_on_the_truths_slice_with_plus_one_iou():
    d, g = harvester_hits(BOX_LESION, DET_UNIT[BOX_LESION], BOX_SLICE, BOXES, GT_UNIT, GT_SLICE, GT_BOXES)
    assert sorted(zip(d.tolist(), g.tolist())) == [(1, 0), (2, 0), (3, 2)]
    # the same box on the right slice but in the other unit: no hit
    d, _ = harvester_hits(np.array([0]), np.array([1]), np.array([10]), GT_BOXES[:1], GT_UNIT, GT_SLICE, GT_BOXES)
    assert d.size == 0


def test_harvester_hand_worked_curve_and_first_point_rule():
    result, found_at = run()
    # L0 FP, L1 finds g0, L2 duplicate (neither), L3 finds g2, L4 FP; g1 never found
    assert result.fp_curve.tolist() == [0.5, 0.5, 0.5, 0.5, 1.0]
    assert result.sens_curve.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert found_at.tolist() == [1, 5, 3]
    # 0.125, 0.25: below the first point -> 0; 0.5: the FIRST of the four points at 0.5 -> 0;
    # 1: 2/3; 2 ... 16: past the end -> the last value
    assert result.sensitivity.tolist() == pytest.approx([0, 0, 0] + [2 / 3] * 5)
    assert result.to_dict()["protocol"] == "harvester" and len(result.to_dict()["fps"]) == 8
    # between two rates: interpolate from the last point before (0.5, 2/3) to (1, 2/3)
    assert run(fps=[0.75])[0].sensitivity.tolist() == pytest.approx([2 / 3])
    # AP: precision 0, 1/2, 1/3, 2/4, 2/5 at recall 0, 1/3, 1/3, 2/3, 2/3 -> envelope 1/2 on both steps
    assert result.ap == pytest.approx(1 / 3)


def test_bootstrap_with_the_first_point_rule_and_ap():
    from lesionprop.eval.lens import bootstrap_protocol

    result, _ = run()
    ones = bootstrap_protocol(result, weights=np.ones((1, 2), np.int64), level=0.5)
    assert ones.samples.tolist() == [result.sensitivity.tolist()] and ones.ap_ci == (result.ap, result.ap)
    # unit 1 (patient 1) drawn twice, unit 0 not: L3 hits g2 twice (two copies), L4 is an FP twice
    ci = bootstrap_protocol(result, weights=np.array([[0, 2]]), level=0.5)
    # curve (0, 1/2), (0, 1), (1/2, 1), (1, 1) (FPs per 2 units): every rate reads 1; AP 1
    assert ci.samples.tolist() == [[1.0] * 8] and ci.ap_ci == (1.0, 1.0)


def test_ap_duplicate_rule():
    order = np.arange(3)
    # det 0 and det 1 both hit box 0, det 2 hits box 1; 2 boxes
    assert voc_ap(order, np.array([0, 1, 2]), np.array([0, 0, 1]), 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # without the duplicate: precision 1 at both recalls
    assert voc_ap(np.arange(2), np.array([0, 1]), np.array([0, 1]), 2) == pytest.approx(1.0)
    assert voc_ap(np.arange(0), np.zeros(0, int), np.zeros(0, int), 2) == 0.0


def test_empty_unit_counts_in_the_fp_rate():
    r3 = harvester_froc(DET_UNIT, DET_SCORE, BOX_LESION, BOX_SLICE, BOXES, GT_UNIT, GT_SLICE, GT_BOXES, 4)[0]
    assert r3.fp_curve[-1] == 0.5 and r3.units == 4


def test_harvester_from_files(tmp_path):
    # truth: one lesion on slices 3-5 of series 1 (unit 1-9)
    rows = []
    labels = truth_labels(rows, [("000001_01_01", 1, 9)], split="all")
    assert len(labels.units) == 1 and len(labels.boxes2d) == 0
    h2 = {"000001_01_01_001-009.annot": {3: [[10.0, 10.0, 19.0, 19.0, 3.0, 3.0]]}}   # z 3 -> slice 4
    path = tmp_path / "h2.pkl"
    path.write_bytes(pickle.dumps(h2, protocol=2))
    labels = read_complete_labels(path)
    assert labels.box_slice.tolist() == [4]
    pred = tmp_path / "boxes.csv"
    pred.write_text("File_name,x1,y1,x2,y2,score,Lesion_id\n"
                    "000001_01_01_003.png,10,10,19,19,0.9,0\n"     # lesion 0 has no box on slice 4
                    "000001_01_01_005.png,10,10,19,19,0.9,0\n"
                    "000001_01_01_004.png,10,10,19,19,0.3,1\n"     # lesion 1 does
                    "000001_01_01_012.png,10,10,19,19,0.99,2\n")   # outside the unit: ignored
    dets = read_linked_predictions(pred, labels)
    assert dets.outside == 1
    result = evaluate_harvester(labels, dets)
    assert result.fp_curve.tolist() == [1.0, 1.0] and result.sens_curve.tolist() == [0.0, 1.0]
    assert result.sensitivity.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and result.ap == pytest.approx(0.5)
    lens_truth = tmp_path / "lens.pkl"
    lens_truth.write_bytes(pickle.dumps({"test": {"000001_01_01_001-009": np.array([[10, 10, 4, 19, 19, 4.0]])}}))
    with pytest.raises(ValueError, match="needs per-slice ground-truth"):
        evaluate_harvester(read_complete_labels(lens_truth), dets)
