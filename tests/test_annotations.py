"""The columnar annotation table: DL_info.csv read/write, selection, grouping, derived rows."""

import csv
import filecmp
import io
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesionprop.annotations import (
    COLUMNS, AnnotationError, Annotations, Source, Split, concat, derived_lesion, read_annotations,
    write_annotations, write_with_new_rows,
)
from lesionprop.data.layout import parse_file_name, slice_file_name

HEADER = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
          "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
          "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,"
          "Patient_age,Train_Val_Test\n")
GOOD = ('000001_01_01_010.png,1,1,1,10,"1, 2, 3, 4, 5, 6, 7, 8","10, 20, 30, 40","20, 10","0.1, 0.2, 0.3",'
        '-1,0,"5, 15","0.8, 0.8, 2","512, 512","-175, 275",F,50,1\n')
ROW2 = GOOD.replace("000001_01_01_010.png,1,1,1,10", "000002_01_01_011.png,2,1,1,11").replace(",0,\"5", ",1,\"5") \
    .replace(",F,50,1\n", ",M,,3\n")


def _write(tmp_path, text, name="bad.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return p


def test_real_rows_round_trip_byte_identical(shared_data, tmp_path):
    src = shared_data / "deeplesion" / "DL_info_sample.csv"
    ann = read_annotations(src)
    assert len(ann) == 34 and set(ann.split.tolist()) == {1, 2, 3}
    out = tmp_path / "out.csv"
    write_annotations(out, ann)
    assert filecmp.cmp(out, src, shallow=False)
    out2 = tmp_path / "out2.csv"
    write_annotations(out2, ann, with_source=True)
    back = read_annotations(out2)
    np.testing.assert_array_equal(back.boxes, ann.boxes)
    assert (back.source == "human").all() and np.isnan(back.score).all()
    write_annotations(tmp_path / "out3.csv", back)            # Source/Score kept: byte-identical again
    assert filecmp.cmp(tmp_path / "out3.csv", out2, shallow=False)


def test_typed_columns(shared_data):
    ann = read_annotations(shared_data / "deeplesion" / "DL_info_sample.csv")
    assert ann.file_name[0] == "000089_01_01_037.png" and ann.series[0] == "000089_01_01"
    assert ann.slice_index[0] == 37 and ann.patient[0] == 89 and ann.line[0] == 2 and ann.line[-1] == 35
    np.testing.assert_array_equal(ann.boxes[0], [132.977, 171.808, 165.939, 214.029])
    np.testing.assert_array_equal(ann.spacing[0], [0.859375, 0.859375, 5.0])
    np.testing.assert_array_equal(ann.slice_range[0], [31, 43])
    np.testing.assert_array_equal(ann.diameters_px[0], [33.8477, 24.7578])
    assert tuple(ann.image_size[0]) == (512, 512) and ann.gender[0] == "F" and ann.age[0] == 71
    r = ann.row(0)
    assert r.box == (132.977, 171.808, 165.939, 214.029) and r.series == "000089_01_01" and r.fields()[0] == r.file_name


def test_names():
    assert slice_file_name("000089_01_01", 38) == "000089_01_01_038.png"
    assert parse_file_name("000089_01_01_038.png") == ("000089_01_01", 38)
    assert parse_file_name("000089_01_01_1038.png") == ("000089_01_01", 1038)
    with pytest.raises(ValueError):
        parse_file_name("000089_01_038.png")


def test_bom_crlf_extra_columns_and_blank_lines(tmp_path):
    text = HEADER.rstrip("\n") + ",Lesion_id\n" + GOOD.rstrip("\n") + ",7\n" + ROW2.rstrip("\n") + ",8\n"
    plain = read_annotations(_write(tmp_path, text, "plain.csv"))
    excel = read_annotations(_write(tmp_path, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), "excel.csv"))
    for ann in (plain, excel):
        assert list(ann.file_name) == ["000001_01_01_010.png", "000002_01_01_011.png"]
        assert list(ann.extra("Lesion_id")) == ["7", "8"] and list(ann.line) == [2, 3]
        np.testing.assert_array_equal(ann.noisy, [False, True])
        assert ann.gender[1] == "M" and math.isnan(ann.age[1]) and ann.age[0] == 50
    write_annotations(tmp_path / "back.csv", excel)
    assert (tmp_path / "back.csv").read_text() == text          # LF, no BOM, extras kept
    blank = read_annotations(_write(tmp_path, HEADER + "\n" + GOOD + "\n\n" + ROW2, "blank.csv"))
    assert list(blank.line) == [3, 6] and len(blank) == 2        # the row-by-row reader: same values
    np.testing.assert_array_equal(blank.boxes, plain.boxes)


