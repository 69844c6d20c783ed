import numpy as np
import pytest
import torch

from lesionprop.config import DataConfig
from lesionprop.data.dataset import (
    DetectionDataset, SliceItem, clip_boxes, collate, items_for_slices, items_from_boxes,
)
from lesionprop.annotations import Lesion, derived_lesion, series_geometry
from lesionprop.data.layout import write_slice
from lesionprop.data.slices import SliceReader

SERIES = "000007_02_01"


def items_from_lesions(rows):
    return items_from_boxes([r.file_name for r in rows], [r.box for r in rows])


def lesion(slice_index: int, box, split: int = 1, spacing=(0.8, 0.8, 2.0), size=(48, 64)) -> Lesion:
    return Lesion(
        file_name=f"{SERIES}_{slice_index:03d}.png", patient=7, study=2, series_id=1, key_slice=slice_index,
        measurement=(0.0,) * 8, box=tuple(float(c) for c in box), diameters=(10.0, 5.0),
        location=(0.5, 0.5, 0.5), lesion_type=-1, noisy=0, slice_range=(1, 9), spacing=spacing,
        image_size=size, windows=(-175.0, 275.0), gender="F", age=50.0, split=split,
    )


@pytest.fixture
def root(tmp_path):
    for i in range(1, 10):
        hu = np.full((48, 64), -1024.0)
        hu[4:44, 4:60] = 0
        hu[11:21, 31:47] = 1500 + 10 * i        # pixel-frame block (31, 11, 47, 21) on every slice
        write_slice(tmp_path, SERIES, i, hu)
    return tmp_path


def test_items_from_boxes_groups_key_and_adjacent_slices():
    rows = [lesion(5, (32, 12, 48, 22)), lesion(5, (2, 3, 10, 11)), lesion(6, (33, 12, 47, 21))]
    rows.append(derived_lesion(rows[0], slice_index=4, box=(30, 10, 40, 20), source="propagated", score=0.95))
    items = items_from_lesions(rows)
    assert [it.file_name for it in items] == [f"{SERIES}_005.png", f"{SERIES}_006.png", f"{SERIES}_004.png"]
    assert items[0].series == SERIES and items[0].slice_index == 5
    assert items[0].boxes.dtype == np.float32 and items[0].boxes.shape == (2, 4)
    np.testing.assert_array_equal(items[0].boxes, [[31, 11, 47, 21], [1, 2, 9, 10]])   # file - 1
    np.testing.assert_array_equal(items[2].boxes, [[29, 9, 39, 19]])
    inf = items_for_slices([f"{SERIES}_003.png", f"{SERIES}_1003.png"])
    assert [(i.slice_index, i.boxes.shape) for i in inf] == [(3, (0, 4)), (1003, (0, 4))]
    with pytest.raises(ValueError, match="PPPPPP_SS_SS_III"):
        items_for_slices(["bad.png"])


def test_inference_item_shapes_and_geometry(root):
    rows = [lesion(5, (32, 12, 48, 22))]
    cfg = DataConfig(num_slices=3, target_spacing_mm=0.4)        # 0.8 mm -> x2
    ds = DetectionDataset(root, items_from_lesions(rows) + items_for_slices([f"{SERIES}_009.png"]), cfg,
                          geometry=series_geometry(root, rows), train=False)
    img, target, meta = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 96, 128)          # data.sample_dtype default
    exact = DetectionDataset(root, ds.items, DataConfig(num_slices=3, target_spacing_mm=0.4, sample_dtype="float32"),
                             geometry=ds.geometry, train=False)[0][0]
    assert exact.dtype == torch.float32 and 0 <= float(exact.min()) and float(exact.max()) <= 255
    assert float((img.float() - exact).abs().max()) <= 0.5 + 1e-4               # rounded to the nearest level
    assert torch.equal(img, torch.floor(exact + 0.5).to(torch.uint8))
    np.testing.assert_allclose(target["boxes"].numpy(), [[62, 22, 94, 42]])
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1]
    assert meta["index"] == 0 and meta["file_name"] == f"{SERIES}_005.png"
    np.testing.assert_allclose(meta["geometry"].to_stored(target["boxes"].numpy()), [[31, 11, 47, 21]])
    with pytest.warns(UserWarning, match="slice 10 is missing, using slice 9"):
        img, target, meta = ds[1]                                 # slice 9: neighbour 10 -> 9
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert torch.equal(img[1], img[2])
    images, targets, metas = collate([ds[0], ds[1]])
    assert len(images) == 2 and metas[1]["index"] == 1
    # a test-time scale
    ds2 = DetectionDataset(root, ds.items, cfg, geometry=ds.geometry, train=False, scale=0.5, reader=ds.reader)
    assert ds2[0][0].shape == (3, 48, 64)


