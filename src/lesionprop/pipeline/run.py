"""The pipeline of the paper's Section 4.3, as resumable stages under one run folder.

RUN/
  config.yaml                 the resolved config
  data/                       synthetic dataset (when no data root is configured)
  models/<variant>/           one training run per label set (baseline, dd, lp, mm, mm_lp);
                              with retrain_from=baseline also models/baseline_finetuned/
  preds/train_tta.csv         baseline predictions (flip + scales) on train key and K +/- 1 slices
  labels/labels_<v>.csv       human rows followed by the pseudo-label rows of each variant
  preds/test_<variant>.csv    each model's predictions on the test key slices
  eval/<variant>.json         sensitivity at FPs (official key-slice labels, and truth when known)
  report/                     tables, FROC plot, pseudo-label quality, figures
  stages/<stage>.json         done-markers with input fingerprints
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lesionprop.config import Config, save_config, training_signature
from lesionprop.annotations import concat, read_annotations, write_annotations
from lesionprop.fileio import atomic_write
from lesionprop.pipeline.stages import StageRunner, hash_file, hash_object, hash_tree_listing

#: label set -> the annotation file each retrained model learns from
VARIANT_LABELS = {"baseline": None, "dd": "labels_dd.csv", "lp": "labels_lp.csv",
                  "mm": "labels_mm.csv", "mm_lp": "labels_mm_lp.csv"}


@dataclass
class PipelineResult:
    run_dir: Path
    official: dict[str, Any] = field(default_factory=dict)   # variant -> FrocResult
    truth: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


def retrain_config(cfg: Config) -> Config:
    """The config of the per-label-set retrains: ``pipeline.retrain_iterations`` and
    ``pipeline.retrain_base_lr`` when set, the baseline's otherwise."""
    from dataclasses import replace

    p = cfg.pipeline
    if p.retrain_from not in ("scratch", "baseline"):
        raise ValueError(f"pipeline.retrain_from must be scratch or baseline, got {p.retrain_from!r}")
    changes = {}
    if p.retrain_iterations is not None:
        if p.retrain_iterations < 1:
            raise ValueError(f"pipeline.retrain_iterations must be >= 1, got {p.retrain_iterations}")
        changes["iterations"] = int(p.retrain_iterations)
    if p.retrain_base_lr is not None:
        if not p.retrain_base_lr > 0:
            raise ValueError(f"pipeline.retrain_base_lr must be > 0, got {p.retrain_base_lr}")
        changes["base_lr"] = float(p.retrain_base_lr)
    return replace(cfg, train=replace(cfg.train, **changes)) if changes else cfg


def _training_fingerprint(cfg: Config) -> str:
    """What a trained model depends on besides its data: its training signature (the same one
    ``train --resume`` checks) and its length."""
    return hash_object([training_signature(cfg), cfg.train.iterations])


def _data_paths(cfg: Config, run_dir: Path) -> tuple[Path, Path, Path | None]:
    p = cfg.pipeline
    if p.data:
        root = Path(p.data)
        ann = Path(p.annotations) if p.annotations else root / "DL_info.csv"
        truth = Path(p.truth) if p.truth else (root / "truth.csv" if (root / "truth.csv").is_file() else None)
        return root, ann, truth
    root = run_dir / "data"
    return root, root / "DL_info.csv", root / "truth.csv"


def _synth_stage(cfg: Config, root: Path) -> dict[str, Any]:
    from lesionprop.synth.dataset import generate_dataset

    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    summary = generate_dataset(partial, series=cfg.pipeline.synth_series, seed=cfg.pipeline.synth_seed,
                               **dict(cfg.pipeline.synth_args))
    if root.exists():
        shutil.rmtree(root)
    os.replace(partial, root)
    return {"summary": str(summary)}


def _train_stage(cfg: Config, root: Path, annotations: Path, run: Path, fp: str,
                 init_checkpoint: Path | None, progress: bool = True, threads: int | None = None
                 ) -> dict[str, Any]:
    """Train one model into ``run``; continue it when an earlier run of the same inputs was killed."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with _run_lock(run):
        return _train_locked(cfg, root, annotations, run, fp, init_checkpoint, progress)


def _run_lock(run: Path, timeout_s: float = 120.0) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on one training folder (a file beside it, as the folder may be removed).

    Two writers in one run folder would corrupt it: e.g. a training left running by a pipeline
    killed a moment ago, while the rerun resumes the same folder.  The rerun waits for it to end.
    """
    return _exclusive(run.parent / f".{run.name}.lock", timeout_s,
                      f"another process is still training into {run} (held for {timeout_s:.0f} s): "
                      "stop it, or wait and run again")


