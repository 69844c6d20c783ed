"""``lesionprop detect SRC --checkpoint RUN --out DIR``: lesions on CT scans (see :mod:`lesionprop.scan`).

SRC: a DICOM series folder, a NIfTI file, a series folder ``ROOT/Images_png/PPPPPP_SS_SS`` of a
DeepLesion-layout dataset, or a folder holding several DICOM series (a study, a cohort: each
series goes to ``DIR/<series>/``, listed in ``DIR/series.csv``).  A series' folder receives
lesions.csv, lesions.json, lesions.nii.gz, lesions_seg.dcm and lesions_sr.dcm (DICOM input),
predictions.csv, index.html and figures/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="DICOM series or study folder, NIfTI file (.nii / .nii.gz), or ROOT/Images_png/SERIES")
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
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference setting: predict.* (tta_scales, merge, batch_size, amp) or data.num_workers "
                        "/ data.cache_mb (repeatable); the model's own settings come from the checkpoint")
    p.add_argument("--seg-memory-gb", type=float, default=None,
                   help="memory budget (GiB) for the DICOM SEG with every lesion whole; above it the SEG is "
                        "written from the label volume, one lesion per voxel (default 1)")
    p.add_argument("--seg-crop", action="store_true",
                   help="DICOM SEG frames cover only the lesions' region, not whole slices (less memory; "
                        "some viewers mishandle such frames)")
    p.add_argument("--shard", metavar="K/N", default=None,
                   help="a folder of several series: run only every N-th series starting at the K-th "
                        "(1 <= K <= N), e.g. one shard per job of a scheduler; series.csv is shared")


def _note(text: str) -> None:
    kind = "warning" if text.startswith("warning: ") else "note"
    print(f"lesionprop detect: {kind}: {text.removeprefix('warning: ')}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from lesionprop.cli import CommandError
    from lesionprop.engine.distributed import check_device
    from lesionprop.scan.run import Settings, check_paths, is_layout_series
    from lesionprop.scan.study import parse_shard

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
    shard = parse_shard(args.shard)
    src, out = Path(args.src), Path(args.out)
    check_paths(src, out)
    from lesionprop.config import inference_config, load_config

    inference_config(load_config(), None, args.overrides)         # a bad --set is refused before any work
    settings = Settings(args.tta, args.score, args.link_iou, args.max_gap, args.max_lesions, args.seg_memory_gb,
                        args.seg_crop, tuple(args.overrides))
    if src.is_dir() and not is_layout_series(src):
        from lesionprop.data.dicom_scan import scan_folder

        scan = scan_folder(src)
        if not (len(scan.series) == 1 and scan.series[0].folder == src):
            return _study(src, out, args, settings, shard, scan)
        if args.shard is not None:
            raise CommandError(f"--shard splits a folder of several series; {src} holds one series")
        return _one_series(src, out, args, settings, scan)
    if args.shard is not None:
        raise CommandError(f"--shard splits a folder of several series; {src} is one scan")
    return _one_series(src, out, args, settings, None)


def _one_series(src: Path, out: Path, args, settings, scan) -> int:
    from dataclasses import replace

    from lesionprop.data.dicom_series import load_series
    from lesionprop.engine.checkpoint import resolve_checkpoint
    from lesionprop.scan.run import SHIPPED_NOTE, detect, detect_volume, hidden_text, seg_note

    if scan is None:
        res = detect(src, args.checkpoint, out, tta=args.tta, score=args.score, iou=args.link_iou,
                     max_gap=args.max_gap, max_lesions=args.max_lesions, device=args.device,
                     seg_memory_gb=args.seg_memory_gb, seg_crop=args.seg_crop, inference=tuple(args.overrides))
    else:
        vol = load_series(scan.series[0])
        extra = tuple(n for n in (scan.skipped_note(), *scan.notes) if n)
        res = detect_volume(replace(vol, notes=extra + vol.notes), src, args.checkpoint,
                            resolve_checkpoint(args.checkpoint), out, settings, device=args.device)
    for note in res.notes:
        _note(note)
    dicom = f", DICOM SEG with {res.seg_segments} segments (one per lesion) and SR" if res.seg_segments else ""
    print(f"{res.lesions} lesions from {res.boxes} boxes on {res.slices} slices -> {res.out}/index.html, "
          f"lesions.csv, lesions.json, lesions.nii.gz{dicom}")
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


def _study(src: Path, out: Path, args, settings, shard, scan) -> int:
    from lesionprop.engine.checkpoint import shipped_name
    from lesionprop.errors import InputError
    from lesionprop.scan.run import SHIPPED_NOTE
    from lesionprop.scan.study import DONE, FAILED, SKIPPED, run_study

    res = run_study(src, args.checkpoint, out, settings, device=args.device, shard=shard, scan=scan)
    for note in res.notes:
        _note(note)
    ran = [e for e in res.entries if e.row["status"] in (DONE, FAILED, SKIPPED)]
    for e in ran:
        r = e.row
        what = f"{r['lesions']} lesions on {r['slices']} slices" if r["status"] == DONE else r["message"]
        status = "done earlier" if r["message"] == "done earlier" else r["status"]
        print(f"{e.name}: {status}: {what}")
    lesions = sum(int(e.row["lesions"]) for e in ran if e.row["status"] == DONE)
    shard_text = f" (shard {shard[0]}/{shard[1]}: {len(ran)} series)" if shard[1] > 1 else ""
    print(f"{len(res.entries)} series in {src}{shard_text}: {res.count(DONE)} done ({lesions} lesions), "
          f"{res.count(SKIPPED)} skipped, {res.count(FAILED)} failed -> {out / 'series.csv'}")
    if shipped_name(args.checkpoint):
        print(f"detector: the shipped {shipped_name(args.checkpoint)}, {SHIPPED_NOTE}")
    failed = [e for e in ran if e.row["status"] == FAILED]
    if failed:
        raise InputError(f"{len(failed)} of {len(res.entries)} series failed (first: {failed[0].name}: "
                         f"{failed[0].row['message']}); the others are done, see {out / 'series.csv'}")
    return 0
