"""COCO export / import: exact box conversion, round trip through evaluate, pycocotools on real rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lesionprop.cli import main
from lesionprop.coco import (UNKNOWN_ID, category_ids, coco_bbox_to_file, file_to_coco_bbox, lesions_to_coco,
                             read_coco_images)
from lesionprop.annotations import read_annotations
from lesionprop.eval.froc import evaluate
from lesionprop.predictions import read_predictions, write_predictions


def read_rows(path):
    return read_annotations(path).rows()


def test_bbox_conversion_is_the_documented_one_and_inverts():
    file_boxes = np.array([[132.977, 171.808, 165.939, 214.029], [1.0, 1.0, 1.0, 3.0]])
    xywh = file_to_coco_bbox(file_boxes)
    np.testing.assert_allclose(xywh, [[131.977, 170.808, 32.962, 42.221], [0.0, 0.0, 0.0, 2.0]], atol=1e-12)
    np.testing.assert_allclose(coco_bbox_to_file(xywh), file_boxes, atol=1e-12)
    np.testing.assert_array_equal(category_ids(np.array([-1, 1, 5, 8, 0])), [UNKNOWN_ID, 1, 5, 8, UNKNOWN_ID])


def _detections(tiny_synth: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Truth boxes of the key slices, jittered, plus false positives, with distinct scores (file frame)."""
    rng = np.random.default_rng(3)
    keys = {les.file_name for les in read_rows(tiny_synth / "DL_info.csv")}
    truth = [t for t in read_rows(tiny_synth / "truth.csv") if t.file_name in keys]
    names = [t.file_name for t in truth]
    boxes = np.array([t.box for t in truth]) + rng.normal(0, 0.4, size=(len(truth), 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    fp_names = sorted(keys) * 3
    fp = rng.uniform(5, 90, size=(len(fp_names), 2))
    fp_boxes = np.column_stack([fp, fp + rng.uniform(4, 20, size=(len(fp_names), 2))])
    scores = rng.permutation(len(names) + len(fp_names)) / (len(names) + len(fp_names))
    return names + fp_names, np.vstack([boxes, fp_boxes]), scores


def test_round_trip_dl_info_coco_predictions_evaluate(tiny_synth, tmp_path, capsys):
    ann = tiny_synth / "DL_info.csv"
    coco_path = tmp_path / "dl.json"
    assert main(["export", "--annotations", str(ann), "--data", str(tiny_synth), "--format", "coco",
                 "--out", str(coco_path)]) == 0
    coco = json.loads(coco_path.read_text())
    lesions = read_rows(ann)
    human = [les for les in lesions if les.source == "human"]
    assert len(coco["annotations"]) == len(human)
    assert len(coco["images"]) == len({les.file_name for les in human})
    for im in coco["images"]:      # every file_name resolves under the dataset root
        assert (tiny_synth / im["file_name"]).is_file()
        assert im["slice_interval"] == im["spacing"][2]
    first = coco["annotations"][0]
    np.testing.assert_allclose(coco_bbox_to_file(np.array(first["bbox"]))[0], human[0].box, atol=1e-9)
    assert first["source"] == "human" and first["score"] is None

    names, boxes, scores = _detections(tiny_synth)
    direct = tmp_path / "direct.csv"
    write_predictions(direct, names, boxes, scores)
    by_name = {n: i for i, n in read_coco_images(coco_path).items()}
    results = [{"image_id": by_name[n], "bbox": b.tolist(), "score": float(s), "category_id": 1}
               for n, b, s in zip(names, file_to_coco_bbox(boxes), scores)]
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(results))
    back = tmp_path / "back.csv"
    assert main(["import-predictions", "--format", "coco-results", str(res_path), "--images", str(coco_path),
                 "--out", str(back)]) == 0
    p_direct, p_back = read_predictions(direct), read_predictions(back)
    assert list(p_back.file_names) == list(p_direct.file_names)
    np.testing.assert_allclose(p_back.boxes, p_direct.boxes, atol=1e-9)
    for split in ("train", "test", "all"):
        a = evaluate(lesions, p_direct, split=split)
        b = evaluate(lesions, p_back, split=split)
        assert a.images > 0 and a.lesions > 0
        np.testing.assert_array_equal(a.sensitivity, b.sensitivity)
        assert 0 < a.sensitivity[-1] <= 1


def test_labeled_slices_include_pseudo_labels(tiny_synth):
    from dataclasses import replace

    from lesionprop.data.layout import slice_file_name

    lesions = read_rows(tiny_synth / "DL_info.csv")
    used = {les.file_name for les in lesions}
    k = next(k for k in range(lesions[0].key_slice + 1, 10_000)
             if slice_file_name(lesions[0].series, k) not in used)
    extra = replace(lesions[0], file_name=slice_file_name(lesions[0].series, k), key_slice=k,
                    source="propagated", score=0.75, raw=None)
    key = lesions_to_coco(lesions + [extra], slices="key")
    labeled = lesions_to_coco(lesions + [extra], slices="labeled")
    assert len(labeled["annotations"]) == len(key["annotations"]) + 1
    assert len(labeled["images"]) == len(key["images"]) + 1
    last = labeled["annotations"][-1]
    assert last["source"] == "propagated" and last["score"] == 0.75
    assert labeled["images"][last["image_id"] - 1]["slice_index"] == k


def test_real_dl_info_sample_with_pycocotools(shared_data, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    csv_path = shared_data / "deeplesion" / "DL_info_sample.csv"
    out = tmp_path / "sample.json"
    assert main(["export", "--annotations", str(csv_path), "--data", str(tmp_path), "--out", str(out)]) == 0
    rows = read_rows(csv_path)
    gt = COCO(str(out))
    assert len(gt.getAnnIds()) == len(rows) == 34
    assert len(gt.getImgIds()) == len({r.file_name for r in rows})
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[1]))[0]
    np.testing.assert_allclose(ann["bbox"], [131.977, 170.808, 32.962, 42.221], atol=1e-9)
    img = gt.loadImgs([1])[0]
    assert (img["file_name"], img["width"], img["height"], img["slice_index"]) == \
        ("Images_png/000089_01_01/037.png", 512, 512, 37)
    assert img["spacing"] == [0.859375, 0.859375, 5.0] and img["split"] == "train"
    assert {c["name"] for c in gt.loadCats(gt.getCatIds())} >= {"lung", "liver", "unknown"}
    assert {gt.anns[a]["category_id"] for a in gt.anns} == {category_ids(np.array([r.lesion_type]))[0]
                                                           for r in rows}
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)       # AP@[.5:.95]
    assert ev.stats[1] == pytest.approx(1.0)       # AP@.5


