import filecmp
import math

import pytest

from lesionprop.data.deeplesion import (
    AnnotationError, derived_lesion, parse_file_name, read_annotations, slice_file_name,
    write_annotations, select_split, drop_noisy, group_by_slice,
)


def test_real_rows_round_trip_byte_identical(shared_data, tmp_path):
    src = shared_data / "deeplesion" / "DL_info_sample.csv"
    rows = read_annotations(src)
    assert len(rows) == 34
    assert {r.split for r in rows} == {1, 2, 3}
    out = tmp_path / "out.csv"
    write_annotations(out, rows)
    assert filecmp.cmp(out, src, shallow=False)
    # and with Source/Score appended, the same rows read back equal
    out2 = tmp_path / "out2.csv"
    write_annotations(out2, rows, with_source=True)
    back = read_annotations(out2)
    assert [r.box for r in back] == [r.box for r in rows]
    assert all(r.source == "human" and math.isnan(r.score) for r in back)


def test_typed_fields(shared_data):
    r = read_annotations(shared_data / "deeplesion" / "DL_info_sample.csv")[0]
    assert r.file_name == "000089_01_01_037.png" and r.series == "000089_01_01"
    assert r.box == (132.977, 171.808, 165.939, 214.029)
    assert r.spacing == (0.859375, 0.859375, 5.0) and r.slice_range == (31, 43)
    assert r.image_size == (512, 512) and r.gender == "F" and r.age == 71 and r.split == 1


def test_names():
    assert slice_file_name("000089_01_01", 38) == "000089_01_01_038.png"
    assert parse_file_name("000089_01_01_038.png") == ("000089_01_01", 38)
    assert parse_file_name("000089_01_01_1038.png") == ("000089_01_01", 1038)
    with pytest.raises(ValueError):
        parse_file_name("000089_01_038.png")


def test_derived_rows_round_trip(shared_data, tmp_path):
    rows = read_annotations(shared_data / "deeplesion" / "DL_info_sample.csv")
    new = derived_lesion(rows[0], slice_index=38, box=(1.5, 2.25, 10.123456, 20), source="propagated",
                         score=0.951234, lesion_type=4)
    out = tmp_path / "o.csv"
    write_annotations(out, rows + [new])
    back = read_annotations(out)
    assert back[-1].file_name == "000089_01_01_038.png" and back[-1].key_slice == 38
    assert back[-1].source == "propagated" and back[-1].score == pytest.approx(0.951234)
    assert back[-1].box == pytest.approx((1.5, 2.25, 10.1235, 20), abs=1e-4)
    assert back[-1].split == rows[0].split and back[-1].noisy == 0 and back[-1].lesion_type == 4
    # the original rows are written unchanged
    lines = out.read_text().splitlines()
    src = (shared_data / "deeplesion" / "DL_info_sample.csv").read_text().splitlines()
    assert [ln.rsplit(",", 2)[0] for ln in lines[1:35]] == src[1:35]


def _write(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    return p


HEADER = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
          "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
          "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,"
          "Patient_age,Train_Val_Test\n")
GOOD = ('000001_01_01_010.png,1,1,1,10,"1, 2, 3, 4, 5, 6, 7, 8","10, 20, 30, 40","20, 10","0.1, 0.2, 0.3",'
        '-1,0,"5, 15","0.8, 0.8, 2","512, 512","-175, 275",F,50,1\n')


def test_malformed_rows_name_file_line_column(tmp_path):
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace('"10, 20, 30, 40"', '"10, 20, abc, 40"'))
    with pytest.raises(AnnotationError, match=r"bad.csv, line 3, column Bounding_boxes = '10, 20, abc, 40'"):
        read_annotations(p)
    p = _write(tmp_path, HEADER + GOOD + GOOD.replace('"10, 20, 30, 40"', '"30, 20, 10, 40"'))
    with pytest.raises(AnnotationError, match="line 3.*x2 >= x1"):
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


def test_selections(shared_data):
    rows = read_annotations(shared_data / "deeplesion" / "DL_info_sample.csv")
    assert sum(len(select_split(rows, s)) for s in ("train", "val", "test")) == len(rows)
    assert all(r.noisy == 0 for r in drop_noisy(rows))
    groups = group_by_slice(rows)
    assert len(groups["000091_03_01_093.png"]) == 2
    with pytest.raises(ValueError):
        select_split(rows, "training")
