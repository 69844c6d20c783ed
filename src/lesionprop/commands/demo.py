"""``lesionprop demo``: the whole pipeline on a fresh synthetic dataset with the CPU preset."""

from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_run", help="run folder (default: demo_run); rerun to resume")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and of training")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the demo preset (repeatable)")


def run(args: argparse.Namespace) -> int:
    from lesionprop.config import load_config
    from lesionprop.fileio import check_output_folder
    from lesionprop.pipeline.run import run_pipeline

    check_output_folder(args.out)
    overrides = [f"pipeline.synth_seed={args.seed}", f"train.seed={args.seed}"] + list(args.overrides)
    cfg = load_config(preset="demo", overrides=overrides)
    t0 = time.time()
    print(f"lesionprop demo: synthetic data, CPU preset, run folder {args.out}")
    result = run_pipeline(cfg, args.out)
    print()
    print((result.report_dir / "table.md").read_text())
    print(f"report folder: {result.report_dir}   wall time {time.time() - t0:.0f} s")
    return 0
