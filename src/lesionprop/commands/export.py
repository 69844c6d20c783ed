"""``lesionprop export --format coco``: a DL_info.csv-schema file -> COCO detection JSON.

Images = slices (``file_name`` relative to ``--data``), annotations = boxes as COCO
``[x, y, w, h]`` = ``[x1 - 1, y1 - 1, x2 - x1, y2 - y1]`` of the file frame (COCO's
0-based continuous pixel frame); see :mod:`lesionprop.coco`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lesionprop.errors import MissingInputError

FORMATS = ("coco",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="DL_info.csv-schema file (Source/Score columns kept)")
    parser.add_argument("--data", required=True, help="dataset root; image file_name values are relative to it")
    parser.add_argument("--format", choices=FORMATS, default="coco", help="output format (default coco)")
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--split", choices=("train", "val", "test", "all"), default="all", help="rows of this split")
    parser.add_argument("--slices", choices=("key", "labeled"), default="key",
                        help="key: key slices and human rows (default); labeled: every slice with a row of "
                             "any Source (pseudo-labels too)")


def run(args: argparse.Namespace) -> int:
    from lesionprop.coco import lesions_to_coco
    from lesionprop.annotations import read_annotations
    from lesionprop.fileio import atomic_write, check_output_file

    check_output_file(args.out, args.annotations)
    root = Path(args.data)
    if not root.is_dir():
        raise MissingInputError(f"--data {root}: no such folder")
    coco = lesions_to_coco(read_annotations(args.annotations), split=args.split, slices=args.slices,
                           description=f"lesionprop export of {Path(args.annotations).name} "
                                       f"(split {args.split}, {args.slices} slices)")
    missing = [im["file_name"] for im in coco["images"] if not (root / im["file_name"]).is_file()]
    with atomic_write(args.out) as fh:
        json.dump(coco, fh)
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
          f"{len(coco['categories'])} categories to {args.out}")
    if missing:
        print(f"warning: {len(missing)} of {len(coco['images'])} image files are not under {root} "
              f"(first: {missing[0]})", file=sys.stderr)
    return 0
