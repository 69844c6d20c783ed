"""Run (or finish) the pipeline under one run folder: checks first, then the declared stages.

One process or ``torchrun`` (any number of ranks and nodes, the run folder on a file system
every node sees): every rank calls :func:`run_pipeline`; trainings and predictions use every
rank, the data, label sets and report rank 0 (:mod:`lesionprop.pipeline.stages`).
"""

from __future__ import annotations

import os
from itertools import takewhile
from pathlib import Path
from typing import Callable

from lesionprop.config import Config, save_config
from lesionprop.engine import distributed
from lesionprop.pipeline.checks import check_data, check_settings
from lesionprop.pipeline.plan import (  # noqa: F401
    FPS,
    PipelineResult,
    build_stages,
    collect_results,
    data_paths,
    retrain_config,
    sources,
    variants,
)
from lesionprop.pipeline.stages import StageRunner
from lesionprop.pipeline.workers import run_group


def run_pipeline(cfg: Config, run_dir: str | os.PathLike, log: Callable[[str], None] = print,
                 device: str | None = None) -> PipelineResult:
    """Run (or finish) the whole pipeline under ``run_dir``; finished stages are skipped.

    Settings that cannot work are refused before anything runs, and data that cannot give a
    result before the first training (:mod:`lesionprop.pipeline.checks`).
    """

    dist = distributed.setup(device)
    check_settings(cfg, dist.world)
    run_dir = Path(run_dir)
    paths = data_paths(cfg, run_dir)
    stages = build_stages(cfg, paths)
    runner = StageRunner(run_dir, cfg, sources=sources(paths, cfg), data_root=paths.root, log=log,
                         rank=dist.rank, world=dist.world)
    with runner.locked():
        if dist.main:
            save_config(cfg, run_dir / "config.yaml")
        i = 0
        if stages[0].name == "synth":
            runner.run(stages[0])
            i = 1
        for w in runner.on_main(lambda: check_data(cfg, paths)):
            log(f"note: {w}")
        while i < len(stages):
            stage = stages[i]
            if stage.group is None:
                runner.run(stage)
                i += 1
                continue
            group = list(takewhile(lambda s: s.group == stage.group, stages[i:]))
            run_group(runner, group, cfg.pipeline.parallel_trainings)
            i += len(group)
    result = collect_results(run_dir, variants(cfg))
    result.report_dir = run_dir / "report"
    return result
