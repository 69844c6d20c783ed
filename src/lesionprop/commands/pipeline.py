"""``lesionprop pipeline --config C --out RUN``: the paper's workflow, resumable.

On every GPU of a machine (or of several machines, the run folder on a shared file system)::

    torchrun --nproc_per_node 8 -m lesionprop pipeline --preset resnet50 --data DeepLesion --out RUN
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from lesionprop.commands.arguments import PRETRAINED_HELP, pretrained_value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (may start with 'preset: NAME')")
    p.add_argument("--preset", help="start from a preset instead of / below --config")
    p.add_argument("--out", required=True, help="run folder (created; rerun to finish an interrupted run)")
    p.add_argument("--data", help="dataset root (default: a synthetic dataset generated in RUN/data)")
    p.add_argument("--annotations", help="annotation file (default: DATA/DL_info.csv)")
    p.add_argument("--truth", help="complete labels, e.g. a synthetic truth.csv (default: DATA/truth.csv if present)")
    p.add_argument("--pretrained", type=pretrained_value, metavar="imagenet|FILE|none", help=PRETRAINED_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=200 (repeatable)")


def build_config(args: argparse.Namespace, default_preset: str | None = None):
    from lesionprop.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "pretrained", None) is not None:
        overrides.append(f"model.pretrained={args.pretrained}")
    for key in ("data", "annotations", "truth"):
        if getattr(args, key, None):
            overrides.append(f"pipeline.{key}={Path(getattr(args, key)).resolve()}")
    preset = args.preset or (None if args.config else default_preset)
    return load_config(args.config, preset=preset, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from lesionprop.fileio import check_output_folder
    from lesionprop.pipeline.run import run_pipeline

    check_output_folder(args.out)
    cfg = build_config(args)
    t0 = time.time()
    result = run_pipeline(cfg, args.out)
    if int(os.environ.get("RANK", "0")) == 0:
        print((result.report_dir / "table.md").read_text())
        print(f"report: {result.report_dir}   ({time.time() - t0:.0f} s)")
    return 0
