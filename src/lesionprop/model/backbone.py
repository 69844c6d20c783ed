"""ResNet + FPN backbones built from torchvision parts.

``build_backbone`` returns a torchvision ``BackboneWithFPN`` whose outputs are the
FPN levels ``'0'..'3'`` (strides 4, 8, 16, 32) plus ``'pool'`` (stride 64), each
with ``out_channels`` channels: five levels for the five anchor sizes.

Backbones:

* ``resnet50`` (the paper), ``resnet18``: torchvision's models, ``weights=None``
  (never downloaded); ImageNet weights come only from a local file
  (:func:`load_imagenet`).
* ``resnet18``/``resnet10`` with ``base_width`` < 64: a narrower basic-block
  ResNet for the CPU presets (same layout and layer names, random init only).

Normalisation layers: ``auto`` (frozen BN with ImageNet weights, GroupNorm
from scratch), ``frozen_bn`` (torchvision's detection default, right for
ImageNet weights), ``bn`` or ``gn`` (GroupNorm: per-image, so a DDP run equals a
single-process run with the same global batch, and it trains from scratch).
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from lesionprop.errors import InputError, MissingInputError

BLOCKS = {"resnet50": (resnet.Bottleneck, [3, 4, 6, 3]),
          "resnet18": (resnet.BasicBlock, [2, 2, 2, 2]),
          "resnet10": (resnet.BasicBlock, [1, 1, 1, 1])}
NORMS = ("auto", "frozen_bn", "bn", "gn")


def norm_layer(kind: str) -> type[nn.Module] | partial:
    """The normalisation layer class for ``kind`` (``auto`` must be resolved by the caller)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        # 8 groups divides every width used here (>= 16 channels)
        return lambda c: nn.GroupNorm(min(8, c), c)
    raise InputError(f"model.norm must be one of {', '.join(NORMS)}, got {kind!r}")


class SlimResNet(nn.Module):
    """A basic-block ResNet with stage widths ``(w, 2w, 4w, 8w)``; torchvision's layer names."""

    def __init__(self, layers: list[int], width: int, norm: type[nn.Module] | partial) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = width
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(width * 2 ** i, n, 1 if i == 0 else 2, norm))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int, norm) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), norm(planes))
        layers = [resnet.BasicBlock(self.inplanes, planes, stride, down, norm_layer=norm)]
        self.inplanes = planes
        layers += [resnet.BasicBlock(planes, planes, norm_layer=norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - only the FPN wrapper runs it
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_imagenet(body: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ImageNet state dict into ``body`` (the fc layer is dropped).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model``.
    Raises FileNotFoundError when missing, ValueError when the tensors do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"pretrained weights file not found: {path} (weights are never downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("backbone.body."): v for k, v in state.items()
             if not k.startswith("fc.")}
    own = body.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(f"{path}: not a state dict for this backbone; missing {missing[:3]} ...")
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise InputError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the backbone needs {tuple(own[k].shape)}")
    body.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def build_backbone(name: str, *, fpn_channels: int, base_width: int = 64, norm: str = "frozen_bn",
                   trainable_layers: int = 5, pretrained: str | Path | None = None,
                   load_pretrained: bool = True) -> BackboneWithFPN:
    """ResNet body + torchvision FPN with a max-pool top level (5 output levels).

    ``pretrained`` also selects the ``auto`` norm; the file is read only when ``load_pretrained``.
    """
    if name not in BLOCKS:
        raise InputError(f"model.backbone must be one of {', '.join(BLOCKS)}, got {name!r}")
    if not 0 <= trainable_layers <= 5:
        raise InputError(f"model.trainable_layers must be in 0..5, got {trainable_layers}")
    block, layers = BLOCKS[name]
    if norm == "auto":
        norm = "frozen_bn" if pretrained else "gn"
    norm_cls = norm_layer(norm)
    if base_width == 64:
        body = resnet.ResNet(block, layers, norm_layer=norm_cls)
    elif block is resnet.BasicBlock:
        body = SlimResNet(layers, base_width, norm_cls)
    else:
        raise InputError(f"model.base_width={base_width} is only supported for basic-block ResNets, not {name}")
    if pretrained:
        if base_width != 64:
            raise InputError(f"model.pretrained needs base_width 64 (ImageNet layout), got {base_width}")
        if load_pretrained:
            load_imagenet(body, pretrained)
    if not pretrained and trainable_layers < 5:
        warnings.warn(f"model.trainable_layers={trainable_layers} freezes randomly initialised layers "
                      "(no model.pretrained given); use 5 to train from scratch", stacklevel=2)
    # freeze the stem and the first stages as torchvision does (5 = train everything)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for pname, p in body.named_parameters():
        if all(not pname.startswith(t) for t in trainable):
            p.requires_grad_(False)
    widths = [base_width * 2 ** i * (4 if block is resnet.Bottleneck else 1) for i in range(4)]
    return BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)}, widths, fpn_channels,
                           extra_blocks=LastLevelMaxPool(), norm_layer=None)
