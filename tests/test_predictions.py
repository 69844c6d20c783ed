"""Prediction CSV: round trip, malformed rows with file + line, skipping with a count."""

import numpy as np
import pytest

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
