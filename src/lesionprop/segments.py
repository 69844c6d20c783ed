"""Pairs and elements of segments of sorted arrays, enumerated without a Python loop per segment.

A *segment* is a run ``[start, start + count)`` of a sorted array: the boxes of one slice,
one image or one sub-volume.  The label tools (:mod:`lesionprop.labels`), the evaluation
(:mod:`lesionprop.eval`) and the complete-label readers pair the segments of two such
arrays group by group (:func:`segment_pairs`) in bounded chunks, so that one batched
operation handles each chunk.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

#: pairs per chunk in :func:`segment_pairs` (bounds the memory of a batch of IoUs)
CHUNK_PAIRS = 1 << 18


def segment_pairs(a_start: np.ndarray, a_count: np.ndarray, b_start: np.ndarray, b_count: np.ndarray,
                  chunk: int = CHUNK_PAIRS) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All pairs ``(a_start[g] + i, b_start[g] + j)`` for every group ``g``, in chunks.

    Yields ``(group, ia, ib)`` int64 arrays, pairs ordered by group then ``i`` then
    ``j``.  A chunk holds whole groups and about ``chunk`` pairs (one group larger
    than ``chunk`` makes one larger chunk).
    """
    a_start = np.asarray(a_start, dtype=np.int64)
    b_start = np.asarray(b_start, dtype=np.int64)
    a_count = np.asarray(a_count, dtype=np.int64)
    b_count = np.asarray(b_count, dtype=np.int64)
    n = a_count * b_count
    unit_a = bool(np.all(a_count <= 1))
    groups = np.flatnonzero(n > 0)
    if groups.size == 0:
        return
    n = n[groups]
    ends = np.cumsum(n)
    cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]), chunk), side="left") + 1
    bounds = np.unique(np.concatenate(([0], cuts, [groups.size])))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        g = groups[lo:hi]
        ng = n[lo:hi]
        total = int(ng.sum())
        grp = np.repeat(g, ng)
        first = np.repeat(np.cumsum(ng) - ng, ng)
        t = np.arange(total, dtype=np.int64) - first
        if unit_a:
            yield grp, a_start[grp], b_start[grp] + t
        else:
            bc = b_count[grp]
            yield grp, a_start[grp] + t // bc, b_start[grp] + t % bc


def expand_segments(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(group, position)`` of every element of every segment, in group order."""
    start = np.asarray(start, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    grp = np.repeat(np.arange(count.size, dtype=np.int64), count)
    first = np.repeat(np.cumsum(count) - count, count)
    return grp, start[grp] + np.arange(grp.size, dtype=np.int64) - first


def first_per_group(group: np.ndarray) -> np.ndarray:
    """Indices of the first element of each run of equal values in a sorted ``group``."""
    if group.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
