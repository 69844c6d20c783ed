"""The LENS protocol (hand-worked rules) and the complete-label readers (truth.csv, LENS and
Lesion Harvester pickles, the restricted unpickler, linked prediction CSVs)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from lesionprop.eval.complete_labels import (
    assign_units, detections_from_boxes, load_pickle, parse_unit, read_complete_labels, read_linked_predictions,
    read_prediction_pickle, truth_labels, unit_name, units_from_key_slices,
)
from lesionprop.annotations import read_annotations
from lesionprop.eval.lens import LENS_FPS, evaluate_lens, iobb3d, lens_froc

A = [10, 10, 5, 19, 19, 9]            # 10 x 10 x 5 voxels with the +1 convention


def test_iobb_is_over_the_predicted_box_with_plus_one():
    inside = [12, 12, 6, 15, 15, 7]                      # 4 x 4 x 2 voxels, all inside A
    assert iobb3d([inside], [A]).tolist() == [1.0]      # IoU would be 32 / 500
    assert iobb3d([A], [inside]).tolist() == [32 / 500]
    assert iobb3d([[12, 12, 7, 15, 15, 7]], [A]).tolist() == [1.0]     # one slice: 1 slice thick, not 0
    assert iobb3d([[18, 10, 5, 22, 19, 9]], [A]).tolist() == [0.4]     # 2 of 5 columns (continuous: 0.25)
    assert iobb3d([[20, 10, 5, 29, 19, 9]], [A]).tolist() == [0.0]     # touching at 19.5: apart
    assert iobb3d([[19, 10, 5, 28, 19, 9]], [A]).tolist() == [0.1]     # sharing column 19


def lens_case(fps=LENS_FPS):
    # units: 0 holds A, 1 holds B, 2 is empty
    det_unit = np.array([0, 0, 2, 1, 1])
    det_boxes = np.array([[12, 12, 6, 15, 15, 7],      # hits A (IoBB 1; IoU 0.064)
                          [12, 12, 6, 15, 15, 7],      # hits A again: neither TP nor FP
                          [12, 12, 6, 15, 15, 7],      # an empty unit: FP
                          [18, 10, 5, 22, 19, 9],      # hits B (IoBB 0.4)
                          [50, 50, 5, 60, 60, 9]], float)   # FP
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    return lens_froc(det_unit, det_boxes, scores, np.array([0, 1]), np.array([A, A], float), 3, fps=fps)


def test_lens_hand_worked_curve():
    result, found_at = lens_case()
    assert result.fp_curve.tolist() == [0, 0, 1 / 3, 1 / 3, 2 / 3]
    assert result.sens_curve.tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert found_at.tolist() == [0, 3]
    # 0.125, 0.25 -> 0.5; 0.5 .. 8 -> 1 (8 is past the end: the last value)
    assert result.sensitivity.tolist() == [0.5, 0.5, 1, 1, 1, 1, 1]
    assert result.mean == pytest.approx(6 / 7)
    assert result.to_dict() == {"protocol": "lens", "fps": list(LENS_FPS), "sensitivity": [0.5, 0.5, 1, 1, 1, 1, 1],
                                "units": 3, "lesions": 2, "mean": result.mean}
    # a rate equal to several points' FP rate reads the LAST of them
    assert lens_case(fps=[1 / 3])[0].sensitivity.tolist() == [1.0]
    o = result.outcomes
    assert o.det_fp.tolist() == [False, False, True, False, True] and o.det_found.tolist() == [1, 0, 0, 1, 0]


def test_bootstrap_is_the_evaluation_of_the_resampled_units():
    from lesionprop.eval.lens import bootstrap_protocol

    result, _ = lens_case()
    ones = bootstrap_protocol(result, weights=np.ones((1, 3), np.int64), level=0.5)
    assert ones.samples.tolist() == [result.sensitivity.tolist()]
    # units 0, 1, 2 (patients 0, 1, 2): draw unit 0 twice and unit 2 once, drop unit 1
    ci = bootstrap_protocol(result, weights=np.array([[2, 0, 1]]), level=0.5)
    # the same by hand: unit 0's lesion and detections twice (units 0 and 1), the empty unit 2 once
    boxes = np.array([[12, 12, 6, 15, 15, 7]] * 5, float)
    again, _ = lens_froc(np.array([0, 0, 2, 1, 1]), boxes, np.array([0.9, 0.8, 0.7, 0.9, 0.8]), np.array([0, 1]),
                         np.array([A, A], float), 3)
    assert ci.samples.tolist() == [again.sensitivity.tolist()]


def test_lens_rejects_no_lesions():
    with pytest.raises(ValueError, match="no lesions"):
        lens_froc(np.zeros(1, int), np.array([A], float), np.ones(1), np.zeros(0, int), np.zeros((0, 6)), 2)


def test_units_and_assignment():
    assert parse_unit("000001_01_01_103-115.annot") == ("000001_01_01", 103, 115)
    assert unit_name("000001_01_01", 3, 14) == "000001_01_01_003-014"
    with pytest.raises(ValueError, match="sub-volume name"):
        parse_unit("000001_01_01_115-103")
    b, u = assign_units(np.array(["s1", "s1", "s2"], object), np.array([1, 10, 1]), np.array([5, 12, 9]),
                        np.array(["s1", "s1", "s2", "s3", "s1"], object), np.array([5, 7, 9, 1, 10]))
    assert sorted(zip(b.tolist(), u.tolist())) == [(0, 0), (2, 2), (4, 1)]


def test_detections_split_by_unit(tmp_path):
    labels = truth_labels([], [("000001_01_01", 1, 5), ("000001_01_01", 8, 9)], split="all")
    series = np.array(["000001_01_01"] * 4 + ["000002_01_01"], object)
    dets = detections_from_boxes(labels, series, np.array([4, 5, 8, 7, 4]),
                                 np.array([[1, 1, 5, 5], [0, 2, 4, 6], [2, 2, 3, 3], [0, 0, 1, 1], [0, 0, 1, 1]],
                                          float), np.array([0.3, 0.6, 0.9, 0.1, 0.2]), np.array([7, 7, 7, 7, 8]))
    # lesion 7 spans both units: two detections; slice 7 (no unit) and series 2 are ignored
    assert dets.unit.tolist() == [0, 1] and dets.outside == 2
    assert dets.boxes3d.tolist() == [[0, 1, 4, 5, 6, 5], [2, 2, 8, 3, 3, 8]]
    assert dets.scores.tolist() == [0.6, 0.9] and dets.box_lesion.tolist() == [0, 0, 1]


@pytest.fixture(scope="module")
def truth(tiny_synth):
    return read_annotations(tiny_synth / "truth.csv").rows()


def test_truth_csv_reader(tiny_synth, truth):
    labels = read_complete_labels(tiny_synth / "truth.csv", split="all")
    assert labels.has3d and labels.has2d and len(labels.boxes2d) == len(truth)
    # every lesion's 3D box spans its rows (units = each series' Slice_range here)
    spans: dict = {}
    for r in truth:
        k = (r.series, r.extras["Lesion_id"])
        x1, y1, z1, x2, y2, z2 = spans.get(k, (np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf))
        spans[k] = (min(x1, r.box[0]), min(y1, r.box[1]), min(z1, r.key_slice),
                    max(x2, r.box[2]), max(y2, r.box[3]), max(z2, r.key_slice))
    assert sorted(labels.boxes3d.tolist()) == sorted(list(map(float, v)) for v in spans.values())
    assert np.all(np.isfinite(labels.unit_interval)) and np.all(labels.lesion_long_mm > 0)
    # a window around the key slices: lesions cut to the window
    ann = read_annotations(tiny_synth / "DL_info.csv")
    units = units_from_key_slices(ann, "all", window=1)
    win = read_complete_labels(tiny_synth / "truth.csv", split="all", units=units)
    assert len(win.units) == len(units) and np.all(win.unit_bottom - win.unit_top >= 2)
    assert np.all(win.boxes3d[:, 2] >= win.unit_top[win.lesion_unit])
    assert np.all(win.boxes3d[:, 5] <= win.unit_bottom[win.lesion_unit])
    assert len(win.boxes2d) < len(labels.boxes2d)


def write_pickles(labels, tmp_path):
    """The truth in the LENS and both Harvester layouts (Harvester z inside the sub-volume)."""
    lens, h3, h2 = {}, {}, {}
    for u, name in enumerate(labels.units):
        top = labels.unit_top[u]
        b = labels.boxes3d[labels.lesion_unit == u]
        lens[name] = b.copy()
        h3[name] = [[x1, y1, x2, y2, z1 - top, z2 - top] for x1, y1, z1, x2, y2, z2 in b.tolist()]
        m = labels.box_unit == u
        per = {}
        for box, z in zip(labels.boxes2d[m], labels.box_slice[m]):
            per.setdefault(int(z - top), []).append([np.float64(v) for v in box] + [float(z - top)] * 2)
        h2[name + ".annot"] = per
    paths = {}
    for key, obj in (("lens", {"val": {}, "test": lens}), ("harvester-3d", h3), ("harvester-2d", h2)):
        paths[key] = tmp_path / f"{key}.pkl"
        paths[key].write_bytes(pickle.dumps(obj, protocol=2))
    return paths


def test_pickle_formats_round_trip(tiny_synth, tmp_path):
    labels = read_complete_labels(tiny_synth / "truth.csv", split="all")
    paths = write_pickles(labels, tmp_path)
    for fmt, path in paths.items():
        back = read_complete_labels(path)
        assert back.source == fmt and back.units.tolist() == labels.units.tolist()
        if fmt == "harvester-2d":
            assert back.has2d and not back.has3d
            got = sorted(zip(back.box_unit.tolist(), back.box_slice.tolist(), back.boxes2d.tolist()))
            assert got == sorted(zip(labels.box_unit.tolist(), labels.box_slice.tolist(), labels.boxes2d.tolist()))
        else:
            assert back.has3d and not back.has2d
            np.testing.assert_allclose(back.boxes3d, labels.boxes3d)
            assert back.lesion_unit.tolist() == labels.lesion_unit.tolist()
    assert len(read_complete_labels(paths["lens"], split="val").units) == 0
    with pytest.raises(ValueError, match="needs 3D ground-truth"):
        evaluate_lens(read_complete_labels(paths["harvester-2d"]), None)


def test_lens_perfect_predictions_from_truth(tiny_synth, tmp_path, truth):
    labels = read_complete_labels(tiny_synth / "truth.csv", split="all")
    # the truth rows as linked predictions: every lesion found with no FP
    pred = tmp_path / "boxes.csv"
    lines = ["File_name,x1,y1,x2,y2,score,Lesion_id"]
    lines += [f"{r.file_name},{r.box[0]},{r.box[1]},{r.box[2]},{r.box[3]},0.9,{r.extras['Lesion_id']}" for r in truth]
    pred.write_text("\n".join(lines) + "\n")
    dets = read_linked_predictions(pred, labels)
    result = evaluate_lens(labels, dets)
    assert result.sensitivity.tolist() == [1.0] * 7 and result.lesions == len(labels.boxes3d)
    assert set(result.by_interval) <= {"<= 2 mm", "> 2 mm"} and result.by_size
    # the same as a LENS-style prediction pickle (n x 7)
    pk = tmp_path / "preds.pkl"
    pk.write_bytes(pickle.dumps({n: np.column_stack([labels.boxes3d[labels.lesion_unit == u],
                                                    np.full((labels.lesion_unit == u).sum(), 0.5)])
                                 for u, n in enumerate(labels.units)}))
    assert evaluate_lens(labels, read_prediction_pickle(pk, labels)).sensitivity.tolist() == [1.0] * 7
    bad = tmp_path / "nolid.csv"
    bad.write_text("File_name,x1,y1,x2,y2,score\n000001_01_01_013.png,1,1,2,2,0.5\n")
    with pytest.raises(ValueError, match="no Lesion_id column"):
        read_linked_predictions(bad, labels)
    bad.write_text("File_name,x1,y1,x2,y2,score,Lesion_id\n000001_01_01_013.png,1,1,2,2,0.5,x\n")
    with pytest.raises(ValueError, match="line 2: column Lesion_id = 'x'"):
        read_linked_predictions(bad, labels)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_restricted_unpickler_refuses_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"000001_01_01_001-005": [Evil()]}))
    with pytest.raises(ValueError, match=r"evil\.pkl: the pickle holds a (posix|nt)\.system object"):
        read_complete_labels(path)
    assert not (tmp_path / "EVIL_RAN").exists()
    path.write_bytes(pickle.dumps({"a": {1, 2}}))            # a set is not in the list either
    with pytest.raises(ValueError, match="holds a set"):
        load_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_pickle(path)


def test_real_lesion_harvester_files(shared_data):
    folder = shared_data / "harvester"
    if not folder.is_dir():
        pytest.skip("../shared/data/harvester is not present")
    h2 = read_complete_labels(folder / "Revised-Train100.pkl")
    assert h2.source == "harvester-2d" and len(h2.units) == 100 and len(h2.boxes2d) == 420
    u = h2.units.tolist().index("002982_04_02_200-260")
    assert sorted(set(h2.box_slice[h2.box_unit == u].tolist()))[:1] == [200]   # z 0 -> slice 200 (top + z)
    assert 260 in h2.box_slice[h2.box_unit == u].tolist()                        # z 60 -> slice 260
    h3 = read_complete_labels(folder / "3D-Box.pkl")
    assert h3.source == "harvester-3d" and len(h3.units) == 272 and h3.boxes3d.shape == (874, 6)
    first = h3.boxes3d[h3.lesion_unit == h3.units.tolist().index("000001_01_01_103-115")][0]
    np.testing.assert_allclose(first, [224.11279125118176, 92.50398222171341, 108, 241.87335205606877,
                                       113.86161863265343, 109])
    # z inside the sub-volume: after top + z every box lies in its unit within half a slice; the
    # file has 76 boxes with non-integer z (mostly a slice +/- 0.5; 12 reach half a slice past the sub-volume), kept as they are
    top, bottom = h3.unit_top[h3.lesion_unit], h3.unit_bottom[h3.lesion_unit]
    assert np.all((h3.boxes3d[:, 2] >= top - 0.5) & (h3.boxes3d[:, 5] <= bottom + 0.5))
    assert int(np.sum(h3.boxes3d[:, 2] != np.round(h3.boxes3d[:, 2]))) == 76
    assert int(np.sum((h3.boxes3d[:, 2] < top) | (h3.boxes3d[:, 5] > bottom))) == 12


def test_evaluate_cli_lens_and_harvester(tiny_synth, truth, tmp_path, capsys):
    import json

    from lesionprop.cli import main

    # per-slice boxes of every truth lesion (score 0.9) plus one far box, linked by `lesionprop link`
    pred = tmp_path / "preds.csv"
    lines = ["File_name,x1,y1,x2,y2,score"]
    lines += [f"{r.file_name},{r.box[0]},{r.box[1]},{r.box[2]},{r.box[3]},0.9" for r in truth]
    lines.append(f"{truth[0].file_name},1,1,3,3,0.1")
    pred.write_text("\n".join(lines) + "\n")
    linked = tmp_path / "linked.csv"
    assert main(["link", "--predictions", str(pred), "--out", str(linked), "--iou", "0.1"]) == 0
    capsys.readouterr()
    base = ["evaluate", "--predictions", str(linked), "--truth", str(tiny_synth / "truth.csv"), "--split", "all"]
    assert main(base + ["--protocol", "lens", "--json", "--breakdown"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"protocol", "fps", "sensitivity", "units", "lesions", "mean", "by_interval", "by_size"}
    assert out["protocol"] == "lens" and out["fps"] == list(LENS_FPS) and out["units"] == 8
    assert out["sensitivity"][-1] == 1.0
    assert main(base + ["--protocol", "harvester", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"protocol", "fps", "sensitivity", "units", "lesions", "ap"} and out["lesions"] == len(truth)
    assert len(out["fps"]) == 8 and out["sensitivity"][-1] == 1.0 and 0.9 < out["ap"] <= 1.0
    assert main(base + ["--protocol", "lens", "--ci", "0.9", "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "protocol lens (truth-csv truth): 8 sub-volumes" in text and "90% CI low" in text and "mean over 0.125-8" in text
    # the key slices' sub-volumes of the annotations, K +/- 1
    assert main(base + ["--protocol", "lens", "--annotations", str(tiny_synth / "DL_info.csv"), "--window", "1",
                        "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] >= 8
    assert main(base + ["--protocol", "harvester", "--ci", "0.9", "--bootstrap", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ci_low", "ci_high", "mean_ci", "ap_ci", "ci_level", "bootstrap"} <= set(out) and out["bootstrap"] == 20
    assert main(["evaluate", "--predictions", str(linked), "--protocol", "lens"]) == 2
    assert "needs --truth" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(pred)]) == 2
    assert "--annotations is required" in capsys.readouterr().err



def test_truth_csv_bad_lesion_id(tiny_synth, tmp_path):
    lines = (tiny_synth / "truth.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",x"
    bad = tmp_path / "truth.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"truth\.csv, line 4, column Lesion_id = 'x': not an integer; --truth "
                                         r"expects a complete-label file .*Lesion_id column"):
        read_complete_labels(bad)


def test_dl_info_given_as_truth_says_what_truth_is(tiny_synth, tmp_path):
    """The official annotation file as --truth: the error is about its missing Lesion_id column."""
    with pytest.raises(ValueError, match=r"DL_info\.csv, line 1: no Lesion_id column; --truth expects a "
                                         r"complete-label file .*like the truth\.csv `lesionprop synth` writes"):
        read_complete_labels(tiny_synth / "DL_info.csv")
    lines = (tiny_synth / "truth.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ","                  # an empty Lesion_id
    bad = tmp_path / "truth.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"truth\.csv, line 3, column Lesion_id = '': not an integer"):
        read_complete_labels(bad)
