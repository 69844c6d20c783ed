"""Fuzzing the CSV readers: DL_info.csv-schema annotation files and prediction CSVs (issue 11).

Generated files (hypothesis, seeded: ``derandomize``) built from rows whose numbers the test
knows, then damaged in one way per test.  Every case must end in exactly one of:

* a one-line error (a ``ValueError`` subclass; exit code 2 from the CLI) naming the file,
* a counted skip (predictions read with ``skip_bad_rows``),
* a correct result: the rows and boxes (file frame xyxy, as written) the generator made.

Never another exception type (a traceback), a wrong number or an accepted bad row.
The readers are reached through their public functions, so the same file runs against the
columnar readers of the ``arch`` branch (``lesionprop.annotations.read_annotations``).
``LESIONPROP_FUZZ_SCALE`` multiplies the number of examples (benchmarks); the number of
cases run per reader is printed at the end of the module (``-s``).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz

from lesionprop.annotations import read_annotations
from lesionprop.cli import main as cli_main
from lesionprop.predictions import read_predictions

COUNTS: Counter = Counter()



@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print("\nfuzz cases per reader:", dict(COUNTS), "total", sum(COUNTS.values()))


# ---------------------------------------------------------------- generated good rows

ANN_COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
               "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
               "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
               "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age", "Train_Val_Test"]
coord = st.integers(0, 400_000).map(lambda v: v / 1000)              # 0 .. 400 px, 3 decimals
extent = st.integers(1, 80_000).map(lambda v: v / 1000)             # a box has a width and a height


@st.composite
def lesion_row(draw) -> dict:
    p, s, r = draw(st.integers(1, 999_999)), draw(st.integers(1, 99)), draw(st.integers(1, 99))
    k = draw(st.integers(2, 300))
    x1, y1, w, h = draw(coord), draw(coord), draw(extent), draw(extent)
    box = (x1, y1, round(x1 + w, 3), round(y1 + h, 3))
    return {"name": f"{p:06d}_{s:02d}_{r:02d}_{k:03d}.png", "p": p, "s": s, "r": r, "k": k, "box": box,
            "split": draw(st.sampled_from([1, 2, 3])), "gender": draw(st.sampled_from(["F", "M"]))}


def _nums(xs) -> str:
    return ", ".join(f"{x:g}" if float(x).is_integer() else repr(float(x)) for x in xs)


def ann_fields(r: dict) -> list[str]:
    x1, y1, x2, y2 = r["box"]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return [r["name"], str(r["p"]), str(r["s"]), str(r["r"]), str(r["k"]), _nums((x1, cy, x2, cy, cx, y1, cx, y2)),
            _nums(r["box"]), _nums((x2 - x1, y2 - y1)), "0.5, 0.5, 0.5", "-1", "0", f"{r['k'] - 1}, {r['k'] + 1}",
            "0.8, 0.8, 5", "512, 512", "-175, 275", r["gender"], "60", str(r["split"])]


def csv_text(header: list[str], rows: list[list[str]], eol: str = "\n") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=eol)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


rows_st = st.lists(lesion_row(), min_size=1, max_size=5)


# ---------------------------------------------------------------- outcome checks

def ann_table(res) -> tuple[list[str], np.ndarray]:
    """(file names, boxes) of a reader result: list[Lesion] today, Annotations after issue 9."""
    if isinstance(res, list):
        return [les.file_name for les in res], np.asarray([les.box for les in res], float).reshape(-1, 4)
    return [str(n) for n in res.file_name], np.asarray(res.boxes, float).reshape(-1, 4)


def one_line_error(exc: BaseException, path) -> None:
    msg = str(exc)
    assert isinstance(exc, ValueError), f"{type(exc).__name__} is not a user error: {msg}"
    assert "\n" not in msg.strip(), f"error is not one line: {msg!r}"
    assert str(path) in msg, f"error does not name the file {path}: {msg!r}"


def read_ann(path, kind: str):
    COUNTS[f"annotations:{kind}"] += 1
    try:
        return read_annotations(path)
    except Exception as exc:                    # noqa: BLE001 - the check is what kind it is
        one_line_error(exc, path)
        return None


def expect_rows(res, rows: list[dict]) -> None:
    assert res is not None, "a well-formed file was refused"
    names, boxes = ann_table(res)
    assert names == [r["name"] for r in rows]
    np.testing.assert_array_equal(boxes, np.asarray([r["box"] for r in rows], float).reshape(-1, 4))


# ---------------------------------------------------------------- annotation files

@fuzz(400)
@given(rows=rows_st, crlf=st.booleans(), dup=st.booleans(), blank=st.integers(0, 3), extra=st.booleans())
def test_annotations_well_formed_variants_read_exactly(tmp_path, rows, crlf, dup, blank, extra):
    """CRLF ends, duplicate rows, trailing blank lines, an extra text column with a quoted line break."""
    rows = rows + rows[:1] if dup else rows
    header = ANN_COLUMNS + (["Note"] if extra else [])
    fields = [ann_fields(r) + (["two\nlines, \"quoted\""] if extra else []) for r in rows]
    eol = "\r\n" if crlf else "\n"
    path = tmp_path / "DL_info.csv"
    path.write_bytes((csv_text(header, fields, eol) + eol * blank).encode())
    expect_rows(read_ann(path, "variants"), rows)


@fuzz(100)
@given(rows=rows_st)
def test_annotations_excel_byte_order_mark_is_accepted(tmp_path, rows):
    path = tmp_path / "DL_info.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(ANN_COLUMNS, [ann_fields(r) for r in rows]).encode())
    expect_rows(read_ann(path, "bom"), rows)


@fuzz(800)
@given(rows=rows_st, cut=st.floats(0, 1))
def test_annotations_truncated_file_is_an_error_or_its_complete_rows(tmp_path, rows, cut):
    data = csv_text(ANN_COLUMNS, [ann_fields(r) for r in rows]).encode()
    n = int(cut * len(data))
    path = tmp_path / "DL_info.csv"
    path.write_bytes(data[:n])
    res = read_ann(path, "truncated")
    if res is not None:
        lines = data[:n].decode().split("\n")
        complete = len(lines) - 1 if lines[-1] == "" else len(lines)   # the last row may lack its newline
        expect_rows(res, rows[: complete - 1])


BAD_VALUES = ["", "abc", "0x10", "1;2", "1 2", "½"]
NON_FINITE = ["nan", "NaN", "inf", "-inf", "1e999", "9" * 400]
CHECKED_COLUMNS = {  # column -> extra bad values beyond BAD_VALUES
    "File_name": ["000001_01_01.png", "1_1_1_001.png", "000001_01_01_001.jpg", "000001_01_01_-01.png"],
    "Patient_index": ["-"], "Study_index": ["1.5"], "Series_ID": ["x1"], "Key_slice_index": ["1.5"],
    "Bounding_boxes": ["1, 2, 3", "1, 2, 3, 4, 5", "1, 2, nan, 4", "1, 2, inf, 4", "4, 2, 1, 4", "1, 4, 3, 2",
                       "1, 2, 1, 4", "-1, 2, 3, 4", "1, 2, 513.5, 4", "1, 2, 3, 600"],
    "Coarse_lesion_type": ["0", "9", "42", "-2"], "Possibly_noisy": ["7", "2", "0.5", "-1"],
    "Slice_range": ["1", "1, 2, 3", "1, 1", "50, 10", "nan, 5"],     # 1, 1: the key slice (>= 2) is outside
    "Spacing_mm_px_": ["1, 1", "1, 1, 1, 1"], "Image_size": ["512", "512, 512, 1"],
    "Train_Val_Test": ["0", "4", "9", "1.5"],
}


def _one_bad_value(tmp_path, rows, data, columns, values, kind):
    col = data.draw(st.sampled_from(columns))
    value = data.draw(st.sampled_from(values(col)))
    i = data.draw(st.integers(0, len(rows) - 1))
    fields = [ann_fields(r) for r in rows]
    fields[i][ANN_COLUMNS.index(col)] = value
    path = tmp_path / "DL_info.csv"
    path.write_text(csv_text(ANN_COLUMNS, fields), encoding="utf-8")
    assert read_ann(path, kind) is None, f"{col} = {value[:20]!r} was accepted"


@fuzz(1500)
@given(rows=rows_st, data=st.data())
def test_annotations_bad_value_is_an_error_naming_the_file(tmp_path, rows, data):
    _one_bad_value(tmp_path, rows, data, sorted(CHECKED_COLUMNS), lambda c: BAD_VALUES + CHECKED_COLUMNS[c],
                   "bad-value")


@fuzz(300)
@given(rows=rows_st, data=st.data())
def test_annotations_non_finite_integer_is_an_error(tmp_path, rows, data):
    """NaN / inf / 1e999 where an integer is expected (ids, slice index)."""
    _one_bad_value(tmp_path, rows, data, ["Patient_index", "Study_index", "Series_ID", "Key_slice_index"],
                   lambda c: NON_FINITE[:-1], "non-finite-int")


@fuzz(300)
@given(rows=rows_st, data=st.data())
def test_annotations_non_finite_type_split_or_spacing_is_an_error(tmp_path, rows, data):
    """``int(float('inf'))`` in Coarse_lesion_type / Possibly_noisy / Train_Val_Test raises OverflowError
    (a traceback); a NaN or infinite spacing is accepted (a silent wrong IoU under MULAN's protocol)."""
    cols = ["Coarse_lesion_type", "Possibly_noisy", "Train_Val_Test", "Spacing_mm_px_", "Image_size"]
    _one_bad_value(tmp_path, rows, data, cols,
                   lambda c: [", ".join([v] + ["1"] * (2 if c == "Spacing_mm_px_" else 1 if c == "Image_size" else 0))
                              for v in NON_FINITE], "non-finite")


@fuzz(300)
@given(rows=rows_st, data=st.data())
def test_annotations_ids_or_key_slice_disagreeing_with_file_name_is_an_error(tmp_path, rows, data):
    i = data.draw(st.integers(0, len(rows) - 1))
    fields = [ann_fields(r) for r in rows]
    k = rows[i]["k"]
    col = data.draw(st.sampled_from([1, 2, 3, 4]))             # Patient_index ... Key_slice_index
    ref = int(fields[i][col])
    fields[i][col] = str(data.draw(st.sampled_from([0, -1, -ref, ref + 1, 10 * ref + 1, int("9" * 40)])))
    path = tmp_path / "DL_info.csv"
    path.write_text(csv_text(ANN_COLUMNS, fields), encoding="utf-8")
    assert read_ann(path, "key-slice") is None


@fuzz(100)
@given(rows=rows_st, data=st.data())
def test_annotations_slice_index_zero_is_an_error(tmp_path, rows, data):
    i = data.draw(st.integers(0, len(rows) - 1))
    fields = [ann_fields(r) for r in rows]
    fields[i][0] = fields[i][0][:-7] + "000.png"
    fields[i][4] = "0"
    path = tmp_path / "DL_info.csv"
    path.write_text(csv_text(ANN_COLUMNS, fields), encoding="utf-8")
    assert read_ann(path, "slice-0") is None


@fuzz(600)
@given(rows=rows_st, data=st.data())
def test_annotations_wrong_header_or_field_count_is_an_error(tmp_path, rows, data):
    how = data.draw(st.sampled_from(["drop-column", "swap-columns", "rename", "short-row", "long-row", "empty",
                                     "header-only-blank"]))
    header, fields = list(ANN_COLUMNS), [ann_fields(r) for r in rows]
    i = data.draw(st.integers(0, len(rows) - 1))
    if how == "drop-column":
        j = data.draw(st.integers(0, len(header) - 1))
        header.pop(j)
        fields = [f[:j] + f[j + 1:] for f in fields]
    elif how == "swap-columns":
        a, b = data.draw(st.lists(st.integers(0, len(header) - 1), min_size=2, max_size=2, unique=True))
        header[a], header[b] = header[b], header[a]
    elif how == "rename":
        j = data.draw(st.integers(0, len(header) - 1))
        header[j] = header[j].lower()
    elif how == "short-row":
        fields[i] = fields[i][:-data.draw(st.integers(1, 17))]
    elif how == "long-row":
        fields[i] = fields[i] + ["x"] * data.draw(st.integers(1, 3))
    path = tmp_path / "DL_info.csv"
    text = {"empty": "", "header-only-blank": "\n\n"}.get(how) if how in ("empty", "header-only-blank") \
        else csv_text(header, fields)
    path.write_text(text, encoding="utf-8")
    assert read_ann(path, "header/fields") is None, how


@fuzz(300)
@given(rows=rows_st, pos=st.floats(0, 1), byte=st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xe9"]))
def test_annotations_not_utf8_is_an_error_naming_the_file(tmp_path, rows, pos, byte):
    data = csv_text(ANN_COLUMNS, [ann_fields(r) for r in rows]).encode()
    j = int(pos * len(data))
    path = tmp_path / "DL_info.csv"
    path.write_bytes(data[:j] + byte + data[j:])
    assert read_ann(path, "non-utf8") is None


# ---------------------------------------------------------------- prediction files

PRED_COLUMNS = ["File_name", "x1", "y1", "x2", "y2", "score"]
score = st.integers(0, 10**6).map(lambda v: v / 10**6)
pred_rows_st = st.lists(st.tuples(lesion_row(), score), min_size=1, max_size=8)


def pred_fields(rows) -> list[list[str]]:
    return [[r["name"], *(repr(float(v)) for v in r["box"]), repr(s)] for r, s in rows]


def read_pred(path, kind: str, skip: bool = False, known=None):
    COUNTS[f"predictions:{kind}"] += 1
    try:
        return read_predictions(path, skip_bad_rows=skip, known_series=known)
    except Exception as exc:                    # noqa: BLE001
        one_line_error(exc, path)
        return None


def expect_preds(res, rows) -> None:
    assert res is not None, "a well-formed prediction file was refused"
    assert list(res.file_names) == [r["name"] for r, _ in rows]
    np.testing.assert_array_equal(res.boxes, np.asarray([r["box"] for r, _ in rows], float).reshape(-1, 4))
    np.testing.assert_array_equal(res.scores, np.asarray([s for _, s in rows], float))


@fuzz(400)
@given(rows=pred_rows_st, crlf=st.booleans(), blank=st.integers(0, 2), order=st.permutations(range(6)),
       extra=st.booleans())
def test_predictions_well_formed_variants_read_exactly(tmp_path, rows, crlf, blank, order, extra):
    """CRLF, trailing blank lines, columns in any order, an extra column."""
    header = [PRED_COLUMNS[j] for j in order] + (["model"] if extra else [])
    fields = [[f[j] for j in order] + (["m, 1"] if extra else []) for f in pred_fields(rows)]
    eol = "\r\n" if crlf else "\n"
    path = tmp_path / "preds.csv"
    path.write_bytes((csv_text(header, fields, eol) + eol * blank).encode())
    expect_preds(read_pred(path, "variants"), rows)


@fuzz(100)
@given(rows=pred_rows_st)
def test_predictions_byte_order_mark_is_accepted(tmp_path, rows):
    path = tmp_path / "preds.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(PRED_COLUMNS, pred_fields(rows)).encode())
    expect_preds(read_pred(path, "bom"), rows)


PRED_BAD = {"File_name": ["", "abc.png", "000001_01_01.png", "000001_01_01_01.png", "1_01_01_001.png", "x" * 5000],
            "x1": ["", "nan", "inf", "abc", "1e999"], "y1": ["", "-inf", "x"], "x2": ["-1", "nan", "1,2"],
            "y2": ["-1", "inf"], "score": ["", "nan", "inf", "abc", "1e400"]}


@fuzz(1200)
@given(rows=pred_rows_st, data=st.data(), skip=st.booleans())
def test_predictions_bad_rows_are_an_error_or_a_counted_skip(tmp_path, rows, data, skip):
    bad = sorted(set(data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=len(rows)))))
    fields = pred_fields(rows)
    for i in bad:
        col = data.draw(st.sampled_from(PRED_COLUMNS))
        fields[i][PRED_COLUMNS.index(col)] = data.draw(st.sampled_from(PRED_BAD[col]))
    path = tmp_path / "preds.csv"
    path.write_text(csv_text(PRED_COLUMNS, fields), encoding="utf-8")
    res = read_pred(path, "bad-rows" + ("-skip" if skip else ""), skip)
    if not skip:
        assert res is None, f"bad rows {bad} accepted"
        return
    assert res is not None and res.skipped == len(bad)
    expect_preds(res, [r for i, r in enumerate(rows) if i not in bad])


