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


def test_shipped_detector_name_is_a_checkpoint_with_its_training_config():
    """``--checkpoint synthetic-cpu-detector``: the shipped weights plus the cpu preset they were
    trained with; the model built from that config takes every tensor (strict) unchanged."""
    from lesionprop.config import config_from_dict
    from lesionprop.engine.checkpoint import resolve_checkpoint, shipped_name
    from lesionprop.model.detector import build_detector
    from lesionprop.model.pretrain import SHIPPED_DETECTORS

    assert list(SHIPPED_DETECTORS) == ["synthetic-cpu-detector"]
    path = resolve_checkpoint("synthetic-cpu-detector")
    assert path.name == "cpu_synth_detector.pt" and shipped_name(path) == "synthetic-cpu-detector"
    state = load_checkpoint("synthetic-cpu-detector")
    cfg = config_from_dict(state["config"])
    assert cfg.model.base_width == 32 and cfg.model.norm == "gn" and cfg.data.num_slices == 9
    model = build_detector(cfg.model, cfg.data.num_slices, load_pretrained=False)
    result = model.load_state_dict(state["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    raw = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k].to(v.dtype)), k
    # the file's path loads the same way (a user pointing at src/lesionprop/model/weights/...)
    assert load_checkpoint(path)["config"] == state["config"]


def test_unknown_name_and_bare_weights_list_the_shipped_detectors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: synthetic-gpu-detector .*"
                                                "shipped detector: synthetic-cpu-detector"):
        load_checkpoint("synthetic-gpu-detector")
    torch.save({"backbone.w": torch.ones(2)}, tmp_path / "weights.pt")       # an export_backbone-like file
    with pytest.raises(ValueError, match=r"weights only.*synthetic-cpu-detector"):
        load_checkpoint(tmp_path / "weights.pt")
