"""The data-distillation baseline: confident predictions on slices next to key slices.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`).

Key slices are the File_names of the split's rows whose Source is ``human`` or
``mined`` (as in :mod:`lesionprop.labels.propagate`).  For each key slice K and
offset o, S = K + o of the same series is skipped when it is itself a key slice;
otherwise every prediction on S with score > ``score`` becomes a row on S (Source
``distilled``, type -1) copying K's first row.  Each prediction is written once,
attributed to the first (K, o) in the order: key slices in order of first
appearance, offsets in the given order; rows follow that order, then file order.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from lesionprop.annotations import Annotations, Lesion, Source, as_annotations
from lesionprop.labels.checks import check_offsets, check_threshold
from lesionprop.labels.propagate import REFERENCE_SOURCES
from lesionprop.predictions import Predictions
from lesionprop.segments import expand_segments
from lesionprop.slice_index import KeySlices, PredIndex, Vocab, key_slices, slice_keys


def distill_arrays(ks: KeySlices, index: PredIndex, *, score: float, offsets: Sequence[int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised core.  Returns ``(pred_rows, key)``: prediction rows and the position of
    the key slice in ``ks`` each is attributed to, in output order, each row once."""
    hi = index.above(score)
    key_set = np.sort(ks.keys)
    keys, opos, rows = [], [], []
    for o_pos, o in enumerate(offsets):
        s_keys = slice_keys(ks.codes, ks.slices + o)
        start, count = hi.segments(*index.find(s_keys))
        count = np.where(np.isin(s_keys, key_set), 0, count)
        k, pos = expand_segments(start, count)
        keys.append(k)
        opos.append(np.full(k.size, o_pos, np.int64))
        rows.append(hi.rows[pos])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k, op, r = np.concatenate(keys), np.concatenate(opos), np.concatenate(rows)
    order = np.lexsort((r, op, k))
    k, r = k[order], r[order]
    _, first = np.unique(r, return_index=True)
    first.sort()
    return r[first], k[first]


def distill(ann: Annotations | Iterable[Lesion], predictions: Predictions, *, score: float = 0.9,
            offsets: Sequence[int] = (-1, 1), split: str = "train") -> Annotations:
    """Data distillation on ``ann`` and ``predictions``: the NEW rows (Source ``distilled``)."""
    score = check_threshold("score", score)
    offsets = check_offsets(offsets)
    ref = as_annotations(ann).select(split, sources=REFERENCE_SOURCES, drop_noisy=False)
    ks = key_slices(ref, Vocab(predictions.series_names))
    rows, key = distill_arrays(ks, PredIndex.of(predictions), score=score, offsets=offsets)
    return ref.derive(ks.first_row[key], slices=predictions.slices[rows], boxes=predictions.boxes[rows],
                      source=Source.DISTILLED, scores=predictions.scores[rows])
