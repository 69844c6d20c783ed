"""``lesionprop mine``: Algorithm 2, missing ground-truth mining."""

from __future__ import annotations

import argparse

from lesionprop.config import LabelConfig
from lesionprop.data.deeplesion import read_annotations
from lesionprop.fileio import refuse_overwrite_of_inputs
from lesionprop.labels.cli_support import SPLIT_CHOICES, add_io_arguments, load_predictions, write_with_new_rows
from lesionprop.labels.mine import mine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    add_io_arguments(parser, out=True)
    parser.add_argument("--score", type=float, default=cfg.score, help="alpha: keep scores > alpha")
    parser.add_argument("--iou", type=float, default=cfg.iou, help="tau: consistent when IoU > tau")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES)


def run(args: argparse.Namespace) -> int:
    refuse_overwrite_of_inputs(args.out, args.annotations, args.predictions)
    rows = read_annotations(args.annotations)
    preds = load_predictions(args.predictions, rows, args.skip_bad_rows)
    new = mine(rows, preds, score=args.score, iou=args.iou, split=args.split)
    write_with_new_rows(args.out, rows, new)
    print(f"mine: {len(new)} new row(s) on {len({r.file_name for r in new})} key slice(s) -> {args.out}")
    return 0
