"""``lesionprop label-sets``: every pseudo-label set of the paper's comparison from one read.

The pipeline's label stage as a command, for predictions from any detector: MM
(Algorithm 2), LP (Algorithm 1), MM + LP and DD, written as ``OUT_DIR/labels_<set>.csv``
(the input rows, then the set's new rows with Source and Score). The predictions are
read once; at DeepLesion scale that is most of the time of ``mine``, ``propagate`` and
``distill`` run one by one on a CSV file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionprop.commands.arguments import allow_negative_lists, finite_float, int_list, unit_interval
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, load_predictions, no_huge_pages
from lesionprop.config import LabelConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg = LabelConfig()
    allow_negative_lists(parser)
    add_io_arguments(parser, out=False)
    parser.add_argument("--out-dir", required=True, help="folder for labels_mm.csv, labels_lp.csv, "
                        "labels_mm_lp.csv, labels_dd.csv (created if missing)")
    parser.add_argument("--score", type=finite_float, default=cfg.score, help="alpha of mining: keep scores > alpha")
    parser.add_argument("--iou", type=unit_interval, default=cfg.iou, help="tau of mining and propagation: IoU > tau")
    parser.add_argument("--offsets", type=int_list, default=cfg.offsets, help="slice offsets, e.g. -1,1")
    parser.add_argument("--keep", default=cfg.keep, choices=("best", "all"),
                        help="propagation: one prediction per (key slice, box, offset), or every match")
    parser.add_argument("--distill-score", type=float, default=cfg.distill_score,
                        help="alpha of the distillation baseline: keep scores > alpha")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES,
                        help="work on the key slices of this split")


def run(args: argparse.Namespace) -> int:
    from lesionprop.annotations import read_annotations
    from lesionprop.fileio import check_output_file, check_output_folder
    from lesionprop.labels.sets import LABEL_FILES, label_sets, write_label_sets

    out_dir = Path(args.out_dir)
    check_output_folder(out_dir, option="--out-dir")
    for name in LABEL_FILES.values():
        check_output_file(out_dir / name, args.annotations, args.predictions, option="--out-dir")
    no_huge_pages()
    cfg = LabelConfig(iou=args.iou, score=args.score, offsets=args.offsets, keep=args.keep,
                      distill_score=args.distill_score)
    rows = read_annotations(args.annotations)
    preds = load_predictions(args.predictions, rows, args.skip_bad_rows)
    sets = label_sets(rows, preds, cfg, split=args.split)
    paths = write_label_sets(out_dir, rows, sets)
    for name, new in sets.items():
        print(f"{name}: {len(new)} new row(s) on {len(set(new.file_name.tolist()))} slice(s) -> {paths[name]}")
    return 0