def test_not_utf8_names_the_file(tmp_path):
    p = _write(tmp_path, (HEADER + GOOD.replace(",F,", ",Müller,")).encode("latin-1"), "latin.csv")
    with pytest.raises(AnnotationError, match=r"latin.csv, line 2: not a UTF-8 text file \(byte 0xfc"):
        read_annotations(p)
    with pytest.raises(AnnotationError, match="empty file"):
        read_annotations(_write(tmp_path, "", "empty.csv"))


def test_malformed_rows_name_file_line_column(tmp_path):
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace('"10, 20, 30, 40"', '"10, 20, abc, 40"'))
    with pytest.raises(AnnotationError, match=r"bad.csv, line 3, column Bounding_boxes = '10, 20, abc, 40'"):
        read_annotations(p)
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace('"10, 20, 30, 40"', '"30, 20, 10, 40"'))
    with pytest.raises(AnnotationError, match=r"line 3, column Bounding_boxes = '30, 20, 10, 40': .*x2 > x1"):
        read_annotations(p)
    p = _write(tmp_path, HEADER + GOOD.replace(",F,50,1", ",F,50"))
    with pytest.raises(AnnotationError, match="line 2: expected 18 fields, got 17"):
        read_annotations(p)
    p = _write(tmp_path, HEADER.replace("Bounding_boxes", "Boxes") + GOOD)
    with pytest.raises(AnnotationError, match="line 1"):
        read_annotations(p)
    p = _write(tmp_path, HEADER + GOOD.replace("000001_01_01_010.png", "scan10.png"))
    with pytest.raises(AnnotationError, match="column File_name = 'scan10.png'"):
        read_annotations(p)
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace(",-1,0,", ",-1,x,"))
    with pytest.raises(AnnotationError, match="line 3, column Possibly_noisy = 'x'"):
        read_annotations(p)
    p = _write(tmp_path, HEADER.rstrip("\n") + ",Source,Score\n" + GOOD.rstrip("\n") + ",robot,\n")
    with pytest.raises(AnnotationError, match="line 2, column Source = 'robot'"):
        read_annotations(p)


def test_one_selection_and_grouping():
    text_rows = [("000001_01_01_010.png", 1, "human", 0), ("000001_01_01_012.png", 1, "mined", 0),
                 ("000001_01_01_010.png", 1, "human", 1), ("000002_01_01_005.png", 3, "human", 0),
                 ("000001_01_01_010.png", 1, "propagated", 0)]
    lines = [HEADER.rstrip("\n") + ",Source,Score"]
    for name, split, source, noisy in text_rows:
        p, k = parse_file_name(name)
        row = GOOD.rstrip("\n").replace("000001_01_01_010.png,1,1,1,10", f"{name},{int(p[:6])},1,1,{k}")
        row = row.replace(",-1,0,", f",-1,{noisy},").replace(",F,50,1", f",F,50,{split}")
        lines.append(row + f",{source},{'' if source == 'human' else 0.9}")
    ann = Annotations.from_lesions(read_annotations_text(lines))
    assert list(ann.select(Split.TRAIN).file_name) == ["000001_01_01_010.png"]
    assert list(ann.select("train", drop_noisy=False).line) == [0, 0]
    assert len(ann.select("all", sources=None, drop_noisy=False)) == 5
    assert list(ann.select(None, sources=(Source.HUMAN, "mined")).file_name) == [
        "000001_01_01_010.png", "000001_01_01_012.png", "000002_01_01_005.png"]
    assert list(ann.select(3).series) == ["000002_01_01"]
    g = ann.by_key_slice()
    assert list(g.file_names) == ["000001_01_01_010.png", "000001_01_01_012.png", "000002_01_01_005.png"]
    assert list(g.rows) == [0, 2, 4, 1, 3] and list(g.start) == [0, 3, 4] and list(g.count) == [3, 1, 1]
    assert list(g.slices) == [10, 12, 5] and list(g.first_row) == [0, 1, 3]
    assert Split.parse("val") is Split.VAL and Split.parse(3) is Split.TEST and Split.parse("all") is None
    with pytest.raises(ValueError, match="split must be one of"):
        ann.select("training")
    assert len(Annotations.empty().select(Split.TRAIN)) == 0 and len(Annotations.empty().by_key_slice()) == 0


