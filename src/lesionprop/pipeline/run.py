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

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lesionprop.annotations import Annotations, read_annotations
from lesionprop.config import Config, save_config, training_signature
from lesionprop.errors import InputError, MissingInputError
from lesionprop.eval.froc import DEFAULT_FPS, FrocResult
from lesionprop.fileio import atomic_write
from lesionprop.labels.sets import LABEL_FILES
from lesionprop.pipeline.stages import StageRunner, dataset_fingerprint, hash_file, hash_object
from lesionprop.pipeline.workers import exclusive, train_many, train_stage

#: the variants: label set -> the annotation file its model learns from (None: the human labels)
VARIANT_LABELS: dict[str, str | None] = {"baseline": None, **LABEL_FILES}
#: the pseudo-label sets (every variant with a label file), in the report's order
LABEL_SETS: tuple[str, ...] = tuple(v for v, f in VARIANT_LABELS.items() if f)
#: the FP rates of every evaluation and report (the paper's 0.5, 1, 2, 4, 8 per image)
FPS: tuple[float, ...] = DEFAULT_FPS


@dataclass
class PipelineResult:
    run_dir: Path
    official: dict[str, FrocResult] = field(default_factory=dict)   # variant -> result on the key-slice labels
    truth: dict[str, FrocResult] = field(default_factory=dict)      # variant -> result on complete truth
    lens: dict[str, Any] = field(default_factory=dict)              # variant -> 3D complete-label evaluation
    report_dir: Path | None = None


def retrain_config(cfg: Config) -> Config:
    """The config of the per-label-set retrains: ``pipeline.retrain_iterations`` and
    ``pipeline.retrain_base_lr`` when set, the baseline's otherwise."""
    from dataclasses import replace

    p = cfg.pipeline
    if p.retrain_from not in ("scratch", "baseline"):
        raise InputError(f"pipeline.retrain_from must be scratch or baseline, got {p.retrain_from!r}")
    if p.eval_3d_slices < 0:
        raise InputError(f"pipeline.eval_3d_slices must be >= 0 (0 = off), got {p.eval_3d_slices}")
    changes = {}
    if p.retrain_iterations is not None:
        if p.retrain_iterations < 1:
            raise InputError(f"pipeline.retrain_iterations must be >= 1, got {p.retrain_iterations}")
        changes["iterations"] = int(p.retrain_iterations)
    if p.retrain_base_lr is not None:
        if not p.retrain_base_lr > 0:
            raise InputError(f"pipeline.retrain_base_lr must be > 0, got {p.retrain_base_lr}")
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


def _label_stage(cfg: Config, annotations: Path, preds_csv: Path, out_dir: Path) -> dict[str, Any]:
    from lesionprop.labels.sets import label_sets, write_label_sets
    from lesionprop.predictions import read_predictions

    rows = read_annotations(annotations)
    sets = label_sets(rows, read_predictions(preds_csv), cfg.labels, split="train")
    write_label_sets(out_dir, rows, sets)
    return {f"new_rows_{k}": len(v) for k, v in sets.items()}


def _eval_stage(cfg: Config, checkpoint: Path, root: Path, annotations: Path, truth: Path | None,
                preds_csv: Path, out_json: Path) -> dict[str, Any]:
    """Predict on the test key slices (and, with ``pipeline.eval_3d_slices = n``, on K - n ... K + n
    of each) once; the key-slice evaluation reads the key slices, the 3D ``lens`` one all of them."""
    from lesionprop.engine.predict import predict
    from lesionprop.eval.froc import evaluate

    n3d = cfg.pipeline.eval_3d_slices
    preds = predict(checkpoint, root, annotations, slices="range" if n3d else "key", split="test", tta="none",
                    out_csv=preds_csv, window=n3d or None)
    rows = read_annotations(annotations)
    res = {"official": evaluate(rows, preds, split="test", fps=FPS)}
    if truth is not None and truth.is_file():
        res["truth"] = evaluate(rows, preds, split="test", fps=FPS, truth=read_annotations(truth))
    out = {k: r.to_dict(curve=True) for k, r in res.items()}
    if truth is not None and truth.is_file() and n3d:
        out["lens"] = _lens_dict(rows, preds, truth, n3d)
    with atomic_write(out_json) as fh:
        json.dump(out, fh, indent=2)
    return {k: r["sensitivity"] for k, r in out.items()}


def read_eval(path: Path) -> dict[str, Any]:
    """``eval/<variant>.json`` -> ``{"official": FrocResult[, "truth": FrocResult][, "lens": dict]}``."""
    return {k: v if k == "lens" else FrocResult.from_dict(v) for k, v in json.loads(path.read_text()).items()}


