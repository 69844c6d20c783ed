"""All pseudo-label sets of the paper's comparison from one read of the predictions.

The pipeline's label stage and ``lesionprop label-sets`` both call :func:`label_sets`;
each set is the NEW rows only (the human rows are written in front of them by
:func:`write_label_sets`):

* ``mm``: Algorithm 2 (missing ground-truth mining) on the key slices;
* ``lp``: Algorithm 1 (slice-level propagation) of the human boxes;
* ``mm_lp``: the mined rows, then Algorithm 1 of the human and mined boxes together;
* ``dd``: the data-distillation baseline.
"""

from __future__ import annotations

import os
from pathlib import Path

from lesionprop.annotations import Annotations, concat, write_with_new_rows
from lesionprop.config import LabelConfig
from lesionprop.labels.distill import distill
from lesionprop.labels.mine import mine
from lesionprop.labels.propagate import propagate
from lesionprop.predictions import Predictions
from lesionprop.variants import LABEL_SETS

#: label set -> its file name (the pipeline's ``labels/`` folder and ``label-sets --out-dir``)
LABEL_FILES: dict[str, str] = {v.name: str(v.label_file) for v in LABEL_SETS}


def label_sets(rows: Annotations, preds: Predictions, cfg: LabelConfig, split: str = "train"
               ) -> dict[str, Annotations]:
    """The new rows of every set in :data:`LABEL_FILES`, from the rows of ``split`` and ``preds``."""
    mined = mine(rows, preds, score=cfg.score, iou=cfg.iou, split=split)
    lp = propagate(rows, preds, iou=cfg.iou, offsets=cfg.offsets, keep=cfg.keep, split=split)
    mm_lp = propagate(concat([rows, mined]), preds, iou=cfg.iou, offsets=cfg.offsets, keep=cfg.keep, split=split)
    dd = distill(rows, preds, score=cfg.distill_score, offsets=cfg.offsets, split=split)
    sets = {"mm": mined, "lp": lp, "mm_lp": concat([mined, mm_lp]), "dd": dd}
    assert set(sets) == set(LABEL_FILES), "labels.sets and lesionprop.variants name different label sets"
    return sets


def write_label_sets(out_dir: str | os.PathLike, rows: Annotations, sets: dict[str, Annotations]
                     ) -> dict[str, Path]:
    """Write ``OUT_DIR/labels_<set>.csv`` (every input row unchanged, then the set's rows, with
    Source and Score), each atomically; returns set -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / LABEL_FILES[name] for name in sets}
    write_with_new_rows(rows, {paths[name]: new for name, new in sets.items()})
    return paths