def read_annotations_text(lines):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.csv"
        p.write_text("\n".join(lines) + "\n")
        return read_annotations(p).rows()


def test_derive_equals_the_row_definition_and_writes_like_it(shared_data, tmp_path):
    ann = read_annotations(shared_data / "deeplesion" / "DL_info_sample.csv")
    boxes = np.array([[1.5, 2.25, 10.123456, 20], [0, 0, 5, 5], [3, 4, 3, 4]])
    new = ann.derive(np.array([0, 5, 5]), slices=np.array([38, 1, 2]), boxes=boxes, source="propagated",
                     scores=np.array([0.951234, 0.5, 1.0]), lesion_type=np.array([4, -1, 2]))
    rows = ann.rows()
    expect = [derived_lesion(rows[t], slice_index=s, box=b, source=Source.PROPAGATED, score=sc, lesion_type=ty)
              for t, s, b, sc, ty in ((0, 38, boxes[0], 0.951234, 4), (5, 1, boxes[1], 0.5, -1),
                                      (5, 2, boxes[2], 1.0, 2))]
    write_annotations(tmp_path / "a.csv", concat([ann, new]))
    write_annotations(tmp_path / "b.csv", rows + expect)
    assert filecmp.cmp(tmp_path / "a.csv", tmp_path / "b.csv", shallow=False)
    back = read_annotations(tmp_path / "a.csv")
    assert back.file_name[-3] == "000089_01_01_038.png" and back.slice_index[-3] == 38
    assert back.source[-1] == "propagated" and back.score[-3] == pytest.approx(0.951234)
    np.testing.assert_allclose(back.boxes[-3], [1.5, 2.25, 10.1235, 20], atol=1e-4)
    assert back.split[-3] == ann.split[0] and not back.noisy[-3] and list(back.lesion_type[-3:]) == [4, -1, 2]
    lines = (tmp_path / "a.csv").read_text().splitlines()
    src = (shared_data / "deeplesion" / "DL_info_sample.csv").read_text().splitlines()
    assert [ln.rsplit(",", 2)[0] for ln in lines[1:35]] == src[1:35]     # original rows unchanged


TRICKY = ["", " 7", "7 ", "+7", "-0", "0x10", "1_0", "1e3", "1.5", "nan", "NaN", "inf", "-inf", "1e999", "½",
          "١", "1,2", "1, 2", " 1 , 2 ", "1;2", "abc", "1, 2, 3", "1, 2, 3, 4", "3, 2, 1, 4", "512, nan",
          "human", "mined", "robot", "0.5", "000001_01_01_010.png", "000001_01_01_0010.png",
          "000001_01_01_99999999999999999999.png", "000001_02_01_010.png", "x.png", "1, 2e-3, .5, 7."]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(col=st.sampled_from(list(COLUMNS) + ["Source", "Score"]),
       value=st.sampled_from(TRICKY) | st.text(alphabet="0123456789.,+-eE xn ", max_size=10))
def test_column_wise_and_row_wise_readers_agree(tmp_path, col, value):
    """The fast reader accepts exactly what the row-by-row reader accepts, with the same values."""
    _readers_agree(tmp_path, col, value)


@pytest.mark.parametrize("col, value, column_wise", [
    ("File_name", "000001_01_01_0010.png", True),               # 4 slice digits: read from the name's bytes
    ("File_name", "000001_01_01_99999999999999999999.png", False),
    ("File_name", "000001_02_01_010.png", False),               # study disagrees: the rows name it
    ("Measurement_coordinates", "1, 2e-3, .5, 7.", True),
    ("Measurement_coordinates", "", True),
    ("Measurement_coordinates", "512, nan", False),             # float() takes nan: the row reader decides
    ("DICOM_windows", " -175 ,275 ", True),
    ("DICOM_windows", "1;2", False),
])
def test_readers_agree_on_names_and_checked_only_lists(tmp_path, col, value, column_wise):
    assert _readers_agree(tmp_path, col, value) == column_wise