def _lens_dict(rows: Annotations, preds: Any, truth: Path, window: int) -> dict[str, Any]:
    """``lens`` against truth.csv on the test key slices' sub-volumes K +/- window (overlapping
    ones merged), the predictions linked across slices with ``link``'s defaults."""
    from lesionprop.eval.complete_labels import detections_from_boxes, read_complete_labels, units_from_key_slices
    from lesionprop.eval.lens import bootstrap_protocol, evaluate_lens
    from lesionprop.labels.link import link_boxes

    labels = read_complete_labels(truth, "truth-csv", split="test", units=units_from_key_slices(rows, "test", window))
    ids = link_boxes(preds.series_index, preds.slices, preds.boxes, preds.scores)
    dets = detections_from_boxes(labels, preds.series_names[preds.series_index], preds.slices, preds.boxes,
                                 preds.scores, ids)
    r = evaluate_lens(labels, dets)
    ci = bootstrap_protocol(r)          # 95%, 1,000 resamples of the test patients, seed 0
    return {**r.to_dict(breakdown=True), **ci.to_dict(), "window": int(window),
            "predicted_lesions": int(len(dets.scores)),
            "fp_curve": [float(x) for x in r.fp_curve], "sens_curve": [float(x) for x in r.sens_curve]}


def run_pipeline(cfg: Config, run_dir: str | os.PathLike, log: Callable[[str], None] = print) -> PipelineResult:
    """Run (or finish) the whole pipeline under ``run_dir``; finished stages are skipped."""
    run_dir = Path(run_dir)
    with exclusive(run_dir / ".pipeline.lock", 1.0,
                    f"another lesionprop pipeline is running in {run_dir}: let it finish, or choose another --out"):
        return _run_pipeline(cfg, run_dir, log)


def _run_pipeline(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> PipelineResult:
    save_config(cfg, run_dir / "config.yaml")
    runner = StageRunner(run_dir, log)
    root, annotations, truth = _data_paths(cfg, run_dir)
    variants = [v for v in cfg.pipeline.variants if v in VARIANT_LABELS]
    unknown = set(cfg.pipeline.variants) - set(VARIANT_LABELS)
    if unknown:
        raise InputError(f"unknown pipeline variants {sorted(unknown)}; known: {', '.join(VARIANT_LABELS)}")
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    retrain_cfg = retrain_config(cfg)        # checked before hours of training, not after

    # 1. data
    if not cfg.pipeline.data:
        runner.run("synth", hash_object(["synth", cfg.pipeline.synth_series, cfg.pipeline.synth_seed,
                                         cfg.pipeline.synth_args]),
                   [annotations], lambda: _synth_stage(cfg, root))
    elif not annotations.is_file():
        raise MissingInputError(f"annotation file not found: {annotations}")
    data_fp = dataset_fingerprint(root, annotations)
    train_cfg_fp = _training_fingerprint(cfg)

    # 2. baseline
    base_run = run_dir / "models" / "baseline"
    fp_base = hash_object(["train", data_fp, train_cfg_fp])
    runner.run("train_baseline", fp_base, [base_run / "best.pt"],
               lambda: train_stage(cfg, root, annotations, base_run, fp_base, None))
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
    label_files = {v: label_dir / str(VARIANT_LABELS[v]) for v in LABEL_SETS}
    fp_labels = hash_object(["labels", hash_file(preds_train), hash_file(annotations), cfg.labels.__dict__])
    runner.run("labels", fp_labels, list(label_files.values()),
               lambda: _label_stage(cfg, annotations, preds_train, label_dir))

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
        ann_v = annotations if v == "baseline" else label_files[v]
        run_v = run_dir / "models" / ("baseline_finetuned" if v == "baseline" else v)
        fp_v = hash_object(["train", hash_file(ann_v), data_fp, retrain_fp,
                            hash_file(init) if init else "scratch"])
        jobs.append((f"train_{run_v.name}", fp_v, ann_v, run_v))
        checkpoints[v] = run_v / "best.pt"
    train_many(retrain_cfg, root, runner, jobs, init)

    # 7. evaluation on the test split
    result = PipelineResult(run_dir)
    for v in variants:
        out_json = run_dir / "eval" / f"{v}.json"
        preds_csv = run_dir / "preds" / f"test_{v}.csv"
        fp_e = hash_object(["eval", hash_file(checkpoints[v]), data_fp,
                            hash_file(truth) if truth and truth.is_file() else None]
                           + ([("eval_3d_slices", cfg.pipeline.eval_3d_slices)] if cfg.pipeline.eval_3d_slices else []))
        runner.run(f"eval_{v}", fp_e, [out_json, preds_csv],
                   lambda v=v, out_json=out_json, preds_csv=preds_csv: _eval_stage(
                       cfg, checkpoints[v], root, annotations, truth, preds_csv, out_json))
        res = read_eval(out_json)
        result.official[v] = res["official"]
        if "truth" in res:
            result.truth[v] = res["truth"]
        if "lens" in res:
            result.lens[v] = res["lens"]

    # report
    from lesionprop.pipeline.report import BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL, describe_setup, write_report

    report_dir = run_dir / "report"
    pred_files = {v: run_dir / "preds" / f"test_{v}.csv" for v in variants}
    setup = describe_setup(cfg)
    fp_rep = hash_object(["report", [hash_file(run_dir / "eval" / f"{v}.json") for v in variants],
                          [hash_file(f) for f in label_files.values()], [hash_file(f) for f in pred_files.values()],
                          hash_file(preds_train),
                          [BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL], setup])
    runner.run("report", fp_rep, [report_dir / "table.json", report_dir / "table.md"],
               lambda: write_report(result, report_dir, root=root, annotations=annotations, truth=truth,
                                    label_files=label_files, fps=FPS, pred_files=pred_files,
                                    setup=setup, train_preds=preds_train))
    result.report_dir = report_dir
    return result
