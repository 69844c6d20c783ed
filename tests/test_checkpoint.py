"""Checkpoint files: loaded without running code from them, RNG state round trip, file permissions."""

from __future__ import annotations

import os
import pickle
import random
import stat

import numpy as np
import pytest
import torch

from lesionprop.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lesionprop.fileio import atomic_write

RAN = []


class Payload:
    """An object whose unpickling would run code (appends to RAN)."""

    def __reduce__(self):
        return (RAN.append, ("ran",))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(3); np.random.seed(4); torch.manual_seed(5)
    state = {"model": {"w": torch.ones(2)}, "config": {"a": 1}, "rng": [rng_state()]}
    save_checkpoint(state, tmp_path / "last.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_foreign_object_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pt: refused to load"):
        load_checkpoint(path)
    assert RAN == []


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "config": {}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.pt"):
        load_checkpoint(path)


def test_atomic_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("good\n")

    with pytest.raises(OSError):
        with atomic_write(path) as fh:
            fh.write("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]


def test_atomic_write_to_a_folder_is_a_clear_error_and_leaves_no_temp_file(tmp_path):
    from lesionprop.fileio import PathKindError

    (tmp_path / "adir").mkdir()
    with pytest.raises(PathKindError, match=r"cannot write .*adir: it is a folder, not a file"):
        with atomic_write(tmp_path / "adir") as fh:
            fh.write("x")
    (tmp_path / "afile").write_text("keep\n")
    with pytest.raises(PathKindError, match=r"afile is a file, not a folder"):
        with atomic_write(tmp_path / "afile" / "sub" / "x.csv") as fh:
            fh.write("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert list((tmp_path / "adir").iterdir()) == [] and (tmp_path / "afile").read_text() == "keep\n"


def test_a_file_that_is_not_a_checkpoint_says_so_in_one_line(tmp_path):
    csv_file = tmp_path / "some.csv"
    csv_file.write_text("File_name,x1,y1,x2,y2,score\n")
    with pytest.raises(ValueError) as err:
        load_checkpoint(csv_file)
    assert str(err.value) == (f"{csv_file} is not a lesionprop checkpoint "
                              "(torch could not load it as one: not a file written by torch.save)")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pt is not a lesionprop checkpoint \(.*the file is empty\)"):
        load_checkpoint(tmp_path / "empty.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not a lesionprop checkpoint \(no 'model' / 'config'"):
        load_checkpoint(tmp_path / "other.pt")