@contextlib.contextmanager
def _exclusive(lock_file: Path, timeout_s: float, busy: str) -> Iterator[None]:
    """Hold the file lock ``lock_file``; RuntimeError(``busy``) when it stays taken for ``timeout_s``."""
    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise RuntimeError(f"{busy} (lock {lock_file})") from None
    try:
        yield
    finally:
        lock.release()


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


def _train_many(cfg: Config, root: Path, runner: StageRunner, jobs: list[tuple[str, str, Path, Path]],
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

    from tqdm import tqdm

    if len(jobs) == 1:
        name, fp, ann, run = jobs[0]
        runner.run(name, fp, [run / "best.pt"], lambda: _train_stage(cfg, root, ann, run, fp, init))
        return
    threads = max(1, (os.cpu_count() or 1) // len(jobs))
    runner.log(f"[train] {len(jobs)} trainings side by side ({threads} thread(s) each): "
               + ", ".join(j[0] for j in jobs))
    t0 = time.time()
    with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_train_stage, cfg, root, ann, run, fp, init, False, threads): (name, fp, run)
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


def _die_with_parent(parent_pid: int) -> None:
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
    path = run / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("iteration", 0))
        except (json.JSONDecodeError, ValueError):
            continue
    return 0


def _label_stage(cfg: Config, annotations: Path, preds_csv: Path, out_dir: Path) -> dict[str, Any]:
    from lesionprop.labels.distill import distill
    from lesionprop.labels.mine import mine
    from lesionprop.labels.propagate import propagate
    from lesionprop.predictions import read_predictions

    lc = cfg.labels
    rows = read_annotations(annotations)
    preds = read_predictions(preds_csv)
    mined = mine(rows, preds, score=lc.score, iou=lc.iou, split="train")
    lp = propagate(rows, preds, iou=lc.iou, offsets=lc.offsets, keep=lc.keep, split="train")
    mm_lp = propagate(concat([rows, mined]), preds, iou=lc.iou, offsets=lc.offsets, keep=lc.keep, split="train")
    dd = distill(rows, preds, score=lc.distill_score, offsets=lc.offsets, split="train")
    sets = {"mm": mined, "lp": lp, "mm_lp": concat([mined, mm_lp]), "dd": dd}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, new in sets.items():
        write_annotations(out_dir / f"labels_{name}.csv", concat([rows, new]), with_source=True)
    return {f"new_rows_{k}": len(v) for k, v in sets.items()}


def _eval_stage(cfg: Config, checkpoint: Path, root: Path, annotations: Path, truth: Path | None,
                preds_csv: Path, out_json: Path) -> dict[str, Any]:
    from lesionprop.engine.predict import predict
    from lesionprop.eval.froc import evaluate

    preds = predict(checkpoint, root, annotations, slices="key", split="test", tta="none", out_csv=preds_csv)
    rows = read_annotations(annotations)
    fps = (0.5, 1, 2, 4, 8)
    res = {"official": _froc_dict(evaluate(rows, preds, split="test", fps=fps))}
    if truth is not None and truth.is_file():
        res["truth"] = _froc_dict(evaluate(rows, preds, split="test", fps=fps, truth=read_annotations(truth)))
    with atomic_write(out_json) as fh:
        json.dump(res, fh, indent=2)
    return {k: v["sensitivity"] for k, v in res.items()}


def _froc_dict(r: Any) -> dict[str, Any]:
    return {"fps": [float(x) for x in r.fps], "sensitivity": [float(x) for x in r.sensitivity],
            "images": int(r.images), "lesions": int(r.lesions),
            "fp_curve": [float(x) for x in r.fp_curve], "sens_curve": [float(x) for x in r.sens_curve]}


def run_pipeline(cfg: Config, run_dir: str | os.PathLike, log: Callable[[str], None] = print) -> PipelineResult:
    """Run (or finish) the whole pipeline under ``run_dir``; finished stages are skipped."""
    run_dir = Path(run_dir)
    with _exclusive(run_dir / ".pipeline.lock", 1.0,
                    f"another lesionprop pipeline is running in {run_dir}: let it finish, or choose another --out"):
        return _run_pipeline(cfg, run_dir, log)