@pytest.mark.parametrize("content, message", [
    ("[{\"image_id\": 99, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]", "entry [0]: image_id 99 is not an image"),
    ("[{\"image_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}, {\"image_id\": 1, \"bbox\": [1, 2, 3], "
     "\"score\": 0.5}]", "entry [1]: bbox must be 4 numbers"),
    ("[{\"image_id\": 1, \"bbox\": [1, 2, -3, 4], \"score\": 0.5}]", "entry [0]: bbox must be finite"),
    ("[{\"image_id\": 1, \"bbox\": [1, 2, 3, 4]}]", "entry [0]: missing 'score'"),
    ("[{\"image_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": \"high\"}]", "entry [0]: score must be"),
    ("{\"image_id\": 1", "not valid JSON (line 1"),
])
def test_bad_coco_results_name_the_file_and_entry(tmp_path, capsys, content, message):
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"images": [{"id": 1, "file_name": "Images_png/000001_01_01/005.png"}]}))
    res = tmp_path / "res.json"
    res.write_text(content)
    assert main(["import-predictions", "--format", "coco-results", str(res), "--images", str(images),
                 "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert str(res) in err and message in err
    assert not (tmp_path / "p.csv").exists()


def test_bad_coco_images_name_the_entry(tmp_path, capsys):
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"images": [{"id": 1, "file_name": "a/005.png"},
                                             {"id": 2, "file_name": "scan.jpg"}]}))
    res = tmp_path / "res.json"
    res.write_text("[]")
    assert main(["import-predictions", "--format", "coco-results", str(res), "--images", str(images),
                 "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{images}, images[0]" in err and "'a/005.png'" in err


def test_import_predictions_refuses_an_output_suffix_of_another_format(tmp_path, capsys):
    images = tmp_path / "images.json"
    images.write_text(json.dumps({"images": [{"id": 1, "file_name": "Images_png/000001_01_01/005.png"}]}))
    res = tmp_path / "res.json"
    res.write_text("[{\"image_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]")
    with pytest.raises(SystemExit) as exc:     # argparse: before any file is read
        main(["import-predictions", "--format", "coco-results", str(res), "--images", str(images),
              "--out", str(tmp_path / "p.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and "p.json" in err and "(.csv, .txt, .arrow" in err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("cmd", ["export", "import-predictions"])
def test_a_folder_given_as_out_is_refused_before_any_work(tmp_path, capsys, cmd):
    folder = tmp_path / "adir"
    folder.mkdir()
    args = (["export", "--annotations", str(tmp_path / "no.csv"), "--data", str(tmp_path)] if cmd == "export" else
            ["import-predictions", "--format", "coco-results", str(tmp_path / "r.json"), "--images",
             str(tmp_path / "i.json")])
    assert main(args + ["--out", str(folder)]) == 2
    assert capsys.readouterr().err == f"lesionprop {cmd}: error: --out {folder} is a folder; give a file name\n"
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []
