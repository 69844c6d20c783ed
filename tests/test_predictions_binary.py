"""Binary prediction files (Arrow IPC / Feather, Parquet): exact round trips with the CSV,
files written by other tools, the CSV reader's checks with file + row + column + value,
corrupt files, and every command giving the same output from either form."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from helpers import make_lesion
from lesionprop.annotations import write_annotations
from lesionprop.cli import main
from lesionprop.predictions import PredictionError, read_predictions, write_predictions

S = "000001_01_01"
SUFFIXES = (".arrow", ".feather", ".parquet")
NAMES = [f"{S}_010.png", "000002_03_04_1012.png", f"{S}_009.png", f"{S}_010.png"]
BOXES = np.array([[1.5, 2.25, 10.123456789, 20.0], [0.1, 0.2, 0.30000000000000004, 1e3],
                  [5, 5, 5, 5], [3.0, 4.0, 7.5, 9.25]])
SCORES = np.array([0.9000001, 1 / 3, 0.05, 1e-300])


def fields(p):
    return (p.file_names.tolist(), p.boxes.tolist(), p.scores.tolist(), p.series_names.tolist(),
            p.series_index.tolist(), p.slices.tolist(), p.lines.tolist(), p.skipped)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_exact_and_same_as_csv(tmp_path, suffix):
    write_predictions(tmp_path / "p.csv", NAMES, BOXES, SCORES)
    write_predictions(tmp_path / f"p{suffix}", NAMES, BOXES, SCORES)
    csv, binary = read_predictions(tmp_path / "p.csv"), read_predictions(tmp_path / f"p{suffix}")
    assert fields(binary) == fields(csv)
    assert np.array_equal(binary.boxes, BOXES) and np.array_equal(binary.scores, SCORES)
    assert binary.lines.tolist() == [2, 3, 4, 5]          # row + 1: the line in the CSV form
    # CSV -> binary -> CSV gives the same bytes
    write_predictions(tmp_path / f"q{suffix}", csv.file_names, csv.boxes, csv.scores)
    back = read_predictions(tmp_path / f"q{suffix}")
    write_predictions(tmp_path / "q.csv", back.file_names, back.boxes, back.scores)
    assert (tmp_path / "q.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_written_file_is_a_plain_table_for_other_tools(tmp_path, suffix):
    path = tmp_path / f"p{suffix.upper()}"                # the suffix is case-insensitive
    write_predictions(path, NAMES, BOXES, SCORES)
    table = pq.read_table(path) if suffix == ".parquet" else feather.read_table(path)
    assert table.column_names == ["File_name", "x1", "y1", "x2", "y2", "score"]
    assert pa.types.is_dictionary(table.schema.field("File_name").type)      # each name stored once
    assert table.column("File_name").cast(pa.string()).to_pylist() == NAMES
    assert all(table.schema.field(c).type == pa.float64() for c in ("x1", "y1", "x2", "y2", "score"))
    assert table.column("x2").to_pylist() == BOXES[:, 2].tolist()
    empty = tmp_path / f"empty{suffix}"
    write_predictions(empty, [], np.zeros((0, 4)), [])
    assert len(read_predictions(empty)) == 0


def test_large_arrow_file_boxes_are_a_read_only_view(tmp_path):
    rng = np.random.default_rng(0)
    n = 5000
    names = [f"{S}_{k:03d}.png" for k in rng.integers(1, 60, n)]
    xy = rng.uniform(0, 400, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (n, 2))], 1)
    write_predictions(tmp_path / "p.arrow", names, boxes, rng.random(n))
    p = read_predictions(tmp_path / "p.arrow")
    assert np.array_equal(p.boxes, boxes) and not p.boxes.flags.writeable
    assert p.boxes[:, 0].flags.c_contiguous                 # columns ready for boxes.BoxCols


def test_files_written_by_other_tools(tmp_path):
    """Text names (no dictionary), float32 / integer numbers, extra columns, several record
    batches with different dictionaries, an IPC stream, a compressed Feather file."""
    table = pa.table({"model": ["a", "b", "c", "d"], "File_name": NAMES,
                      "x1": pa.array(BOXES[:, 0].astype(np.float32)), "y1": BOXES[:, 1],
                      "x2": BOXES[:, 2], "y2": BOXES[:, 3], "score": SCORES})
    ints = table.set_column(2, "x1", pa.array([1, 0, 5, 3], pa.int16()))
    want = BOXES.copy()
    want[:, 0] = BOXES[:, 0].astype(np.float32)
    feather.write_feather(table, tmp_path / "lz4.feather")              # lz4, as pandas.to_feather
    pq.write_table(table, tmp_path / "plain.parquet", row_group_size=3)
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    enc = pa.Table.from_batches([pa.record_batch([b.column(i).dictionary_encode() if i == 1 else b.column(i)
                                                  for i in range(b.num_columns)], names=table.column_names)
                                 for b in table.to_batches(max_chunksize=2)])
    with pa.OSFile(str(tmp_path / "batches.arrow"), "wb") as sink, pa.ipc.new_stream(sink, enc.schema) as w:
        w.write_table(enc)
    for name in ("lz4.feather", "plain.parquet", "stream.arrow", "batches.arrow"):
        p = read_predictions(tmp_path / name)
        assert p.file_names.tolist() == NAMES and np.array_equal(p.boxes, want), name
        assert p.slices.tolist() == [10, 1012, 9, 10] and p.scores.tolist() == SCORES.tolist()
    feather.write_feather(ints, tmp_path / "ints.feather")
    assert read_predictions(tmp_path / "ints.feather").boxes[:, 0].tolist() == [1, 0, 5, 3]


def bad_table(column, value):
    cols = {"File_name": list(NAMES), "x1": BOXES[:, 0].tolist(), "y1": BOXES[:, 1].tolist(),
            "x2": BOXES[:, 2].tolist(), "y2": BOXES[:, 3].tolist(), "score": SCORES.tolist()}
    cols[column][2] = value                                      # the third row: row 3
    return pa.table(cols)


@pytest.mark.parametrize("column, value, why", [
    ("x1", float("nan"), "column x1: nan"),
    ("y2", None, "column y2: nan (NaN, missing"),
    ("score", float("inf"), "column score: inf"),
    ("x2", 4.0, "column x2: 4.0 < x1 = 5.0 (negative width)"),
    ("y2", -1.0, "column y2: -1.0 < y1 = 5.0 (negative height)"),
    ("File_name", "000001_01_010.png", "column File_name: not a DeepLesion slice name (PPPPPP_SS_SS_III.png): "
                                       "'000001_01_010.png'"),
    ("File_name", None, "column File_name: not a DeepLesion slice name (PPPPPP_SS_SS_III.png): missing"),
])
@pytest.mark.parametrize("suffix", (".arrow", ".parquet"))
def test_bad_value_names_file_row_column_and_value(tmp_path, suffix, column, value, why):
    path = tmp_path / f"bad{suffix}"
    table = bad_table(column, value)
    pq.write_table(table, path) if suffix == ".parquet" else feather.write_feather(table, path)
    with pytest.raises(PredictionError) as err:
        read_predictions(path)
    assert str(err.value).startswith(f"{path}, row 3: {why}")
    p = read_predictions(path, skip_bad_rows=True)
    assert p.skipped == 1 and p.lines.tolist() == [2, 3, 5] and p.skipped_examples[0].startswith(f"row 3: {why}")


def test_unknown_series_and_wrong_columns(tmp_path):
    path = tmp_path / "p.arrow"
    write_predictions(path, NAMES, BOXES, SCORES)
    with pytest.raises(PredictionError, match=r"p\.arrow, row 2: column File_name: series of '000002_03_04_1012"):
        read_predictions(path, known_series={S})
    assert len(read_predictions(path, known_series={S}, skip_bad_rows=True)) == 3
    feather.write_feather(pa.table({"File_name": NAMES, "x1": BOXES[:, 0]}), tmp_path / "few.arrow")
    with pytest.raises(PredictionError, match=r"few\.arrow: columns must include .*missing \['y1', 'x2', 'y2', 'score'\]"):
        read_predictions(tmp_path / "few.arrow")
    feather.write_feather(bad_table("x1", 1.0).set_column(1, "x1", pa.array(["1", "2", "3", "4"])),
                          tmp_path / "text.arrow")
    with pytest.raises(PredictionError, match=r"text\.arrow: column x1 has type string, expected numbers"):
        read_predictions(tmp_path / "text.arrow")
    feather.write_feather(bad_table("x1", 1.0).set_column(0, "File_name", pa.array([1, 2, 3, 4])),
                          tmp_path / "num.arrow")
    with pytest.raises(PredictionError, match=r"num\.arrow: column File_name has type int64, expected text"):
        read_predictions(tmp_path / "num.arrow")


@pytest.mark.parametrize("suffix", (".arrow", ".parquet"))
def test_corrupt_or_truncated_file_names_the_file(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    write_predictions(good, NAMES * 50, np.tile(BOXES, (50, 1)), np.tile(SCORES, 50))
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"File_name,x1,y1,x2,y2,score\n",
             "scrambled": data[:8] + bytes(b ^ 0x5A for b in data[8:-6]) + data[-6:]}   # magic bytes kept
    for name, content in cases.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        with pytest.raises(PredictionError) as err:
            read_predictions(path)
        assert str(err.value).startswith(f"{path}:"), name
        assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / f"missing{suffix}")


def test_dictionary_code_out_of_range_is_an_error(tmp_path):
    names = pa.DictionaryArray.from_arrays(pa.array([0, 7, 1, 0], pa.int32()), pa.array(NAMES[:2]), safe=False)
    table = pa.table({"File_name": names, **{c: BOXES[:, j] for j, c in enumerate(("x1", "y1", "x2", "y2"))},
                      "score": SCORES})
    with pa.OSFile(str(tmp_path / "codes.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(PredictionError, match=r"codes\.arrow: not a readable Arrow IPC .*\(.*out of bounds"):
        read_predictions(tmp_path / "codes.arrow")


@pytest.fixture()
def files(tmp_path):
    """Annotations and 600 random predictions around the key slices, as CSV and binary."""
    G = (10.0, 10.0, 30.0, 30.0)
    les = [make_lesion(f"{S}_010.png", G, lesion_type=4), make_lesion(f"{S}_020.png", (40, 40, 70, 60)),
           make_lesion(f"{S}_030.png", (100, 100, 110, 110), source="mined", score=0.97),
           make_lesion(f"{S}_012.png", G, split=3)]
    ann = tmp_path / "DL_info.csv"
    write_annotations(ann, les, with_source=True)
    rng = np.random.default_rng(1)
    n = 600
    names = [f"{S}_{k:03d}.png" for k in rng.integers(8, 33, n)]
    centre = rng.choice([20.0, 55.0, 105.0], n)[:, None] + rng.normal(0, 3, (n, 2))
    half = rng.uniform(4, 12, (n, 2))
    boxes = np.concatenate([centre - half, centre + half], 1).round(3)
    scores = rng.uniform(0.5, 1, n).round(4)
    paths = {}
    for suffix in (".csv", *SUFFIXES):
        paths[suffix] = tmp_path / f"pred{suffix}"
        write_predictions(paths[suffix], names, boxes, scores)
    return tmp_path, ann, paths


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_label_commands_same_bytes_from_either_form(files, suffix, capsys):
    tmp, ann, paths = files
    for cmd in ("propagate", "mine", "distill"):
        outs = []
        for form in (".csv", suffix):
            out = tmp / f"{cmd}_{form[1:]}.csv"
            assert main([cmd, "--annotations", str(ann), "--predictions", str(paths[form]), "--out", str(out),
                         "--split", "all"]) == 0
            outs.append(out.read_bytes())
        assert outs[0] == outs[1] and outs[0].count(b"\n") > 5, cmd
    capsys.readouterr()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_evaluate_compare_link_read_either_form(files, suffix, capsys):
    tmp, ann, paths = files
    said = []
    for form in (".csv", suffix):
        assert main(["evaluate", "--annotations", str(ann), "--predictions", str(paths[form]), "--split", "all",
                     "--json", "--fps", "0.5,1,2"]) == 0
        said.append(json.loads(capsys.readouterr().out))
        assert main(["compare", "--annotations", str(ann), "--predictions", str(paths[".csv"]), str(paths[form]),
                     "--names", "a,b", "--split", "all", "--json", "--bootstrap", "20"]) == 0
        said.append(json.loads(capsys.readouterr().out))
        out = tmp / f"linked_{form[1:]}.csv"
        lesions = tmp / f"lesions_{form[1:]}.csv"
        assert main(["link", "--predictions", str(paths[form]), "--out", str(out), "--lesions", str(lesions)]) == 0
        capsys.readouterr()
        said.append(lesions.read_bytes())
        said.append([line.rsplit(",", 1)[1] for line in out.read_text().splitlines()])      # Lesion_id column
    half = len(said) // 2
    assert said[:half] == said[half:] and said[0]["sensitivity"]


@pytest.mark.parametrize("name, form", [("p.csv", "csv"), ("p.TXT", "csv"), ("p", "csv"), ("p.arrow", "arrow"),
                                        ("p.feather", "arrow"), ("p.Parquet", "parquet"), ("p.pq", "parquet")])
def test_output_format_by_suffix(name, form):
    from lesionprop.predictions import output_format

    assert output_format(name) == form


@pytest.mark.parametrize("name", ["p.json", "p.xlsx", "p.csv.gz", "p.npz"])
def test_write_predictions_refuses_other_formats(tmp_path, name):
    from lesionprop.predictions import PredictionError, write_predictions

    with pytest.raises(PredictionError, match=r"none of these"):
        write_predictions(tmp_path / name, ["000001_01_01_005.png"], np.zeros((1, 4)) + [0, 0, 1, 1], np.ones(1))
    assert not list(tmp_path.iterdir())