@fuzz(100)
@given(rows=pred_rows_st, data=st.data(), skip=st.booleans())
def test_predictions_huge_integer_is_an_error_or_a_counted_skip(tmp_path, rows, data, skip):
    """A 400-digit number (pandas parses it as an int too large for float64: OverflowError today)."""
    i = data.draw(st.integers(0, len(rows) - 1))
    fields = pred_fields(rows)
    fields[i][data.draw(st.integers(1, 5))] = "9" * 400
    path = tmp_path / "preds.csv"
    path.write_text(csv_text(PRED_COLUMNS, fields), encoding="utf-8")
    res = read_pred(path, "huge-number", skip)
    assert (res is None) if not skip else (res is not None and res.skipped == 1)


@fuzz(200)
@given(rows=pred_rows_st, bad=st.sampled_from(["abc.png", "000001_01_01.png", "", "1_1_1_1.png"]),
       skip=st.booleans())
def test_predictions_every_name_malformed_is_an_error_or_all_skipped(tmp_path, rows, bad, skip):
    fields = [[bad] + f[1:] for f in pred_fields(rows)]
    path = tmp_path / "preds.csv"
    path.write_text(csv_text(PRED_COLUMNS, fields), encoding="utf-8")
    res = read_pred(path, "all-names-bad", skip, known={r["name"][:12] for r, _ in rows})
    assert (res is None) if not skip else (res is not None and len(res) == 0 and res.skipped == len(rows))


