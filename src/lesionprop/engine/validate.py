"""Validation during training: sensitivity at 4 FPs per image on the val split's key slices.

Predicts (no TTA) on the distinct key slices of the val split's human rows with
``Possibly_noisy == 0`` and scores them with :func:`lesionprop.eval.froc.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lesionprop.annotations import Annotations, Source, Split
from lesionprop.config import Config
from lesionprop.data.deeplesion import SeriesInfo
from lesionprop.engine import distributed
from lesionprop.engine.predict import flatten, infer
from lesionprop.eval.froc import evaluate
from lesionprop.predictions import Predictions

VAL_FPS = 4.0


class Validator:
    def __init__(self, cfg: Config, data_root: str | Path, ann: Annotations,
                 geometry: dict[str, SeriesInfo], dist: distributed.DistInfo) -> None:
        self.cfg, self.data_root, self.geometry, self.dist = cfg, data_root, geometry, dist
        self.val = ann.select(Split.VAL, sources=(Source.HUMAN,), drop_noisy=True)
        self.file_names = [str(f) for f in self.val.by_key_slice().file_names]

    @property
    def has_lesions(self) -> bool:
        return bool(self.file_names)

    def __call__(self, model: torch.nn.Module) -> float:
        """Sensitivity at 4 FPs per image of ``model`` on the val key slices; the prediction is
        sharded over the ranks, rank 0 evaluates and every rank gets its number."""

        result = infer(model, self.cfg, self.data_root, self.file_names, self.geometry,
                       tta="none", dist=self.dist, progress=False)
        sens = None
        if result is not None:
            preds = Predictions.from_arrays(*flatten(*result))
            sens = float(evaluate(self.val, preds, split="val", fps=(VAL_FPS,)).sensitivity[0])
        return float(distributed.broadcast_object(sens))
