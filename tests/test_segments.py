"""Pairs and elements of segments (the enumeration behind every batched IoU)."""

import numpy as np

from lesionprop.segments import segment_pairs


def test_segment_pairs_enumerates_every_pair_in_order():
    got = [np.stack(x, 1) for x in segment_pairs([0, 2, 5], [2, 0, 1], [10, 20, 30], [2, 3, 3], chunk=3)]
    got = np.concatenate(got).tolist()
    assert got == [[0, 0, 10], [0, 0, 11], [0, 1, 10], [0, 1, 11], [2, 5, 30], [2, 5, 31], [2, 5, 32]]
