"""``lesionprop propagate``: Algorithm 1, slice-level label propagation."""

from __future__ import annotations

import argparse

from lesionprop.config import LabelConfig
from lesionprop.commands.arguments import allow_negative_lists, int_list, unit_interval
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, run_label_tool
from lesionprop.labels.propagate import propagate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    allow_negative_lists(parser)
    add_io_arguments(parser, out=True)
    parser.add_argument("--iou", type=unit_interval, default=cfg.iou, help="tau: propagate when IoU > tau")
    parser.add_argument("--offsets", type=int_list, default=cfg.offsets, help="slice offsets, e.g. -1,1")
    parser.add_argument("--keep", default=cfg.keep, choices=("best", "all"),
                        help="best: one prediction per (key slice, box, offset); all: every match")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES,
                        help="work on the key slices of this split")


def run(args: argparse.Namespace) -> int:
    return run_label_tool(args, "propagate", lambda rows, preds: propagate(rows, preds, iou=args.iou, offsets=args.offsets, keep=args.keep, split=args.split), "slice(s)")