def _readers_agree(tmp_path, col: str, value: str) -> bool:
    """Check the two readers on a file whose third row has ``col = value``; True when the
    column-wise reader decided (False: it handed the file to the row-by-row reader)."""
    from lesionprop.annotations import csv_io

    header = HEADER.rstrip("\n") + ",Source,Score"
    fields = next(csv.reader([GOOD.rstrip("\n") + ",human,"]))
    fields[(list(COLUMNS) + ["Source", "Score"]).index(col)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    path = tmp_path / "a.csv"
    path.write_text(header + "\n" + GOOD.rstrip("\n") + ",mined,0.5\n" + buf.getvalue())
    data = path.read_bytes()
    try:
        slow = Annotations.from_lesions(csv_io._read_rows(data, path)[0])
    except AnnotationError as exc:
        slow = str(exc)
    try:
        fast = csv_io._read_columns(data, str(path))
    except csv_io._Fallback:
        return False                                        # the row-by-row reader decides: same by construction
    except AnnotationError as exc:
        fast = str(exc)
    assert not isinstance(slow, str), f"{col} = {value!r}: accepted column-wise, refused row-wise: {slow}"
    assert not isinstance(fast, str), fast
    for name in ("file_name", "series", "slice_index", "patient", "lesion_type", "split", "source", "gender"):
        assert list(getattr(fast, name)) == list(getattr(slow, name)), (col, value, name)
    for name in ("boxes", "spacing", "slice_range", "image_size", "age", "score", "diameters_px", "location"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=f"{col}={value!r} {name}")
    assert list(fast.noisy) == list(slow.noisy)
    return True


@pytest.mark.parametrize("row, column, why", [
    (GOOD.replace(",1,1,1,10,", ",1,1,1,11,"), "Key_slice_index = '11'", "disagrees with File_name"),
    (GOOD.replace(",1,1,1,10,", ",1,2,1,10,"), "Study_index = '2'", "disagrees with File_name"),
    (GOOD.replace("_010.png,1,1,1,10,", "_000.png,1,1,1,0,"), "File_name = '000001_01_01_000.png'", "start at 001"),
    (GOOD.replace('"0.8, 0.8, 2"', '"0.8, nan, 2"'), "Spacing_mm_px_ = '0.8, nan, 2'", "finite positive"),
    (GOOD.replace(",-1,0,", ",inf,0,"), "Coarse_lesion_type = 'inf'", "out of range"),
    (GOOD.replace(",F,50,1", ",F,50,1e300"), "Train_Val_Test = '1e300'", "out of range"),
])
def test_values_that_parse_but_are_wrong_name_line_and_column(tmp_path, row, column, why):
    p = _write(tmp_path, HEADER + GOOD + row)
    with pytest.raises(AnnotationError, match=rf"bad.csv, line 3, column {column}: .*{why}"):
        read_annotations(p)


def test_quotes_commas_and_line_breaks_in_fields_round_trip(tmp_path):
    rows = [GOOD, GOOD.replace(",F,50,1", ',"a""b",50,1'), GOOD.replace(",F,50,1", ',"x\ny",50,1'),
            GOOD.replace(",F,50,1", ',"c,d",50,1')]
    p = _write(tmp_path, HEADER + "".join(rows), "q.csv")
    ann = read_annotations(p)
    assert list(ann.gender) == ["F", 'a"b', "x\ny", "c,d"] and list(ann.line) == [2, 3, 5, 6]  # csv: last line
    write_annotations(tmp_path / "back.csv", ann)
    assert (tmp_path / "back.csv").read_text() == p.read_text()


def test_write_with_new_rows_equals_writing_each_concatenation(shared_data, tmp_path):
    """One text of the input rows for several files: the same bytes as writing concat([rows, new])
    with Source and Score; extras of the input kept (empty on new rows); no new rows; quoting."""
    text = HEADER.rstrip("\n") + ",Lesion_id\n" + GOOD.rstrip("\n") + ",7\n" + \
        GOOD.replace(",F,50,1", ',"c,d",50,1').rstrip("\n") + ",8\n" + ROW2.rstrip("\n") + ",9\n"
    rows = read_annotations(_write(tmp_path, text, "in.csv"))
    one = rows.derive(np.array([0, 2]), slices=np.array([9, 12]), boxes=np.array([[1, 2, 3, 4], [5, 6, 7.5, 8]]),
                      source="mined", scores=np.array([0.91, 0.99]))
    noted = read_annotations(_write(tmp_path, HEADER.rstrip("\n") + ",Note\n" + ROW2.rstrip("\n") + ",n\n", "n.csv"))
    cases = {tmp_path / "a.csv": one, tmp_path / "b.csv": one.take(np.zeros(2, bool)),
             tmp_path / "c.csv": concat([one, one]), tmp_path / "d.csv": noted}     # d: a new extra column
    write_with_new_rows(rows, cases)
    for i, (path, new) in enumerate(cases.items()):
        write_annotations(tmp_path / f"ref{i}.csv", concat([rows, new]), with_source=True)
        assert path.read_bytes() == (tmp_path / f"ref{i}.csv").read_bytes()
    back = read_annotations(tmp_path / "a.csv")
    assert list(back.extra("Lesion_id")) == ["7", "8", "9", "", ""] and list(back.gender[:2]) == ["F", "c,d"]
    assert list(back.source) == ["human"] * 3 + ["mined"] * 2


# ---------------------------------------------------------------- values out of their domain

LINE3 = "bad.csv, line 3, column "
TYPES = "-1 (unknown) or 1..8 (1 bone, 2 abdomen, 3 mediastinum, 4 liver, 5 lung, 6 kidney, 7 soft tissue, 8 pelvis)"


@pytest.mark.parametrize("old, new, message", [
    ('"5, 15"', '"50, 10"', "Slice_range = '50, 10': first slice 50 is after the last 10 (expected 'first, last')"),
    (",F,50,1", ",F,50,9", "Train_Val_Test = '9': must be 1 (train), 2 (val) or 3 (test)"),
    (",F,50,1", ",F,50,0", "Train_Val_Test = '0': must be 1 (train), 2 (val) or 3 (test)"),
    (",-1,0,", ",-1,7,", "Possibly_noisy = '7': must be 0 or 1"),
    (",-1,0,", ",-1,0.5,", "Possibly_noisy = '0.5': must be 0 or 1"),
    (",-1,0,", ",42,0,", f"Coarse_lesion_type = '42': must be {TYPES}"),
    (",-1,0,", ",0,0,", f"Coarse_lesion_type = '0': must be {TYPES}"),
    ('"10, 20, 30, 40"', '"30, 20, 30, 40"',
     "Bounding_boxes = '30, 20, 30, 40': box x1, y1, x2, y2 must have x2 > x1 and y2 > y1 (width 0, height 20)"),
    ('"10, 20, 30, 40"', '"10, 50, 30, 40"',
     "Bounding_boxes = '10, 50, 30, 40': box x1, y1, x2, y2 must have x2 > x1 and y2 > y1 (width 20, height -10)"),
    ('"10, 20, 30, 40"', '"10, -0.5, 30, 40"',
     "Bounding_boxes = '10, -0.5, 30, 40': box coordinates must be >= 0 (1-based pixel frame)"),
    ('"10, 20, 30, 40"', '"10, 20, 513.5, 40"', "Bounding_boxes = '10, 20, 513.5, 40': box reaches past the image: "
                                               "Image_size = '512, 512' (rows, columns) allows x2 <= 513, y2 <= 513"),
    ('"10, 20, 30, 40"', '"10, 20, 30, 600"', "Bounding_boxes = '10, 20, 30, 600': box reaches past the image: "
                                             "Image_size = '512, 512' (rows, columns) allows x2 <= 513, y2 <= 513"),
    ('"5, 15"', '"11, 15"', "Key_slice_index = '10': key slice 10 is outside its Slice_range 11..15"),
    ('"5, 15"', '"1, 9"', "Key_slice_index = '10': key slice 10 is outside its Slice_range 1..9"),
    ('"5, 15"', '"nan, 15"', "Slice_range = 'nan, 15': not a number"),
    (",F,50,1", ",F,abc,1", "Patient_age = 'abc': could not convert string to float: 'abc'"),
    ('"-175, 275"', '"-175, y"', "DICOM_windows = '-175, y': could not convert string to float: 'y'"),
    ('"20, 10"', '"20, ?"', "Lesion_diameters_Pixel_ = '20, ?': could not convert string to float: '?'"),
])
def test_value_out_of_its_domain_names_file_line_column_and_value(tmp_path, old, new, message):
    """Each rule: refused by the column-wise reader (handed to the row reader), and the row
    reader's error is the reader's usual one: file, line, column = value: why."""
    from lesionprop.annotations import csv_io

    assert old in GOOD
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace(old, new))
    with pytest.raises(csv_io._Fallback):
        csv_io._read_columns(p.read_bytes(), str(p))
    with pytest.raises(AnnotationError) as exc:
        read_annotations(p)
    assert str(exc.value) == f"{p.parent}/{LINE3}{message}"


