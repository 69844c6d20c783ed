"""Prediction CSV: round trip, malformed rows with file + line, skipping with a count."""

import numpy as np
import pytest

from helpers import make_lesion
from lesionprop.annotations import write_annotations
from lesionprop.cli import main
from lesionprop.predictions import PredictionError, Predictions, read_predictions, write_predictions

HEADER = "File_name,x1,y1,x2,y2,score\n"
OK = "000001_01_01_010.png,1,2,3,4,0.5\n"


def write(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_round_trip_is_exact_and_indexes_slices(tmp_path):
    names = ["000001_01_01_010.png", "000002_03_04_1012.png", "000001_01_01_009.png"]
    boxes = np.array([[1.5, 2.25, 10.123456789, 20.0], [0.1, 0.2, 0.30000000000000004, 1e3], [5, 5, 5, 5]])
    scores = np.array([0.9000001, 1 / 3, 0.05])
    write_predictions(tmp_path / "p.csv", names, boxes, scores)
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "File_name,x1,y1,x2,y2,score"
    p = read_predictions(tmp_path / "p.csv")
    assert p.file_names.tolist() == names and p.skipped == 0
    assert np.array_equal(p.boxes, boxes) and np.array_equal(p.scores, scores)
    assert p.series_names[p.series_index].tolist() == ["000001_01_01", "000002_03_04", "000001_01_01"]
    assert p.slices.tolist() == [10, 1012, 9] and p.lines.tolist() == [2, 3, 4]
    q = Predictions.from_arrays(names, boxes, scores)
    assert q.slices.tolist() == p.slices.tolist() and len(q) == 3


def test_extra_columns_and_blank_lines_are_fine(tmp_path):
    path = write(tmp_path, "File_name,x1,y1,x2,y2,score,model\n" + OK.strip() + ",a\n\n"
                 + "000001_01_01_011.png,1,2,3,4,0.7,b\n")
    p = read_predictions(path)
    assert len(p) == 2 and p.lines.tolist() == [2, 4]
    empty_extra = write(tmp_path, "File_name,x1,y1,x2,y2,score,model\n" + OK.strip() + ",\n", "e.csv")
    assert len(read_predictions(empty_extra)) == 1


@pytest.mark.parametrize("row, why", [
    ("000001_01_01_010.png,1,2,3,4,0.5,9\n", "expected 6 fields, got 7"),
    ("000001_01_01_010.png,1,2,3\n", "expected 6 fields, got 4"),
    ("000001_01_01_010.png,1,nan,3,4,0.5\n", "NaN"),
    ("000001_01_01_010.png,1,abc,3,4,0.5\n", "'abc'"),
    ("000001_01_01_010.png,1,2,3,4,\n", "NaN"),
    ("000001_01_01_010.png,5,2,3,4,0.5\n", "x2 < x1"),
    ("000001_01_01_010.png,1,5,3,4,0.5\n", "y2 < y1"),
    ("000001_01_010.png,1,2,3,4,0.5\n", "not a DeepLesion slice name"),
    ("Images_png/000001_01_01/010.png,1,2,3,4,0.5\n", "not a DeepLesion slice name"),
])
def test_malformed_row_names_file_line_and_value(tmp_path, row, why):
    path = write(tmp_path, HEADER + OK + OK + row + OK)
    with pytest.raises(PredictionError) as err:
        read_predictions(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and why in msg
    p = read_predictions(path, skip_bad_rows=True)
    assert len(p) == 3 and p.skipped == 1 and p.lines.tolist() == [2, 3, 5]
    assert p.skipped_examples[0].startswith("line 4:")


def test_unknown_series_and_header(tmp_path):
    path = write(tmp_path, HEADER + OK + "000009_01_01_010.png,1,2,3,4,0.5\n")
    assert len(read_predictions(path)) == 2
    with pytest.raises(PredictionError, match="line 3.*not in the annotations"):
        read_predictions(path, known_series={"000001_01_01"})
    p = read_predictions(path, known_series={"000001_01_01"}, skip_bad_rows=True)
    assert len(p) == 1 and p.skipped == 1
    with pytest.raises(PredictionError, match="line 1.*missing"):
        read_predictions(write(tmp_path, "File_name,x1,y1,x2,y2\n", "h.csv"))
    with pytest.raises(PredictionError, match="empty"):
        read_predictions(write(tmp_path, "", "e.csv"))
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / "missing.csv")
    assert len(read_predictions(write(tmp_path, HEADER, "only_header.csv"))) == 0


def test_from_arrays_validates():
    with pytest.raises(ValueError, match="row 1.*x2 < x1"):
        Predictions.from_arrays(["000001_01_01_010.png"] * 2, [[0, 0, 1, 1], [2, 0, 1, 1]], [0.5, 0.5])
    with pytest.raises(ValueError, match="slice name"):
        Predictions.from_arrays(["x.png"], [[0, 0, 1, 1]], [0.5])
    with pytest.raises(ValueError, match="2 names, 1 boxes"):
        Predictions.from_arrays(["000001_01_01_010.png"] * 2, [[0, 0, 1, 1]], [0.5, 0.5])


def test_excel_style_file_bom_crlf_blank_lines_and_reordered_extra_columns(tmp_path):
    text = ("\ufeffmodel,score,File_name,x1,y1,x2,y2\r\n"
            "a,0.5,000001_01_01_010.png,1,2,3,4\r\n"
            "\r\n"
            "b,0.25,000001_01_01_011.png,1.5,2.5,3.5,4.5\r\n")
    path = tmp_path / "excel.csv"
    path.write_bytes(text.encode("utf-8"))
    p = read_predictions(path)
    assert p.file_names.tolist() == ["000001_01_01_010.png", "000001_01_01_011.png"]
    assert p.boxes.tolist() == [[1, 2, 3, 4], [1.5, 2.5, 3.5, 4.5]] and p.scores.tolist() == [0.5, 0.25]
    assert p.lines.tolist() == [2, 4] and p.slices.tolist() == [10, 11]


def test_row_lacking_only_trailing_extra_fields_is_kept_in_file_order(tmp_path):
    path = write(tmp_path, "File_name,x1,y1,x2,y2,score,model\n" + OK.strip() + ",a\n"
                 + "000001_01_01_011.png,1,2,3,4,0.7\n" + "000001_01_01_012.png,1,2,3,4,0.8,c\n")
    p = read_predictions(path)
    assert p.slices.tolist() == [10, 11, 12] and p.scores.tolist() == [0.5, 0.7, 0.8]
    assert p.lines.tolist() == [2, 3, 4] and p.skipped == 0


def test_quoted_line_break_in_an_extra_column_keeps_line_numbers(tmp_path):
    path = write(tmp_path, "File_name,x1,y1,x2,y2,score,note\n" + OK.strip() + ',"two\nlines"\n'
                 + "000001_01_01_011.png,1,2,3,4,0.7,x\n" + "000001_01_01_012.png,5,2,3,4,0.8,y\n")
    with pytest.raises(PredictionError, match="line 5: x2 < x1"):
        read_predictions(path)
    p = read_predictions(path, skip_bad_rows=True)
    assert p.lines.tolist() == [3, 4] and p.slices.tolist() == [10, 11]


@pytest.mark.parametrize("raw", [b"\xff00001_01_01_010.png,1,2,3,4,0.5\n", b"000001_01_01_010.png,1,2,3,4,0.5,caf\xe9\n"])
def test_non_utf8_file_names_the_file_and_line(tmp_path, raw):
    path = tmp_path / "latin1.csv"
    header = b"File_name,x1,y1,x2,y2,score" + (b",note\n" if raw.count(b",") == 6 else b"\n")
    path.write_bytes(header + (b"000001_01_01_010.png,1,2,3,4,0.5,a\n" if b"note" in header else OK.encode()) + raw)
    with pytest.raises(PredictionError) as err:
        read_predictions(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value) and "UTF-8" in str(err.value)


def test_every_slice_name_malformed_is_an_error_not_a_crash(tmp_path):
    path = write(tmp_path, HEADER + "a.png,1,2,3,4,0.5\n" + "b.png,1,2,3,4,0.6\n")
    for known in (None, {"000001_01_01"}):
        with pytest.raises(PredictionError, match="line 2: not a DeepLesion slice name"):
            read_predictions(path, known_series=known)
        p = read_predictions(path, known_series=known, skip_bad_rows=True)
        assert len(p) == 0 and p.skipped == 2 and p.series_names.tolist() == []


def test_whitespace_and_trailing_blank_lines_are_ignored(tmp_path):
    path = write(tmp_path, HEADER + OK + "   \n" + OK + "\n\n")
    p = read_predictions(path)
    assert len(p) == 2 and p.lines.tolist() == [2, 4] and p.skipped == 0


def test_bad_rows_far_into_a_large_file_are_found_by_line(tmp_path):
    """Several of pyarrow's read blocks: line numbers stay exact past blank lines."""
    n = 120_000
    names = np.repeat([f"000001_01_01_{k:03d}.png" for k in range(1, n // 50 + 1)], 50)
    boxes = np.tile([1.25, 2.0, 30.5, 40.0], (n, 1))
    write_predictions(tmp_path / "big.csv", names, boxes, np.linspace(0, 1, n))
    lines = (tmp_path / "big.csv").read_text().split("\n")
    lines[100_000] = lines[100_000].replace("30.5", "oops")
    lines.insert(50, "")
    (tmp_path / "bad.csv").write_text("\n".join(lines))
    with pytest.raises(PredictionError, match=r"line 100002: NaN or non-numeric value \{'x2': 'oops'\}"):
        read_predictions(tmp_path / "bad.csv")
    p = read_predictions(tmp_path / "bad.csv", skip_bad_rows=True)
    assert len(p) == n - 1 and p.skipped == 1 and p.lines[-1] == n + 2
    assert np.array_equal(p.scores, np.delete(np.linspace(0, 1, n), 99_999))


def test_written_text(tmp_path):
    names = ["000001_01_01_010.png", "000001_01_01_010.png", "odd,name"]
    boxes = np.array([[1.5, 2.25, 10.0, 20.0], [-0.5, 0.0, 1e-7, 123456.7891], [0.1, 0.2, 1 / 3, 1e22]])
    write_predictions(tmp_path / "p.csv", names, boxes, [0.9, 0.000089, 1.0])
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "File_name,x1,y1,x2,y2,score",
        "000001_01_01_010.png,1.5,2.25,10,20,0.9",
        "000001_01_01_010.png,-0.5,0,0.0000001,123456.7891,0.000089",
        '"odd,name",0.1,0.2,0.3333333333333333,1e+22,1',
    ]
    write_predictions(tmp_path / "empty.csv", [], np.zeros((0, 4)), [])
    assert (tmp_path / "empty.csv").read_text() == HEADER
    with pytest.raises(ValueError, match="2 names, 1 boxes"):
        write_predictions(tmp_path / "x.csv", names[:2], boxes[:1], [0.5])


@pytest.mark.parametrize("command", ["mine", "propagate", "distill", "evaluate"])
def test_commands_refuse_a_non_utf8_or_nameless_predictions_file_with_exit_code_2(tmp_path, capsys, command):
    ann = tmp_path / "DL_info.csv"
    write_annotations(ann, [make_lesion("000001_01_01_010.png", (1, 2, 3, 4), split=1),
                            make_lesion("000001_01_01_020.png", (1, 2, 3, 4), split=3)])
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes((HEADER + OK).encode() + b"000001_01_01_01\xe9.png,1,2,3,4,0.5\n")
    nameless = write(tmp_path, HEADER + "a.png,1,2,3,4,0.5\n", "nameless.csv")
    for path, why in ((latin1, "line 3: not a UTF-8 text file"), (nameless, "line 2: not a DeepLesion slice name")):
        args = [command, "--annotations", str(ann), "--predictions", str(path)]
        args += ["--out", str(tmp_path / "out.csv")] if command != "evaluate" else []
        assert main(args) == 2
        err = capsys.readouterr().err
        assert str(path) in err and why in err and "Traceback" not in err


def test_slice_numbers_beyond_int32_are_not_slice_names(tmp_path):
    path = write(tmp_path, HEADER + "000002_01_01_99999999999.png,1,2,3,4,0.5\n" + OK
                 + "000003_01_01_5000000000.png,1,2,3,4,0.5\n")
    with pytest.raises(PredictionError, match="line 2: not a DeepLesion slice name"):
        read_predictions(path)
    p = read_predictions(path, skip_bad_rows=True)
    assert p.series_names.tolist() == ["000001_01_01"] and p.series_index.tolist() == [0]
    assert p.slices.tolist() == [10] and p.skipped == 2


def test_old_mac_line_ends_huge_fields_and_long_values_give_short_one_line_errors(tmp_path):
    cr = tmp_path / "cr.csv"
    cr.write_bytes((HEADER + OK + "000001_01_01_011.png,5,2,3,4,0.5\n").replace("\n", "\r").encode())
    with pytest.raises(PredictionError, match=r"line 3: x2 < x1"):
        read_predictions(cr)
    assert read_predictions(cr, skip_bad_rows=True).lines.tolist() == [2]
    huge = write(tmp_path, HEADER + "0" * 300_000 + ",1,2,3,4,0.5\n", "huge.csv")
    with pytest.raises(PredictionError) as err:
        read_predictions(huge)
    assert "line 2: not a DeepLesion slice name" in str(err.value) and "(300,000 characters)" in str(err.value)
    assert len(str(err.value)) < 400 and "\n" not in str(err.value)
    quoted = write(tmp_path, HEADER + "\n" + '"' + "0" * 200_000 + '",1,2,3,4,0.5\n', "quoted.csv")
    with pytest.raises(PredictionError, match="line 3: field larger than field limit"):
        read_predictions(quoted)


def test_to_pandas_has_the_file_columns_in_file_order(tmp_path):
    names = ["000002_01_01_005.png", "000001_01_01_010.png"]
    write_predictions(tmp_path / "p.csv", names, [[1, 2, 3, 4], [5.5, 6, 7, 8]], [0.25, 0.75])
    frame = read_predictions(tmp_path / "p.csv").to_pandas()
    assert list(frame.columns) == ["File_name", "x1", "y1", "x2", "y2", "score"]
    assert frame["File_name"].tolist() == names
    np.testing.assert_array_equal(frame[["x1", "y1", "x2", "y2"]].to_numpy(), [[1, 2, 3, 4], [5.5, 6, 7, 8]])
    assert frame["score"].tolist() == [0.25, 0.75]
    frame.to_csv(tmp_path / "again.csv", index=False)         # pandas writes a file the reader takes back
    assert read_predictions(tmp_path / "again.csv").scores.tolist() == [0.25, 0.75]
    assert len(Predictions.from_arrays([], np.zeros((0, 4)), []).to_pandas()) == 0


@pytest.mark.parametrize("suffix", [".csv", ".arrow"])
def test_write_refuses_a_box_the_reader_would_refuse(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    boxes = [[0, 0, 1, 1], [2, 0, 1, 1]]            # row 1: x2 < x1
    with pytest.raises(PredictionError, match=r"row 1 \(000001_01_01_011.png\): x2 < x1.*nothing written"):
        write_predictions(path, ["000001_01_01_010.png", "000001_01_01_011.png"], boxes, [0.5, 0.5])
    with pytest.raises(PredictionError, match="row 0.*NaN"):
        write_predictions(path, ["000001_01_01_010.png"], [[0, 0, 1, 1]], [float("nan")])
    assert not path.exists()


def test_read_error_names_the_python_argument_too(tmp_path):
    path = write(tmp_path, "File_name,x1,y1,x2,y2,score\n000001_01_01_010.png,2,0,1,1,0.5\n")
    with pytest.raises(PredictionError, match="skip_bad_rows=True"):
        read_predictions(path)
