"""3DCE context fusion: one shared backbone call for all slice groups, RoI features concatenated.

Shapes: ``B`` images, ``M`` groups of 3 slices (``num_slices = 3M``), ``C`` FPN
channels, ``R`` proposals over the batch.  The input ``(B, 3M, H, W)`` becomes
``(M*B, 3, H, W)`` with the *group* as the outer index (rows ``q*B .. q*B+B-1``
are group ``q``), so the central group is one contiguous slice of every
feature map.  Boxes are xyxy in the (padded) input's pixel frame.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign


def groups_to_batch(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(B, 3M, H, W)`` -> ``(M*B, 3, H, W)``, group-major."""
    b, c, h, w = x.shape
    if c != 3 * num_groups:
        raise ValueError(f"expected {3 * num_groups} input channels (M={num_groups} groups of 3), got {c}")
    return x.reshape(b, num_groups, 3, h, w).transpose(0, 1).reshape(num_groups * b, 3, h, w)


class ContextBackbone(nn.Module):
    """Runs a 3-channel backbone+FPN once on all ``M`` groups of every image.

    ``forward((B, 3M, H, W)) -> {level: (M*B, C, h, w)}`` (group-major).
    """

    def __init__(self, backbone: nn.Module, num_groups: int) -> None:
        super().__init__()
        self.body = backbone
        self.num_groups = num_groups
        self.out_channels = backbone.out_channels

    #: set by the training loop on CUDA (``train.channels_last``): the batch enters the ResNet in that layout
    channels_last = False

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = groups_to_batch(x, self.num_groups)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x)


def central_features(features: dict[str, torch.Tensor], num_groups: int) -> "OrderedDict[str, torch.Tensor]":
    """The central group's maps ``{level: (B, C, h, w)}`` out of group-major ``(M*B, ...)`` maps."""
    out = OrderedDict()
    q = num_groups // 2
    for k, v in features.items():
        b = v.shape[0] // num_groups
        out[k] = v[q * b:(q + 1) * b]
    return out


class ContextRoIPool(MultiScaleRoIAlign):
    """MultiScaleRoIAlign of the same proposals on every group, concatenated channel-wise.

    ``forward(features {level: (M*B, C, h, w)}, proposals [B x (R_b, 4)], image_shapes)``
    -> ``(R, M*C, S, S)`` with ``R = sum R_b``; channels ``q*C .. q*C+C-1`` are group ``q``.
    """

    def __init__(self, num_groups: int, output_size: int = 7, sampling_ratio: int = 2) -> None:
        super().__init__(["0", "1", "2", "3"], output_size, sampling_ratio)
        self.num_groups = num_groups

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        m = self.num_groups
        pooled = super().forward(features, proposals * m, image_shapes * m)     # (M*R, C, S, S), group-major
        r = pooled.shape[0] // m
        # explicit channel count: with no proposals (r = 0) a -1 would be ambiguous
        return pooled.reshape(m, r, *pooled.shape[1:]).transpose(0, 1).reshape(r, m * pooled.shape[1], *pooled.shape[2:])
