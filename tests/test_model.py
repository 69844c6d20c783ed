"""FPN-3DCE model: shapes, group layout, no resizing, pretrained loading."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.models import resnet18

from lesionprop.config import load_config
from lesionprop.model.backbone import build_backbone
from lesionprop.model.context import ContextRoIPool, central_features, groups_to_batch
from lesionprop.model.detector import build_detector


def tiny_model_cfg(**kw):
    return load_config(preset="tiny", overrides=[f"model.{k}={v}" for k, v in kw.items()]).model


def test_groups_to_batch_is_group_major():
    x = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 9, 1, 1).expand(2, 9, 4, 5)
    y = groups_to_batch(x, 3)
    assert y.shape == (6, 3, 4, 5)
    # row q*B + b holds channels 3q..3q+2 of image b
    assert y[1 * 2 + 1, :, 0, 0].tolist() == [9 + 3, 9 + 4, 9 + 5]
    feats = {"0": y}
    assert central_features(feats, 3)["0"].equal(y[2:4])
    with pytest.raises(ValueError, match="expected 9 input channels"):
        groups_to_batch(torch.zeros(1, 6, 4, 4), 3)


def test_context_roi_pool_concatenates_groups_in_order():
    torch.manual_seed(0)
    b, m, c = 2, 3, 4
    feats = OrderedDict((str(i), torch.randn(m * b, c, 32 // 2 ** i, 32 // 2 ** i)) for i in range(4))
    props = [torch.tensor([[1.0, 2.0, 20.0, 25.0]]), torch.tensor([[0.0, 0.0, 10.0, 12.0], [5.0, 5, 30, 30]])]
    pooled = ContextRoIPool(m)(feats, props, [(128, 128)] * b)
    assert pooled.shape == (3, m * c, 7, 7)
    single = ContextRoIPool(1)
    for q in range(m):
        group = OrderedDict((k, v[q * b:(q + 1) * b]) for k, v in feats.items())
        assert torch.allclose(pooled[:, q * c:(q + 1) * c], single(group, props, [(128, 128)] * b))


@pytest.mark.parametrize("num_slices", [3, 9])
def test_detector_shapes_and_no_resize(num_slices):
    torch.manual_seed(0)
    model = build_detector(tiny_model_cfg(), num_slices)
    assert model.roi_heads.box_head.fc6.in_features == (num_slices // 3) * 16 * 7 * 7
    images = [torch.rand(num_slices, 50, 70) * 255, torch.rand(num_slices, 64, 40) * 255]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]]), "labels": torch.ones(1, dtype=torch.int64)},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    image_list, _ = model.transform(images)
    assert image_list.image_sizes == [(50, 70), (64, 40)]          # kept, only padded to /32
    assert image_list.tensors.shape[-2:] == (64, 96)
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        assert o["boxes"].shape[1] == 4 and o["scores"].shape == o["labels"].shape
        assert (o["boxes"][:, 2] <= im.shape[-1]).all() and (o["boxes"][:, 3] <= im.shape[-2]).all()


def test_bad_slice_count_and_backbone_are_refused():
    with pytest.raises(ValueError, match="3 x M with M odd"):
        build_detector(tiny_model_cfg(), 6)
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        build_detector(tiny_model_cfg(backbone="vgg"), 3)


def test_pretrained_weights_from_a_local_file(tmp_path):
    ref = resnet18(weights=None)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(ref.state_dict(), path)
    fpn = build_backbone("resnet18", fpn_channels=16, pretrained=path, trainable_layers=3)
    assert torch.equal(fpn.body.conv1.weight, ref.conv1.weight)
    assert not fpn.body.conv1.weight.requires_grad and fpn.body.layer4[0].conv1.weight.requires_grad
    assert type(fpn.body.bn1).__name__ == "FrozenBatchNorm2d"
    model = build_detector(tiny_model_cfg(backbone="resnet18", base_width=64, pretrained=str(path)), 3)
    assert model.transform.image_mean[0] == pytest.approx(0.485 * 255)
    with pytest.raises(FileNotFoundError, match="model.pretrained: no file .*missing.pth"):
        build_backbone("resnet18", fpn_channels=16, pretrained=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a state dict for this backbone"):
        build_backbone("resnet18", fpn_channels=16, pretrained=tmp_path / "bad.pth")


def test_imagenet_weights_come_from_the_torch_hub_cache_or_a_one_line_error(tmp_path, monkeypatch):
    """``model.pretrained=imagenet``: torchvision's weights file in the torch hub cache; offline and
    not cached, an error naming the file to place there, at once (no download attempt hangs)."""
    import time

    import lesionprop.model.backbone as backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(backbone, "_reachable", lambda url, timeout_s=5.0: "download.pytorch.org: no route")
    t0 = time.time()
    with pytest.raises(FileNotFoundError) as err:
        backbone.pretrained_file("imagenet", "resnet18")
    want = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(want) in str(err.value) and "cannot be reached (download.pytorch.org: no route)" in str(err.value)
    assert "weights='IMAGENET1K_V1'" in str(err.value) and "\n" not in str(err.value) and time.time() - t0 < 5
    want.parent.mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), want)           # what torchvision would have cached
    assert backbone.pretrained_file("imagenet", "resnet18") == want
    fpn = build_backbone("resnet18", fpn_channels=16, pretrained="imagenet", trainable_layers=3)
    assert not fpn.body.conv1.weight.requires_grad and type(fpn.body.bn1).__name__ == "FrozenBatchNorm2d"
    with pytest.raises(ValueError, match="ImageNet weights for resnet50, resnet18, not model.backbone=resnet10"):
        backbone.pretrained_file("imagenet", "resnet10")
    # the real check, no monkeypatch: this machine's (or CI's) network answers or refuses within the timeout
    t0 = time.time()
    why = backbone._reachable("https://download.pytorch.org/models/x.pth", timeout_s=2.0)
    assert why is None or time.time() - t0 < 10


def test_nothing_random_is_frozen():
    """trainable_layers freezes stages only when weights are loaded into them."""
    fpn = build_backbone("resnet18", fpn_channels=16, trainable_layers=3)        # random: all trained
    assert all(p.requires_grad for p in fpn.body.parameters())
    fpn = build_backbone("resnet18", fpn_channels=16, trainable_layers=3, loaded_weights=True)
    assert not fpn.body.conv1.weight.requires_grad and fpn.body.layer4[0].conv1.weight.requires_grad


def test_init_backbone_round_trip_and_refusals(tmp_path):
    """A backbone exported as fp16 from a detector state dict loads into a fresh detector;
    the RPN and box head stay as initialised; wrong shapes, missing files and ImageNet together are errors."""
    from lesionprop.model.pretrain import backbone_state, load_backbone, resolve

    torch.manual_seed(0)
    src = build_detector(tiny_model_cfg(), 3)
    state = backbone_state(src.state_dict())
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert set(state) == set(src.backbone.body.state_dict()) and any(k.startswith("fpn.") for k in state)
    path = tmp_path / "bb.pt"
    torch.save(state, path)
    torch.manual_seed(1)
    fresh = build_detector(tiny_model_cfg(), 3)
    head_before = fresh.roi_heads.box_predictor.cls_score.weight.clone()
    torch.manual_seed(1)
    dst = build_detector(tiny_model_cfg(init_backbone=str(path)), 3)
    for k, v in dst.backbone.body.state_dict().items():
        assert torch.equal(v, state[k].to(v.dtype)), k
    assert torch.equal(dst.roi_heads.box_predictor.cls_score.weight, head_before)
    # a checkpoint rebuild (load_pretrained=False) never reads the file
    build_detector(tiny_model_cfg(init_backbone=str(tmp_path / "gone.pt")), 3, load_pretrained=False)
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        build_detector(tiny_model_cfg(init_backbone=str(tmp_path / "gone.pt")), 3)
    with pytest.raises(ValueError, match="has shape"):
        load_backbone(build_detector(tiny_model_cfg(fpn_channels=8), 3).backbone.body, path)
    with pytest.raises(ValueError, match="exclude each other"):
        build_detector(tiny_model_cfg(init_backbone=str(path), pretrained=str(path)), 3)
    with pytest.raises(FileNotFoundError, match="shipped names"):
        resolve(tmp_path / "nothing.pt")


def test_init_detector_loads_every_tensor_and_refuses_another_model(tmp_path):
    """A whole detector exported as fp16 (the --whole export) loads into a fresh detector:
    backbone, RPN and box head equal the file; another head size, a backbone-only file and
    two initialisations together are errors."""
    from lesionprop.engine.export_backbone import export_backbone
    from lesionprop.model.pretrain import detector_state

    torch.manual_seed(0)
    src = build_detector(tiny_model_cfg(), 3)
    torch.save({"model": src.state_dict(), "config": {}}, tmp_path / "run.pt")
    path = export_backbone(tmp_path / "run.pt", tmp_path / "whole.pt", whole=True)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(src.state_dict())
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    torch.manual_seed(1)
    dst = build_detector(tiny_model_cfg(init_detector=str(path)), 3)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, state[k].to(v.dtype)), k
    assert not torch.equal(build_detector(tiny_model_cfg(), 3).roi_heads.box_predictor.cls_score.weight,
                           dst.roi_heads.box_predictor.cls_score.weight)
    with pytest.raises(ValueError, match="has shape"):
        build_detector(tiny_model_cfg(init_detector=str(path), box_head_dim=16), 3)
    export_backbone(tmp_path / "run.pt", tmp_path / "bb.pt")
    with pytest.raises(ValueError, match="missing"):
        build_detector(tiny_model_cfg(init_detector=str(tmp_path / "bb.pt")), 3)
    with pytest.raises(ValueError, match="exclude each other"):
        build_detector(tiny_model_cfg(init_detector=str(path), init_backbone=str(tmp_path / "bb.pt")), 3)
    with pytest.raises(ValueError, match="roi_heads"):
        detector_state(src.backbone.state_dict())
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a readable weights file"):
        build_detector(tiny_model_cfg(init_detector=str(tmp_path / "junk.pt")), 3)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt: not a state dict"):
        build_detector(tiny_model_cfg(init_detector=str(tmp_path / "list.pt")), 3)


def test_anchor_octaves_give_more_sizes_per_level():
    from lesionprop.model.detector import anchor_sizes

    assert anchor_sizes((32, 64, 128, 256, 512), 0.4, (1.0,)) == ((13,), (26,), (51,), (102,), (205,))
    assert anchor_sizes((32, 64), 0.4, (1.0, 2 ** 0.5)) == ((13, 18), (26, 36))
    model = build_detector(tiny_model_cfg(anchor_octaves="1,1.41"), 3)
    assert model.rpn.anchor_generator.num_anchors_per_location() == [6] * 5
    assert model.rpn.head.cls_logits.out_channels == 6
    model.train()
    losses = model([torch.rand(3, 64, 64) * 255],
                   [{"boxes": torch.tensor([[5.0, 6.0, 20.0, 24.0]]), "labels": torch.ones(1, dtype=torch.int64)}])
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="anchor_octaves"):
        build_detector(tiny_model_cfg(anchor_octaves="1,0"), 3)


def test_shipped_detector_loads_into_the_cpu_preset_and_the_demo_uses_it():
    """The shipped whole-detector file fits the cpu preset exactly, and the demo config starts from it."""
    from lesionprop.config import load_config
    from lesionprop.model.pretrain import SHIPPED_DETECTORS, resolve

    cfg = load_config(preset="demo")
    assert cfg.model.init_detector == "synthetic-cpu-detector" and cfg.model.init_backbone is None
    state = torch.load(resolve("synthetic-cpu-detector", SHIPPED_DETECTORS), weights_only=True)
    model = build_detector(cfg.model, cfg.data.num_slices)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k].to(v.dtype)), k


@pytest.mark.parametrize("name", ["synthetic-cpu", "synthetic-cpu-v1"])
def test_shipped_backbones_load_into_the_cpu_preset(name):
    """Both shipped files exist in the package and fit the cpu preset's ResNet + FPN exactly."""
    from lesionprop.config import load_config
    from lesionprop.model.pretrain import resolve

    cfg = load_config(preset="cpu", overrides=[f"model.init_backbone={name}"])
    state = torch.load(resolve(name), weights_only=True)
    model = build_detector(cfg.model, cfg.data.num_slices)
    for k, v in model.backbone.body.state_dict().items():
        assert torch.equal(v, state[k].to(v.dtype)), k


