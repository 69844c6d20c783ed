"""The paper's Section 4.3 as a list of declared stages (:func:`build_stages`) and their bodies.

RUN/
  config.yaml                 the resolved config
  data/                       synthetic dataset (when no data root is configured)
  models/<variant>/           one training run per label set (baseline, dd, lp, mm, mm_lp, your own);
                              with retrain_from=baseline also models/baseline_finetuned/
  preds/train_tta.csv         baseline predictions (flip + scales) on train key and K +/- 1 slices
  labels/labels_<v>.csv       human rows followed by the pseudo-label rows of each variant
  preds/test_<variant>.csv    each model's predictions on the test key slices
  eval/<variant>.json         sensitivity at FPs (official key-slice labels, and truth when known)
  report/                     tables, FROC plot, pseudo-label quality, figures
  stages/<stage>.json         done-markers with their fingerprints (pipeline.stages)

Each stage names the config keys and files its outputs depend on; the runner
(:class:`~lesionprop.pipeline.stages.StageRunner`) derives fingerprints, markers and resume
from that declaration alone.  Bodies are module-level functions of a
:class:`~lesionprop.pipeline.stages.StageContext` so that side-by-side trainings can run them
in other processes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lesionprop.annotations import Annotations, read_annotations
from lesionprop.config import Config
from lesionprop.engine import distributed
from lesionprop.engine.checkpoint import load_checkpoint
from lesionprop.engine import predict as inference
from lesionprop.engine import train as training
from lesionprop.errors import ConfigError
from lesionprop.eval.complete_labels import detections_from_boxes, read_complete_labels, units_from_key_slices
from lesionprop.eval.froc import DEFAULT_FPS, FrocResult, evaluate
from lesionprop.eval.lens import bootstrap_protocol, evaluate_lens
from lesionprop.fileio import atomic_write
from lesionprop.labels.link import link_boxes
from lesionprop.labels.sets import label_sets, write_label_sets
from lesionprop.pipeline.report import BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL, describe_setup, write_report
from lesionprop.pipeline.rounds import round_dir, write_rounds
from lesionprop.pipeline.stages import Stage, StageContext
from lesionprop.predictions import read_predictions
from lesionprop.synth.dataset import generate_dataset
from lesionprop.variants import BY_NAME, LABEL_SETS

#: the FP rates of every evaluation and report (the paper's 0.5, 1, 2, 4, 8 per image)
FPS: tuple[float, ...] = DEFAULT_FPS
#: what a trained model depends on in the config (whole sections: their run-only settings left out)
TRAIN_CONFIG = ("data", "model", "train")
#: ... and a retrain, which may change its length, lr and start
RETRAIN_CONFIG = TRAIN_CONFIG + ("pipeline.retrain_from", "pipeline.retrain_iterations", "pipeline.retrain_base_lr")
#: what the TTA predictions the label tools read depend on (besides the checkpoint)
LABEL_PREDICT_CONFIG = ("predict.tta_scales", "predict.merge", "predict.merge_iou", "predict.amp",
                        "pipeline.label_tta")
#: what the report's setup line says (pipeline.report.describe_setup)
REPORT_CONFIG = ("model.backbone", "model.base_width", "model.fpn_channels", "model.norm", "model.pretrained",
                 "model.init_backbone", "model.init_detector", "data.num_slices", "data.target_spacing_mm",
                 "train.iterations", "pipeline.retrain_from", "pipeline.retrain_iterations", "pipeline.label_tta")


@dataclass(frozen=True)
class DataPaths:
    """Where the pipeline's data live: ``root`` (DeepLesion layout), the annotation file, complete
    labels (``truth``, None when unknown), and whether the data are synthesised into RUN/data."""

    root: Path
    annotations: Path
    truth: Path | None
    synthetic: bool


def data_paths(cfg: Config, run_dir: Path) -> DataPaths:
    p = cfg.pipeline
    if p.data:
        root = Path(p.data)
        ann = Path(p.annotations) if p.annotations else root / "DL_info.csv"
        truth = Path(p.truth) if p.truth else (root / "truth.csv" if (root / "truth.csv").is_file() else None)
        return DataPaths(root, ann, truth, False)
    root = run_dir / "data"
    return DataPaths(root, root / "DL_info.csv", root / "truth.csv", True)


def sources(paths: DataPaths, cfg: Config) -> dict[str, str | None]:
    """The runner's named inputs: the data and every user label set (``label:NAME``)."""
    out = {"root": str(paths.root), "annotations": str(paths.annotations),
           "truth": str(paths.truth) if paths.truth is not None else None}
    out.update({f"label:{name}": str(Path(f).resolve()) for name, f in cfg.pipeline.extra_label_sets.items()})
    return out


