"""``lesionprop train``: train an FPN-3DCE detector into a run directory (works under torchrun)."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from lesionprop.commands.arguments import PRETRAINED_HELP, count, pretrained_value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset root (Images_png/, series_info.csv)")
    p.add_argument("--annotations", required=True, help="DL_info.csv-schema file (may hold pseudo-label rows)")
    p.add_argument("--out", required=True, help="run directory (config.yaml, metrics.jsonl, last.pt, best.pt)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", help="YAML config file")
    g.add_argument("--preset", help="preset name (resnet50, resnet18, cpu, tiny)")
    p.add_argument("--iterations", type=count(1), help="override train.iterations")
    p.add_argument("--pretrained", type=pretrained_value, metavar="imagenet|FILE|none",
                   help=PRETRAINED_HELP)
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    p.add_argument("--init", help="start from this checkpoint's weights (a run directory: its best.pt)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. train.batch_size=8 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from lesionprop.config import load_config
    from lesionprop.engine.distributed import check_device
    from lesionprop.engine.train import train
    from lesionprop.fileio import check_output_folder

    check_output_folder(args.out)
    check_device(args.device)
    overrides = list(args.overrides)
    if args.iterations is not None:
        overrides.append(f"train.iterations={args.iterations}")
    if args.pretrained is not None:
        overrides.append(f"model.pretrained={args.pretrained}")
    cfg = load_config(args.config, args.preset, overrides)
    with _run_folder_lock(Path(args.out)):
        result = train(cfg, args.data, args.annotations, args.out, resume=args.resume,
                       init_checkpoint=args.init, device=args.device)
    best = "n/a" if result.best_sensitivity is None else f"{result.best_sensitivity:.4f}"
    print(f"trained {result.iterations} iterations, final loss {result.final_loss:.4f}, "
          f"best val sensitivity at 4 FPs {best}; best checkpoint {result.best_checkpoint}")
    return 0


def _run_folder_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """The run folder's lock (the one the pipeline's trainings take), held by rank 0 only under torchrun:
    a second ``train`` into the same folder is refused at once, naming the holder."""
    from lesionprop.fileio import exclusive_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return exclusive_lock(out.parent / f".{out.name}.lock", 0.0, f"another process is training into {out}")
