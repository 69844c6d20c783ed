"""Algorithm 2 (missing ground-truth mining): hand-worked rules and property tests against the loop."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from helpers import FAST, S1, as_rows, loops, make_lesion, name, preds, rows_of, worlds
from lesionprop.labels.mine import greedy_match
from lesionprop.labels.mine import mine as mine_table

mine = rows_of(mine_table)


@st.composite
def mining_worlds(draw):
    """Key slices with a few boxes on K and many confident, overlapping boxes on K-1 / K+1."""
    coord = st.integers(0, 8).map(float)
    jitter = st.sampled_from([-1.0, 0.0, 1.0])
    pool = [(x, y, x + 4.0, y + 4.0) for x, y in draw(st.lists(st.tuples(coord, coord), min_size=1, max_size=4))]

    def box():
        x1, y1, x2, y2 = draw(st.sampled_from(pool))
        x1, y1 = x1 + draw(jitter), y1 + draw(jitter)
        return (x1, y1, max(x1, x2 + draw(jitter)), max(y1, y2 + draw(jitter)))

    lesions, rows = [], []
    for k in draw(st.lists(st.sampled_from([2, 4, 5, 8]), unique=True, min_size=1, max_size=3)):
        far = 40.0 + 10 * k
        for _ in range(draw(st.integers(1, 2))):
            lesions.append(make_lesion(name(S1, k), draw(st.sampled_from([box(), (far, far, far + 5, far + 5)]))))
        for o, n in ((0, draw(st.integers(0, 2))), (1, draw(st.integers(0, 5))), (-1, draw(st.integers(0, 5)))):
            for _ in range(n):
                rows.append((S1, k + o, box(), draw(st.sampled_from([0.5, 0.92, 0.95, 0.95, 1.0]))))
    rows = draw(st.permutations(rows))
    return lesions, preds(*rows)


@FAST
@given(mining_worlds(), st.sampled_from([0.0, 0.3, 0.5]))
def test_mine_matches_loop_dense(world, iou):
    lesions, p = world
    assert as_rows(mine_table(lesions, p, score=0.9, iou=iou)) == \
        as_rows(loops.mine_loop(lesions, p, score_thr=0.9, iou_thr=iou))


@FAST
@given(worlds(), st.sampled_from([0.0, 0.3, 0.5]), st.sampled_from([0.5, 0.9]))
def test_mine_matches_loop(world, iou, score):
    lesions, p = world
    assert as_rows(mine_table(lesions, p, score=score, iou=iou)) == \
        as_rows(loops.mine_loop(lesions, p, score_thr=score, iou_thr=iou))


@FAST
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 4), st.sampled_from([0.6, 0.7, 0.8])),
                max_size=30))
def test_greedy_match_equals_sequential_greedy(edges):
    edges = list(dict.fromkeys((g, p, q) for g, p, q, _ in edges))  # one edge per (g, p, q)
    rng = np.random.default_rng(len(edges))
    ious = rng.choice([0.6, 0.7, 0.8], size=len(edges))
    g = np.array([e[0] for e in edges], np.int64)
    p = np.array([e[1] for e in edges], np.int64)
    q = np.array([e[2] for e in edges], np.int64)
    got = greedy_match(g, p, q, ious, p, q) if edges else np.zeros(0, np.int64)
    want = []
    for grp in sorted(set(g.tolist())):
        idx = sorted((i for i in range(len(edges)) if g[i] == grp), key=lambda i: (-ious[i], p[i], q[i]))
        used_p, used_q = set(), set()
        for i in idx:
            if p[i] not in used_p and q[i] not in used_q:
                used_p.add(p[i])
                used_q.add(q[i])
                want.append(i)
    assert got.tolist() == want


# ------------------------------------------------------------------ hand-worked rules

G = (100.0, 100.0, 110.0, 110.0)
B = (0.0, 0.0, 10.0, 10.0)


def test_step1_confident_box_confirmed_by_a_neighbour():
    les = [make_lesion(name(S1, 10), G)]
    p = preds((S1, 10, B, 0.95), (S1, 11, (0, 0, 10, 9), 0.1),      # confirmed (neighbour score irrelevant)
              (S1, 10, (30, 30, 40, 40), 0.9),                       # score not > 0.9
              (S1, 10, (50, 50, 60, 60), 0.99), (S1, 9, (50, 50, 60, 55), 0.99))  # IoU 0.5: not > 0.5
    out = mine(les, p)
    assert [(r.file_name, r.box, r.score, r.source, r.lesion_type) for r in out] == \
        [(name(S1, 10), B, 0.95, "mined", -1)]
    assert out[0].key_slice == 10 and out[0].noisy == 0 and out[0].split == 1


def test_step2_pair_across_the_key_slice_averaged():
    les = [make_lesion(name(S1, 10), G)]
    p = preds((S1, 11, (0, 0, 10, 10), 0.96), (S1, 9, (0, 0, 10, 8), 0.92))
    out = mine(les, p)
    assert [(r.box, r.score) for r in out] == [((0, 0, 10, 9), (0.96 + 0.92) / 2)]
    # any box on K overlapping p (whatever its score) cancels the pair; a touching one does not
    assert mine(les, preds((S1, 11, B, 0.96), (S1, 9, B, 0.92), (S1, 10, (9, 9, 20, 20), 0.1))) == []
    assert len(mine(les, preds((S1, 11, B, 0.96), (S1, 9, B, 0.92), (S1, 10, (10, 0, 20, 10), 0.1)))) == 1
    # both scores must be > alpha
    assert mine(les, preds((S1, 11, B, 0.96), (S1, 9, B, 0.9))) == []


def test_step2_one_to_one_greedy_with_file_order_ties():
    les = [make_lesion(name(S1, 10), G)]
    p = preds((S1, 11, (0, 0, 10, 10), 0.95), (S1, 11, (0, 0, 10, 10), 0.99),   # two identical p: tie
              (S1, 9, (0, 0, 10, 9), 0.95), (S1, 9, (0, 0, 10, 7), 0.95))
    out = mine(les, p)
    # best pair (IoU 0.9): first p in file order with q1; then p2 with q2 (IoU 0.7)
    assert [(r.box, r.score) for r in out] == [((0, 0, 10, 9.5), 0.95), ((0, 0, 10, 8.5), 0.97)]


def test_step3_drops_boxes_overlapping_the_reference_and_several_lesions():
    les = [make_lesion(name(S1, 10), G, lesion_type=4), make_lesion(name(S1, 10), B, lesion_type=5)]
    p = preds((S1, 10, (1, 1, 11, 11), 0.95), (S1, 11, (1, 1, 11, 11), 0.95),   # overlaps B: dropped
              (S1, 10, (110, 100, 120, 110), 0.95), (S1, 9, (110, 100, 120, 110), 0.5))  # touches G: kept
    out = mine(les, p)
    assert [r.box for r in out] == [(110, 100, 120, 110)]
    assert out[0].spacing == les[0].spacing and out[0].lesion_type == -1


def test_empty_slices_series_edges_and_split():
    les = [make_lesion(name(S1, 0), G), make_lesion(name(S1, 5), G, split=2),
           make_lesion(name(S1, 20), G, source="mined")]
    p = preds((S1, 0, B, 0.99), (S1, 1, B, 0.99),          # K = 0: K - 1 missing, K + 1 confirms
              (S1, 5, B, 0.99), (S1, 6, B, 0.99),          # val split: not mined with split=train
              (S1, 20, B, 0.99), (S1, 21, B, 0.99))        # only mined rows: not a key slice here
    assert [r.file_name for r in mine(les, p)] == [name(S1, 0)]
    assert [r.file_name for r in mine(les, p, split="all")] == [name(S1, 0), name(S1, 5)]
    assert mine(les, preds()) == []