def test_unknown_series_rejected(root):
    with pytest.raises(ValueError, match="no spacing known for series 000007_02_01"):
        DetectionDataset(root, items_for_slices([f"{SERIES}_003.png"]), DataConfig(), geometry={}, train=False)


def test_augmentation_deterministic_and_boxes_follow_content(root):
    rows = [lesion(i, (32, 12, 48, 22)) for i in range(2, 9)]
    cfg = DataConfig(num_slices=3, aug_scale=(0.7, 1.3), aug_shift_px=6, aug_flip=True)
    geo = series_geometry(root, rows)
    ds = DetectionDataset(root, items_from_lesions(rows), cfg, geometry=geo, train=True, seed=3)
    other = DetectionDataset(root, items_from_lesions(rows), cfg, geometry=geo, train=True, seed=3)
    ds.set_epoch(2)
    other.set_epoch(2)
    augs = [ds.augmentation(i) for i in range(len(ds))]
    assert augs == [other.augmentation(i) for i in reversed(range(len(ds)))][::-1]
    assert len(set(augs)) == len(augs) and any(a[3] for a in augs) and not all(a[3] for a in augs)
    a, b = ds[4], other[4]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    ds.set_epoch(3)
    assert ds.augmentation(4) != augs[4]
    ds.set_epoch(2)
    for i in range(len(ds)):
        img, target, meta = ds[i]
        box = target["boxes"].numpy()[0]
        ys, xs = np.nonzero(img[1].numpy() > 120)                 # the bright block (HU ~1500 -> ~158)
        assert abs(xs.min() - box[0]) <= 1.01 and abs(xs.max() + 1 - box[2]) <= 1.01, (i, augs[i])
        assert abs(ys.min() - box[1]) <= 1.01 and abs(ys.max() + 1 - box[3]) <= 1.01, (i, augs[i])
        assert meta["geometry"].flipped == augs[i][3]
        np.testing.assert_allclose(meta["geometry"].to_stored(box[None]), [[31, 11, 47, 21]], atol=1e-4)


