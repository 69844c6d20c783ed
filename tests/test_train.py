"""Training loop: loss goes down, empty images train, resume is exact, bad losses stop the run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_blob_dataset
from lesionprop.config import load_config
from lesionprop.engine.batches import GlobalBatchSampler, stream_items
from lesionprop.engine.schedule import build_optimizer, build_schedule
from lesionprop.engine.train import NonFiniteLossError, train


def tiny_cfg(*overrides: str):
    return load_config(preset="tiny", overrides=list(overrides))


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("blobs")
    return root, write_blob_dataset(root, empty_train_slice=True)


def _losses(run: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["loss"] for r in recs if "loss" in r}


def test_schedule_warmup_and_steps():
    cfg = tiny_cfg("train.iterations=100", "train.warmup_iters=10", "train.lr_steps=[0.5, 0.8]").train
    f = build_schedule(cfg)
    assert f(0) == pytest.approx(cfg.warmup_factor)
    assert f(5) == pytest.approx(cfg.warmup_factor * 0.5 + 0.5)
    assert f(10) == 1.0 and f(49) == 1.0
    assert f(50) == pytest.approx(0.1) and f(80) == pytest.approx(0.01)


def test_optimizer_choice():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(load_config(preset="tiny").train, params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(load_config(preset="tiny", overrides=["train.optimizer=adamw"]).train, params)
    assert isinstance(adamw, torch.optim.AdamW)
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer(load_config(preset="tiny", overrides=["train.optimizer=lion"]).train, params)


def test_global_order_is_sharded_and_resumable():
    full = list(GlobalBatchSampler(5, 4, seed=3, start=0, stop=3))
    assert [len(b) for b in full] == [4, 4, 4]
    r0 = list(GlobalBatchSampler(5, 4, seed=3, start=0, stop=3, rank=0, world=2))
    r1 = list(GlobalBatchSampler(5, 4, seed=3, start=0, stop=3, rank=1, world=2))
    assert [a + b for a, b in zip(r0, r1)] == full
    assert list(GlobalBatchSampler(5, 4, seed=3, start=1, stop=3)) == full[1:]
    epoch0 = stream_items(5, 3, 0, 5)
    assert sorted(i for _, i in epoch0) == list(range(5)) and {e for e, _ in epoch0} == {0}
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        GlobalBatchSampler(5, 3, seed=0, start=0, stop=1, rank=0, world=2)


def test_training_lowers_the_loss_and_writes_the_run(blobs, tmp_path):
    root, ann = blobs
    cfg = tiny_cfg("train.iterations=30", "train.batch_size=2", "train.base_lr=0.08", "train.warmup_iters=5",
                   "train.checkpoint_every=100", "train.log_every=1")
    result = train(cfg, root, ann, tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses.values())
    first, last = np.mean([losses[i] for i in range(1, 6)]), np.mean([losses[i] for i in range(26, 31)])
    assert last < 0.7 * first
    assert result.iterations == 30 and result.last_checkpoint.is_file() and result.best_checkpoint.is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    state = torch.load(result.last_checkpoint, weights_only=False)
    assert state["iteration"] == 30 and state["config"]["train"]["iterations"] == 30
    assert result.best_sensitivity is not None and 0.0 <= result.best_sensitivity <= 1.0
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, root, ann, tmp_path / "run", progress=False)


def test_images_without_boxes_train(tmp_path):
    root = tmp_path / "d"
    ann = write_blob_dataset(root, series=2, splits=(1,), empty_train_slice=True)
    cfg = tiny_cfg("train.iterations=3", "train.batch_size=3")
    result = train(cfg, root, ann, tmp_path / "run", progress=False)
    assert math.isfinite(result.final_loss)
    # no val lesions: best.pt is the last checkpoint and the log says so
    notes = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("no lesions" in r.get("note", "") for r in notes)
    # the same run resumed once finished (e.g. killed after its final checkpoint): nothing is redone,
    # the note stays single, best.pt is there
    again = train(cfg, root, ann, tmp_path / "run", progress=False, resume=True)
    assert again.iterations == 3 and again.best_checkpoint == tmp_path / "run" / "best.pt"
    after = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert after == notes


def test_resume_continues_exactly(blobs, tmp_path):
    root, ann = blobs
    cfg = tiny_cfg("train.iterations=4", "train.checkpoint_every=2")
    # CPU: bit-repeatable (CUDA's RoIAlign backward uses atomics, so GPU runs are close, not equal)
    train(cfg, root, ann, tmp_path / "full", progress=False, device="cpu")
    train(cfg, root, ann, tmp_path / "killed", progress=False, stop_after=2, device="cpu")
    assert set(_losses(tmp_path / "killed")) == {1, 2}
    train(cfg, root, ann, tmp_path / "killed", progress=False, resume=True, device="cpu")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
    assert sorted(resumed) == [1, 2, 3, 4]
    for i in (3, 4):
        assert resumed[i] == pytest.approx(full[i], rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="config differs"):
        train(tiny_cfg("train.iterations=4", "train.base_lr=0.5"), root, ann, tmp_path / "killed",
              progress=False, resume=True)


def test_non_finite_loss_stops_with_a_clear_error(blobs, tmp_path):
    root, ann = blobs
    cfg = tiny_cfg("train.iterations=3", "train.base_lr=1e30", "train.warmup_iters=0", "train.grad_clip=1e38")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at iteration"):
        train(cfg, root, ann, tmp_path / "run", progress=False)


def test_train_cli_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    from lesionprop.cli import main

    target = tmp_path / "run.txt"
    target.write_text("keep\n")
    assert main(["train", "--data", str(tmp_path / "no_data"), "--annotations", str(tmp_path / "no.csv"),
                 "--out", str(target), "--preset", "tiny"]) == 2
    assert capsys.readouterr().err == f"lesionprop train: error: --out {target} is a file, expected a folder\n"
    assert target.read_text() == "keep\n" and sorted(p.name for p in tmp_path.iterdir()) == ["run.txt"]


@pytest.mark.parametrize("cmd", ["train", "predict", "detect"])
@pytest.mark.parametrize("device, cuda, message", [
    ("cuda", False, "--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
                    "use --device cpu"),
    ("cuda:0", False, "--device cuda:0: no CUDA device is available here"),
    ("cuda:1", True, "--device cuda:1: this machine has 1 CUDA device(s): cuda:0 ... cuda:0"),
    ("mps", False, "--device mps: no MPS device is available here (torch.backends.mps.is_available() is False)"),
    ("gpu", False, "--device 'gpu' is not a device; use one of cpu, cuda, cuda:N"),
])
def test_device_is_checked_before_any_work(tmp_path, capsys, monkeypatch, cmd, device, cuda, message):
    """One shared check (engine.distributed.check_device) for train, predict and detect; CPU-only CI
    pretends CUDA is there or not through torch.cuda.is_available."""
    from lesionprop.cli import main
    from lesionprop.engine import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(distributed, "_mps_available", lambda: False)
    missing = str(tmp_path / "missing")
    args = {"train": ["--data", missing, "--annotations", missing, "--out", str(tmp_path / "run")],
            "predict": ["--checkpoint", missing, "--data", missing, "--annotations", missing,
                        "--out", str(tmp_path / "p.csv")],
            "detect": [missing, "--checkpoint", missing, "--out", str(tmp_path / "det")]}[cmd]
    assert main([cmd, *args, "--device", device]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"lesionprop {cmd}: error: {message}") and err.count("\n") == 1 and out == ""
    assert list(tmp_path.iterdir()) == []
    assert distributed.check_device("cpu") == "cpu" and distributed.check_device(None) is None


def test_check_device_accepts_the_devices_this_machine_has(monkeypatch):
    from lesionprop.engine import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "_mps_available", lambda: True)
    assert [distributed.check_device(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda:1", "mps"]
    with pytest.raises(distributed.DeviceError, match=r"'cuda:x' is not a device; use one of cpu, cuda, cuda:N, mps"):
        distributed.check_device("cuda:x")
