"""Trainings side by side: several stages of one group (the retrains) in worker processes.

On one machine without ``torchrun``, ``pipeline.parallel_trainings`` retrains run at a time,
each in its own process: on a machine with several GPUs each gets its own GPU (round robin);
on a CPU the cores are split between them (on 2 cores two single-thread trainings get more
done than one two-thread training).  Workers end with the pipeline (:func:`die_with_parent`),
so a killed pipeline never leaves a training writing into a folder that a rerun resumes.
Under ``torchrun`` the stages run one after another, each on every rank.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from lesionprop.engine.metrics_log import read_metrics
from lesionprop.pipeline.plan import retrain_config
from lesionprop.pipeline.stages import Stage, StageContext, StageRunner


def run_group(runner: StageRunner, stages: list[Stage], parallel: int) -> None:
    """Run ``stages`` (one group), ``parallel`` at a time when this is a world of one process."""
    todo = []
    for st in stages:
        fp, done, resume = runner.plan(st)
        if done:
            runner.skip(st, fp)
        else:
            todo.append((st, fp, resume))
    n = 1 if runner.world > 1 else max(1, parallel)
    for start in range(0, len(todo), n):
        chunk = todo[start:start + n]
        if len(chunk) == 1:
            st, fp, resume = chunk[0]
            ctx = runner.start(st, fp, resume)
            t0 = time.time()
            if runner.world > 1:
                runner._barrier()
            info = st.run(ctx)
            if runner.world > 1:
                runner._barrier()
            runner.finish(st, fp, time.time() - t0, info)
        else:
            _side_by_side(runner, chunk)


def side_by_side_placement(n_jobs: int, cuda_devices: int, cpu_cores: int) -> list[dict[str, Any]]:
    """Each of ``n_jobs`` side-by-side trainings' ``device`` and ``threads``: one GPU each, round
    robin, when there are GPUs; else the CPU cores split between them (at least one each)."""
    if cuda_devices > 0:
        return [{"device": f"cuda:{i % cuda_devices}", "threads": None} for i in range(n_jobs)]
    return [{"device": "cpu", "threads": max(1, cpu_cores // n_jobs)} for _ in range(n_jobs)]


def _side_by_side(runner: StageRunner, chunk: list[tuple[Stage, str, bool]]) -> None:
    import torch
    from tqdm.auto import tqdm

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    places = side_by_side_placement(len(chunk), gpus, os.cpu_count() or 1)
    ctxs = [dataclasses.replace(runner.start(st, fp, resume), progress=False, **place)
            for (st, fp, resume), place in zip(chunk, places)]
    where = ", ".join(f"{st.name} on {c.device}" + (f" ({c.threads} thread(s))" if c.threads else "")
                      for (st, _, _), c in zip(chunk, ctxs))
    runner.log(f"[train] {len(chunk)} trainings side by side: {where}")
    t0 = time.time()
    total = sum(_iterations_of(c) for c in ctxs)
    with ProcessPoolExecutor(len(chunk), mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(st.run, ctx) for (st, _, _), ctx in zip(chunk, ctxs)]
        bar = tqdm(total=total, desc="train (side by side)", dynamic_ncols=True)
        while any(not f.done() for f in futures):
            bar.n = sum(_iterations_done(c) for c in ctxs)
            bar.refresh()
            time.sleep(2)
        bar.n = bar.total
        bar.close()
        for fut, (st, fp, _) in zip(futures, chunk):
            runner.finish(st, fp, time.time() - t0, fut.result())      # re-raises a training's error here


def _iterations_of(ctx: StageContext) -> int:

    return (retrain_config(ctx.cfg) if ctx.params.get("retrain") else ctx.cfg).train.iterations


def _iterations_done(ctx: StageContext) -> int:
    """Last iteration logged in the training's ``metrics.jsonl`` (0 when none yet)."""

    records = read_metrics(ctx.run_dir / ctx.params["run"] / "metrics.jsonl")
    return int(records[-1].get("iteration", 0)) if records else 0


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end the worker when the pipeline process dies.

    Linux: the kernel kills the worker (PR_SET_PDEATHSIG); elsewhere a watchdog thread polls.
    Either way a pipeline killed before this ran (while the worker was starting) is caught by
    comparing the parent pid.
    """

    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)
