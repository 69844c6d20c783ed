"""The evaluate / propagate / mine / distill commands end to end on small files."""

import json

import numpy as np
import pytest

from helpers import make_lesion
from lesionprop.annotations import read_annotations, write_annotations
from lesionprop.cli import main
from lesionprop.predictions import write_predictions

S = "000001_01_01"


def read_rows(path):
    return read_annotations(path).rows()
G = (10.0, 10.0, 30.0, 30.0)


@pytest.fixture()
def files(tmp_path):
    les = [make_lesion(f"{S}_010.png", G, lesion_type=4), make_lesion(f"{S}_020.png", G, split=3),
           make_lesion(f"{S}_030.png", (100, 100, 110, 110), source="mined", score=0.97)]
    ann = tmp_path / "DL_info.csv"
    write_annotations(ann, les, with_source=True)
    pred = tmp_path / "pred.csv"
    write_predictions(pred, [f"{S}_009.png", f"{S}_011.png", f"{S}_010.png", f"{S}_011.png", f"{S}_020.png",
                             f"{S}_031.png"],
                      np.array([G, G, (50, 50, 60, 60), (50, 50, 60, 61), (10, 10, 30, 28), (100, 100, 110, 111)]),
                      [0.8, 0.95, 0.96, 0.5, 0.9, 0.93])
    return tmp_path, ann, pred


def out_rows(path, n_in, ann):
    lines = path.read_text().splitlines()
    src = ann.read_text().splitlines()
    assert lines[: n_in + 1] == src[: n_in + 1]      # header and every input row unchanged, in order
    return read_rows(path)[n_in:]


def test_propagate_cli(files, capsys):
    tmp, ann, pred = files
    out = tmp / "out.csv"
    assert main(["propagate", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                 "--offsets", "-1,1"]) == 0
    new = out_rows(out, 3, ann)
    assert [(r.file_name, r.source, r.lesion_type) for r in new] == [
        (f"{S}_009.png", "propagated", 4), (f"{S}_011.png", "propagated", 4), (f"{S}_031.png", "propagated", -1)]
    assert new[0].score == pytest.approx(0.8) and "3 new row" in capsys.readouterr().out
    assert main(["propagate", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                 "--offsets=1", "--split", "all", "--keep", "all", "--iou", "0.3"]) == 0
    assert [r.file_name for r in read_rows(out)[3:]] == [f"{S}_011.png", f"{S}_031.png"]


def test_mine_and_distill_cli(files):
    tmp, ann, pred = files
    out = tmp / "mined.csv"
    assert main(["mine", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out)]) == 0
    new = out_rows(out, 3, ann)
    assert [(r.file_name, r.box, r.source) for r in new] == [(f"{S}_010.png", (50, 50, 60, 60), "mined")]
    out = tmp / "distilled.csv"
    assert main(["distill", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                 "--score", "0.9", "--offsets", "-1,1"]) == 0
    new = out_rows(out, 3, ann)
    assert [(r.file_name, r.score) for r in new] == [(f"{S}_011.png", 0.95), (f"{S}_031.png", 0.93)]


def test_label_sets_cli_equals_the_commands_one_by_one(files, capsys):
    """label-sets reads once and writes the four sets; each file equals, byte for byte, what
    mine / propagate / distill write one by one (MM + LP: propagate over the mined file)."""
    tmp, ann, pred = files
    sets = tmp / "sets"
    opts = ["--offsets", "-1,1", "--iou", "0.5"]
    assert main(["label-sets", "--annotations", str(ann), "--predictions", str(pred), "--out-dir", str(sets),
                 *opts, "--score", "0.9", "--distill-score", "0.9"]) == 0
    said = capsys.readouterr().out
    assert "mm: 1 new row(s)" in said and "dd: 2 new row(s)" in said
    one = tmp / "one"
    one.mkdir()
    io_ = ["--predictions", str(pred)]
    assert main(["mine", "--annotations", str(ann), *io_, "--out", str(one / "mm.csv"), "--score", "0.9"]) == 0
    assert main(["propagate", "--annotations", str(ann), *io_, "--out", str(one / "lp.csv"), *opts]) == 0
    assert main(["propagate", "--annotations", str(one / "mm.csv"), *io_, "--out", str(one / "mm_lp.csv"), *opts]) == 0
    assert main(["distill", "--annotations", str(ann), *io_, "--out", str(one / "dd.csv"), "--offsets", "-1,1",
                 "--score", "0.9"]) == 0
    for name in ("mm", "lp", "mm_lp", "dd"):
        assert (sets / f"labels_{name}.csv").read_bytes() == (one / f"{name}.csv").read_bytes(), name
    mm_lp = out_rows(sets / "labels_mm_lp.csv", 3, ann)
    assert [r.source for r in mm_lp][:1] == ["mined"] and len(mm_lp) > 1


