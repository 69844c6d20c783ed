"""``lesionprop predict``: boxes on key and/or adjacent slices, with TTA, as a predictions CSV (file frame)."""

from __future__ import annotations

import argparse

from lesionprop.commands.arguments import count, prediction_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint file, a run directory (its best.pt), or a shipped detector name "
                        "(synthetic-cpu-detector: trained on synthetic phantoms only)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--annotations", help="DL_info.csv-schema file choosing the slices (key/adjacent of a split)")
    p.add_argument("--series", nargs="+", metavar="NAME",
                   help="instead of --annotations: every slice of these series folders (e.g. an imported CT; "
                        "spacing from DATA/series_info.csv); 'all' for every series in series_info.csv")
    p.add_argument("--slices", choices=("key", "adjacent", "both", "range"), default="key",
                   help="key slices, their K-1/K+1 neighbours, both, or range: every slice of each key "
                        "slice's Slice_range (the sub-volume a 3D evaluation needs)")
    p.add_argument("--window", type=count(0), metavar="N",
                   help="with --slices range: only K-N ... K+N of each sub-volume")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="with --annotations: the key slices of this split")
    p.add_argument("--tta", choices=("none", "flip", "scales", "flip+scales"), default="none",
                   help="test-time augmentation: horizontal flip, the scales of the config, or both")
    p.add_argument("--batch-size", type=count(1), help="images per forward pass (same as --set predict.batch_size=N)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an inference setting: predict.* (tta_scales, merge, merge_iou, batch_size, amp) or "
                        "data.num_workers / data.cache_mb / data.cache_dir (repeatable); the model's own "
                        "settings come from the checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--out", required=True, type=prediction_output, help="prediction file (File_name,x1,y1,x2,y2,score): CSV, or Arrow IPC (.arrow/.feather) / Parquet (.parquet) by suffix; other suffixes are refused")


def series_slices(data: str, series: list[str]) -> list[str]:
    """File names of every slice PNG of ``series`` (``['all']``: all series in series_info.csv)."""
    from pathlib import Path

    from lesionprop.cli import CommandError
    from lesionprop.data.deeplesion import read_series_info
    from lesionprop.data.layout import list_slices, series_dir, slice_file_name

    info_path = Path(data) / "series_info.csv"
    if not info_path.is_file():
        raise CommandError(f"{info_path} not found: --series needs the spacing a `lesionprop import` records")
    info = read_series_info(info_path)
    names = sorted(info) if series == ["all"] else series
    out = []
    for name in names:
        if name not in info:
            raise CommandError(f"series {name!r} is not in {info_path} (known: {', '.join(sorted(info)) or 'none'})")
        folder = series_dir(data, name)
        indices = sorted(list_slices(folder))
        if not indices:
            raise CommandError(f"no slice PNGs in {folder}")
        out += [slice_file_name(name, i) for i in indices]
    return out


def run(args: argparse.Namespace) -> int:
    from lesionprop.cli import CommandError
    from lesionprop.engine.distributed import check_device
    from lesionprop.engine.predict import predict
    from lesionprop.fileio import check_output_file

    check_output_file(args.out, args.annotations, args.checkpoint)
    check_device(args.device)
    if (args.annotations is None) == (args.series is None):
        raise CommandError("give either --annotations (key/adjacent slices of a split) or --series")
    if args.window is not None and args.slices != "range":
        raise CommandError("--window needs --slices range")
    file_names = series_slices(args.data, args.series) if args.series else None
    preds = predict(args.checkpoint, args.data, args.annotations, slices=args.slices, split=args.split,
                    tta=args.tta, out_csv=args.out, file_names=file_names, batch_size=args.batch_size,
                    device=args.device, window=args.window, overrides=args.overrides)
    if preds is not None:                       # rank 0 (under torchrun the others hold no boxes)
        print(f"wrote {len(preds)} boxes to {args.out}")
    return 0