@pytest.mark.parametrize("col, value", [
    ("Bounding_boxes", "0.5, 0.5, 512.5, 512.5"),        # synth boxes clipped to the image (file frame)
    ("Bounding_boxes", "1, 1, 513, 513"),                # predictions clipped to the image, + 1
    ("Bounding_boxes", "0, 0, 513, 513"),
    ("Bounding_boxes", "10.25, 20.5, 10.5, 20.75"),      # fractional, small
    ("Slice_range", "10, 10"),                           # the key slice (10) is the whole range
    ("Slice_range", "10, 15"), ("Slice_range", "5, 10"),
    ("Slice_range", "5.9, 15"),                          # int(float()): 5
    ("Train_Val_Test", "3"), ("Train_Val_Test", "1.0"), ("Train_Val_Test", "2"),
    ("Coarse_lesion_type", "8"), ("Coarse_lesion_type", "1"), ("Coarse_lesion_type", "-1"),
    ("Possibly_noisy", "1"),
])
def test_values_at_the_edge_of_their_domain_are_read_column_wise(tmp_path, col, value):
    """Accepted, by the fast path, with the row reader's values."""
    assert _readers_agree(tmp_path, col, value) is True


def test_image_size_is_rows_then_columns(tmp_path):
    """``Image_size`` = rows, columns (as lesionprop.data.layout checks the PNGs): x is bounded by columns."""
    wide = GOOD.replace('"512, 512"', '"256, 600"')
    ok = wide.replace('"10, 20, 30, 40"', '"10, 20, 601, 257"')
    assert len(read_annotations(_write(tmp_path, HEADER + ok, "wide.csv"))) == 1
    p = _write(tmp_path, HEADER + ok + wide.replace('"10, 20, 30, 40"', '"10, 20, 30, 258"'))
    with pytest.raises(AnnotationError, match=re.escape(
            f"{LINE3}Bounding_boxes = '10, 20, 30, 258': box reaches past the image: "
            "Image_size = '256, 600' (rows, columns) allows x2 <= 601, y2 <= 257")):
        read_annotations(p)