def retrain_config(cfg: Config) -> Config:
    """The config of the per-label-set retrains: ``pipeline.retrain_iterations`` and
    ``pipeline.retrain_base_lr`` when set, the baseline's otherwise."""
    p = cfg.pipeline
    if p.retrain_from not in ("scratch", "baseline"):
        raise ConfigError(f"pipeline.retrain_from must be scratch or baseline, got {p.retrain_from!r}")
    if p.eval_3d_slices < 0:
        raise ConfigError(f"pipeline.eval_3d_slices must be >= 0 (0 = off), got {p.eval_3d_slices}")
    changes: dict[str, Any] = {}
    if p.retrain_iterations is not None:
        if p.retrain_iterations < 1:
            raise ConfigError(f"pipeline.retrain_iterations must be >= 1, got {p.retrain_iterations}")
        changes["iterations"] = int(p.retrain_iterations)
    if p.retrain_base_lr is not None:
        if not p.retrain_base_lr > 0:
            raise ConfigError(f"pipeline.retrain_base_lr must be > 0, got {p.retrain_base_lr}")
        changes["base_lr"] = float(p.retrain_base_lr)
    return replace(cfg, train=replace(cfg.train, **changes)) if changes else cfg


def variants(cfg: Config) -> list[str]:
    """The variants this run trains and reports, baseline first: the configured ones of
    :mod:`lesionprop.variants`, then the user's own label sets (``pipeline.extra_label_sets``)."""
    unknown = [v for v in cfg.pipeline.variants if v not in BY_NAME]
    if unknown:
        raise ConfigError(f"unknown pipeline.variants {unknown}; known: {', '.join(BY_NAME)} (a label file of "
                          "your own goes in pipeline.extra_label_sets)")
    clash = sorted(set(cfg.pipeline.extra_label_sets) & (set(BY_NAME) | {"baseline_finetuned"}))
    if clash:
        raise ConfigError(f"pipeline.extra_label_sets: {', '.join(clash)} is a built-in variant's name; "
                          "name your label set otherwise")
    out = ["baseline"] + [v for v in cfg.pipeline.variants if v != "baseline"]
    return list(dict.fromkeys(out + list(cfg.pipeline.extra_label_sets)))


def label_input(name: str, r: int = 1) -> str:
    """The input a variant's model learns from in round ``r``: the human labels, a label set this
    run makes, or the user's own file."""
    if name == "baseline":
        return "annotations"
    if name in BY_NAME:
        return f"{round_dir(r)}labels/{BY_NAME[name].label_file}"
    return f"label:{name}"


def model_dir(name: str, finetune: bool) -> str:
    """The run folder of variant ``name``'s model (the baseline's retrain is its fine-tune)."""
    return "models/baseline_finetuned" if name == "baseline" and finetune else f"models/{name}"


def teacher(r: int) -> str:
    """The checkpoint whose TTA predictions make round ``r``'s label sets: the baseline in round 1,
    the previous round's MM + LP model after it."""
    return "models/baseline/best.pt" if r == 1 else f"{round_dir(r - 1)}models/mm_lp/best.pt"


