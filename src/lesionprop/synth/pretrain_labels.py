"""Annotations for pre-training a detector on a synthetic dataset with its COMPLETE labels.

A synthetic dataset has the official, partial labels in ``DL_info.csv`` (one row per labeled
lesion, on its key slice; ~30 % of lesions have no row) and the complete truth in
``truth.csv`` (every lesion on every slice it touches, with its ``Lesion_id``).
:func:`pretrain_labels` writes one file with

* the train split from ``truth.csv``: all lesions boxed, so no unlabeled lesion is taught
  as background; every slice of every lesion, or (``max_slices_per_lesion=N``) each
  lesion's N slices nearest its largest cross-section, with every truth row on a chosen
  slice kept, so the chosen slices stay completely labeled;
* the val and test splits from ``DL_info.csv`` unchanged (the usual official key-slice
  validation).

Why balance by lesion: a lesion spans about as many slices as its diameter in slice
intervals, so with every slice a 40 mm lesion gives ~20x the training images of a 5 mm one
(in the seed-2000 set the lesions under 10 mm were 19 % of the train lesions and 5.5 % of
the train slices).  Only for synthetic data of seeds that no evaluation uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lesionprop.annotations import Annotations, Split, concat, read_annotations, write_annotations
from lesionprop.errors import InputError


def slices_nearest_key(lesion_ids: np.ndarray, slices: np.ndarray, long_diameter: np.ndarray,
                       n: int) -> np.ndarray:
    """Row mask: per lesion, its ``n`` rows whose slice is nearest to the slice of its longest
    diameter (ties: the lower slice first). One row per (lesion, slice) expected."""
    if n < 1:
        raise InputError(f"slices per lesion must be >= 1, got {n}")
    keep = np.zeros(len(lesion_ids), dtype=bool)
    if keep.size == 0:
        return keep
    order = np.argsort(lesion_ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, lesion_ids[order][1:] != lesion_ids[order][:-1]])
    for rows in np.split(order, starts[1:]):
        key = slices[rows[np.argmax(long_diameter[rows])]]
        nearest = np.lexsort((slices[rows], np.abs(slices[rows] - key)))
        keep[rows[nearest[:n]]] = True
    return keep


def balanced_by_lesion(train: Annotations, n: int) -> Annotations:
    """The rows of ``train`` (complete truth with a ``Lesion_id`` column) on the slices that
    :func:`slices_nearest_key` chooses: every lesion's row on a chosen slice is kept."""
    lesion_ids = np.asarray(train.extra("Lesion_id"), dtype=np.int64)
    chosen = slices_nearest_key(lesion_ids, train.slice_index, train.diameters_px[:, 0], n)
    return train.take(np.isin(train.file_name, np.unique(train.file_name[chosen])))


def pretrain_labels(dl_info: Path, truth: Path, out: Path,
                    max_slices_per_lesion: int | None = None) -> tuple[int, int]:
    """Write the train rows of ``truth`` (all, or balanced by lesion) then the val / test rows of
    ``dl_info`` to ``out``, a new file written atomically (``Lesion_id`` is dropped); returns
    the two row counts."""
    if out.exists():
        raise FileExistsError(f"{out} exists: choose a new file")
    official, complete = read_annotations(dl_info), read_annotations(truth)
    train = complete.take(complete.split == Split.TRAIN)
    if max_slices_per_lesion is not None:
        train = balanced_by_lesion(train, max_slices_per_lesion)
    others = official.take(official.split != Split.TRAIN)
    write_annotations(out, concat([train, others]), extra_columns=[])
    return len(train), len(others)
