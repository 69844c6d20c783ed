"""Inference: slice selection, frames (sample -> stored pixel -> file), TTA mapping and merging, CSV output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import write_blob_dataset
from lesionprop.annotations import read_annotations, series_geometry
from lesionprop.config import load_config
from lesionprop.engine.predict import flatten, infer, predict, slice_names
from lesionprop.engine.train import train
from lesionprop.engine.tta import hflip_boxes, merge_views, tta_views, weighted_box_fusion
from lesionprop.predictions import read_predictions


class BrightestBlob(torch.nn.Module):
    """A stand-in detector: the bounding box of the central slice's pixels above 120 (sample frame)."""

    def forward(self, images):
        out = []
        for im in images:
            c = im.shape[0] // 2
            ys, xs = torch.nonzero(im[c] > 120, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.ones(1, dtype=torch.int64)})
        return out


class FixedBoxes(torch.nn.Module):
    """A stub detector: the same boxes (sample frame) and scores on every image."""

    def __init__(self, boxes, scores) -> None:
        super().__init__()
        self.boxes = torch.tensor(boxes, dtype=torch.float32)
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def forward(self, images):
        return [{"boxes": self.boxes.clone(), "scores": self.scores.clone(),
                 "labels": torch.ones(len(self.scores), dtype=torch.int64)} for _ in images]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    ann = write_blob_dataset(root, series=3, splits=(1, 3, 3))
    return root, ann


def test_slice_selection(blobs):
    root, ann = blobs
    lesions = read_annotations(ann)
    assert slice_names(lesions, root, "key", "test") == ["000002_01_01_003.png", "000003_01_01_003.png"]
    adj = slice_names(lesions, root, "adjacent", "test")
    assert adj == ["000002_01_01_002.png", "000002_01_01_004.png", "000003_01_01_002.png", "000003_01_01_004.png"]
    assert len(slice_names(lesions, root, "both", "test")) == 6
    with pytest.raises(ValueError, match="slices must be one of"):
        slice_names(lesions, root, "middle", "test")
    # range: every slice of Slice_range (0..6) that exists; window=1: K-1..K+1 only
    rng = slice_names(lesions, root, "range", "test")
    assert rng == [f"{s}_{k:03d}.png" for s in ("000002_01_01", "000003_01_01") for k in range(7)]
    assert slice_names(lesions, root, "range", "test", window=1) == [
        f"{s}_{k:03d}.png" for s in ("000002_01_01", "000003_01_01") for k in (2, 3, 4)]
    (root / "Images_png" / "000002_01_01" / "006.png").rename(root / "gone.png")
    try:
        assert "000002_01_01_006.png" not in slice_names(lesions, root, "range", "test")
    finally:
        (root / "gone.png").rename(root / "Images_png" / "000002_01_01" / "006.png")


@pytest.mark.parametrize("tta", ["none", "flip", "scales", "flip+scales"])
def test_tta_views_map_back_to_the_stored_slice(blobs, tta):
    root, ann = blobs
    lesions = read_annotations(ann)
    cfg = load_config(preset="tiny")
    names = list(lesions.file_name)
    _, boxes, scores = infer(BrightestBlob(), cfg, root, names, series_geometry(root, lesions), tta=tta,
                             progress=False)
    for file_box, b, s in zip(lesions.boxes, boxes, scores):
        assert b.shape == (1, 4) and s[0] == pytest.approx(0.9)
        truth_px = file_box - 1.0            # the blob's box, pixel frame of the stored slice
        # the sample is at half resolution: the blob's box is found to within a sample pixel (2-2.5 stored px)
        assert np.abs(b[0] - truth_px).max() <= 4.0, (tta, b[0], truth_px)
    names_f, fboxes, _ = flatten(names, boxes, scores)
    assert names_f == names and np.allclose(fboxes, np.concatenate(boxes) + 1.0)


def test_hflip_and_fusion():
    b = np.array([[2.0, 3.0, 10.0, 8.0]])
    assert hflip_boxes(b, 20).tolist() == [[10.0, 3.0, 18.0, 8.0]]
    assert np.allclose(hflip_boxes(hflip_boxes(b, 20), 20), b)
    views = [(np.array([[0.0, 0, 10, 10]]), np.array([0.8])), (np.array([[2.0, 0, 12, 10]]), np.array([0.4])),
             (np.array([[50.0, 50, 60, 60]]), np.array([0.6]))]
    fb, fs = weighted_box_fusion(views, 0.55, 10)
    assert fb.shape == (2, 4)
    assert np.allclose(fb[0], [2 / 3 * 0 + 1 / 3 * 2, 0, 10 + 2 / 3, 10])
    assert fs[0] == pytest.approx(0.6 * 2 / 3) and fs[1] == pytest.approx(0.6 / 3)
    nb, ns = merge_views(views, "nms", 0.5)
    assert nb.tolist() == [[0, 0, 10, 10], [50, 50, 60, 60]] and ns.tolist() == [0.8, 0.6]
    assert tta_views("flip+scales", (0.5, 1.0)) == [(0.5, False), (0.5, True), (1.0, False), (1.0, True)]
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_views("rotate", (1.0,))


