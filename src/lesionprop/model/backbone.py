"""ResNet + FPN backbones built from torchvision parts.

``build_backbone`` returns a torchvision ``BackboneWithFPN`` whose outputs are the
FPN levels ``'0'..'3'`` (strides 4, 8, 16, 32) plus ``'pool'`` (stride 64), each
with ``out_channels`` channels: five levels for the five anchor sizes.

Backbones:

* ``resnet50`` (the paper), ``resnet18``: torchvision's models.  ``model.pretrained``:
  ``imagenet`` (torchvision's ImageNet weights, ``IMAGENET1K_V1``; ``imagenet-v2`` for
  ``IMAGENET1K_V2``) read from the torch hub cache and downloaded there on a machine with
  internet (:func:`pretrained_file`: offline, a one-line error naming the file to place there,
  never a hang), or a local state-dict file (:func:`load_imagenet`).
* ``resnet18``/``resnet10`` with ``base_width`` < 64: a narrower basic-block
  ResNet for the CPU presets (same layout and layer names, random init only).

Normalisation layers: ``auto`` (frozen BN with ImageNet weights, GroupNorm
from scratch), ``frozen_bn`` (torchvision's detection default, right for
ImageNet weights), ``bn`` or ``gn`` (GroupNorm: per-image, so a DDP run equals a
single-process run with the same global batch, and it trains from scratch).
"""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

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


#: torchvision's weight enums of the ImageNet backbones; ``model.pretrained`` names -> enum member
IMAGENET_ENUMS = {"resnet50": "ResNet50_Weights", "resnet18": "ResNet18_Weights"}
IMAGENET_NAMES = {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}
#: seconds to wait for the weights' server before saying it cannot be reached
CONNECT_TIMEOUT_S = 5.0


def imagenet_weights(spec: str, backbone: str):
    """torchvision's weights enum member for ``model.pretrained = spec`` (``imagenet``, ...)."""
    import torchvision.models

    if backbone not in IMAGENET_ENUMS:
        raise InputError(f"model.pretrained={spec}: torchvision has ImageNet weights for "
                         f"{', '.join(IMAGENET_ENUMS)}, not model.backbone={backbone}")
    enum = getattr(torchvision.models, IMAGENET_ENUMS[backbone])
    member = IMAGENET_NAMES[spec.lower()]
    if not hasattr(enum, member):
        raise InputError(f"model.pretrained={spec}: torchvision has no {enum.__name__}.{member}; "
                         f"it has {', '.join(m.name for m in enum)}")
    return getattr(enum, member)


def _reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``url``'s host opens within ``timeout_s``; else the reason."""
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or 443), timeout=timeout_s).close()
        return None
    except OSError as exc:
        return f"{u.hostname}: {exc.strerror or exc}"


def pretrained_file(spec: str | Path, backbone: str) -> Path:
    """The local file of ``model.pretrained``: a path, or for ``imagenet`` torchvision's weights in
    the torch hub cache (``torch.hub.get_dir()/checkpoints``), downloaded there when the
    server can be reached.  Offline and not cached: :class:`MissingInputError` naming the file."""
    if str(spec).lower() not in IMAGENET_NAMES:
        path = Path(spec)
        if not path.is_file():
            raise MissingInputError(f"model.pretrained: no file {path} (give a state-dict file, or imagenet "
                                    "for torchvision's ImageNet weights)")
        return path
    weights = imagenet_weights(str(spec), backbone)
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return path
    why = _reachable(weights.url)
    if why is not None:
        raise MissingInputError(
            f"model.pretrained={spec}: {path} is not there and {weights.url} cannot be reached ({why}). "
            f"On a machine with internet run: python -c \"import torchvision; torchvision.models."
            f"{backbone}(weights='{weights.name}')\" and copy the file it writes to {path} "
            "(TORCH_HOME moves that cache), or give model.pretrained=/path/to/weights.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    hash_prefix = path.stem.rsplit("-", 1)[-1] if "-" in path.stem else None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60.0)          # a stalled transfer ends with an error, never hangs
    try:
        torch.hub.download_url_to_file(weights.url, str(partial), hash_prefix=hash_prefix, progress=True)
        os.replace(partial, path)
    except OSError as exc:
        raise MissingInputError(f"model.pretrained={spec}: downloading {weights.url} to {path} failed: {exc}") from None
    finally:
        socket.setdefaulttimeout(old)
        partial.unlink(missing_ok=True)
    return path


def load_imagenet(body: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ImageNet state dict into ``body`` (the fc layer is dropped).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model``.
    Raises FileNotFoundError when missing, ValueError when the tensors do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"pretrained weights file not found: {path}")
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
                   load_pretrained: bool = True, loaded_weights: bool = False) -> BackboneWithFPN:
    """ResNet body + torchvision FPN with a max-pool top level (5 output levels).

    ``pretrained`` also selects the ``auto`` norm; the file is read only when ``load_pretrained``.
    ``trainable_layers`` freezes stages only when weights are loaded: ImageNet (``pretrained``) or
    others (``loaded_weights``, e.g. ``model.init_backbone``); a random backbone trains whole.
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
            load_imagenet(body, pretrained_file(pretrained, name))
    elif not loaded_weights:
        trainable_layers = 5         # nothing random is frozen: without loaded weights every stage trains
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
