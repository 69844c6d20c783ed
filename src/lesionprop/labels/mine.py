"""Algorithm 2: missing ground-truth mining.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`); IoU is continuous.

For each key slice K of the split with reference boxes G (its ``human`` rows), with
B, B+ and B- the predictions on K, K+1 and K-1 (empty when absent):

1. every b in B with score > ``score`` and IoU(b, c) > ``iou`` for some c in B+ or B-;
2. candidate pairs (p in B+, q in B-) with both scores > ``score``, IoU(p, q) > ``iou``
   and IoU(p, b) == 0 for every b in B, matched one-to-one greedily by IoU(p, q)
   descending (ties: p then q in file order); each matched pair gives the
   coordinate-wise mean box with the mean score;
3. every box of 1 and 2 with IoU > 0 against a box of G is dropped.

Survivors are new rows on K (Source ``mined``, type -1) copying K's first human
row.  Output order: key slices in order of first appearance, then the boxes of
step 1 in file order, then those of step 2 in matching order.

The greedy matching is vectorised as rounds of *locally dominant* pairs (the best
remaining pair of both its p and its q); with a strict order on pairs this gives
exactly the sequential greedy matching.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from lesionprop.annotations import Annotations, Lesion, Source, as_annotations
from lesionprop.boxes import BoxCols, overlap_iou
from lesionprop.labels.checks import check_iou, check_threshold
from lesionprop.predictions import Predictions
from lesionprop.segments import expand_segments, segment_pairs
from lesionprop.slice_index import KeySlices, PredIndex, Vocab, key_slices, slice_keys


def greedy_match(group: np.ndarray, p: np.ndarray, q: np.ndarray, iou: np.ndarray,
                 p_row: np.ndarray, q_row: np.ndarray) -> np.ndarray:
    """One-to-one greedy matching inside each group: pairs by ``iou`` descending, ties by
    ``p_row`` then ``q_row``.  ``p``/``q`` are node ids (a node in two groups is two
    nodes).  Returns indices of the accepted pairs, sorted by group then acceptance order."""
    order = np.lexsort((q_row, p_row, -iou, group))
    pn = np.stack([group[order], p[order]], 1)
    qn = np.stack([group[order], q[order]], 1)
    _, pn = np.unique(pn, axis=0, return_inverse=True)
    _, qn = np.unique(qn, axis=0, return_inverse=True)
    pn, qn = pn.reshape(-1), qn.reshape(-1)
    alive = np.ones(order.size, dtype=bool)
    accepted = np.zeros(order.size, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)  # in rank order
        best = np.zeros(idx.size, dtype=bool)
        _, fp = np.unique(pn[idx], return_index=True)
        _, fq = np.unique(qn[idx], return_index=True)
        best[fp] = True
        dom = np.zeros(idx.size, dtype=bool)
        dom[fq] = True
        acc = idx[best & dom]
        accepted[acc] = True
        used_p = np.zeros(pn.max() + 1, dtype=bool)
        used_q = np.zeros(qn.max() + 1, dtype=bool)
        used_p[pn[acc]] = True
        used_q[qn[acc]] = True
        alive &= ~(used_p[pn] | used_q[qn])
    return order[np.flatnonzero(accepted)]


def mine_arrays(ks: KeySlices, index: PredIndex, *, score: float, iou: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised core.  Returns ``(key, boxes, scores)``: for each mined box, the position
    of its key slice in ``ks``, the box and its score, in output order."""
    b_start, b_count = index.find(ks.keys)
    p_start, p_count = index.find(slice_keys(ks.codes, ks.slices + 1))
    q_start, q_count = index.find(slice_keys(ks.codes, ks.slices - 1))
    hi = index.above(score)

    # step 1: confident boxes on K that overlap a box on K+1 or K-1
    hb_start, hb_count = hi.segments(b_start, b_count)
    step1 = np.zeros(hi.sel.size, dtype=bool)
    for start, count in ((p_start, p_count), (q_start, q_count)):
        for _, ia, ib in segment_pairs(hb_start, hb_count, start, count):
            k, v = overlap_iou(hi.cols, ia, index.file_cols, index.file_rows(ib))
            step1[ia[k[v > iou]]] = True
    k1, pos1 = expand_segments(hb_start, hb_count)
    keep1 = step1[pos1]
    k1, pos1 = k1[keep1], pos1[keep1]
    box1, score1 = hi.boxes[pos1], hi.scores[pos1]

    # step 2: confident pairs across K+1 / K-1 with nothing on K overlapping p
    hp_start, hp_count = hi.segments(p_start, p_count)
    hq_start, hq_count = hi.segments(q_start, q_count)
    parts = []
    for g, ip, iq in segment_pairs(hp_start, hp_count, hq_start, hq_count):
        k, v = overlap_iou(hi.cols, ip, hi.cols, iq)
        m = v > iou
        k = k[m]
        parts.append((g[k], ip[k], iq[k], v[m]))
    if parts:
        g2, ip2, iq2, v2 = (np.concatenate(x) for x in zip(*parts))
    else:
        g2 = ip2 = iq2 = np.zeros(0, np.int64)
        v2 = np.zeros(0)
    if g2.size:
        gp, inv = np.unique(g2 * (hi.sel.size + 1) + ip2, return_inverse=True)
        gp_g, gp_p = gp // (hi.sel.size + 1), gp % (hi.sel.size + 1)
        touches = np.zeros(gp.size, dtype=bool)
        for j, ia, ib in segment_pairs(gp_p, np.ones(gp.size, np.int64), b_start[gp_g], b_count[gp_g]):
            touches[j[overlap_iou(hi.cols, ia, index.file_cols, index.file_rows(ib))[0]]] = True
        ok = ~touches[inv.reshape(-1)]
        g2, ip2, iq2, v2 = g2[ok], ip2[ok], iq2[ok], v2[ok]
    acc = greedy_match(g2, ip2, iq2, v2, hi.rows[ip2], hi.rows[iq2]) if g2.size else np.zeros(0, np.int64)
    k2 = g2[acc]
    box2 = (hi.boxes[ip2[acc]] + hi.boxes[iq2[acc]]) / 2
    score2 = (hi.scores[ip2[acc]] + hi.scores[iq2[acc]]) / 2

    # step 3: drop what overlaps the reference boxes G of K
    key = np.concatenate([k1, k2]).astype(np.int64)
    boxes = np.concatenate([box1, box2]).reshape(-1, 4)
    scores = np.concatenate([score1, score2])
    step = np.concatenate([np.zeros(k1.size, np.int64), np.ones(k2.size, np.int64)])
    within = np.arange(key.size, dtype=np.int64)
    hit_g = np.zeros(key.size, dtype=bool)
    new_cols = BoxCols(boxes)
    for j, ia, ib in segment_pairs(within, np.ones(key.size, np.int64), ks.start[key], ks.count[key]):
        hit_g[j[overlap_iou(new_cols, ia, ks.cols, ib)[0]]] = True
    order = np.lexsort((within, step, key))
    order = order[~hit_g[order]]
    return key[order], boxes[order], scores[order]


def mine(ann: Annotations | Iterable[Lesion], predictions: Predictions, *, score: float = 0.9, iou: float = 0.5,
         split: str = "train") -> Annotations:
    """Algorithm 2 on ``ann`` and ``predictions``: the NEW rows (Source ``mined``)."""
    score = check_threshold("score", score)
    iou = check_iou(iou)
    ref = as_annotations(ann).select(split, sources=(Source.HUMAN,), drop_noisy=False)
    ks = key_slices(ref, Vocab(predictions.series_names))
    key, boxes, scores = mine_arrays(ks, PredIndex.of(predictions), score=score, iou=iou)
    return ref.derive(ks.first_row[key], slices=ks.slices[key], boxes=boxes, source=Source.MINED, scores=scores)
