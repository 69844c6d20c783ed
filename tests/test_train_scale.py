"""What real training at scale needs, checked on the CPU: passes per shape and gradient
accumulation give the whole batch's step, a CUDA OOM is one line, the loader feeds by default,
side-by-side trainings get their own GPU, every logging window says what it cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import write_blob_dataset
from lesionprop.config import load_config
from lesionprop.engine.train import micro_batches, train

# take every anchor / RoI (no random subsampling) and keep every image one size, so that any
# split of a step into passes sees exactly the same samples (as tests/test_ddp.py)
EXACT = ["data.aug_scale=[1.0, 1.0]", "train.iterations=3", "train.batch_size=2", "train.checkpoint_every=3",
         "model.rpn_batch_size_per_image=100000", "model.box_batch_size_per_image=100000", "train.eval_every=0"]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blobs")
    return root, write_blob_dataset(root, series=4, splits=(1, 1, 1, 2))


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_micro_batches_split_by_padded_shape_then_by_accumulate():
    shapes = [(3, 64, 64), (3, 60, 50), (3, 96, 128), (3, 64, 64), (3, 100, 128)]
    # 64x64 and 60x50 pad to 64x64; 96x128 and 100x128 pad to 96x128 and 128x128
    assert micro_batches(shapes) == [[0, 1, 3], [2], [4]]
    assert micro_batches(shapes, accumulate=5) == [[0], [1], [3], [2], [4]]
    assert micro_batches(shapes, accumulate=2) == [[0, 1, 3], [2], [4]]          # at most ceil(5/2) = 3 each
    assert micro_batches(shapes, by_shape=False) == [[0, 1, 2, 3, 4]]
    assert micro_batches(shapes, accumulate=2, by_shape=False) == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="train.accumulate must be >= 1"):
        micro_batches(shapes, accumulate=0)


def test_accumulation_gives_the_whole_batchs_step(blobs, tmp_path):
    """train.accumulate=2 (one image per pass) trains like one pass of both images: same losses
    and weights up to float summation order."""
    root, ann = blobs
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(load_config(preset="tiny", overrides=EXACT), root, ann, whole, device="cpu", progress=False)
    train(load_config(preset="tiny", overrides=EXACT + ["train.accumulate=2"]), root, ann, split, device="cpu",
          progress=False)
    a = [r["loss"] for r in _records(whole) if "loss" in r]
    b = [r["loss"] for r in _records(split) if "loss" in r]
    assert len(a) == len(b) == 3 and b == pytest.approx(a, rel=1e-4)
    sa = torch.load(whole / "last.pt", weights_only=False)["model"]
    sb = torch.load(split / "last.pt", weights_only=False)["model"]
    worst = max(float((sa[k] - sb[k]).abs().max() / (sa[k].abs().max() + 1e-8))
                for k in sa if sa[k].is_floating_point())
    assert worst < 0.01


def test_every_logging_window_records_its_cost(blobs, tmp_path):
    root, ann = blobs
    train(load_config(preset="tiny", overrides=["train.iterations=4", "train.log_every=2"]), root, ann,
          tmp_path / "run", device="cpu", progress=False)
    logged = [r for r in _records(tmp_path / "run") if "loss" in r]
    assert [r["iteration"] for r in logged] == [2, 4]
    for r in logged:
        assert r["images_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1 and r["host_pss_mb"] > 100 and r["host_peak_rss_mb"] > 100
        assert r["ranks"] == 1 and "gpu_peak_mb" not in r                 # CPU: no GPU memory to report


def test_a_cuda_out_of_memory_is_one_line_naming_what_to_lower(blobs, tmp_path, capsys, monkeypatch):
    import lesionprop.model.detector as detector
    from lesionprop.cli import main

    root, ann = blobs

    def no_memory(self, images, targets=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(detector.FPN3DCE, "forward", no_memory)
    assert main(["train", "--data", str(root), "--annotations", str(ann), "--out", str(tmp_path / "run"),
                 "--preset", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.replace("\r", "\n").split("\n") if "lesionprop train: error:" in x]
    assert len(line) == 1 and line[0].startswith("lesionprop train: error: CUDA out of memory at iteration 1: "
                                                 "2 images per rank")
    assert "train.accumulate=2 (same result" in err and "data.max_size (64)" in err and "Traceback" not in err


def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(blobs, tmp_path, capsys, monkeypatch):
    import lesionprop.model.detector as detector
    from lesionprop.cli import main

    root, ann = blobs

    def broken(self, images, targets=None):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(detector.FPN3DCE, "forward", broken)
    assert main(["train", "--data", str(root), "--annotations", str(ann), "--out", str(tmp_path / "run"),
                 "--preset", "tiny", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "could not be broadcast" in err and "is a bug in lesionprop" in err


def test_loader_workers_are_chosen_from_the_cores():
    from lesionprop.engine.loader import resolve_workers

    assert resolve_workers(None, "cpu", cores=16) == 0                     # the model's threads want the cores
    assert resolve_workers(None, "cuda", local_world=1, cores=16) == 15
    assert resolve_workers(None, "cuda", local_world=8, cores=16) == 1
    assert resolve_workers(None, "cuda", local_world=1, cores=128) == 16   # capped
    assert resolve_workers(3, "cpu", cores=16) == 3                        # as set
    with pytest.raises(ValueError, match="data.num_workers must be >= 0"):
        resolve_workers(-1, "cpu")


def test_side_by_side_trainings_each_get_their_own_gpu():
    from lesionprop.pipeline.workers import side_by_side_placement

    assert [p["device"] for p in side_by_side_placement(4, 2, 32)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert side_by_side_placement(2, 0, 2) == [{"device": "cpu", "threads": 1}] * 2
    assert side_by_side_placement(3, 0, 2) == [{"device": "cpu", "threads": 1}] * 3


def test_uint8_samples_train_and_predict_like_float32_ones(blobs, tmp_path):
    """data.sample_dtype=uint8 (the default outside the CPU presets): the model makes them float."""
    root, ann = blobs
    res = train(load_config(preset="tiny", overrides=["train.iterations=2", "data.sample_dtype=uint8"]), root, ann,
                tmp_path / "run", device="cpu", progress=False)
    assert res.iterations == 2 and res.final_loss == res.final_loss        # finite