def test_label_sets_refuses_to_overwrite_inputs(files, capsys):
    tmp, ann, pred = files
    inside = tmp / "labels_lp.csv"
    inside.write_bytes(ann.read_bytes())
    assert main(["label-sets", "--annotations", str(inside), "--predictions", str(pred),
                 "--out-dir", str(tmp)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert inside.read_bytes() == ann.read_bytes() and not (tmp / "labels_mm.csv").exists()
    a_file = tmp / "not_a_folder"
    a_file.write_text("keep me")
    assert main(["label-sets", "--annotations", str(ann), "--predictions", str(pred),
                 "--out-dir", str(a_file)]) == 2
    assert f"--out-dir {a_file} is a file, expected a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_refuses_to_overwrite_inputs(files, capsys):
    tmp, ann, pred = files
    before = ann.read_bytes(), pred.read_bytes()
    for cmd in ("propagate", "mine", "distill"):
        for target in (ann, pred):
            assert main([cmd, "--annotations", str(ann), "--predictions", str(pred), "--out", str(target)]) == 2
            assert "refusing to overwrite" in capsys.readouterr().err
    assert (ann.read_bytes(), pred.read_bytes()) == before
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(pred), "--plot", str(ann)]) == 2


@pytest.mark.parametrize("cmd, option", [("mine", "--out"), ("propagate", "--out"), ("distill", "--out"),
                                         ("evaluate", "--plot")])
def test_a_folder_given_as_the_output_file_is_refused_before_any_work(tmp_path, capsys, cmd, option):
    """The inputs do not even exist: the output path is checked first, one line, exit 2."""
    folder = tmp_path / "adir"
    folder.mkdir()
    assert main([cmd, "--annotations", str(tmp_path / "no.csv"), "--predictions", str(tmp_path / "no_p.csv"),
                 option, str(folder)]) == 2
    out, err = capsys.readouterr()
    assert err == f"lesionprop {cmd}: error: {option} {folder} is a folder; give a file name\n" and out == ""
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


@pytest.mark.parametrize("cmd", ["evaluate", "mine"])
@pytest.mark.parametrize("which, what", [("--annotations", "annotation file"), ("--predictions", "prediction file")])
def test_a_folder_given_as_an_input_file_says_so(files, capsys, cmd, which, what):
    tmp, ann, pred = files
    folder = tmp / "adir"
    folder.mkdir()
    inputs = {"--annotations": str(ann), "--predictions": str(pred), which: str(folder)}
    out = ["--out", str(tmp / "o.csv")] if cmd == "mine" else []
    assert main([cmd, *[x for kv in inputs.items() for x in kv], *out]) == 2
    assert capsys.readouterr().err == f"lesionprop {cmd}: error: {what} {folder} is a folder, expected a file\n"
    assert not (tmp / "o.csv").exists()