def test_pseudo_label_rows_keep_the_box_rule_they_were_written_under(tmp_path):
    """Rows lesionprop derived (Source mined / propagated / distilled) from any detector's boxes,
    on any slice with predictions, read back; the codes and Slice_range order still hold for them."""
    head = HEADER.rstrip("\n") + ",Source,Score\n"
    pseudo = GOOD.replace('"10, 20, 30, 40"', '"3, 4, 3, 4"').replace('"5, 15"', '"11, 15"').rstrip("\n")
    p = _write(tmp_path, head + GOOD.rstrip("\n") + ",,\n" + pseudo + ",propagated,0.9\n", "pseudo.csv")
    ann = read_annotations(p)
    assert list(ann.source) == ["human", "propagated"]
    p = _write(tmp_path, head + GOOD.rstrip("\n") + ",,\n" + pseudo + ",human,\n")           # the same as a human row
    with pytest.raises(AnnotationError, match=r"bad.csv, line 3, column Bounding_boxes = '3, 4, 3, 4': .*x2 > x1"):
        read_annotations(p)
    p = _write(tmp_path, head + GOOD.rstrip("\n") + ",,\n" + pseudo + ",mined,0.9\n"
               + pseudo.replace(",F,50,1", ",F,50,9") + ",mined,0.9\n")
    with pytest.raises(AnnotationError, match=r"bad.csv, line 4, column Train_Val_Test = '9': must be 1"):
        read_annotations(p)
    p = _write(tmp_path, head + pseudo.replace('"3, 4, 3, 4"', '"3, 4, 2, 4"') + ",distilled,0.9\n")
    with pytest.raises(AnnotationError, match=r"bad.csv, line 2, column Bounding_boxes = '3, 4, 2, 4': .*x2 >= x1"):
        read_annotations(p)