def _run_pipeline(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> PipelineResult:
    save_config(cfg, run_dir / "config.yaml")
    runner = StageRunner(run_dir, log)
    root, annotations, truth = _data_paths(cfg, run_dir)
    variants = [v for v in cfg.pipeline.variants if v in VARIANT_LABELS]
    unknown = set(cfg.pipeline.variants) - set(VARIANT_LABELS)
    if unknown:
        raise ValueError(f"unknown pipeline variants {sorted(unknown)}; known: {', '.join(VARIANT_LABELS)}")
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    retrain_cfg = retrain_config(cfg)        # checked before hours of training, not after

    # 1. data
    if not cfg.pipeline.data:
        runner.run("synth", hash_object(["synth", cfg.pipeline.synth_series, cfg.pipeline.synth_seed,
                                         cfg.pipeline.synth_args]),
                   [annotations], lambda: _synth_stage(cfg, root))
    elif not annotations.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotations}")
    data_fp = hash_object([hash_file(annotations), hash_tree_listing(root / "Images_png")])
    train_cfg_fp = _training_fingerprint(cfg)

    # 2. baseline
    base_run = run_dir / "models" / "baseline"
    fp_base = hash_object(["train", data_fp, train_cfg_fp])
    runner.run("train_baseline", fp_base, [base_run / "best.pt"],
               lambda: _train_stage(cfg, root, annotations, base_run, fp_base, None))
    base_ckpt = base_run / "best.pt"

    # 3. predictions with TTA on train key slices and their neighbours
    preds_train = run_dir / "preds" / "train_tta.csv"
    fp_pred = hash_object(["predict", hash_file(base_ckpt), data_fp, cfg.predict.__dict__, cfg.pipeline.label_tta])

    def _predict_train() -> dict[str, Any]:
        from lesionprop.engine.predict import predict

        p = predict(base_ckpt, root, annotations, slices="both", split="train", tta=cfg.pipeline.label_tta,
                    out_csv=preds_train)
        return {"predictions": len(p.scores)}

    runner.run("predict_train", fp_pred, [preds_train], _predict_train)

    # 4-5. pseudo-labels
    label_dir = run_dir / "labels"
    label_files = [label_dir / f"labels_{v}.csv" for v in ("mm", "lp", "mm_lp", "dd")]
    fp_labels = hash_object(["labels", hash_file(preds_train), hash_file(annotations), cfg.labels.__dict__])
    runner.run("labels", fp_labels, label_files, lambda: _label_stage(cfg, annotations, preds_train, label_dir))

    # 6. retrain per label set
    checkpoints = {"baseline": base_ckpt}
    init = base_ckpt if cfg.pipeline.retrain_from == "baseline" else None
    retrain_fp = _training_fingerprint(retrain_cfg)
    jobs = []
    for v in variants:
        if v == "baseline" and init is None:
            continue        # from scratch, the baseline's retrain on the human labels is the baseline itself
        # fine-tuning: the baseline row is the baseline fine-tuned on the human labels alone, for as
        # many iterations as the other variants, so that extra training is not credited to pseudo-labels
        ann_v = annotations if v == "baseline" else label_dir / VARIANT_LABELS[v]
        run_v = run_dir / "models" / ("baseline_finetuned" if v == "baseline" else v)
        fp_v = hash_object(["train", hash_file(ann_v), data_fp, retrain_fp,
                            hash_file(init) if init else "scratch"])
        jobs.append((f"train_{run_v.name}", fp_v, ann_v, run_v))
        checkpoints[v] = run_v / "best.pt"
    _train_many(retrain_cfg, root, runner, jobs, init)

    # 7. evaluation on the test split
    result = PipelineResult(run_dir)
    for v in variants:
        out_json = run_dir / "eval" / f"{v}.json"
        preds_csv = run_dir / "preds" / f"test_{v}.csv"
        fp_e = hash_object(["eval", hash_file(checkpoints[v]), data_fp,
                            hash_file(truth) if truth and truth.is_file() else None])
        runner.run(f"eval_{v}", fp_e, [out_json, preds_csv],
                   lambda v=v, out_json=out_json, preds_csv=preds_csv: _eval_stage(
                       cfg, checkpoints[v], root, annotations, truth, preds_csv, out_json))
        res = json.loads(out_json.read_text())
        result.official[v] = res["official"]
        if "truth" in res:
            result.truth[v] = res["truth"]

    # report
    from lesionprop.pipeline.report import write_report

    report_dir = run_dir / "report"
    fp_rep = hash_object(["report", [hash_file(run_dir / "eval" / f"{v}.json") for v in variants],
                          [hash_file(f) for f in label_files]])
    runner.run("report", fp_rep, [report_dir / "table.json", report_dir / "table.md"],
               lambda: write_report(result, report_dir, root=root, annotations=annotations, truth=truth,
                                    label_files=dict(zip(("mm", "lp", "mm_lp", "dd"), label_files)),
                                    fps=(0.5, 1, 2, 4, 8)))
    result.report_dir = report_dir
    result.stage_seconds = {k: r.seconds for k, r in runner.records.items()}
    return result