def test_predict_writes_exactly_the_stub_detectors_boxes(blobs, tmp_path, monkeypatch):
    """predict() end to end with a stub detector: every chosen slice gets the stub's boxes, mapped
    sample frame -> stored pixel frame (x 2: 0.8 mm pixels sampled at 1.6 mm) -> file frame (+1)."""
    import lesionprop.engine.predict as engine_predict

    root, ann = blobs
    cfg = load_config(preset="tiny")
    stub = FixedBoxes([[10.0, 12.0, 20.0, 30.0], [22.0, 40.0, 42.0, 50.0]], [0.9, 0.25])
    monkeypatch.setattr(engine_predict, "load_model", lambda checkpoint, device: (stub, cfg))
    ckpt = tmp_path / "stub.pt"
    ckpt.write_bytes(b"")                 # never read: load_model is the stub's
    out = tmp_path / "preds.csv"
    preds = predict(ckpt, root, ann, slices="both", split="test", tta="none", out_csv=out, progress=False)
    names = slice_names(read_annotations(ann), root, "both", "test")
    assert len(names) == 6
    back = read_predictions(out)
    assert list(back.file_names) == [n for n in names for _ in range(2)] == list(preds.file_names)
    expect = np.array([[21.0, 25.0, 41.0, 61.0], [45.0, 81.0, 85.0, 101.0]] * 6)
    np.testing.assert_array_equal(back.boxes, expect)
    np.testing.assert_array_equal(preds.boxes, expect)
    np.testing.assert_allclose(back.scores, [0.9, 0.25] * 6, atol=5e-7)
    # the same predictions as Arrow IPC and Parquet, chosen by the suffix: exact values
    for suffix in (".arrow", ".parquet"):
        binary = predict(ckpt, root, ann, slices="both", split="test", tta="none",
                         out_csv=tmp_path / f"preds{suffix}", progress=False)
        again = read_predictions(tmp_path / f"preds{suffix}")
        assert list(again.file_names) == list(binary.file_names) == list(preds.file_names)
        np.testing.assert_array_equal(again.boxes, preds.boxes)
        np.testing.assert_array_equal(again.scores, preds.scores)
    # flip: the second box is symmetric about the sample's centre (22 + 42 = 64), so both views
    # agree on it and fusion keeps it with its score; the first box and its mirror do not overlap
    flip = predict(ckpt, root, ann, slices="key", split="test", tta="flip", progress=False)
    kept = flip.boxes[flip.file_names == names[0]]
    assert any(np.array_equal(b, [45.0, 81.0, 85.0, 101.0]) for b in kept)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        predict(ckpt, root, ann, out_csv=ann, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        predict(tmp_path / "nowhere", root, ann, progress=False)


def test_predict_cli_on_an_imported_series_without_annotations(blobs, tmp_path, capsys):
    """`lesionprop predict --series`: every slice of a series known only from series_info.csv."""
    from lesionprop.cli import main
    from lesionprop.data.volumes import write_series

    root, ann = blobs
    run = tmp_path / "run"
    train(load_config(preset="tiny", overrides=["train.iterations=2"]), root, ann, run, progress=False)
    data = tmp_path / "imported"
    hu = np.full((5, 64, 64), -1000, dtype=np.int16)
    hu[:, 16:48, 16:48] = 40
    write_series(data, "000007_01_01", hu, (0.8, 0.8, 2.0))
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(run), "--data", str(data), "--series", "all",
                 "--out", str(out)]) == 0
    back = read_predictions(out)
    assert set(back.file_names) <= {f"000007_01_01_{i:03d}.png" for i in range(1, 6)}
    assert main(["predict", "--checkpoint", str(run), "--data", str(data), "--series", "000009_01_01",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "not in" in capsys.readouterr().err


def test_predict_cli_with_the_shipped_detector_name(tmp_path, capsys):
    """`--checkpoint synthetic-cpu-detector` needs no training run (the 5 x 64 x 64 series above)."""
    from lesionprop.cli import main
    from lesionprop.data.volumes import write_series

    data = tmp_path / "imported"
    hu = np.full((5, 64, 64), -1000, dtype=np.int16)
    hu[:, 16:48, 16:48] = 40
    write_series(data, "000007_01_01", hu, (0.8, 0.8, 2.0))
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", "synthetic-cpu-detector", "--data", str(data), "--series", "all",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert set(read_predictions(out).file_names) <= {f"000007_01_01_{i:03d}.png" for i in range(1, 6)}
    assert main(["predict", "--checkpoint", "synthetic-cpu-detectr", "--data", str(data), "--series", "all",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "shipped detector: synthetic-cpu-detector" in capsys.readouterr().err


def _random_tiny_model():
    from lesionprop.model.detector import build_detector

    cfg = load_config(preset="tiny")
    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.data.num_slices, load_pretrained=False).eval()
    model.roi_heads.score_thresh = 0.0          # random weights: keep every box to compare
    return cfg, model


def test_a_slices_boxes_do_not_depend_on_its_batch_mates():
    """Padding a batch to its largest slice changes GroupNorm's statistics; the ShapeBatcher runs
    full batches of one padded shape, so a slice in any company gets the boxes it gets alone."""
    from lesionprop.engine.predict import ShapeBatcher, padded_shape

    cfg, model = _random_tiny_model()
    g = torch.Generator().manual_seed(1)
    small = torch.rand(cfg.data.num_slices, 64, 64, generator=g) * 255
    near = torch.rand(cfg.data.num_slices, 60, 50, generator=g) * 255       # padded to 64 x 64 as well
    large = torch.rand(cfg.data.num_slices, 96, 128, generator=g) * 255
    assert padded_shape(near.shape) == padded_shape(small.shape) == (cfg.data.num_slices, 64, 64)
    with torch.no_grad():
        alone = model([small])[0]
        mixed = model([small, large])[0]
        got: dict = {}
        batcher = ShapeBatcher(model, 3, torch.device("cpu"), None, lambda k, out: got.setdefault(k, out))
        for key, im, flip in (("small", small, False), ("large", large, False), ("near", near, False),
                              ("large_flip", large, True), ("small_again", small, False)):
            batcher.add(key, im, flip)
        assert "small" in got and "large" not in got          # the 64 x 64 bucket filled first (3 images)
        batcher.flush()
        flipped_alone = model([large.flip(-1)])[0]
    assert len(alone["boxes"]) > 0 and batcher.passes == 2
    # one padded call changes the small slice's boxes: the reason for the ShapeBatcher
    assert len(mixed["boxes"]) != len(alone["boxes"]) or not torch.allclose(mixed["boxes"], alone["boxes"])
    for key in ("small", "small_again"):
        torch.testing.assert_close(got[key]["boxes"], alone["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(got[key]["scores"], alone["scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["large_flip"]["boxes"], flipped_alone["boxes"], atol=1e-4, rtol=0)


def test_every_tta_view_comes_from_one_decode_of_each_slice(blobs):
    """--tta flip+scales decodes no more PNGs than --tta none: the views of a slice share one read."""
    from lesionprop.annotations import series_geometry
    from lesionprop.data.slices import SliceReader

    root, ann = blobs
    cfg, model = _random_tiny_model()
    rows = read_annotations(ann)
    names = slice_names(rows, root, "both", "test")
    counts = {}
    for tta in ("none", "flip+scales"):
        reader = SliceReader(root, cache=False)                # no cache: every read past one sample decodes
        out = infer(model, cfg, root, names, series_geometry(root, rows), tta=tta, progress=False, reader=reader)
        assert [n for n in out[0]] == names
        counts[tta] = reader.decoded
    assert counts["none"] > 0 and counts["flip+scales"] == counts["none"]


def test_inference_settings_come_from_the_run_not_the_checkpoint(blobs, tmp_path):
    from lesionprop.config import inference_config
    from lesionprop.errors import ConfigError

    trained = load_config(preset="tiny", overrides=["predict.tta_scales=[0.5, 1.0]", "data.num_workers=0"])
    run = load_config(preset="tiny", overrides=["predict.tta_scales=[1.0, 1.5]", "predict.merge=nms",
                                                "data.num_workers=3", "data.window=[0, 100]"])
    cfg = inference_config(trained, run)
    assert cfg.predict == run.predict and cfg.data.num_workers == 3
    assert cfg.data.window == trained.data.window                # the model's own setting stays
    cfg = inference_config(trained, None, ["predict.batch_size=2", "data.cache_mb=8"])
    assert cfg.predict.batch_size == 2 and cfg.data.cache_mb == 8 and cfg.predict.tta_scales == (0.5, 1.0)
    with pytest.raises(ConfigError, match="data.window: at inference only"):
        inference_config(trained, None, ["data.window=[0, 100]"])


def test_predict_cli_refuses_a_folder_as_out_before_any_work(tmp_path, capsys):
    """Checked before the checkpoint is even looked for: no predicting work is wasted."""
    from lesionprop.cli import main

    folder = tmp_path / "adir"
    folder.mkdir()
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path),
                 "--annotations", str(tmp_path / "no.csv"), "--out", str(folder)]) == 2
    assert capsys.readouterr().err == f"lesionprop predict: error: --out {folder} is a folder; give a file name\n"
    assert list(folder.iterdir()) == []


def test_predict_cli_with_a_csv_as_checkpoint_names_the_file(blobs, tmp_path, capsys):
    from lesionprop.cli import main

    root, ann = blobs
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ann), "--data", str(root), "--annotations", str(ann),
                 "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"lesionprop predict: error: {ann} is not a lesionprop checkpoint "
                        "(torch could not load it as one: not a file written by torch.save)\n")
    assert "weights_only" not in err and not out.exists()
