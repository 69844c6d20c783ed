"""Algorithm 1 (label propagation): hand-worked rules and a property test against the per-box loop."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import FAST, S1, S2, as_rows, loops, make_lesion, name, preds, rows_of, worlds
from lesionprop.labels.propagate import propagate as propagate_table

propagate = rows_of(propagate_table)


@FAST
@given(worlds(), st.sampled_from(["best", "all"]), st.sampled_from([(-1, 1), (1,), (-2, -1, 1, 2)]),
       st.sampled_from([0.0, 0.3, 0.5]))
def test_propagate_matches_loop(world, keep, offsets, iou):
    lesions, p = world
    assert as_rows(propagate_table(lesions, p, iou=iou, offsets=offsets, keep=keep)) == \
        as_rows(loops.propagate_loop(lesions, p, iou_thr=iou, offsets=offsets, keep=keep))


# ------------------------------------------------------------------ hand-worked rules

G = (0.0, 0.0, 10.0, 10.0)


def test_best_and_all_and_file_order_ties():
    les = [make_lesion(name(S1, 10), G, lesion_type=4)]
    p = preds((S1, 9, (0, 0, 10, 10), 0.5), (S1, 9, (0, 0, 10, 9), 0.7), (S1, 9, (0, 0, 9, 10), 0.7),
              (S1, 11, (50, 50, 60, 60), 0.99))
    best = propagate(les, p)
    assert [(r.file_name, r.box, r.score) for r in best] == [(name(S1, 9), (0, 0, 10, 9), 0.7)]
    allr = propagate(les, p, keep="all")
    assert [r.box for r in allr] == [(0, 0, 10, 10), (0, 0, 10, 9), (0, 0, 9, 10)]
    r = best[0]
    assert r.source == "propagated" and r.key_slice == 9 and r.lesion_type == 4 and r.noisy == 0
    assert r.series == S1 and r.split == les[0].split and r.spacing == les[0].spacing


def test_iou_strictly_greater_and_touching():
    les = [make_lesion(name(S1, 10), G)]
    p = preds((S1, 11, (0, 0, 10, 5), 0.9),    # IoU exactly 0.5: not > 0.5
              (S1, 9, (10, 0, 20, 10), 0.9))   # touching: IoU 0
    assert propagate(les, p) == []
    assert propagate(les, p, iou=0.0) == [propagate(les, p, iou=0.0)[0]]
    assert [r.key_slice for r in propagate(les, p, iou=0.0)] == [11]   # touching never passes IoU > 0


def test_skip_adjacent_key_slice_and_series_edges():
    les = [make_lesion(name(S1, 10), G), make_lesion(name(S1, 11), (30, 30, 40, 40)),
           make_lesion(name(S1, 20), (0, 0, 5, 5), source="propagated"),
           make_lesion(name(S2, 0), G)]
    p = preds((S1, 11, G, 0.9),        # S = 11 is a key slice with reference boxes: skipped
              (S1, 12, (30, 30, 40, 40), 0.8),
              (S1, 21, (0, 0, 5, 5), 0.9),   # next to a propagated-only row: not a reference
              (S2, 1, G, 0.7),
              (S1, 1, G, 0.9))          # same slice number in another series: not S2's neighbour
    out = propagate(les, p)
    assert [(r.file_name, r.score) for r in out] == [(name(S1, 12), 0.8), (name(S2, 1), 0.7)]
    # S = K + o with a propagated row: S1_020 is not a key slice with reference boxes
    les2 = les + [make_lesion(name(S1, 22), (0, 0, 5, 5))]
    assert [r.file_name for r in propagate(les2, p)][-1] == name(S1, 21)


def test_several_lesions_and_prediction_selected_twice_written_once():
    les = [make_lesion(name(S1, 10), G, lesion_type=2), make_lesion(name(S1, 10), (1, 1, 10, 10), lesion_type=3),
           make_lesion(name(S1, 12), G, lesion_type=5)]
    p = preds((S1, 11, (0, 0, 10, 10), 0.6), (S1, 11, (1, 1, 10, 10), 0.8), (S1, 9, (40, 40, 50, 50), 0.9))
    out = propagate(les, p, keep="all")
    # S1_011 is next to K=10 and K=12 and matches several boxes: each prediction once, first key slice wins
    assert [(r.box, r.lesion_type) for r in out] == [((0, 0, 10, 10), 2), ((1, 1, 10, 10), 2)]
    best = propagate(les, p, keep="best")
    assert [r.box for r in best] == [(1, 1, 10, 10)]


def test_split_and_empty_inputs():
    les = [make_lesion(name(S1, 10), G, split=3)]
    p = preds((S1, 11, G, 0.9))
    assert propagate(les, p) == []
    assert len(propagate(les, p, split="test")) == 1 and len(propagate(les, p, split="all")) == 1
    assert propagate(les, preds()) == [] and propagate([], p) == []
    with pytest.raises(ValueError, match="keep"):
        propagate(les, p, keep="most")
    with pytest.raises(ValueError, match="offsets"):
        propagate(les, p, offsets=(0, 1))
    with pytest.raises(ValueError, match="iou"):
        propagate(les, p, iou=-0.1)
    with pytest.raises(ValueError, match="split"):
        propagate(les, p, split="training")