def build_stages(cfg: Config, paths: DataPaths) -> list[Stage]:
    """Every stage of a run, in order: data, baseline, then per round the teacher's TTA
    predictions, the label sets, the retrains and their evaluations; the report last."""
    finetune = cfg.pipeline.retrain_from == "baseline"
    names = variants(cfg)
    stages: list[Stage] = []
    if paths.synthetic:
        stages.append(Stage("synth", synth_body, config=("pipeline.synth_series", "pipeline.synth_seed",
                                                         "pipeline.synth_args"), outputs=("data/DL_info.csv",)))
    base = "models/baseline/best.pt"
    stages.append(Stage("train_baseline", train_body, config=TRAIN_CONFIG, inputs=("dataset", "annotations"),
                        outputs=(base,), workdir="models/baseline", ranks="all",
                        params={"labels": "annotations", "run": "models/baseline", "init": None, "retrain": False}))
    needs_sets = any(v in BY_NAME and BY_NAME[v].label_file for v in names)
    rounds = cfg.pipeline.rounds if needs_sets else 1
    checkpoints = {(1, "baseline"): base}
    for r in range(1, rounds + 1):
        d, suffix = round_dir(r), "" if r == 1 else f"_r{r}"
        if needs_sets:
            stages.append(Stage(f"predict_train{suffix}", predict_train_body, config=LABEL_PREDICT_CONFIG,
                                inputs=("dataset", "annotations", teacher(r)), outputs=(f"{d}preds/train_tta.csv",),
                                ranks="all", params={"teacher": teacher(r), "out": f"{d}preds/train_tta.csv"}))
            stages.append(Stage(f"labels{suffix}", labels_body, config=("labels",),
                                inputs=("annotations", f"{d}preds/train_tta.csv"),
                                outputs=tuple(f"{d}labels/{v.label_file}" for v in LABEL_SETS),
                                params={"preds": f"{d}preds/train_tta.csv", "out": f"{d}labels"}))
        # round 1 trains every variant; later rounds the label sets the new teacher remakes
        trained = names if r == 1 else [v for v in names if v in BY_NAME and BY_NAME[v].label_file]
        for v in trained:
            if v == "baseline" and not finetune:
                continue    # from scratch, the baseline's retrain on the human labels is the baseline itself
            # fine-tuning: the baseline row is the baseline fine-tuned on the human labels alone, for as
            # many iterations as the other variants, so that extra training is not credited to pseudo-labels
            run = d + model_dir(v, finetune)
            stages.append(Stage(f"train_{Path(run).name}{suffix}", train_body, config=RETRAIN_CONFIG,
                                inputs=("dataset", label_input(v, r)) + ((base,) if finetune else ()),
                                outputs=(f"{run}/best.pt",), workdir=run, ranks="all", group=f"retrain{suffix}",
                                params={"labels": label_input(v, r), "run": run, "init": base if finetune else None,
                                        "retrain": True}))
            checkpoints[(r, v)] = f"{run}/best.pt"
        for v in (names if r == 1 else trained):
            stages.append(Stage(f"eval_{v}{suffix}", eval_body, config=("pipeline.eval_3d_slices", "predict.amp"),
                                inputs=("dataset", "annotations", "truth", checkpoints[(r, v)]),
                                outputs=(f"{d}eval/{v}.json", f"{d}preds/test_{v}.csv"), ranks="all",
                                params={"variant": v, "checkpoint": checkpoints[(r, v)],
                                        "json": f"{d}eval/{v}.json", "preds": f"{d}preds/test_{v}.csv"}))

    label_files = {v: label_input(v) for v in names if v != "baseline"}
    later = [f"{round_dir(r)}{kind}" for r in range(2, rounds + 1) for kind in
             ["preds/train_tta.csv", *(f"labels/{v.label_file}" for v in LABEL_SETS),
              *(f"eval/{v}.json" for v in names if v in BY_NAME and BY_NAME[v].label_file),
              *(f"preds/test_{v}.csv" for v in names if v in BY_NAME and BY_NAME[v].label_file)]]
    stages.append(Stage("report", report_body, config=REPORT_CONFIG,
                        inputs=("dataset", "annotations", "truth", *(f"eval/{v}.json" for v in names),
                                *(f"preds/test_{v}.csv" for v in names), *label_files.values(),
                                *(("preds/train_tta.csv",) if needs_sets else ()), *later),
                        outputs=("report/table.json", "report/table.md"),
                        params={"variants": names, "label_files": label_files, "rounds": rounds},
                        constants=(BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL, list(FPS))))
    return stages


