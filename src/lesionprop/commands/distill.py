"""``lesionprop distill``: the data-distillation baseline's pseudo-labels."""

from __future__ import annotations

import argparse

from lesionprop.config import LabelConfig
from lesionprop.commands.arguments import allow_negative_lists, finite_float, int_list
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, run_label_tool
from lesionprop.labels.distill import distill


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    allow_negative_lists(parser)
    add_io_arguments(parser, out=True)
    parser.add_argument("--score", type=finite_float, default=cfg.distill_score, help="alpha: keep scores > alpha")
    parser.add_argument("--offsets", type=int_list, default=cfg.offsets, help="slice offsets, e.g. -1,1")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES,
                        help="work on the key slices of this split")


def run(args: argparse.Namespace) -> int:
    return run_label_tool(args, "distill", lambda rows, preds: distill(rows, preds, score=args.score, offsets=args.offsets, split=args.split), "slice(s)")
