"""``lesionprop pipeline --config C --out RUN``: the paper's workflow, resumable."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (may start with 'preset: NAME')")
    p.add_argument("--preset", help="start from a preset instead of / below --config")
    p.add_argument("--out", required=True, help="run folder (created; rerun to finish an interrupted run)")
    p.add_argument("--data", help="dataset root (default: a synthetic dataset generated in RUN/data)")
    p.add_argument("--annotations", help="annotation file (default: DATA/DL_info.csv)")
    p.add_argument("--truth", help="complete labels, e.g. a synthetic truth.csv (default: DATA/truth.csv if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=200 (repeatable)")


def build_config(args: argparse.Namespace, default_preset: str | None = None):
    from lesionprop.config import load_config

    overrides = list(args.overrides)
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
    print((result.report_dir / "table.md").read_text())
    print(f"report: {result.report_dir}   ({time.time() - t0:.0f} s)")
    return 0