# ---------------------------------------------------------------------- stage bodies
def synth_body(ctx: StageContext) -> dict[str, Any]:

    root = ctx.run_dir / "data"
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    p = ctx.cfg.pipeline
    summary = generate_dataset(partial, series=p.synth_series, seed=p.synth_seed, **dict(p.synth_args))
    if root.exists():
        shutil.rmtree(root)
    os.replace(partial, root)
    return {"summary": str(summary)}


def train_body(ctx: StageContext) -> dict[str, Any]:
    """Train one model; continue it when the runner says an earlier start of the same inputs was cut."""

    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    cfg = retrain_config(ctx.cfg) if ctx.params["retrain"] else ctx.cfg
    run = ctx.run_dir / ctx.params["run"]
    resume = ctx.resume and (run / "last.pt").is_file()
    if resume and (run / "best.pt").is_file() and \
            load_checkpoint(run / "last.pt")["iteration"] >= cfg.train.iterations:
        return {"best_checkpoint": str(run / "best.pt"), "resumed": True}    # finished before a kill
    run.mkdir(parents=True, exist_ok=True)
    init = ctx.params["init"]
    kwargs = {"init_checkpoint": ctx.run_dir / init} if init else {}
    result = training.train(cfg, ctx.path("root"), ctx.path(ctx.params["labels"]), run, resume=resume,
                   progress=ctx.progress, device=ctx.device, **kwargs)
    return {"best_checkpoint": str(result.best_checkpoint), "resumed": resume}


def predict_train_body(ctx: StageContext) -> dict[str, Any]:

    p = inference.predict(ctx.run_dir / ctx.params["teacher"], ctx.path("root"), ctx.path("annotations"),
                slices="both", split="train", tta=ctx.cfg.pipeline.label_tta,
                out_csv=ctx.run_dir / ctx.params["out"], run_cfg=ctx.cfg)
    return {} if p is None else {"predictions": len(p.scores)}        # None: not rank 0


def labels_body(ctx: StageContext) -> dict[str, Any]:

    rows = read_annotations(ctx.path("annotations"))
    sets = label_sets(rows, read_predictions(ctx.run_dir / ctx.params["preds"]), ctx.cfg.labels, split="train")
    write_label_sets(ctx.run_dir / ctx.params["out"], rows, sets)
    return {f"new_rows_{k}": len(v) for k, v in sets.items()}


def eval_body(ctx: StageContext) -> dict[str, Any]:
    """Predict on the test key slices (and, with ``pipeline.eval_3d_slices = n``, on K - n ... K + n
    of each) once, on every rank; rank 0 evaluates: the key-slice evaluation reads the key slices,
    the 3D ``lens`` one all of them."""

    n3d = ctx.cfg.pipeline.eval_3d_slices
    annotations, truth = ctx.path("annotations"), ctx.sources.get("truth")
    truth = Path(truth) if truth is not None and Path(truth).is_file() else None
    preds = inference.predict(ctx.run_dir / ctx.params["checkpoint"], ctx.path("root"), annotations,
                    slices="range" if n3d else "key", split="test", tta="none",
                    out_csv=ctx.run_dir / ctx.params["preds"], window=n3d or None, run_cfg=ctx.cfg)
    if not distributed.setup().main:
        return {}
    rows = read_annotations(annotations)
    res = {"official": evaluate(rows, preds, split="test", fps=FPS)}
    if truth is not None:
        res["truth"] = evaluate(rows, preds, split="test", fps=FPS, truth=read_annotations(truth))
    out: dict[str, Any] = {k: r.to_dict(curve=True) for k, r in res.items()}
    if truth is not None and n3d:
        out["lens"] = _lens_dict(rows, preds, truth, n3d)
    with atomic_write(ctx.run_dir / ctx.params["json"]) as fh:
        json.dump(out, fh, indent=2)
    return {k: r["sensitivity"] for k, r in out.items()}