@fuzz(500)
@given(rows=pred_rows_st, how=st.sampled_from(["cut", "short", "long", "empty", "no-column"]), cut=st.floats(0, 1))
def test_predictions_truncated_or_misshapen_file(tmp_path, rows, how, cut):
    path = tmp_path / "preds.csv"
    fields = pred_fields(rows)
    if how == "cut":
        data = csv_text(PRED_COLUMNS, fields).encode()
        n = int(cut * len(data))
        path.write_bytes(data[:n])
        res = read_pred(path, "truncated")
        if res is not None:      # complete rows exact; a last row cut inside its score may read shorter digits
            full = max(0, data[:n].decode().count("\n") - 1)       # rows ended by a newline
            expect_preds(res.subset(np.arange(min(full, len(res)))), rows[:min(full, len(res))])
            assert len(res) in (full, full + 1)
        return
    if how == "short":
        fields[0] = fields[0][:-2]
    elif how == "long":
        fields[-1] = fields[-1] + ["1", "2"]
    text = {"empty": "", "no-column": csv_text(PRED_COLUMNS[:-1], [f[:-1] for f in fields])}.get(
        how, csv_text(PRED_COLUMNS, fields))
    path.write_text(text, encoding="utf-8")
    assert read_pred(path, how) is None, how


