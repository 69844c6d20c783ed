"""``lesionprop evaluate``: sensitivity at FPs per image (MULAN / AlignShift protocol)."""

from __future__ import annotations

import argparse
import json

from lesionprop.annotations import concat, read_annotations
from lesionprop.eval.froc import CONVENTIONS, DEFAULT_FPS, evaluate
from lesionprop.fileio import refuse_overwrite_of_inputs
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, float_list, load_predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser, out=False)
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES)
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a hit (default 0.5)")
    parser.add_argument("--fps", type=float_list, default=DEFAULT_FPS, help="FP rates, e.g. 0.5,1,2,4,8")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--breakdown", action="store_true", help="with --json: add by_interval and by_type")
    parser.add_argument("--plot", help="write the FROC curve to this image file")
    parser.add_argument("--truth", help="complete labels (truth.csv): an image's lesions = all truth rows on it")
    parser.add_argument("--convention", default="mulan", choices=CONVENTIONS,
                        help="mulan (default) or 3dce (+1 px boxes, at most K-1 FPs, extrapolation)")


def _table(result) -> str:
    head = "FPs/image    " + "  ".join(f"{f:>6g}" for f in result.fps)
    lines = [f"split {result.split}: {result.images} images, {result.lesions} lesions, "
             f"IoU {result.iou:g}, convention {result.convention}", head,
             "sensitivity  " + "  ".join(f"{100 * s:6.2f}" for s in result.sensitivity)]
    for title, groups in (("slice interval", result.by_interval), ("lesion type", result.by_type)):
        if groups:
            lines.append(f"by {title} (images / lesions):")
            for name, sub in groups.items():
                lines.append(f"  {name:<14s} {sub.images:>6d} / {sub.lesions:<6d} "
                             + "  ".join(f"{100 * s:6.2f}" for s in sub.sensitivity))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.plot:
        refuse_overwrite_of_inputs(args.plot, args.annotations, args.predictions, args.truth)
    lesions = read_annotations(args.annotations)
    truth = read_annotations(args.truth) if args.truth else None
    preds = load_predictions(args.predictions, concat([lesions, truth]), args.skip_bad_rows)
    result = evaluate(lesions, preds, split=args.split, iou=args.iou, fps=args.fps, truth=truth,
                      convention=args.convention)
    if args.json:
        print(json.dumps(result.to_dict(breakdown=args.breakdown)))
    else:
        print(_table(result))
    if args.plot:
        from lesionprop.eval.plot import plot_froc

        plot_froc(result, args.plot)
    return 0
