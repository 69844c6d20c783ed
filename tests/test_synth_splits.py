"""Synthetic split assignment: patient shares per split (``split_shares``)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionprop.synth.dataset import _split_patients, make_options


def counts(split: dict[int, int]) -> list[int]:
    return [sum(1 for v in split.values() if v == code) for code in (1, 2, 3)]


def test_default_shares_match_the_old_70_15_15_rule():
    # the rule before split_shares existed: val = test = max(1, round(0.15 n)), same permutation
    for n in (3, 7, 20, 58, 191):
        split = _split_patients(np.random.default_rng([0, 1]), n)
        k = max(1, int(round(0.15 * n)))
        assert counts(split) == [n - 2 * k, k, k]
        order = np.random.default_rng([0, 1]).permutation(np.arange(1, n + 1))
        assert [split[int(p)] for p in order[:k]] == [3] * k


def test_shares_give_larger_val_and_test_splits():
    split = _split_patients(np.random.default_rng(5), 200, (0.2, 0.3, 0.5))
    assert counts(split) == [40, 60, 100]
    assert sorted(split) == list(range(1, 201))
    # a test share of 0 leaves the test split empty; train always keeps a patient
    assert counts(_split_patients(np.random.default_rng(5), 10, (1, 1, 0))) == [5, 5, 0]
    assert counts(_split_patients(np.random.default_rng(5), 3, (0.01, 1, 1))) == [1, 1, 1]


@pytest.mark.parametrize("bad", [(0.7, 0.3), (0, 0.5, 0.5), (0.5, -0.1, 0.6)])
def test_bad_shares_are_refused(bad):
    with pytest.raises(ValueError, match="split_shares"):
        make_options(split_shares=bad)