@fuzz(300)
@given(rows=pred_rows_st, pos=st.floats(0, 1), byte=st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80"]))
def test_predictions_not_utf8_is_an_error_naming_the_file(tmp_path, rows, pos, byte):
    data = csv_text(PRED_COLUMNS, pred_fields(rows)).encode()
    j = int(pos * len(data))
    path = tmp_path / "preds.csv"
    path.write_bytes(data[:j] + byte + data[j:])
    assert read_pred(path, "non-utf8") is None


# ---------------------------------------------------------------- the commands: exit code 2, one line

def _bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    good = [{"name": "000001_01_01_010.png", "p": 1, "s": 1, "r": 1, "k": 10, "box": (10.0, 10.0, 20.0, 20.0),
             "split": 3, "gender": "F"}]
    ann = tmp_path / "DL_info.csv"
    ann.write_text(csv_text(ANN_COLUMNS, [ann_fields(r) for r in good]))
    preds = tmp_path / "preds.csv"
    preds.write_text(csv_text(PRED_COLUMNS, pred_fields([(good[0], 0.9)])))
    bad_ann = tmp_path / "bad_DL_info.csv"
    bad_ann.write_text(csv_text(ANN_COLUMNS, [ann_fields(good[0])[:-1] + ["x"]]))
    bad_pred = tmp_path / "bad_preds.csv"
    bad_pred.write_text("File_name,x1,y1,x2,y2,score\n000001_01_01_010.png,1,2,nan,4,0.5\n")
    latin = tmp_path / "latin1_preds.csv"
    latin.write_bytes(b"File_name,x1,y1,x2,y2,score\n000001_01_01_010.png,1,2,3,4,0.5\xff\n")
    names = tmp_path / "names_preds.csv"
    names.write_text("File_name,x1,y1,x2,y2,score\nabc.png,1,2,3,4,0.5\n")
    return {"bad-annotations": (str(bad_ann), str(preds)), "bad-predictions": (str(ann), str(bad_pred)),
            "non-utf8-predictions": (str(ann), str(latin)), "malformed-names": (str(ann), str(names))}


@pytest.mark.parametrize("command", ["evaluate", "mine", "propagate", "distill"])
@pytest.mark.parametrize("case", ["bad-annotations", "bad-predictions",
                                  "non-utf8-predictions",
                                  "malformed-names"])
def test_label_commands_exit_2_with_one_line_naming_the_file(tmp_path, capsys, command, case):
    ann, preds = _bad_files(tmp_path)[case]
    out = tmp_path / "out.csv"
    argv = [command, "--annotations", ann, "--predictions", preds] + ([] if command == "evaluate" else ["--out", str(out)])
    COUNTS["cli"] += 1
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    bad = ann if case == "bad-annotations" else preds
    assert "\n" not in err and err.startswith(f"lesionprop {command}: error:") and bad in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["evaluate", "mine"])
def test_a_real_subprocess_prints_one_line_and_no_traceback(tmp_path, command):
    ann, preds = _bad_files(tmp_path)["bad-predictions"]
    out = tmp_path / "out.csv"
    argv = [command, "--annotations", ann, "--predictions", preds] + ([] if command == "evaluate" else ["--out", str(out)])
    p = subprocess.run([sys.executable, "-m", "lesionprop", *argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    COUNTS["cli-subprocess"] += 1
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and preds in p.stderr
    assert not out.exists()
