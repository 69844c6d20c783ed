"""Pre-training labels from a synthetic dataset's complete truth (lesionprop.synth.pretrain_labels)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionprop.annotations import Split, read_annotations
from lesionprop.synth.pretrain_labels import pretrain_labels, slices_nearest_key


def test_slices_nearest_key_by_hand():
    # lesion 7: slices 10..14, widest on 13 -> nearest 3: 13, then 12 and 14 (tie: lower first -> 12), then 14
    # lesion 2: slices 5, 6, widest on 5 -> both (fewer slices than n)
    ids = np.array([7, 7, 2, 7, 7, 7, 2])
    slices = np.array([10, 11, 5, 12, 13, 14, 6])
    diam = np.array([3.0, 6.0, 9.0, 8.0, 10.0, 4.0, 2.0])
    assert slices_nearest_key(ids, slices, diam, 3).tolist() == [False, False, True, True, True, True, True]
    assert slices_nearest_key(ids, slices, diam, 1).tolist() == [False, False, True, False, True, False, False]
    assert slices_nearest_key(ids, slices, diam, 2).tolist() == [False, False, True, True, True, False, True]
    empty = np.zeros(0, dtype=np.int64)
    assert slices_nearest_key(empty, empty, np.zeros(0), 3).tolist() == []
    with pytest.raises(ValueError, match=">= 1"):
        slices_nearest_key(ids, slices, diam, 0)


@pytest.mark.parametrize("n", [None, 2])
def test_pretrain_labels_on_a_synthetic_set(tiny_synth, tmp_path, n):
    out = tmp_path / "pre.csv"
    n_train, n_other = pretrain_labels(tiny_synth / "DL_info.csv", tiny_synth / "truth.csv", out, n)
    got, truth, official = (read_annotations(p) for p in (out, tiny_synth / "truth.csv", tiny_synth / "DL_info.csv"))
    train_truth = truth.take(truth.split == Split.TRAIN)
    got_train = got.take(got.split == Split.TRAIN)
    assert len(got_train) == n_train and len(got) == n_train + n_other
    # val / test: the official rows, unchanged
    others = official.take(official.split != Split.TRAIN)
    assert got.take(got.split != Split.TRAIN).file_name.tolist() == others.file_name.tolist()
    assert np.array_equal(got.take(got.split != Split.TRAIN).boxes, others.boxes)
    # every kept slice keeps ALL its truth boxes (no lesion taught as background)
    kept = set(got_train.file_name.tolist())
    on_kept = train_truth.take(np.isin(train_truth.file_name, list(kept)))
    assert sorted(map(tuple, got_train.boxes.tolist())) == sorted(map(tuple, on_kept.boxes.tolist()))
    if n is None:
        assert n_train == len(train_truth)
        return
    # balanced: fewer slices, and every lesion keeps its widest slice and min(n, its slices) slices
    assert n_train < len(train_truth)
    ids = np.asarray(train_truth.extra("Lesion_id"), dtype=np.int64)
    for lesion in np.unique(ids):
        rows = np.flatnonzero(ids == lesion)
        files = train_truth.file_name[rows]
        widest = files[np.argmax(train_truth.diameters_px[rows, 0])]
        assert widest in kept
        assert len(kept.intersection(files.tolist())) >= min(n, len(rows))


def test_pretrain_labels_never_overwrites(tiny_synth, tmp_path):
    out = tmp_path / "pre.csv"
    out.write_text("mine\n")
    with pytest.raises(FileExistsError, match="pre.csv"):
        pretrain_labels(tiny_synth / "DL_info.csv", tiny_synth / "truth.csv", out)
    assert out.read_text() == "mine\n"
