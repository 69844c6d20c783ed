"""Pseudo-label quality against complete truth (synthetic data).

All boxes are in the file frame (see :mod:`lesionprop.boxes`).  A pseudo-label
is *correct* when its IoU with a truth box on the same slice is >= ``iou``.

Two kinds of lesion slices can be recovered:

* **missing key-slice lesions** (what Algorithm 2 mines): truth boxes on the
  training key slices that no human box covers (IoU < ``iou`` with every human
  box of that slice);
* **unlabeled neighbour slices** (what Algorithm 1 and distillation add): truth
  boxes on the slices K - 1 and K + 1 of training key slices K, when that slice is
  not itself a key slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from lesionprop.annotations import Annotations, Lesion, Source, Split, as_annotations
from lesionprop.boxes import box_iou
from lesionprop.data.layout import parse_file_name, slice_file_name


@dataclass(frozen=True)
class LabelQuality:
    boxes: int                   # pseudo-label rows
    correct: int                 # of those, matching a truth box
    missing_targets: int         # missing key-slice lesions (truth boxes)
    missing_recovered: int
    neighbour_targets: int       # truth boxes on unlabeled K +/- 1 slices
    neighbour_recovered: int

    @property
    def precision(self) -> float:
        return self.correct / self.boxes if self.boxes else float("nan")

    def as_dict(self) -> dict[str, float]:
        d = dict(self.__dict__)
        d["precision"] = self.precision
        d["missing_recall"] = self.missing_recovered / self.missing_targets if self.missing_targets else float("nan")
        d["neighbour_recall"] = (self.neighbour_recovered / self.neighbour_targets
                                 if self.neighbour_targets else float("nan"))
        return d


def _by_slice(ann: Annotations) -> dict[str, np.ndarray]:
    """Slice name -> ``(N, 4)`` boxes of the rows on it."""
    return {name: ann.boxes[rows] for name, rows in ann.groups().items()}


def target_truth(human: Annotations, truth: Annotations, iou: float = 0.5
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Truth boxes a pseudo-labeller could recover on the training split.

    Returns ``(missing, neighbour)``: slice name -> ``(N, 4)`` truth boxes.
    """
    human_by = _by_slice(human.select(Split.TRAIN, sources=(Source.HUMAN,), drop_noisy=False))
    truth_by = _by_slice(truth.select(Split.TRAIN, sources=None, drop_noisy=False))
    none = np.zeros((0, 4))
    missing: dict[str, np.ndarray] = {}
    neighbour: dict[str, np.ndarray] = {}
    for name, hboxes in human_by.items():
        t = truth_by.get(name, none)
        if len(t):
            covered = (box_iou(t, hboxes) >= iou).any(axis=1)
            if (~covered).any():
                missing[name] = t[~covered]
        series, k = parse_file_name(name)
        for s in (k - 1, k + 1):
            nb = slice_file_name(series, s)
            if nb in human_by or nb in neighbour:
                continue
            tb = truth_by.get(nb, none)
            if len(tb):
                neighbour[nb] = tb
    return missing, neighbour


def label_quality(rows: Annotations | Iterable[Lesion], truth: Annotations | Iterable[Lesion],
                  iou: float = 0.5) -> LabelQuality:
    """Quality of the non-human rows of ``rows`` against ``truth``."""
    rows, truth = as_annotations(rows), as_annotations(truth)
    pseudo = rows.take(rows.source != Source.HUMAN.value)
    truth_by = _by_slice(truth.select(Split.TRAIN, sources=None, drop_noisy=False))
    missing, neighbour = target_truth(rows, truth, iou)
    correct = 0
    rec_missing = rec_neighbour = 0
    for name, p in _by_slice(pseudo).items():
        t = truth_by.get(name)
        if t is not None:
            correct += int((box_iou(p, t) >= iou).any(axis=1).sum())
        for targets, counter in ((missing, "m"), (neighbour, "n")):
            tb = targets.get(name)
            if tb is None:
                continue
            hit = int((box_iou(tb, p) >= iou).any(axis=1).sum())
            if counter == "m":
                rec_missing += hit
            else:
                rec_neighbour += hit
    return LabelQuality(
        boxes=len(pseudo), correct=correct,
        missing_targets=sum(len(v) for v in missing.values()), missing_recovered=rec_missing,
        neighbour_targets=sum(len(v) for v in neighbour.values()), neighbour_recovered=rec_neighbour,
    )