def test_same_samples_in_dataloader_workers(root):
    rows = [lesion(i, (32, 12, 48, 22)) for i in range(2, 9)]
    cfg = DataConfig(num_slices=3, aug_shift_px=4)
    ds = DetectionDataset(root, items_from_lesions(rows), cfg, geometry=series_geometry(root, rows),
                          train=True, seed=1)
    ds.set_epoch(5)
    direct = [ds[i][0] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    got = [img for images, _, _ in loader for img in images]
    assert all(torch.equal(x, y) for x, y in zip(direct, got)) and len(got) == len(direct)


def test_clip_boxes_drops_degenerate():
    b = np.array([[-5, -5, 10, 10], [60, 5, 70, 9], [3, 3, 3, 8], [10, 10, 20, 20]], np.float64)
    np.testing.assert_array_equal(clip_boxes(b, 30, 50), [[0, 0, 10, 10], [10, 10, 20, 20]])
    assert clip_boxes(np.zeros((0, 4)), 10, 10).shape == (0, 4)


def test_box_pushed_out_by_shift_is_dropped(root):
    item = SliceItem(SERIES, 5, np.array([[0, 20, 2, 30], [31, 11, 47, 21]], np.float32), f"{SERIES}_005.png")
    cfg = DataConfig(num_slices=3, aug_scale=(1.0, 1.0), aug_shift_px=8, aug_flip=False)
    rows = [lesion(5, (1, 1, 2, 2))]
    ds = DetectionDataset(root, [item], cfg, geometry=series_geometry(root, rows), train=True,
                          reader=SliceReader(root))
    for epoch in range(40):
        ds.set_epoch(epoch)
        _, dx, _, _, _ = ds.augmentation(0)
        if dx <= -2:
            _, target, _ = ds[0]
            assert len(target["boxes"]) == 1 and target["labels"].tolist() == [1]
            return
    pytest.fail("no epoch shifted left by 2 px or more")


@pytest.mark.filterwarnings("ignore:series .* is missing")          # series edges fall back
def test_synthetic_dataset_loads_every_label_and_truth_row(tmp_path):
    from lesionprop.annotations import read_annotations
    from lesionprop.synth.dataset import generate_dataset

    root = tmp_path / "synth"
    generate_dataset(root, series=3, seed=0, image_size=64, workers=1, progress=False)
    labels = read_annotations(root / "DL_info.csv")
    truth = read_annotations(root / "truth.csv")
    geo = series_geometry(root, labels)
    items = items_from_lesions(labels.rows() + truth.rows())          # key and non-key (truth) slices
    assert len(items) > len(labels) // 2
    ds = DetectionDataset(root, items, DataConfig(), geometry=geo, train=False)
    for i in range(len(ds)):
        img, target, meta = ds[i]
        assert img.shape[0] == 9 and img.dtype == torch.uint8 and meta["file_name"] == items[i].file_name
        h, w = meta["geometry"].size
        b = target["boxes"].numpy()
        assert b.shape[0] == len(items[i].boxes) and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        np.testing.assert_allclose(meta["geometry"].to_stored(b), items[i].boxes, atol=1e-3)


def test_crop_window_holds_the_picked_lesion_centre():
    from lesionprop.data.sample import crop_window

    rng = np.random.default_rng(0)
    boxes = np.array([[10, 10, 20, 18], [90, 60, 110, 70]], float)
    for _ in range(300):
        u = tuple(rng.random(3))
        x0, y0, x1, y1 = crop_window((80, 120), 32, boxes, u)
        assert (x1 - x0, y1 - y0) == (32, 32) and 0 <= x0 and x1 <= 120 and 0 <= y0 and y1 <= 80
        b = boxes[min(int(u[0] * 2), 1)]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        assert x0 + 1 <= cx <= x1 - 1 and y0 + 1 <= cy <= y1 - 1
    assert crop_window((20, 120), 32, boxes[:1], (0.0, 0.9, 0.9))[1::2] == (0, 20)   # short axis kept whole
    x0, _, x1, _ = crop_window((80, 120), 32, np.zeros((0, 4)), (0.0, 0.999, 0.0))    # no box: anywhere
    assert (x0, x1) == (88, 120)


def test_training_crops_keep_the_lesion_and_map_back(root):
    rows = [lesion(i, (32, 12, 48, 22)) for i in range(2, 9)]
    cfg = DataConfig(num_slices=3, aug_scale=(0.9, 1.1), aug_shift_px=3, aug_flip=True, aug_crop_px=28)
    ds = DetectionDataset(root, items_from_lesions(rows), cfg, geometry=series_geometry(root, rows),
                          train=True, seed=1)
    windows = set()
    for i in range(len(ds)):
        img, target, meta = ds[i]
        g = meta["geometry"]
        assert img.shape[1] <= 28 and img.shape[2] == 28 and g.size == tuple(img.shape[1:])
        assert len(target["boxes"]) == 1                          # the lesion's centre is always inside
        box = target["boxes"].numpy()[0]
        ys, xs = np.nonzero(img[1].numpy() > 120)                 # the bright block, maybe cut by the crop
        assert abs(xs.min() - box[0]) <= 1.01 and abs(xs.max() + 1 - box[2]) <= 1.01, i
        assert abs(ys.min() - box[1]) <= 1.01 and abs(ys.max() + 1 - box[3]) <= 1.01, i
        full = g.to_stored(box[None])[0]                          # clipped box -> inside the stored one
        assert full[0] >= 31 - 1e-4 and full[2] <= 47 + 1e-4 and full[1] >= 11 - 1e-4 and full[3] <= 21 + 1e-4
        windows.add(g.offset)
    assert len(windows) > 1                                       # the window moves
    infer = DetectionDataset(root, ds.items, cfg, geometry=ds.geometry, train=False, reader=ds.reader)
    assert infer[0][0].shape[1:] == (48, 64)                      # inference sees whole slices
    with pytest.raises(ValueError, match="aug_crop_px must be 0"):
        DetectionDataset(root, ds.items, DataConfig(num_slices=3, aug_crop_px=-1), geometry=ds.geometry, train=True)


def test_every_shipped_preset_loads_and_the_demo_is_consistent():
    from lesionprop.config import load_config, preset_names
    from lesionprop.pipeline.plan import retrain_config

    assert {"cpu", "demo", "resnet18", "resnet50", "tiny"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(preset=name)
        retrain_config(cfg)                                      # the pipeline's own check
    demo = load_config(preset="demo")
    assert demo.data.aug_crop_px > 0 and demo.data.max_size == load_config(preset="cpu").data.max_size
