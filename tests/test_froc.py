"""FROC evaluation: hand-computed curves, the protocol's corner cases, a loop cross-check."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import FAST, S1, S2, loops, make_lesion, name, preds
from lesionprop.boxes import pair_iou
from lesionprop.eval.froc import evaluate, froc_curve, sensitivity_at

froc_loop = loops.froc_loop

A, B, C, D = name(S1, 10), name(S1, 20), name(S2, 5), name(S2, 9)
a1, a2, b1, c1, d1 = (0, 0, 10, 10), (50, 50, 60, 60), (0, 0, 20, 20), (0, 0, 5, 5), (30, 30, 40, 40)


def lesions_abcd():
    return [make_lesion(A, a1, split=3, z=1.0, lesion_type=4), make_lesion(A, a2, split=3, z=1.0, lesion_type=5),
            make_lesion(B, b1, split=3, z=1.0, lesion_type=4),
            make_lesion(C, c1, split=3, noisy=1),                 # noisy: C is not an image
            make_lesion(D, d1, split=3, z=5.0, lesion_type=4),    # image without any detection
            make_lesion(name(S2, 30), d1, split=1)]               # train split: ignored


def dets_abcd():
    return preds((S1, 10, (0, 0, 10, 10), 0.9),    # TP a1
                 (S1, 10, (0, 0, 10, 9), 0.8),     # duplicate on a1: neither
                 (S1, 20, (100, 100, 110, 110), 0.7),  # FP
                 (S2, 5, (0, 0, 5, 5), 0.65),      # on the noisy-only slice: ignored
                 (S1, 20, (0, 0, 20, 18), 0.5),    # TP b1
                 (S1, 11, (0, 0, 10, 10), 0.45),   # not a key slice: ignored
                 (S1, 10, (200, 200, 210, 210), 0.3))  # FP


def test_hand_computed_curve_and_sensitivities():
    res = evaluate(lesions_abcd(), dets_abcd(), fps=(0.2, 1 / 3, 0.5, 2 / 3, 8))
    assert res.images == 3 and res.lesions == 4
    np.testing.assert_allclose(res.fp_curve, [0, 0, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(res.sens_curve, [0.25, 0.25, 0.25, 0.5, 0.5])
    # 0.2: between (0, .25) and (1/3, .25); 1/3: last point of equal FP rate; past the end: final value
    np.testing.assert_allclose(res.sensitivity, [0.25, 0.5, 0.5, 0.5, 0.5])
    assert res.to_dict() == {"fps": [0.2, 1 / 3, 0.5, 2 / 3, 8.0], "sensitivity": [0.25, 0.5, 0.5, 0.5, 0.5],
                             "images": 3, "lesions": 4}
    # breakdowns: interval groups are separate evaluations, types read along the pooled curve
    assert res.by_interval["<= 2 mm"].images == 2 and res.by_interval["<= 2 mm"].lesions == 3
    assert res.by_interval["> 2 mm"].sensitivity == [0.0] * 5
    assert res.by_type["liver"].lesions == 3 and res.by_type["liver"].sensitivity[-1] == pytest.approx(2 / 3)
    assert res.by_type["lung"].sensitivity == [0.0] * 5
    # sizes (make_lesion: long diameter in pixels x 0.8 mm): a1, a2 8 mm; b1 16 mm; d1 8 mm
    assert {k: (v.images, v.lesions) for k, v in res.by_size.items()} == {"< 10 mm": (2, 3), "10-30 mm": (1, 1)}
    assert res.by_size["< 10 mm"].sensitivity[-1] == pytest.approx(1 / 3)
    assert res.by_size["10-30 mm"].sensitivity == [0.0, 1.0, 1.0, 1.0, 1.0]
    # per lesion: the FP rate at which it is found (a1 by the first detection, b1 after one FP)
    assert [tuple(b) for b in res.lesion_rows.boxes.tolist()] == [a1, a2, b1, d1]
    np.testing.assert_allclose(res.lesion_fp, [0.0, np.inf, 1 / 3, np.inf])


def spaced(lesion, sx):
    return replace(lesion, spacing=(sx, sx, lesion.spacing[2]))


def test_one_detection_finds_several_lesions_and_iou_boundary():
    # spacing 1.6 mm: MULAN pads widths and heights by 0.8 / 1.6 = 0.5 file pixel;
    # (0, 0, 10, 4.75) vs (0, 0, 10, 10): 10.5 * 5.25 / 10.5 ** 2 = 0.5 exactly (continuous: 0.475)
    les = [spaced(make_lesion(A, (0, 0, 10, 10), split=3), 1.6) for _ in range(2)]
    res = evaluate(les, preds((S1, 10, (0, 0, 10, 4.75), 0.9)), fps=(1,))   # IoU exactly 0.5 counts (>=)
    assert res.sens_curve.tolist() == [1.0] and res.fp_curve.tolist() == [0.0]
    res = evaluate(les, preds((S1, 10, (0, 0, 10, 4.7), 0.9)), fps=(1,))
    assert res.sens_curve.tolist() == [0.0] and res.fp_curve.tolist() == [1.0]


def test_mulan_iou_pad_is_0p8_mm_over_the_images_pixel_spacing():
    gt, det = (10, 10, 14, 14), (11, 11, 15, 15)
    # continuous IoU 9 / 23 = 0.39; pad 1 (0.8 mm pixels): 16 / 34 = 0.47; pad 2 (0.4 mm): 25 / 47 = 0.53
    np.testing.assert_allclose(pair_iou(np.array([det], float), np.array([gt], float), [0.0, 1.0, 2.0][0]),
                               [9 / 23])
    np.testing.assert_allclose(pair_iou(np.array([det] * 2, float), np.array([gt] * 2, float),
                                        np.array([1.0, 2.0])), [16 / 34, 25 / 47])
    # two images in one evaluation, each with its own spacing: only the 0.4 mm one is a hit
    les = [spaced(make_lesion(A, gt, split=3), 0.8), spaced(make_lesion(B, gt, split=3), 0.4)]
    res = evaluate(les, preds((S1, 10, det, 0.9), (S1, 20, det, 0.8)), fps=(1,))
    assert res.fp_curve.tolist() == [0.5, 0.5] and res.sens_curve.tolist() == [0.0, 0.5]
    # the same boxes with 0.2 mm pixels (pad 4): 49 / 65 = 0.75 on both
    res = evaluate([spaced(g, 0.2) for g in les], preds((S1, 10, det, 0.9), (S1, 20, det, 0.8)), fps=(1,))
    assert res.sens_curve.tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"000001_01_01_010.png: Spacing_mm_px_ x must be a positive"):
        evaluate([spaced(les[0], 0.0)], preds(), fps=(1,))


def test_no_detections_and_errors():
    res = evaluate(lesions_abcd(), preds())
    assert res.sensitivity.tolist() == [0.0] * 5 and res.images == 3
    assert res.lesion_fp.tolist() == [np.inf] * 4
    with pytest.raises(ValueError, match="no lesions"):
        evaluate(lesions_abcd(), preds(), split="val")
    with pytest.raises(ValueError, match="convention"):
        evaluate(lesions_abcd(), preds(), convention="luna")


def test_detections_on_an_image_without_lesions_are_fps():
    fp, sens, found = froc_curve([1, 0], [(0, 0, 1, 1), (0, 0, 1, 1)], [0.9, 0.8], [0], [(0, 0, 1, 1)], 2)
    assert fp.tolist() == [0.5, 0.5] and sens.tolist() == [0.0, 1.0] and found.tolist() == [1]


def test_equal_scores_keep_file_order():
    les = [make_lesion(A, a1, split=3)]
    res = evaluate(les, preds((S1, 10, (90, 90, 99, 99), 0.5), (S1, 10, a1, 0.5)), fps=(1,))
    assert res.fp_curve.tolist() == [1.0, 1.0] and res.sens_curve.tolist() == [0.0, 1.0]


def test_truth_gives_complete_labels_on_the_same_images():
    truth = [make_lesion(A, a1, split=3), make_lesion(A, (100, 100, 110, 110), split=3),
             make_lesion(B, b1, split=3), make_lesion(D, d1, split=3),
             make_lesion(name(S1, 11), a1, split=3)]   # not a key slice: not an image
    res = evaluate(lesions_abcd(), dets_abcd(), truth=truth)
    assert res.images == 3 and res.lesions == 4
    np.testing.assert_allclose(res.sens_curve, [0.25, 0.25, 0.25, 0.5, 0.5])


def test_sensitivity_at_conventions():
    fp = np.array([0.0, 1.0, 1.0, 2.0])
    sens = np.array([0.2, 0.3, 0.5, 0.6])
    # MULAN: last point of equal FP rate; past the end: final sensitivity
    np.testing.assert_allclose(sensitivity_at(fp, sens, [0.5, 1, 1.5, 3]), [0.25, 0.5, 0.55, 0.6])
    np.testing.assert_allclose(sensitivity_at(fp, sens, [1, 1.5]), np.interp([1, 1.5], fp, sens))
    # 3DCE: first point of equal FP rate, linear extrapolation past the end
    np.testing.assert_allclose(sensitivity_at(fp, sens, [0.5, 1, 1.5, 3], "3dce"), [0.25, 0.3, 0.55, 0.7])
    assert sensitivity_at([], [], [1, 2]).tolist() == [0, 0]


def test_sensitivity_at_lens_and_harvester_readings():
    fp, s = [0.5, 0.5, 1.0], [0.0, 0.2, 0.3]
    assert sensitivity_at(fp, s, [0.25, 0.5, 0.75, 1.0, 4.0], "mulan").tolist() == [0.0, 0.2, 0.25, 0.3, 0.3]
    assert sensitivity_at(fp, s, [0.25, 0.5, 0.75, 1.0, 4.0], "harvester").tolist() == [0.0, 0.0, 0.25, 0.3, 0.3]
    assert sensitivity_at([0.5, 1.0], [0.2, 0.4], [0.25], "mulan").tolist() == [0.0]    # 0 below the first point
    assert sensitivity_at([], [], [1.0], "harvester").tolist() == [0.0]
    with pytest.raises(ValueError, match="reading"):
        sensitivity_at(fp, s, [1.0], "middle")


def test_3dce_convention_uses_plus_one_boxes():
    les = [spaced(make_lesion(A, (0, 0, 9, 9), split=3), 1.6)]
    det = preds((S1, 10, (0, 0, 9, 4), 0.9))   # +0.5 (MULAN at 1.6 mm): 42.75/90.25 = .47; +1: 50/100 = .5
    assert evaluate(les, det, iou=0.48).sens_curve.tolist() == [0.0]
    assert evaluate(les, det, iou=0.48, convention="3dce").sens_curve.tolist() == [1.0]


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6), st.integers(1, 5),
                          st.sampled_from([0.1, 0.5, 0.5, 0.9])), max_size=25),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6), st.integers(1, 5)),
                min_size=1, max_size=8))
def test_curve_matches_mulan_loop(dets, gts):
    les = [make_lesion(name(S1, i), (x, y, x + w, y + w), split=3) for i, x, y, w in gts]
    p = preds(*[(S1, i, (x, y, x + w, y + w), s) for i, x, y, w, s in dets])
    res = evaluate(les, p)
    images = {}
    for g in les:
        images.setdefault(g.file_name, []).append(g.box)
    loop_dets = [(p.file_names[j], p.boxes[j].tolist(), p.scores[j]) for j in range(len(p))
                 if p.file_names[j] in images]
    fp, sens = froc_loop(images, loop_dets, pad={n: 1.0 for n in images})    # make_lesion: 0.8 mm pixels
    assert res.fp_curve.tolist() == fp and res.sens_curve.tolist() == sens


# ---------------------------------------------------------------- in a notebook

def test_result_repr_is_one_line_and_to_pandas_tables_the_rates():
    res = evaluate(lesions_abcd(), dets_abcd())
    text = repr(res)
    assert "\n" not in text and "fp_curve" not in text and "images=3, lesions=4" in text
    assert "0.5: 0.5000" in text                      # sensitivity at 0.5 FPs per image, as a fraction
    table = res.to_pandas()
    assert list(table.columns) == ["images", "lesions", "0.5", "1", "2", "4", "8"]
    assert table.index.tolist() == ["all"]
    np.testing.assert_allclose(table.loc["all", ["0.5", "1", "2", "4", "8"]].to_numpy(float), res.sensitivity)
    assert table.loc["all", "images"] == 3 and table.loc["all", "lesions"] == 4
    full = res.to_pandas(breakdown=True)
    assert full.index[0] == "all" and "type liver" in full.index and "interval <= 2 mm" in full.index
    assert full.loc["type liver", "lesions"] == res.by_type["liver"].lesions == 3


def test_plot_froc_returns_a_figure_and_leaves_the_matplotlib_backend_alone(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import lesionprop

    env = {**os.environ, "PYTHONPATH": str(Path(lesionprop.__file__).resolve().parents[1])}   # this checkout's package
    # in a fresh interpreter: a notebook's inline backend must survive the plot (it was switched to Agg)
    code = ("import matplotlib; matplotlib.use('svg')\n"
            "from lesionprop.eval.froc import FrocResult\n"
            "from lesionprop.eval.plot import plot_froc\n"
            "import numpy as np\n"
            "r = FrocResult((0.5, 1.0), np.array([0.4, 0.6]), 2, 3, np.array([0.0, 0.5, 1.5]), "
            "np.array([0.3, 0.4, 0.6]))\n"
            "fig = plot_froc(r)\n"
            "print(type(fig).__name__, len(fig.axes), matplotlib.get_backend())\n"
            f"plot_froc(r, {str(tmp_path / 'f.png')!r})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["Figure", "1", "svg"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_froc_draws_into_given_axes():
    from matplotlib.figure import Figure

    from lesionprop.eval.plot import plot_froc

    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot_froc(evaluate(lesions_abcd(), dets_abcd()), ax=right) is fig
    assert len(right.lines) == 2 and not left.lines