def read_eval(path: Path) -> dict[str, Any]:
    """``eval/<variant>.json`` -> ``{"official": FrocResult[, "truth": FrocResult][, "lens": dict]}``."""
    return {k: v if k == "lens" else FrocResult.from_dict(v) for k, v in json.loads(path.read_text()).items()}


def _lens_dict(rows: Annotations, preds: Any, truth: Path, window: int) -> dict[str, Any]:
    """``lens`` against truth.csv on the test key slices' sub-volumes K +/- window (overlapping
    ones merged), the predictions linked across slices with ``link``'s defaults."""

    labels = read_complete_labels(truth, "truth-csv", split="test", units=units_from_key_slices(rows, "test", window))
    ids = link_boxes(preds.series_index, preds.slices, preds.boxes, preds.scores)
    dets = detections_from_boxes(labels, preds.series_names[preds.series_index], preds.slices, preds.boxes,
                                 preds.scores, ids)
    r = evaluate_lens(labels, dets)
    ci = bootstrap_protocol(r)          # 95%, 1,000 resamples of the test patients, seed 0
    return {**r.to_dict(breakdown=True), **ci.to_dict(), "window": int(window),
            "predicted_lesions": int(len(dets.scores)),
            "fp_curve": [float(x) for x in r.fp_curve], "sens_curve": [float(x) for x in r.sens_curve]}


@dataclass
class PipelineResult:
    run_dir: Path
    official: dict[str, FrocResult]            # variant -> result on the key-slice labels
    truth: dict[str, FrocResult]               # variant -> result on complete truth
    lens: dict[str, Any]                       # variant -> 3D complete-label evaluation
    report_dir: Path | None = None


def collect_results(run_dir: Path, names: list[str]) -> PipelineResult:
    """Every variant's ``eval/<variant>.json`` of a run."""
    result = PipelineResult(Path(run_dir), {}, {}, {})
    for v in names:
        res = read_eval(Path(run_dir) / "eval" / f"{v}.json")
        result.official[v] = res["official"]
        if "truth" in res:
            result.truth[v] = res["truth"]
        if "lens" in res:
            result.lens[v] = res["lens"]
    return result


def report_body(ctx: StageContext) -> dict[str, Any]:

    names = ctx.params["variants"]
    result = collect_results(ctx.run_dir, names)
    truth = ctx.sources.get("truth")
    label_files = {v: ctx.path(f) for v, f in ctx.params["label_files"].items()}
    train_preds = ctx.run_dir / "preds" / "train_tta.csv"
    info = write_report(result, ctx.run_dir / "report", root=ctx.path("root"), annotations=ctx.path("annotations"),
                        truth=Path(truth) if truth else None, label_files=label_files, fps=FPS,
                        pred_files={v: ctx.run_dir / "preds" / f"test_{v}.csv" for v in names},
                        setup=describe_setup(ctx.cfg), train_preds=train_preds if train_preds.is_file() else None)
    if ctx.params["rounds"] > 1:
        write_rounds(ctx.run_dir, ctx.run_dir / "report", ctx.params["rounds"], names, ctx.path("annotations"),
                     Path(truth) if truth else None, FPS)
    return info
