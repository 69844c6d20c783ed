"""``lesionprop mine``: Algorithm 2, missing ground-truth mining."""

from __future__ import annotations

import argparse

from lesionprop.config import LabelConfig
from lesionprop.commands.arguments import finite_float, unit_interval
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, run_label_tool
from lesionprop.labels.mine import mine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    add_io_arguments(parser, out=True)
    parser.add_argument("--score", type=finite_float, default=cfg.score, help="alpha: keep scores > alpha")
    parser.add_argument("--iou", type=unit_interval, default=cfg.iou, help="tau: consistent when IoU > tau")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES,
                        help="work on the key slices of this split")


def run(args: argparse.Namespace) -> int:
    return run_label_tool(args, "mine", lambda rows, preds: mine(rows, preds, score=args.score, iou=args.iou, split=args.split), "key slice(s)")
