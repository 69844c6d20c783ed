"""Process handling of the pipeline: file locks, training processes side by side, die-with-parent.

A training runs in its run folder under an exclusive lock (:func:`run_lock`); a killed
pipeline's training resumes when its inputs (the fingerprint stamped in the folder) are
unchanged.  :func:`train_many` trains several label sets, ``pipeline.parallel_trainings`` at
a time, in worker processes that end with the pipeline (:func:`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from lesionprop.config import Config
from lesionprop.fileio import atomic_write
from lesionprop.pipeline.stages import StageRunner


def train_stage(cfg: Config, root: Path, annotations: Path, run: Path, fp: str,
                 init_checkpoint: Path | None, progress: bool = True, threads: int | None = None
                 ) -> dict[str, Any]:
    """Train one model into ``run``; continue it when an earlier run of the same inputs was killed."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with run_lock(run):
        return _train_locked(cfg, root, annotations, run, fp, init_checkpoint, progress)


def run_lock(run: Path, timeout_s: float = 120.0) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on one training folder (a file beside it, as the folder may be removed).

    Two writers in one run folder would corrupt it: e.g. a training left running by a pipeline
    killed a moment ago, while the rerun resumes the same folder.  The rerun waits for it to end.
    """
    return exclusive(run.parent / f".{run.name}.lock", timeout_s,
                      f"another process is still training into {run} (held for {timeout_s:.0f} s): "
                      "stop it, or wait and run again")


def exclusive(lock_file: Path, timeout_s: float, busy: str) -> contextlib.AbstractContextManager[None]:
    """Hold the file lock ``lock_file``; :class:`fileio.LockHeldError` (``busy``, naming the holder's
    pid and host) when it stays taken for ``timeout_s``."""
    from lesionprop.fileio import exclusive_lock

    return exclusive_lock(lock_file, timeout_s, busy)


def _train_locked(cfg: Config, root: Path, annotations: Path, run: Path, fp: str,
                  init_checkpoint: Path | None, progress: bool) -> dict[str, Any]:
    from lesionprop.engine.checkpoint import load_checkpoint
    from lesionprop.engine.train import train

    stamp = run / "pipeline_fingerprint.txt"
    resume = stamp.is_file() and stamp.read_text().strip() == fp and (run / "last.pt").is_file()
    if resume and (run / "best.pt").is_file() and \
            load_checkpoint(run / "last.pt")["iteration"] >= cfg.train.iterations:
        return {"best_checkpoint": str(run / "best.pt"), "resumed": True}    # finished before a kill
    if run.exists() and not resume:
        shutil.rmtree(run)       # a stale run of other inputs, made by this pipeline: restart it
    run.mkdir(parents=True, exist_ok=True)
    with atomic_write(stamp) as fh:
        fh.write(fp)
    kwargs = {"init_checkpoint": init_checkpoint} if init_checkpoint else {}
    result = train(cfg, root, annotations, run, resume=resume, progress=progress, **kwargs)
    return {"best_checkpoint": str(result.best_checkpoint), "resumed": resume}


def train_many(cfg: Config, root: Path, runner: StageRunner, jobs: list[tuple[str, str, Path, Path]],
                init: Path | None) -> None:
    """Train several label sets, ``cfg.pipeline.parallel_trainings`` at a time.

    ``jobs``: (stage name, fingerprint, annotation file, run folder).  Parallel
    trainings run in separate processes with the CPU threads split between them
    (on a 2-core CPU two single-thread trainings get more done than one
    two-thread training), in rounds of that many; one progress bar per round.
    """
    todo = [j for j in jobs if not runner.is_done(j[0], j[1], [j[3] / "best.pt"])]
    for name, fp, _, run in jobs:
        if (name, fp, _, run) not in todo:
            runner.run(name, fp, [run / "best.pt"], lambda: None)       # logs "skipped"
    n = max(1, cfg.pipeline.parallel_trainings)
    # rounds of n trainings; a last, smaller round gets the spare cores as threads
    for start in range(0, len(todo), n):
        _train_round(cfg, root, runner, todo[start:start + n], init)


def _train_round(cfg: Config, root: Path, runner: StageRunner, jobs: list[tuple[str, str, Path, Path]],
                 init: Path | None) -> None:
    """Train ``jobs`` side by side, one process each, the CPU threads split between them."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    if len(jobs) == 1:
        name, fp, ann, run = jobs[0]
        runner.run(name, fp, [run / "best.pt"], lambda: train_stage(cfg, root, ann, run, fp, init))
        return
    threads = max(1, (os.cpu_count() or 1) // len(jobs))
    runner.log(f"[train] {len(jobs)} trainings side by side ({threads} thread(s) each): "
               + ", ".join(j[0] for j in jobs))
    t0 = time.time()
    with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(train_stage, cfg, root, ann, run, fp, init, False, threads): (name, fp, run)
                   for name, fp, ann, run in jobs}
        bar = tqdm(total=len(jobs) * cfg.train.iterations, desc="train (parallel)", dynamic_ncols=True)
        while any(not f.done() for f in futures):
            bar.n = sum(_iterations_done(run) for _, _, run in futures.values())
            bar.refresh()
            time.sleep(2)
        bar.n = bar.total
        bar.close()
        for fut, (name, fp, run) in futures.items():
            info = fut.result()          # re-raises a training error here
            runner.mark(name, fp, [run / "best.pt"], time.time() - t0, info)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end the worker when the pipeline process dies, so a killed pipeline
    never leaves trainings writing into run folders that a rerun resumes.

    Linux: the kernel kills the worker (PR_SET_PDEATHSIG); elsewhere a watchdog thread polls.
    Either way a pipeline killed before this ran (while the worker was starting) is caught by
    comparing the parent pid.
    """
    import ctypes
    import signal
    import sys
    import threading
    import time

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


def _iterations_done(run: Path) -> int:
    """Last iteration logged in ``run/metrics.jsonl`` (0 when none yet)."""
    from lesionprop.engine.metrics_log import read_metrics

    records = read_metrics(run / "metrics.jsonl")
    return int(records[-1].get("iteration", 0)) if records else 0
