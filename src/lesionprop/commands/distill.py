"""``lesionprop distill``: the data-distillation baseline's pseudo-labels."""

from __future__ import annotations

import argparse

from lesionprop.config import LabelConfig
from lesionprop.data.deeplesion import read_annotations
from lesionprop.fileio import refuse_overwrite_of_inputs
from lesionprop.labels.cli_support import (
    SPLIT_CHOICES, add_io_arguments, allow_negative_lists, int_list, load_predictions, write_with_new_rows,
)
from lesionprop.labels.distill import distill


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    allow_negative_lists(parser)
    add_io_arguments(parser, out=True)
    parser.add_argument("--score", type=float, default=cfg.distill_score, help="alpha: keep scores > alpha")
    parser.add_argument("--offsets", type=int_list, default=cfg.offsets, help="slice offsets, e.g. -1,1")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES)


def run(args: argparse.Namespace) -> int:
    refuse_overwrite_of_inputs(args.out, args.annotations, args.predictions)
    rows = read_annotations(args.annotations)
    preds = load_predictions(args.predictions, rows, args.skip_bad_rows)
    new = distill(rows, preds, score=args.score, offsets=args.offsets, split=args.split)
    write_with_new_rows(args.out, rows, new)
    print(f"distill: {len(new)} new row(s) on {len({r.file_name for r in new})} slice(s) -> {args.out}")
    return 0
