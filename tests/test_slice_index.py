"""Boxes grouped by (series, slice): the predictions' index and the key slices placed on it."""

import numpy as np
import pytest

from helpers import S1, S2, make_lesion, name
from lesionprop.annotations import Annotations
from lesionprop.predictions import Predictions
from lesionprop.slice_index import PredIndex, Vocab, key_slices, slice_keys


@pytest.mark.parametrize("seed", range(4))
def test_pred_index_orders_runs_like_a_stable_sort(seed):
    """PredIndex builds the (slice, file order) order from runs of equal slices; a slice may
    come back in several runs (as K+1 of one key slice and K-1 of the next)."""
    rng = np.random.default_rng(seed)
    slices = np.repeat(rng.integers(1, 12 if seed else 2, 40), rng.integers(1, 5, 40))
    if seed == 3:
        slices = np.sort(slices)                                  # grouped already: no reordering
    names = [f"00000{1 + s % 2 * (seed != 3)}_01_01_{s:03d}.png" for s in slices.tolist()]
    xy = rng.uniform(0, 100, (slices.size, 2))
    p = Predictions.from_arrays(names, np.concatenate([xy, xy + 5], 1), rng.random(slices.size))
    index = PredIndex(p)
    keys = slice_keys(p.series_index, p.slices)
    order = np.argsort(keys, kind="stable")
    assert index.rows.tolist() == order.tolist() and index.identity == bool(np.all(np.diff(keys) >= 0))
    assert index.identity or seed != 3
    assert index.ukeys.tolist() == sorted(set(keys.tolist()))
    assert index.counts.tolist() == [int((keys == k).sum()) for k in index.ukeys.tolist()]
    assert np.array_equal(keys[order][index.starts], index.ukeys)
    sub = index.above(0.5)
    assert sub.rows.tolist() == [r for r in order.tolist() if p.scores[r] > 0.5]
    assert np.array_equal(sub.boxes, p.boxes[sub.rows]) and np.array_equal(sub.scores, p.scores[sub.rows])


def test_key_slices_are_the_annotations_groups_with_their_keys():
    les = [make_lesion(name(S2, 5), (0, 0, 4, 4)), make_lesion(name(S1, 7), (1, 1, 5, 5)),
           make_lesion(name(S2, 5), (2, 2, 6, 6))]
    ann = Annotations.from_lesions(les)
    ks = key_slices(ann, Vocab([S1]))             # S2 has no prediction: a code past the predicted ones
    g = ann.by_key_slice()
    assert len(ks) == len(g) == 2
    for field in ("rows", "start", "count", "file_names", "series", "slices", "first_row"):
        assert np.array_equal(getattr(ks, field), getattr(g, field)), field
    assert ks.codes.tolist() == [1, 0]
    assert ks.keys.tolist() == slice_keys([1, 0], [5, 7]).tolist()
    assert np.array_equal(ks.boxes, ann.boxes[g.rows]) and np.array_equal(ks.cols.boxes(), ks.boxes)
