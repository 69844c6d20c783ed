"""Algorithm 1: slice-level label propagation.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`); IoU is continuous.

Reference boxes are the rows of the split whose Source is ``human`` or ``mined``,
grouped by key slice K (File_name).  For each offset o the adjacent slice
S = K + o of the same series is visited unless S is itself a key slice with
reference boxes.  A prediction p on S is propagated when IoU(p, g) > ``iou`` for a
reference box g of K.  ``keep="best"``: for each (K, g, o) only the highest
scoring such p (ties: first in the predictions file); ``keep="all"``: every such p.

A prediction selected more than once is written once.  Output order, and which
(K, g) a prediction is attributed to when selected several times: key slices in
order of first appearance in the annotations, then offsets in the given order,
then prediction file order, then reference rows in file order; the first
selection wins.  The new row copies the reference row g (patient ... split) and
its ``Coarse_lesion_type``; its score is the prediction's.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from lesionprop.annotations import Annotations, Lesion, Source, as_annotations
from lesionprop.boxes import overlap_iou
from lesionprop.errors import InputError
from lesionprop.labels.checks import check_iou, check_offsets
from lesionprop.predictions import Predictions
from lesionprop.segments import first_per_group, segment_pairs
from lesionprop.slice_index import KeySlices, PredIndex, Vocab, key_slices, slice_keys

REFERENCE_SOURCES = (Source.HUMAN, Source.MINED)


def propagate_arrays(ks: KeySlices, index: PredIndex, *, iou: float, offsets: Sequence[int],
                     keep: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised core.  Returns ``(pred_rows, ref_pos)``: prediction rows (file order
    indices) to propagate and, for each, the position in ``ks.rows`` of the reference
    box it is attributed to; in output order, each prediction once."""
    if keep not in ("best", "all"):
        raise InputError(f"keep must be 'best' or 'all', got {keep!r}")
    ref_key = np.repeat(np.arange(ks.keys.size, dtype=np.int64), ks.count)
    key_set = np.sort(ks.keys)
    parts: list[tuple[np.ndarray, ...]] = []
    for o_pos, o in enumerate(offsets):
        s_keys = slice_keys(ks.codes, ks.slices + o)
        start, count = index.find(s_keys)
        is_key = np.isin(s_keys, key_set)
        count = np.where(is_key, 0, count)
        # one group per reference row: its box against every prediction on S
        for _, ia, ib in segment_pairs(np.arange(ref_key.size), np.ones(ref_key.size, np.int64),
                                       start[ref_key], count[ref_key]):
            rows = index.file_rows(ib)
            k, v = overlap_iou(ks.cols, ia, index.file_cols, rows)
            hit = k[v > iou]
            ia, rows = ia[hit], rows[hit]
            parts.append((ref_key[ia], np.full(ia.size, o_pos, np.int64), ia, rows, index.file_scores[rows]))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key, opos, ref, row, score = (np.concatenate(x) for x in zip(*parts))
    if keep == "best":
        order = np.lexsort((row, -score, opos, ref))
        pick = order[first_per_group((ref * len(offsets) + opos)[order])]
        key, opos, ref, row = key[pick], opos[pick], ref[pick], row[pick]
    order = np.lexsort((ref, row, opos, key))
    row, ref = row[order], ref[order]
    _, first = np.unique(row, return_index=True)
    first.sort()
    return row[first], ref[first]


def propagate(ann: Annotations | Iterable[Lesion], predictions: Predictions, *, iou: float = 0.5,
              offsets: Sequence[int] = (-1, 1), keep: str = "best", split: str = "train") -> Annotations:
    """Algorithm 1 on ``ann`` and ``predictions``: the NEW rows (Source ``propagated``)."""
    iou = check_iou(iou)
    offsets = check_offsets(offsets)
    ref = as_annotations(ann).select(split, sources=REFERENCE_SOURCES, drop_noisy=False)
    ks = key_slices(ref, Vocab(predictions.series_names))
    rows, pos = propagate_arrays(ks, PredIndex.of(predictions), iou=iou, offsets=offsets, keep=keep)
    g = ks.rows[pos]
    return ref.derive(g, slices=predictions.slices[rows], boxes=predictions.boxes[rows], source=Source.PROPAGATED,
                      scores=predictions.scores[rows], lesion_type=ref.lesion_type[g])
