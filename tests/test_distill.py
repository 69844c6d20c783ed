"""Data-distillation baseline: hand-worked rules and a property test against the loop."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import FAST, S1, S2, as_rows, loops, make_lesion, name, preds, rows_of, worlds
from lesionprop.labels.distill import distill as distill_table

distill = rows_of(distill_table)


@FAST
@given(worlds(), st.sampled_from([0.5, 0.9]), st.sampled_from([(-1, 1), (2, -1)]), st.sampled_from(["train", "all"]))
def test_distill_matches_loop(world, score, offsets, split):
    lesions, p = world
    assert as_rows(distill_table(lesions, p, score=score, offsets=offsets, split=split)) == \
        as_rows(loops.distill_loop(lesions, p, score_thr=score, offsets=offsets, split=split))


G = (0.0, 0.0, 10.0, 10.0)


def test_distill_rules():
    les = [make_lesion(name(S1, 10), G), make_lesion(name(S1, 12), G), make_lesion(name(S1, 10), G),
           make_lesion(name(S2, 3), G, split=3)]
    p = preds((S1, 11, (5, 5, 8, 8), 0.95),     # between two key slices: written once
              (S1, 11, (50, 50, 60, 60), 0.9),  # score not > 0.9
              (S1, 9, (1, 1, 2, 2), 0.91),
              (S1, 10, (1, 1, 2, 2), 0.99),     # on a key slice: never
              (S1, 13, (7, 7, 9, 9), 1.0),
              (S2, 4, G, 0.99))                 # test split
    out = distill(les, p)
    assert [(r.file_name, r.box, r.score) for r in out] == [
        (name(S1, 9), (1, 1, 2, 2), 0.91), (name(S1, 11), (5, 5, 8, 8), 0.95), (name(S1, 13), (7, 7, 9, 9), 1.0)]
    assert all(r.source == "distilled" and r.lesion_type == -1 and r.noisy == 0 for r in out)
    assert [r.key_slice for r in out] == [9, 11, 13]
    assert len(distill(les, p, offsets=(1,))) == 2
    assert len(distill(les, p, split="all")) == 4
    with pytest.raises(ValueError, match="score"):
        distill(les, p, score=float("nan"))
