"""What the pipeline checks before it trains: settings that cannot work and data that cannot
give a result are refused at the start, not after hours of training.

:func:`check_settings` needs the config only; :func:`check_data` reads the annotation file once
(after a synthetic dataset is made) and stats each key slice's PNG.  Both raise
:class:`~lesionprop.errors.ConfigError` / :class:`~lesionprop.errors.InputError` naming the key,
file or value; :func:`check_data` returns warnings for what still works but may surprise.
"""

from __future__ import annotations

import math
from pathlib import Path

from lesionprop.annotations import Source, Split, read_annotations
from lesionprop.config import Config
from lesionprop.data.layout import parse_file_name, slice_path
from lesionprop.engine.tta import TTA_MODES
from lesionprop.errors import ConfigError, InputError, MissingInputError
from lesionprop.model.pretrain import SHIPPED, SHIPPED_DETECTORS, resolve
from lesionprop.pipeline.plan import DataPaths, retrain_config, variants


def check_settings(cfg: Config, world: int = 1) -> None:
    """Refuse settings no stage could use (each error names the config key and its value)."""
    retrain_config(cfg)
    variants(cfg)
    lab, pred, p = cfg.labels, cfg.predict, cfg.pipeline
    if not 0.0 <= lab.iou < 1.0:
        raise ConfigError(f"labels.iou must be in [0, 1), got {lab.iou}")
    for key in ("score", "distill_score"):
        value = getattr(lab, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"labels.{key} must be in [0, 1], got {value}")
    if not lab.offsets or 0 in lab.offsets or len(set(lab.offsets)) != len(lab.offsets):
        raise ConfigError(f"labels.offsets must be distinct non-zero integers, got {list(lab.offsets)}")
    if lab.keep not in ("best", "all"):
        raise ConfigError(f"labels.keep must be best or all, got {lab.keep!r}")
    if p.label_tta not in TTA_MODES:
        raise ConfigError(f"pipeline.label_tta must be one of {', '.join(TTA_MODES)}, got {p.label_tta!r}")
    if not pred.tta_scales or any(not (math.isfinite(s) and s > 0) for s in pred.tta_scales):
        raise ConfigError(f"predict.tta_scales must be positive numbers, got {list(pred.tta_scales)}")
    if pred.merge not in ("wbf", "nms"):
        raise ConfigError(f"predict.merge must be wbf or nms, got {pred.merge!r}")
    if not 0.0 <= pred.merge_iou <= 1.0:
        raise ConfigError(f"predict.merge_iou must be in [0, 1], got {pred.merge_iou}")
    if pred.batch_size < 1:
        raise ConfigError(f"predict.batch_size must be >= 1, got {pred.batch_size}")
    t = cfg.train
    if t.iterations < 1:
        raise ConfigError(f"train.iterations must be >= 1, got {t.iterations}")
    if t.batch_size < 1 or t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} must be a positive multiple of the number of "
                          f"processes ({world})")
    if p.rounds < 1:
        raise ConfigError(f"pipeline.rounds must be >= 1, got {p.rounds}")
    if p.rounds > 1 and "mm_lp" not in p.variants:
        raise ConfigError("pipeline.rounds > 1 needs mm_lp in pipeline.variants: round r's teacher is round "
                          "r - 1's MM + LP model")
    if p.parallel_trainings < 1:
        raise ConfigError(f"pipeline.parallel_trainings must be >= 1, got {p.parallel_trainings}")
    _check_weights(cfg)
    for name, f in p.extra_label_sets.items():
        if not Path(f).is_file():
            raise MissingInputError(f"pipeline.extra_label_sets.{name}: no file {f}")


def _check_weights(cfg: Config) -> None:
    """The starting weights the config names exist (the files are read when training starts)."""

    m = cfg.model
    if m.init_backbone:
        resolve(m.init_backbone, SHIPPED, "model.init_backbone")
    if m.init_detector:
        resolve(m.init_detector, SHIPPED_DETECTORS, "model.init_detector")
    if m.pretrained:
        from lesionprop.model.backbone import pretrained_file

        pretrained_file(m.pretrained, m.backbone)


def check_data(cfg: Config, paths: DataPaths) -> list[str]:
    """Refuse data that cannot give the pipeline's result; return warnings for what still runs."""
    if not paths.annotations.is_file():
        raise MissingInputError(f"annotation file not found: {paths.annotations}")
    rows = read_annotations(paths.annotations)
    human = (Source.HUMAN,)
    train = rows.select(Split.TRAIN, sources=None, drop_noisy=False)
    if not len(train):
        raise InputError(f"{paths.annotations}: no rows with Train_Val_Test = 1: nothing to train on")
    test = rows.select(Split.TEST, sources=human, drop_noisy=True)
    if not len(test):
        raise InputError(f"{paths.annotations}: no lesions in split 'test' (Train_Val_Test = 3, Possibly_noisy = 0): "
                         "nothing to evaluate the models on" + (" (more pipeline.synth_series?)" if paths.synthetic
                                                                else ""))
    warnings = []
    if not len(rows.select(Split.VAL, sources=human, drop_noisy=True)):
        warnings.append(f"{paths.annotations}: no lesions in split 'val': each model's best.pt is its last "
                        "checkpoint, not chosen by validation")
    keys = {str(f) for f in train.file_name} | {str(f) for f in test.file_name}
    missing = sorted(k for k in keys if not slice_path(paths.root, *parse_file_name(k)).is_file())
    if missing:
        raise MissingInputError(f"{len(missing)} key slice(s) of {paths.annotations} have no PNG under "
                                f"{paths.root}, e.g. {slice_path(paths.root, *parse_file_name(missing[0]))}")
    if paths.truth is not None and paths.truth.is_file():
        read_annotations(paths.truth)
    elif paths.truth is not None and not paths.synthetic:
        raise MissingInputError(f"pipeline.truth: no file {paths.truth}")
    for name, f in cfg.pipeline.extra_label_sets.items():
        extra = read_annotations(f)
        if not len(extra.select(Split.TRAIN, sources=None, drop_noisy=False)):
            raise InputError(f"pipeline.extra_label_sets.{name}: {f} has no train rows")
    return warnings
