"""lesionprop review: the items, decisions.csv, the reviewed label set, the summary and the JSON API
(Flask's test client).  The server killed between two decisions: tests/test_review_server.py; the
page in a browser: tests/test_review_browser.py."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesionprop.annotations import Annotations, Source, concat, derived_lesion, read_annotations, write_with_new_rows
from lesionprop.cli import main
from lesionprop.data.slices import SliceReader
from lesionprop.review import (
    DECISIONS_FILE, REVIEWED_FILE, Decision, ReviewInputError, ReviewStore, parse_sources, reviewed_table,
    summarize, summary_text,
)
from lesionprop.review.app import create_app
from lesionprop.review.images import WINDOWS, slice_png, window_u8
from lesionprop.review.items import check_box, check_decision

ALL = parse_sources("mined,propagated,distilled")


def write_review_world(root: Path, image_size: int = 128, series: int = 8) -> tuple[Path, Path]:
    """A synthetic dataset and a label file: its human rows, then the mined rows (first the
    lesions the labels miss, boxed on their key slice as truth.csv has them; then one false
    positive per human row, its box shifted 20 px), then each human box propagated to K - 1 and
    K + 1.  Returns (data root, label file)."""
    from lesionprop.synth.dataset import generate_dataset

    data = root / "data"
    generate_dataset(data, series=series, seed=0, image_size=image_size, z_extent_mm=24.0, workers=1,
                     progress=False)
    ann = read_annotations(data / "DL_info.csv")
    truth = read_annotations(data / "truth.csv")
    with open(data / "lesions.csv", newline="") as fh:
        missed = {(r["Lesion_id"], int(r["Key_slice_index"])) for r in csv.DictReader(fh) if r["Labeled"] == "0"}
    on_key = [i for i, (lid, k) in enumerate(zip(truth.extra("Lesion_id"), truth.slice_index.tolist()))
              if (lid, k) in missed]
    found = [derived_lesion(truth.row(i), slice_index=int(truth.slice_index[i]), box=truth.boxes[i],
                            source=Source.MINED, score=0.97) for i in on_key]
    assert found, "the synthetic dataset has no unlabeled lesion"
    n = len(ann)
    rows = np.arange(n)
    wrong = ann.derive(rows, slices=ann.slice_index, boxes=np.clip(ann.boxes + 20.0, 1, image_size - 8),
                       source=Source.MINED, scores=np.linspace(0.95, 0.9, n))
    propagated = ann.derive(np.repeat(rows, 2), slices=np.repeat(ann.slice_index, 2) + np.tile([-1, 1], n),
                            boxes=np.repeat(ann.boxes, 2, axis=0), source=Source.PROPAGATED,
                            scores=np.full(2 * n, 0.8))
    labels = root / "labels.csv"
    write_with_new_rows(ann, {labels: concat([Annotations.from_lesions(found), wrong, propagated])})
    return data, labels


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return write_review_world(tmp_path_factory.mktemp("review_world"))


@pytest.fixture
def store(world, tmp_path) -> ReviewStore:
    data, labels = world
    return ReviewStore.open(labels, data, tmp_path / "review", ALL)


@pytest.fixture
def client(store):
    return create_app(store).test_client()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- pure parts

def test_parse_sources():
    assert parse_sources("mined") == (Source.MINED,)
    assert parse_sources(" propagated,mined,propagated") == (Source.PROPAGATED, Source.MINED)
    for bad in ("human", "mined,reviewed", "", "mined,,x"):
        with pytest.raises(ReviewInputError, match="sources must be"):
            parse_sources(bad)


def test_check_box_takes_the_whole_image_and_nothing_outside():
    assert check_box([0, 0, 129, 65], (64, 128)) == (0.0, 0.0, 129.0, 65.0)   # rows 64, columns 128
    assert check_box((1.5, 2, 3, 4.25), (64, 128)) == (1.5, 2.0, 3.0, 4.25)
    bad = {"outside the image": [[0, 0, 130, 10], [-0.1, 0, 5, 5], [0, 0, 5, 66]],
           "x1 < x2": [[5, 1, 5, 9], [6, 1, 5, 9], [1, 9, 5, 9]],
           "finite number": [[math.nan, 1, 5, 9], [1, 1, math.inf, 9], [True, 1, 5, 9], ["1", 1, 5, 9],
                             [None, 1, 5, 9]],
           "list of 4": [[1, 2, 3], "1,2,3,4", {"x1": 1}, None]}
    for message, boxes in bad.items():
        for box in boxes:
            with pytest.raises(ReviewInputError, match=message):
                check_box(box, (64, 128))


def test_check_decision():
    assert check_decision({"decision": "accept"}, (64, 64)) == Decision("accept")
    assert check_decision({"decision": "reject", "box": None}, (64, 64)) == Decision("reject")
    assert check_decision({"decision": "edit", "box": [1, 2, 3, 4]}, (64, 64)) == Decision("edit", (1, 2, 3, 4))
    for body, message in [({"decision": "Accept"}, "decision must be one of"), ({}, "decision must be one of"),
                          ({"decision": "edit"}, "needs a box"), ({"decision": "reject", "box": [1, 2, 3, 4]},
                                                                 "only with decision 'edit'"),
                          ({"decision": "accept", "note": "x"}, "unknown field"), ("accept", "JSON object")]:
        with pytest.raises(ReviewInputError, match=message):
            check_decision(body, (64, 64))


def test_window_presets_map_level_and_width_to_black_and_white():
    hu = np.array([[-1000, -160, 40, 240, 3000]], np.int16)
    assert window_u8(hu, *WINDOWS["soft"]).tolist() == [[0, 0, 128, 255, 255]]
    assert window_u8(np.array([[-1350, -600, 150]]), *WINDOWS["lung"]).tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError, match="window must be one of soft, lung, bone"):
        slice_png(hu, "liver")


def test_reviewed_table_removes_rejected_moves_redrawn_and_marks_both_reviewed(world):
    _, labels = world
    ann = read_annotations(labels)
    pseudo = np.flatnonzero(ann.source != "human")
    acc, rej, edit = (int(pseudo[k]) for k in (0, 1, 5))
    decisions = {acc + 1: Decision("accept"), rej + 1: Decision("reject"),
                 edit + 1: Decision("edit", (10.0, 12.5, 30.0, 41.0))}
    out = reviewed_table(ann, decisions)
    assert len(out) == len(ann) - 1
    kept = [r for r in range(len(ann)) if r != rej]
    assert out.file_name.tolist() == ann.file_name[kept].tolist()
    assert out.source.tolist() == ["reviewed" if r in (acc, edit) else ann.source[r] for r in kept]
    np.testing.assert_array_equal(out.score, ann.score[kept])
    j = kept.index(edit)
    assert out.boxes[j].tolist() == [10.0, 12.5, 30.0, 41.0]
    assert out.diameters_px[j].tolist() == [28.5, 20.0]              # from the new box, as derive makes them
    assert out.boxes[kept.index(acc)].tolist() == ann.boxes[acc].tolist()
    assert len(reviewed_table(ann, {})) == len(ann)


def test_labels_reviewed_reads_back_and_keeps_untouched_rows_byte_for_byte(store, world):
    _, labels = world
    acc, rej, edit = (int(r) + 1 for r in store.rows[:3])               # ids = data lines of the file
    store.decide(acc, {"decision": "accept"})
    store.decide(rej, {"decision": "reject"})
    store.decide(edit, {"decision": "edit", "box": [20, 21, 40.5, 44]})
    path = store.out / REVIEWED_FILE
    back = read_annotations(path)
    assert len(back) == len(store.ann) - 1
    assert sorted(set(back.source)) == ["human", "mined", "propagated", "reviewed"]
    src, out = _lines(labels), _lines(path)
    expected = [src[0]] + [src[k].replace(",mined,", ",reviewed,") if k == acc else src[k]
                           for k in range(1, len(src)) if k != rej]
    at = expected.index(src[edit])
    assert out[:at] + out[at + 1:] == expected[:at] + expected[at + 1:]
    assert out[at].startswith(src[edit].split(",")[0]) and ",reviewed," in out[at] and '"20, 21, 40.5, 44"' in out[at]


# ---------------------------------------------------------------- the JSON API

def test_items_are_the_pseudo_label_rows_with_exactly_the_documented_fields(client, store):
    items = client.get("/api/items").get_json()
    ann = store.ann
    pseudo = np.flatnonzero(ann.source != "human")
    assert [it["id"] for it in items] == (pseudo + 1).tolist()
    for it in items:
        assert list(it) == ["id", "File_name", "box", "source", "score", "decision"]
        r = it["id"] - 1
        assert it["File_name"] == ann.file_name[r] and it["box"] == ann.boxes[r].tolist()
        assert it["source"] == ann.source[r] and it["score"] == pytest.approx(ann.score[r]) and it["decision"] is None
    only = client.get("/api/items?source=mined&min_score=0.95").get_json()
    assert only and all(it["source"] == "mined" and it["score"] >= 0.95 for it in only)
    assert len(only) == int(((ann.source == "mined") & (ann.score >= 0.95)).sum())


def test_item_detail_names_the_neighbours_and_the_human_boxes(client, store):
    ann = store.ann
    human_files = set(ann.file_name[ann.source == "human"])
    r = next(int(r) for r in np.flatnonzero(ann.source == "mined") if ann.file_name[r] in human_files)
    d = client.get(f"/api/items/{r + 1}").get_json()
    k = int(ann.slice_index[r])
    reader = SliceReader(store.reader.root)
    assert d["slices"] == [j if reader.exists(ann.series[r], j) else None for j in (k - 1, k, k + 1)]
    human = (ann.file_name == ann.file_name[r]) & (ann.source == "human")
    assert d["human_boxes"] == ann.boxes[human].tolist() and d["human_boxes"]
    assert d["image_size"] == ann.image_size[r].tolist() and d["edited_box"] is None


def test_each_decision_is_on_disk_when_answered_and_the_input_is_never_changed(client, store, world):
    _, labels = world
    before = _sha(labels)
    ids = [it["id"] for it in client.get("/api/items").get_json()]
    record = store.out / DECISIONS_FILE
    for n, (item_id, body) in enumerate([(ids[0], {"decision": "accept"}), (ids[1], {"decision": "reject"}),
                                         (ids[2], {"decision": "edit", "box": [5, 6, 25, 26.5]}),
                                         (ids[0], {"decision": "reject"})], 1):
        answer = client.post(f"/api/items/{item_id}", json=body)
        assert answer.status_code == 200 and answer.get_json()["decision"] == body["decision"]
        rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(record.read_text()))}
        assert rows[item_id]["decision"] == body["decision"]
        assert len(rows) == min(n, 3)
        assert len(read_annotations(store.out / REVIEWED_FILE)) == len(store.ann) - [0, 1, 1, 2][n - 1]
    assert [rows[ids[2]][c] for c in ("new_x1", "new_y1", "new_x2", "new_y2")] == ["5.0", "6.0", "25.0", "26.5"]
    assert _sha(labels) == before
    detail = client.get(f"/api/items/{ids[2]}").get_json()
    assert detail["edited_box"] == [5.0, 6.0, 25.0, 26.5] and detail["decision"] == "edit"


@pytest.mark.parametrize("method, url, kwargs, status, message", [
    ("post", "/api/items/{id}", {"json": {"decision": "maybe"}}, 400, "decision must be one of"),
    ("post", "/api/items/{id}", {"json": {"decision": "edit"}}, 400, "needs a box"),
    ("post", "/api/items/{id}", {"json": {"decision": "edit", "box": [1, 2, 3]}}, 400, "list of 4 numbers"),
    ("post", "/api/items/{id}", {"json": {"decision": "edit", "box": [9, 2, 3, 8]}}, 400, "x1 < x2"),
    ("post", "/api/items/{id}", {"json": {"decision": "edit", "box": [1, 2, 3, 400]}}, 400, "outside the image"),
    ("post", "/api/items/{id}", {"json": {"decision": "edit", "box": [1, 2, "3", 4]}}, 400, "finite number"),
    ("post", "/api/items/{id}", {"json": {"decision": "accept", "box": [1, 2, 3, 4]}}, 400, "only with decision"),
    ("post", "/api/items/{id}", {"json": ["accept"]}, 400, "JSON object"),
    ("post", "/api/items/{id}", {"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ("post", "/api/items/{id}", {"data": "decision=accept"}, 415, "application/json"),
    ("post", "/api/items/1", {"json": {"decision": "accept"}}, 404, "no item 1"),           # a human row
    ("post", "/api/items/99999", {"json": {"decision": "accept"}}, 404, "no item 99999"),
    ("post", "/api/items/abc", {"json": {"decision": "accept"}}, 404, "no item 'abc'"),
    ("post", "/api/items/-2", {"json": {"decision": "accept"}}, 404, "no item '-2'"),
    ("get", "/api/items/0", {}, 404, "no item 0"),
    ("get", "/api/items?source=minded", {}, 400, "source must be"),
    ("get", "/api/items?min_score=high", {}, 400, "min_score must be a number"),
    ("get", "/api/items/{id}/image?offset=2", {}, 400, "offset must be -1, 0 or 1"),
    ("get", "/api/items/{id}/image?window=liver", {}, 400, "window must be one of"),
    ("delete", "/api/items/{id}", {}, 405, "not allowed"),
    ("get", "/api/nothing", {}, 404, "not found"),
])
def test_bad_requests_are_4xx_with_a_message(client, store, method, url, kwargs, status, message):
    item_id = int(store.rows[0]) + 1
    answer = getattr(client, method)(url.format(id=item_id), **kwargs)
    assert answer.status_code == status
    assert message in answer.get_json()["error"]
    assert not (store.out / DECISIONS_FILE).exists()            # nothing recorded


def test_a_missing_slice_file_is_a_404_naming_it(world, tmp_path):
    data, labels = world
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    store = ReviewStore.open(labels, copy, tmp_path / "review", ALL)
    r = int(store.rows[0])
    png = copy / "Images_png" / store.ann.series[r] / f"{store.ann.slice_index[r]:03d}.png"
    png.unlink()
    answer = create_app(store).test_client().get(f"/api/items/{r + 1}/image")
    assert answer.status_code == 404 and str(png) in answer.get_json()["error"]


def test_a_request_naming_another_host_is_refused(client):
    assert client.get("/api/items", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/api/items", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_image_is_the_slice_through_the_window(client, store):
    r = int(store.rows[0])
    for offset in (-1, 0, 1):
        answer = client.get(f"/api/items/{r + 1}/image?offset={offset}&window=bone")
        assert answer.status_code == 200 and answer.mimetype == "image/png"
        grey = cv2.imdecode(np.frombuffer(answer.data, np.uint8), cv2.IMREAD_UNCHANGED)
        hu = SliceReader(store.reader.root).read_hu(store.ann.series[r], int(store.ann.slice_index[r]) + offset)
        np.testing.assert_array_equal(grey, window_u8(hu, *WINDOWS["bone"]))


def test_page_is_served_and_shows_file_text_only_as_text(client):
    page = client.get("/")
    assert page.status_code == 200 and b"lesionprop review" in page.data
    script = client.get("/static/review.js").get_data(as_text=True)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "textContent" in script


# ---------------------------------------------------------------- restart, record, summary

def test_a_restart_shows_the_earlier_decisions_and_rebuilds_labels_reviewed(store, world):
    data, labels = world
    rows = store.rows.tolist()
    store.decide(rows[0] + 1, {"decision": "reject"})
    store.decide(rows[3] + 1, {"decision": "edit", "box": [3, 4, 50, 60]})
    (store.out / REVIEWED_FILE).unlink()                 # as if killed between the record and this file
    again = ReviewStore.open(labels, data, store.out, ALL)
    got = {it["id"]: it["decision"] for it in again.items()}
    assert got[rows[0] + 1] == "reject" and got[rows[3] + 1] == "edit"
    assert sum(v is not None for v in got.values()) == 2
    assert again.detail(rows[3] + 1)["edited_box"] == [3.0, 4.0, 50.0, 60.0]
    assert len(read_annotations(store.out / REVIEWED_FILE)) == len(store.ann) - 1
    # reviewing only the propagated rows keeps the decisions on mined rows in the reviewed set
    mined_only = ReviewStore.open(labels, data, store.out, (Source.PROPAGATED,))
    assert all(it["source"] == "propagated" for it in mined_only.items())
    assert len(read_annotations(store.out / REVIEWED_FILE)) == len(store.ann) - 1


def _edit_record(path: Path, line: int, column: str, value: str) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[line - 1][rows[0].index(column)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path.write_text(out.getvalue())


@pytest.mark.parametrize("column, value, message", [
    ("File_name", "000001_01_01_099.png", "belong to another label file"),
    ("x2", "99.5", "belong to another label file"),
    ("id", "2", "belong to another label file"),                   # a human row
    ("id", "100000", "is not a row of"),
    ("id", "x", "id is not a whole number"),
    ("decision", "keep", "decision must be one of"),
    ("new_x2", "1", "new box: box must have x1 < x2"),
    ("y1", "abc", "y1 is not a number"),
])
def test_a_record_that_does_not_match_the_label_file_is_an_error_naming_the_line(store, world, column, value,
                                                                                   message):
    data, labels = world
    rows = store.rows.tolist()
    store.decide(rows[0] + 1, {"decision": "accept"})
    store.decide(rows[1] + 1, {"decision": "edit", "box": [3, 4, 50, 60]})
    record = store.out / DECISIONS_FILE
    _edit_record(record, 3, column, value)
    with pytest.raises(ReviewInputError, match=message) as err:
        ReviewStore.open(labels, data, store.out, ALL)
    assert f"{record} line 3" in str(err.value)


def test_a_record_with_a_repeated_id_or_another_header_is_refused(store, world):
    data, labels = world
    store.decide(int(store.rows[0]) + 1, {"decision": "accept"})
    record = store.out / DECISIONS_FILE
    text = record.read_text()
    record.write_text(text + text.splitlines()[1] + "\n")
    with pytest.raises(ReviewInputError, match="line 3: id .* is decided twice"):
        ReviewStore.open(labels, data, store.out, ALL)
    record.write_text("File_name,decision\n")
    with pytest.raises(ReviewInputError, match="not a decisions file"):
        ReviewStore.open(labels, data, store.out, ALL)


def test_summary_counts_and_precision_per_source(store):
    ann = store.ann
    mined = (np.flatnonzero(ann.source == "mined") + 1).tolist()
    prop = (np.flatnonzero(ann.source == "propagated") + 1).tolist()
    store.decide(mined[0], {"decision": "accept"})
    store.decide(mined[1], {"decision": "reject"})
    store.decide(mined[2], {"decision": "reject"})
    b = ann.boxes[mined[3] - 1]
    store.decide(mined[3], {"decision": "edit", "box": [b[0], b[1], b[2] + (b[2] - b[0]), b[3]]})   # IoU 0.5
    store.decide(prop[0], {"decision": "accept"})
    s = store.write_summary()
    m, p = s["sources"]["mined"], s["sources"]["propagated"]
    assert (m["items"], m["accepted"], m["rejected"], m["edited"], m["undecided"]) == (len(mined), 1, 2, 1,
                                                                                         len(mined) - 4)
    assert m["precision"] == 0.5 and m["edit_iou_median"] == pytest.approx(0.5)
    assert p["precision"] == 1.0 and p["edit_iou_median"] is None
    assert s["all"]["items"] == len(mined) + len(prop) and s["all"]["precision"] == pytest.approx(3 / 5)
    text = summary_text(s)
    assert "mined" in text and "0.500" in text and "propagated" in text
    import json

    assert json.loads((store.out / "summary.json").read_text())["sources"]["mined"] == m
    assert summarize(ann, store.rows, {})["all"]["precision"] is None


# ---------------------------------------------------------------- the command's checks

def test_review_refuses_bad_options_with_one_line(world, tmp_path, capsys):
    data, labels = world
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--annotations", str(tmp_path / "none.csv")], "label file not found"),
        (["--annotations", str(data / "DL_info.csv")], "nothing to review"),
        (["--sources", "human"], "sources must be"),
        (["--out", str(tmp_path / "afile")], "is a file"),
        (["--data", str(tmp_path)], "no Images_png folder"),
        (["--port", "70000"], "--port must be in 0..65535"),
    ]
    for extra, message in cases:
        args = {"--annotations": str(labels), "--data": str(data), "--out": str(tmp_path / "review")}
        args.update(dict(zip(extra[::2], extra[1::2])))
        assert main(["review", *[x for kv in args.items() for x in kv]]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "review").exists()


def test_review_refuses_an_out_holding_its_own_input(world, tmp_path, capsys):
    data, labels = world
    out = tmp_path / "review"
    out.mkdir()
    shutil.copy(labels, out / REVIEWED_FILE)
    assert main(["review", "--annotations", str(out / REVIEWED_FILE), "--data", str(data), "--out", str(out)]) == 2
    assert "refusing to overwrite input file" in capsys.readouterr().err
