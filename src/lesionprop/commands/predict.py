"""``lesionprop predict``: boxes on key and/or adjacent slices, with TTA, as a predictions CSV (file frame)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run directory (its best.pt)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--annotations", required=True, help="DL_info.csv-schema file choosing the slices")
    p.add_argument("--slices", choices=("key", "adjacent", "both"), default="key")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test")
    p.add_argument("--tta", choices=("none", "flip", "scales", "flip+scales"), default="none")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the checkpoint's)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="predictions CSV (File_name,x1,y1,x2,y2,score)")


def run(args: argparse.Namespace) -> int:
    from lesionprop.engine.predict import predict

    preds = predict(args.checkpoint, args.data, args.annotations, slices=args.slices, split=args.split,
                    tta=args.tta, out_csv=args.out, batch_size=args.batch_size, device=args.device)
    print(f"wrote {len(preds)} boxes to {args.out}")
    return 0
