"""``lesionprop import-predictions --format coco-results``: any framework's COCO detections -> predictions CSV.

``bbox`` ``[x, y, w, h]`` (0-based pixel frame) becomes the file-frame box
``x + 1, y + 1, x + w + 1, y + h + 1``; the slice of each ``image_id`` comes from
the COCO images file ``lesionprop export`` wrote (see :mod:`lesionprop.coco`).
"""

from __future__ import annotations

import argparse

from lesionprop.commands.arguments import prediction_output

FORMATS = ("coco-results",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, required=True, help="input format")
    parser.add_argument("results", help="COCO results JSON: [{image_id, bbox: [x, y, w, h], score}, ...]")
    parser.add_argument("--images", required=True, help="the COCO JSON whose image ids the results use "
                                                        "(e.g. written by `lesionprop export`)")
    parser.add_argument("--out", required=True, type=prediction_output, help="prediction file (File_name,x1,y1,x2,y2,score): CSV, or Arrow IPC (.arrow/.feather) / Parquet (.parquet) by suffix; other suffixes are refused")
    parser.add_argument("--min-score", type=float, default=None, help="drop detections scoring below this")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lesionprop.coco import read_coco_images, read_coco_results
    from lesionprop.fileio import check_output_file
    from lesionprop.predictions import write_predictions

    check_output_file(args.out, args.results, args.images)
    images = read_coco_images(args.images)
    names, boxes, scores = read_coco_results(args.results, images)
    if args.min_score is not None:
        keep = scores >= args.min_score
        names = [n for n, k in zip(names, keep) if k]
        boxes, scores = boxes[keep], scores[keep]
    write_predictions(args.out, names, boxes, scores)
    print(f"wrote {len(names)} boxes on {len(set(names))} slices to {args.out} "
          f"({len(images)} images in {args.images}; {int(np.size(scores))} detections kept)")
    return 0
