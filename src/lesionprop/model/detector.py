"""FPN-3DCE: torchvision Faster R-CNN with a shared multi-slice backbone (``build_detector``).

Input: a list of ``B`` float or uint8 tensors ``(3M, H, W)``, 0..255 windowed CT values
(the data layer's output, not mean-subtracted, already rescaled: the transform
here normalises and pads but never resizes).  Targets: ``{"boxes": (N, 4)
float32 xyxy in the input's pixel frame (0-based, continuous), "labels": (N,)
int64 ones}``; ``N`` may be 0.  Output in eval mode: per image ``{"boxes",
"scores", "labels"}`` in the same frame.  Training mode returns the loss dict
(``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``).

M = 1 is plain Faster R-CNN + FPN.  For M > 1 the RPN sees the central group's
FPN maps and the box head sees the RoI features of all M groups concatenated
(``M * C * 7 * 7`` inputs), as in 3DCE.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lesionprop.config import ModelConfig
from lesionprop.errors import InputError
from lesionprop.model.backbone import build_backbone
from lesionprop.model.pretrain import load_backbone, load_detector
from lesionprop.model.context import ContextBackbone, ContextRoIPool, central_features

#: 3DCE's pixel mean on the 0..255 window; ImageNet statistics when ImageNet weights are loaded.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class KeepSizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch (pad to a multiple of 32) without resizing: the data layer rescaled already.

    Accepts uint8 samples (``data.sample_dtype``) as well as float: they are made float here, on
    the model's device, after the (4x smaller) copy.
    """

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if not image.is_floating_point():
            image = image.float()
        return super().normalize(image)


class FPN3DCE(FasterRCNN):
    """Faster R-CNN whose RPN reads the central slice group and whose box head reads all groups."""

    def __init__(self, backbone: ContextBackbone, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.num_groups = backbone.num_groups

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, central_features(features, self.num_groups), targets)
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


def normalisation(cfg: ModelConfig, num_slices: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std for the ``3M`` input channels."""
    if cfg.pretrained:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (cfg.pixel_mean,) * 3, (cfg.pixel_std,) * 3
    m = num_slices // 3
    return list(mean) * m, list(std) * m


def anchor_sizes(base: tuple[int, ...], scale: float, octaves: tuple[float, ...]) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes (px) per FPN level: ``base * scale * o`` for each factor ``o`` of ``octaves``."""
    return tuple(tuple(max(1, round(s * scale * o)) for o in octaves) for s in base)


def build_detector(cfg: ModelConfig, num_slices: int, *, load_pretrained: bool = True) -> FPN3DCE:
    """The detector described by ``cfg`` for ``num_slices = 3M`` input slices.

    ``load_pretrained=False`` builds the same architecture (norm layers, input
    statistics) as with ``cfg.pretrained`` without reading the file (a checkpoint follows);
    the same holds for ``cfg.init_backbone`` and ``cfg.init_detector`` (:mod:`lesionprop.model.pretrain`).
    """
    if num_slices < 3 or num_slices % 3 or (num_slices // 3) % 2 == 0:
        raise InputError(f"num_slices must be 3 x M with M odd (a central group), got {num_slices}")
    m = num_slices // 3
    starts = [k for k in ("pretrained", "init_backbone", "init_detector") if getattr(cfg, k)]
    if len(starts) > 1:
        raise InputError(f"model.{' and model.'.join(starts)} exclude each other: choose one")
    if len(cfg.anchor_sizes) != 5:
        raise InputError(f"model.anchor_sizes needs one size per FPN level (5), got {list(cfg.anchor_sizes)}")
    body = build_backbone(cfg.backbone, fpn_channels=cfg.fpn_channels, base_width=cfg.base_width,
                          norm=cfg.norm, trainable_layers=cfg.trainable_layers, pretrained=cfg.pretrained,
                          load_pretrained=load_pretrained,
                          loaded_weights=bool(cfg.init_backbone or cfg.init_detector))
    if cfg.init_backbone and load_pretrained:
        load_backbone(body, cfg.init_backbone)
    backbone = ContextBackbone(body, m)
    if not cfg.anchor_octaves or any(not o > 0 for o in cfg.anchor_octaves):
        raise InputError(f"model.anchor_octaves must be positive factors, got {list(cfg.anchor_octaves)}")
    sizes = anchor_sizes(cfg.anchor_sizes, cfg.anchor_scale, cfg.anchor_octaves)
    anchors = AnchorGenerator(sizes, (tuple(cfg.aspect_ratios),) * len(sizes))
    c = backbone.out_channels
    mean, std = normalisation(cfg, num_slices)
    model = FPN3DCE(
        backbone,
        num_classes=None,          # two classes: FastRCNNPredictor(..., 2) below
        rpn_anchor_generator=anchors,
        box_roi_pool=ContextRoIPool(m),
        box_head=TwoMLPHead(m * c * 7 * 7, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, 2),
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=cfg.rpn_bg_iou_thresh,
        box_positive_fraction=cfg.box_positive_fraction,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
    )
    # never resize (min/max size are unused by KeepSizeTransform); pad to the FPN's coarsest stride
    model.transform = KeepSizeTransform(1, 1, mean, std, size_divisible=32)
    if cfg.init_detector and load_pretrained:
        load_detector(model, cfg.init_detector)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))
