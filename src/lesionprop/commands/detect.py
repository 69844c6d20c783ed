"""``lesionprop detect SRC --checkpoint RUN --out DIR``: lesions on one CT scan (see :mod:`lesionprop.scan`).

SRC: a DICOM series folder, a NIfTI file, or a series folder ``ROOT/Images_png/PPPPPP_SS_SS``
of a DeepLesion-layout dataset.  DIR receives lesions.csv, lesions.json, lesions.nii.gz,
lesions_seg.dcm (DICOM input), predictions.csv, index.html and figures/.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="DICOM series folder, NIfTI file (.nii / .nii.gz), or ROOT/Images_png/SERIES")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint file, a run directory (its best.pt), or a shipped detector name "
                        "(synthetic-cpu-detector: trained on synthetic phantoms only, a demo on real scans)")
    p.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")
    p.add_argument("--tta", choices=("none", "flip", "scales", "flip+scales"), default="none",
                   help="test-time augmentation: horizontal flip, the scales of the config, or both")
    p.add_argument("--score", type=float, default=0.5, help="keep boxes scoring at least this (default 0.5)")
    p.add_argument("--link-iou", type=float, default=0.5, help="IoU linking boxes of adjacent slices (default 0.5)")
    p.add_argument("--max-gap", type=int, default=1, help="link across up to this many slices (default 1)")
    p.add_argument("--max-lesions", type=int, default=100, help="report at most this many lesions (best first)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--seg-memory-gb", type=float, default=None,
                   help="memory budget (GiB) for the DICOM SEG with every lesion whole; above it the SEG is "
                        "written from the label volume, one lesion per voxel (default 1)")
    p.add_argument("--seg-crop", action="store_true",
                   help="DICOM SEG frames cover only the lesions' region, not whole slices (less memory; "
                        "some viewers mishandle such frames)")


def run(args: argparse.Namespace) -> int:
    from lesionprop.cli import CommandError
    from lesionprop.engine.distributed import check_device
    from lesionprop.scan.run import SHIPPED_NOTE, detect, hidden_text, seg_note

    check_device(args.device)
    if not 0.0 <= args.score <= 1.0:
        raise CommandError(f"--score must be in [0, 1], got {args.score}")
    if not 0.0 <= args.link_iou < 1.0:
        raise CommandError(f"--link-iou must be in [0, 1), got {args.link_iou}")
    if args.max_gap < 1:
        raise CommandError(f"--max-gap must be at least 1, got {args.max_gap}")
    if args.max_lesions < 1:
        raise CommandError(f"--max-lesions must be at least 1, got {args.max_lesions}")
    if args.seg_memory_gb is not None and not args.seg_memory_gb > 0:
        raise CommandError(f"--seg-memory-gb must be > 0, got {args.seg_memory_gb}")
    res = detect(args.src, args.checkpoint, args.out, tta=args.tta, score=args.score, iou=args.link_iou,
                 max_gap=args.max_gap, max_lesions=args.max_lesions, device=args.device,
                 seg_memory_gb=args.seg_memory_gb, seg_crop=args.seg_crop)
    seg = f", DICOM SEG with {res.seg_segments} segments (one per lesion)" if res.seg_segments else ""
    print(f"{res.lesions} lesions from {res.boxes} boxes on {res.slices} slices -> {res.out}/index.html, "
          f"lesions.csv, lesions.json, lesions.nii.gz{seg}")
    whole = bool(res.seg_segments) and res.seg is not None and res.seg["form"] == "stacked"
    if res.seg_segments and res.seg is not None:
        print(f"DICOM SEG: {seg_note(res.seg)}")
    if res.hidden:
        where = ("lesions.csv, the page and the SEG" if whole else
                 "lesions.csv and the page (the SEG describes them, without voxels)" if res.seg_segments
                 else "lesions.csv and the page")
        n = len(res.hidden)
        print(f"{n} {'lesion has' if n == 1 else 'lesions have'} no voxel in lesions.nii.gz (a better-scoring "
              f"lesion covers all of it): {hidden_text(res.hidden)}; listed in {where}")
    if res.shipped:
        print(f"detector: the shipped {res.shipped}, {SHIPPED_NOTE}")
    return 0