def test_output_errors_name_the_option_used(files, capsys):
    tmp, ann, pred = files
    io_ = ["--annotations", str(ann), "--predictions", str(pred)]
    assert main(["evaluate", *io_, "--plot", str(pred)]) == 2
    assert f"refusing to overwrite input file {pred}: choose another --plot" in capsys.readouterr().err
    inside = tmp / "labels_dd.csv"
    inside.write_bytes(ann.read_bytes())
    assert main(["label-sets", "--annotations", str(inside), "--predictions", str(pred), "--out-dir", str(tmp)]) == 2
    assert "choose another --out-dir" in capsys.readouterr().err
    assert main(["evaluate", *io_, "--split", "all", "--plot", str(tmp / "f.xyz")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"--plot {tmp / 'f.xyz'}: matplotlib cannot write .xyz files; use one of" in err
    assert ".png" in err and ".pdf" in err and ".svg" in err and not (tmp / "f.xyz").exists()
    assert main(["mine", *io_, "--out", str(pred / "x.csv")]) == 2
    assert f"--out {pred / 'x.csv'}: {pred} is a file, not a folder" in capsys.readouterr().err


def test_bad_prediction_rows_cli(files, capsys):
    tmp, ann, pred = files
    with open(pred, "a") as fh:
        fh.write(f"{S}_011.png,5,1,2,3,0.9\n")
    out = tmp / "o.csv"
    assert main(["propagate", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(pred) in err and "line 8" in err and "x2 < x1" in err and not out.exists()
    assert main(["propagate", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                 "--skip-bad-rows"]) == 0
    assert "skipped 1 bad prediction row" in capsys.readouterr().err


def test_evaluate_cli_json_table_plot(files, capsys):
    tmp, ann, pred = files
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(pred), "--json",
                 "--fps", "0.5,1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == {"fps": [0.5, 1.0], "sensitivity": [1.0, 1.0], "images": 1, "lesions": 1}
    plot = tmp / "froc.png"
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(pred), "--split", "all",
                 "--plot", str(plot), "--convention", "3dce"]) == 0
    text = capsys.readouterr().out
    assert "sensitivity" in text and "by slice interval" in text and "liver" in text
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_real_rows_written_back_unchanged(shared_data, tmp_path):
    src = shared_data / "deeplesion" / "DL_info_sample.csv"
    rows = read_rows(src)
    first = rows[0]
    pred = tmp_path / "p.csv"
    name = f"{first.series}_{first.key_slice + 1:03d}.png"
    write_predictions(pred, [name], np.array([first.box]), [0.99])
    out = tmp_path / "out.csv"
    assert main(["propagate", "--annotations", str(src), "--predictions", str(pred), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    original = src.read_text().splitlines()
    assert [ln[: -len(",human,")] for ln in lines[1:len(original)]] == original[1:]
    back = read_rows(out)
    assert len(back) == len(rows) + 1 and back[-1].file_name == name and back[-1].source == "propagated"
    assert back[-1].spacing == first.spacing and back[-1].lesion_type == first.lesion_type


def test_synthetic_dataset_with_a_perfect_detector(tiny_synth, tmp_path, capsys):
    """Predictions = every truth box (score 0.95): propagated and mined rows are true lesions,
    and evaluation against the complete labels finds everything."""
    ann, truth_csv = tiny_synth / "DL_info.csv", tiny_synth / "truth.csv"
    truth = read_rows(truth_csv)
    pred = tmp_path / "perfect.csv"
    write_predictions(pred, [t.file_name for t in truth], np.array([t.box for t in truth]), [0.95] * len(truth))
    true_boxes = {(t.file_name, t.box) for t in truth}
    n_in = len(read_rows(ann))
    for cmd in ("propagate", "mine"):
        out = tmp_path / f"{cmd}.csv"
        assert main([cmd, "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                     "--split", "all"]) == 0
        new = read_rows(out)[n_in:]
        assert all((r.file_name, r.box) in true_boxes for r in new)
        if cmd == "propagate":
            assert new   # lesions span several slices: every key slice has a neighbour to propagate to
    capsys.readouterr()
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(pred), "--split", "all",
                 "--truth", str(truth_csv), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sensitivity"] == [1.0] * 5 and res["lesions"] >= res["images"] > 0


def test_evaluate_says_when_the_boxes_miss_the_split(files, capsys):
    tmp, ann, pred = files
    off = tmp / "off.csv"                                # boxes on slices that are no key slice
    write_predictions(off, [f"{S}_005.png", f"{S}_006.png"], np.array([G, G]), [0.9, 0.8])
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(off)]) == 0
    err = capsys.readouterr().err
    assert "none of the 2 prediction boxes lie on the 1 key slices of split test" in err
    assert "every sensitivity is 0" in err
    assert main(["evaluate", "--annotations", str(ann), "--predictions", str(pred)]) == 0
    assert "note:" not in capsys.readouterr().err      # 1 of 6 boxes on the test key slice: no note


@pytest.mark.parametrize("argv, message", [
    (["mine", "--annotations", "a.csv", "--predictions", "p.csv", "--out", "o.csv", "--iou", "2"],
     "argument --iou: an overlap threshold is in [0, 1], got 2"),
    (["evaluate", "--annotations", "a.csv", "--predictions", "p.csv", "--iobb", "-0.1"],
     "argument --iobb: an overlap threshold is in [0, 1], got -0.1"),
    (["distill", "--annotations", "a.csv", "--predictions", "p.csv", "--out", "o.csv", "--score", "nan"],
     "argument --score: expected a finite number, got nan"),
    (["train", "--data", "d", "--annotations", "a.csv", "--out", "r", "--iterations", "0"],
     "argument --iterations: must be >= 1, got 0"),
    (["predict", "--checkpoint", "c", "--data", "d", "--out", "p.csv", "--batch-size", "x"],
     "argument --batch-size: expected an integer, got 'x'"),
])
def test_out_of_range_options_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)                          # none of the named files exists: nothing is read
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_score_threshold_above_every_score_is_noted(files, capsys):
    tmp, ann, pred = files
    out = tmp / "mined.csv"
    assert main(["mine", "--annotations", str(ann), "--predictions", str(pred), "--out", str(out),
                 "--score", "5"]) == 0
    err = capsys.readouterr().err
    assert "mine: note: no prediction scores above --score 5 (the highest is 0.96)" in err
    assert main(["mine", "--annotations", str(ann), "--predictions", str(pred), "--out", str(tmp / "m2.csv"),
                 "--score", "0.5"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["mine", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "work on the key slices of this split (default: train)" in text and "(default: 0.9)" in text
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "IoU for a hit (default 0.5)" in text and "(default 0.5) (default" not in text
    assert "(default: 0.5,1,2,4,8)" in text


def test_no_command_is_a_usage_error_with_the_command_list(capsys):
    assert main([]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "propagate" in out.err and "choose a COMMAND" in out.err