def test_config_overrides_from_python_as_a_mapping():
    """From a notebook: dotted keys -> values, no YAML text; the same checks as --set."""
    cfg = load_config(preset="tiny", overrides={"train.iterations": 7, "data.window": (-200, 300),
                                                "model.pretrained": None})
    assert cfg.train.iterations == 7 and cfg.data.window == (-200.0, 300.0) and cfg.model.pretrained is None
    assert cfg == load_config(preset="tiny", overrides=["train.iterations=7", "data.window=[-200, 300]"])
    with pytest.raises(ValueError, match="unknown config key.*iteratons"):
        load_config(overrides={"train.iteratons": 7})
    with pytest.raises(ValueError, match="config key train.iterations: expected int"):
        load_config(overrides={"train.iterations": "many"})
    with pytest.raises(ValueError, match="a list of section.key=value strings or a mapping"):
        load_config(overrides="train.iterations=7")


def test_load_model_takes_a_shipped_name_and_a_device_string():
    from lesionprop.engine.predict import load_model

    model, cfg = load_model("synthetic-cpu-detector")          # device defaults to the CPU
    assert not model.training and cfg.model.backbone == "resnet18"
    assert next(model.parameters()).device.type == "cpu"
    model2, _ = load_model("synthetic-cpu-detector", "cpu")
    assert next(model2.parameters()).device.type == "cpu"
