"""Linking per-slice boxes into 3D lesions: hand-worked rules, a property test against a plain
loop, the lesion summary and the `lesionprop link` command."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesionprop.cli import main
from lesionprop.labels.link import drop_short, link_boxes, summarize_lesions

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_loop(series, slices, boxes, scores, iou_thr=0.5, max_gap=1):
    """The rule written as a plain loop, box by box."""
    n = len(series)
    order = sorted(range(n), key=lambda i: (series[i], slices[i], -scores[i], i))
    lesions = []                       # [series, tail box index, tail slice, last slice taken]
    out = [-1] * n
    for i in order:
        best = None
        for lid, (s, tail, tz, taken) in enumerate(lesions):
            d = slices[i] - tz
            if s != series[i] or not 1 <= d <= max_gap or taken == slices[i]:
                continue
            v = iou(boxes[tail], boxes[i])
            if v <= iou_thr:
                continue
            key = (-v, d, order.index(tail))
            if best is None or key < best[0]:
                best = (key, lid)
        if best is None:
            lesions.append([series[i], i, slices[i], slices[i]])
            out[i] = len(lesions) - 1
        else:
            lid = best[1]
            lesions[lid][1:] = [i, slices[i], slices[i]]
            out[i] = lid
    return out


coord = st.integers(0, 6).map(float)
box_st = st.tuples(coord, coord, st.integers(1, 5), st.integers(1, 5)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3]))
row_st = st.tuples(st.integers(0, 2), st.integers(0, 6), box_st, st.sampled_from([0.1, 0.5, 0.7, 0.9]))


@FAST
@given(st.lists(row_st, max_size=30), st.sampled_from([0.0, 0.3, 0.5]), st.sampled_from([1, 2, 3]))
def test_link_matches_loop(rows, thr, gap):
    series = [r[0] for r in rows]
    slices = [r[1] for r in rows]
    boxes = [r[2] for r in rows]
    scores = [r[3] for r in rows]
    got = link_boxes(np.array(series, dtype=np.int64), np.array(slices, dtype=np.int64),
                     np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores), iou=thr, max_gap=gap)
    assert got.dtype == np.int64
    assert got.tolist() == link_loop(series, slices, boxes, scores, thr, gap)


B = (10.0, 10.0, 20.0, 20.0)


def run_link(rows, **kw):
    series, slices, boxes, scores = zip(*rows)
    return link_boxes(np.array(series), np.array(slices), np.array(boxes, dtype=float),
                      np.array(scores, dtype=float), **kw).tolist()


def test_link_consecutive_and_gap():
    rows = [(0, 5, B, 0.9), (0, 6, B, 0.8), (0, 8, B, 0.7)]      # slice 7 missing
    assert run_link(rows) == [0, 0, 1]                          # split by the missing slice
    assert run_link(rows, max_gap=2) == [0, 0, 0]               # bridged
    assert run_link([(0, 5, B, 0.9), (0, 8, B, 0.7)], max_gap=2) == [0, 1]   # 3 slices back: too far


def test_link_series_and_same_slice_are_separate():
    rows = [(0, 5, B, 0.9), (1, 6, B, 0.8), (0, 5, B, 0.5)]
    assert run_link(rows) == [0, 2, 1]      # two boxes on one slice never share a lesion


def test_link_two_lesions_touching():
    left, right = (0.0, 0.0, 10.0, 10.0), (10.0, 0.0, 20.0, 10.0)   # share an edge: IoU 0
    rows = [(0, 1, left, 0.9), (0, 1, right, 0.8), (0, 2, right, 0.95), (0, 2, left, 0.6)]
    assert run_link(rows) == [0, 1, 1, 0]


def test_link_greedy_by_score_and_iou():
    # two boxes on slice 2 both overlap the single lesion: the higher score takes it
    rows = [(0, 1, B, 0.5), (0, 2, (11.0, 10.0, 21.0, 20.0), 0.6), (0, 2, B, 0.9)]
    assert run_link(rows) == [0, 1, 0]
    # one box overlapping two lesions takes the higher IoU; iou threshold is strict
    rows = [(0, 1, (0.0, 0.0, 10.0, 10.0), 0.9), (0, 1, (2.0, 0.0, 12.0, 10.0), 0.8),
            (0, 2, (1.5, 0.0, 11.5, 10.0), 0.5)]
    assert run_link(rows) == [0, 1, 1]
    half = [(0, 1, (0.0, 0.0, 10.0, 10.0), 0.9), (0, 2, (0.0, 0.0, 10.0, 5.0), 0.9)]   # IoU exactly 0.5
    assert run_link(half) == [0, 1]
    assert run_link(half, iou=0.49) == [0, 0]


def test_link_rejects_bad_input():
    with pytest.raises(ValueError, match="max_gap"):
        link_boxes(np.zeros(1), np.zeros(1), np.array([B]), np.ones(1), max_gap=0)
    with pytest.raises(ValueError, match="iou"):
        link_boxes(np.zeros(1), np.zeros(1), np.array([B]), np.ones(1), iou=1.0)
    with pytest.raises(ValueError, match="lengths"):
        link_boxes(np.zeros(2), np.zeros(1), np.array([B]), np.ones(1))
    assert link_boxes(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_summary_and_drop_short():
    s = summarize_lesions(np.array([1, 0, 1, 1]), np.array([3, 2, 3, 3]), np.array([4, 9, 5, 6]),
                          np.array([[1, 2, 3, 4], [0, 0, 1, 1], [0, 3, 2, 9], [2, 2, 4, 4]], dtype=float),
                          np.array([0.2, 0.5, 0.8, 0.1]))
    assert s.lesion_id.tolist() == [0, 1] and s.series.tolist() == [2, 3]
    assert s.z1.tolist() == [9, 4] and s.z2.tolist() == [9, 6] and s.n_slices.tolist() == [1, 3]
    assert s.box.tolist() == [[0, 0, 1, 1], [0, 2, 4, 9]] and s.score.tolist() == [0.5, 0.8]
    keep, new = drop_short(np.array([1, 0, 1, 2, 2]), 2)
    assert keep.tolist() == [True, False, True, True, True] and new.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="more than one series"):
        summarize_lesions(np.array([0, 0]), np.array([1, 2]), np.array([1, 2]), np.zeros((2, 4)), np.ones(2))


def test_link_command(tmp_path, capsys):
    pred = tmp_path / "preds.csv"
    pred.write_text("File_name,x1,y1,x2,y2,score,extra\n"
                    "000001_01_01_005.png,10,10,20,20,0.9,a\n"
                    "000001_01_01_006.png,11,10,21,20,0.7,b\n"
                    "000001_01_01_009.png,10,10,20,20,0.8,c\n"
                    "000002_01_01_006.png,10,10,20,20,0.3,d\n")
    out, les = tmp_path / "boxes.csv", tmp_path / "lesions.csv"
    assert main(["link", "--predictions", str(pred), "--out", str(out), "--lesions", str(les)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["extra"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["Lesion_id"] for r in rows] == ["0", "0", "1", "2"]
    assert rows[1]["x1"] == "11"
    lrows = list(csv.DictReader(les.open()))
    assert [(r["Lesion_id"], r["Series"], r["z1"], r["z2"], r["x2"], r["score"], r["n_slices"]) for r in lrows] == [
        ("0", "000001_01_01", "5", "6", "21.0", "0.9", "2"), ("1", "000001_01_01", "9", "9", "20.0", "0.8", "1"),
        ("2", "000002_01_01", "6", "6", "20.0", "0.3", "1")]
    assert main(["link", "--predictions", str(pred), "--out", str(out), "--min-slices", "2",
                 "--max-gap", "3"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["extra"], r["Lesion_id"]) for r in rows] == [("a", "0"), ("b", "0"), ("c", "0")]
    assert main(["link", "--predictions", str(pred), "--out", str(pred)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_link_writes_the_form_its_suffix_names(tmp_path, suffix):
    import pyarrow.ipc
    import pyarrow.parquet

    from lesionprop.predictions import read_predictions

    pred = tmp_path / "preds.csv"
    pred.write_text("File_name,x1,y1,x2,y2,score,extra\n"
                    "000001_01_01_005.png,10.25,10,20,20,0.9,a\n"
                    "000001_01_01_006.png,11,10,21,20,0.7,b\n")
    out, les = tmp_path / f"boxes{suffix}", tmp_path / f"lesions{suffix}"
    assert main(["link", "--predictions", str(pred), "--out", str(out), "--lesions", str(les)]) == 0
    read = pyarrow.ipc.open_file if suffix == ".arrow" else pyarrow.parquet.read_table
    boxes = read(str(out))
    boxes = boxes.read_all() if suffix == ".arrow" else boxes
    assert boxes.column("x1").to_pylist() == [10.25, 11.0]          # numbers, not their text
    assert boxes.column("extra").to_pylist() == ["a", "b"] and boxes.column("Lesion_id").to_pylist() == [0, 0]
    back = read_predictions(out)                                    # the evaluation tools read it
    assert back.boxes.tolist() == [[10.25, 10, 20, 20], [11, 10, 21, 20]] and back.scores.tolist() == [0.9, 0.7]
    lesions = read(str(les))
    lesions = lesions.read_all() if suffix == ".arrow" else lesions
    assert lesions.column("n_slices").to_pylist() == [2] and lesions.column("z2").to_pylist() == [6]


@pytest.mark.parametrize("option", ["--out", "--lesions"])
def test_link_refuses_a_suffix_that_names_another_format(tmp_path, capsys, option):
    pred = tmp_path / "preds.csv"
    pred.write_text("File_name,x1,y1,x2,y2,score\n000001_01_01_005.png,10,10,20,20,0.9\n")
    args = {"--out": str(tmp_path / "boxes.csv"), "--lesions": str(tmp_path / "lesions.csv")}
    args[option] = str(tmp_path / "result.json")
    with pytest.raises(SystemExit) as exc:
        main(["link", "--predictions", str(pred), *[x for kv in args.items() for x in kv]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "result.json" in err and ".json is none of these" in err
    assert not list(tmp_path.glob("boxes*")) and not list(tmp_path.glob("lesions*"))


def test_link_output_paths_and_options_are_checked_first(tmp_path, capsys):
    pred = tmp_path / "preds.csv"
    pred.write_text("File_name,x1,y1,x2,y2,score\n000001_01_01_005.png,10,10,20,20,0.9\n")
    folder = tmp_path / "adir"
    folder.mkdir()
    same = tmp_path / "l.csv"
    for extra, message in [(["--out", str(folder)], f"--out {folder} is a folder; give a file name"),
                           (["--out", str(same), "--lesions", str(folder)],
                            f"--lesions {folder} is a folder; give a file name"),
                           (["--out", str(same), "--lesions", str(same)],
                            f"--out and --lesions both name {same}: give two different files"),
                           (["--out", str(same), "--max-gap", "0"], "--max-gap must be at least 1, got 0"),
                           (["--out", str(same), "--iou", "1"], "--iou must be in [0, 1), got 1.0")]:
        assert main(["link", "--predictions", str(pred)] + extra) == 2
        err = capsys.readouterr().err
        assert err == f"lesionprop link: error: {message}\n", extra
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "preds.csv"] and list(folder.iterdir()) == []