def test_real_deeplesion_rows_pass_every_rule_column_wise(shared_data):
    """The 34 real rows: read by the fast path (no row fell back), every rule holds with room to spare."""
    from lesionprop.annotations import csv_io

    p = shared_data / "deeplesion" / "DL_info_sample.csv"
    ann = csv_io._read_columns(p.read_bytes(), str(p))
    assert len(ann) == 34 and set(ann.split.tolist()) == {1, 2, 3} and not ann.noisy.any()
    assert set(ann.lesion_type.tolist()) <= {-1, 1, 2, 3, 4, 5, 6, 7, 8}
    assert ((ann.slice_range[:, 0] <= ann.slice_index) & (ann.slice_index <= ann.slice_range[:, 1])).all()
    assert (ann.boxes[:, 2:] > ann.boxes[:, :2]).all() and (ann.boxes >= 0).all()
    assert (ann.boxes[:, [2, 3]] <= ann.image_size[:, [1, 0]] + 1).all()


def test_synthetic_dataset_reads_column_wise(tiny_synth, tmp_path):
    """What ``lesionprop synth`` writes (DL_info.csv and truth.csv, 128 px slices) passes every rule."""
    from lesionprop.annotations import csv_io
    from lesionprop.synth.series import mask_box

    for name in ("DL_info.csv", "truth.csv"):
        p = tiny_synth / name
        assert len(csv_io._read_columns(p.read_bytes(), str(p))) > 0
    # a lesion mask touching every border of a 32 px slice: the generator's clipped box reads back
    box, _ = mask_box(np.ones((32, 32), bool), 0, 0, 5.0, (32, 32))
    assert box == (0.5, 0.5, 32.5, 32.5)
    row = GOOD.replace('"512, 512"', '"32, 32"').replace('"10, 20, 30, 40"', '"0.5, 0.5, 32.5, 32.5"')
    p = tmp_path / "border.csv"
    p.write_text(HEADER + row)
    np.testing.assert_array_equal(csv_io._read_columns(p.read_bytes(), str(p)).boxes, [box])


def test_truth_csv_gets_the_same_checks(tiny_synth, tmp_path):
    """A complete-label truth.csv (the lens / harvester --truth) is read by the same reader."""
    from lesionprop.eval.complete_labels import read_complete_labels

    lines = (tiny_synth / "truth.csv").read_text().splitlines()
    fields = next(csv.reader([lines[4]]))
    lo, hi = fields[COLUMNS.index("Slice_range")].split(", ")
    fields[COLUMNS.index("Slice_range")] = f"{hi}, {lo}"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    lines[4] = buf.getvalue()
    bad = tmp_path / "truth.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=re.escape(
            f"truth.csv, line 5, column Slice_range = '{hi}, {lo}': first slice {hi} is after the last {lo}")):
        read_complete_labels(bad)


def test_to_pandas_spreads_the_vector_columns_and_names_splits_and_types(tmp_path):
    from helpers import make_lesion

    rows = [make_lesion("000003_01_02_007.png", (10, 20, 30, 44), split=3, lesion_type=4, z=5.0),
            make_lesion("000001_01_01_002.png", (1, 2, 3, 4), split=1, source="mined", score=0.75, noisy=1)]
    write_annotations(tmp_path / "DL_info.csv", rows)
    ann = read_annotations(tmp_path / "DL_info.csv")
    frame = ann.to_pandas()
    assert len(frame) == 2 and frame["file_name"].tolist() == ["000003_01_02_007.png", "000001_01_01_002.png"]
    np.testing.assert_array_equal(frame[["x1", "y1", "x2", "y2"]].to_numpy(), ann.boxes)
    assert frame["split"].tolist() == ["test", "train"]
    assert frame["lesion_type_name"].tolist() == ["liver", "unknown"]
    assert frame["source"].tolist() == ["human", "mined"] and frame["score"].iloc[1] == 0.75
    assert frame["noisy"].tolist() == [False, True] and frame["spacing_z"].tolist() == [5.0, 1.0]
    assert frame[["series", "slice_index", "patient", "series_id"]].iloc[0].tolist() == ["000003_01_02", 7, 3, 2]
    assert (frame["image_height"] == 512).all() and frame["long_axis_px"].iloc[0] == 24.0
    frame.loc[0, "x1"] = -1.0                        # a copy: the table does not change
    assert ann.boxes[0, 0] == 10.0
    assert list(Annotations.empty().to_pandas().columns) == list(frame.columns)


def test_to_pandas_keeps_extra_columns(tiny_synth):
    truth = read_annotations(tiny_synth / "truth.csv")
    frame = truth.to_pandas()
    assert len(frame) == len(truth) and frame["Lesion_id"].tolist() == truth.extra("Lesion_id").tolist()
