"""A pipeline killed during a retrain, its config edited, run again: exactly the stages that
depend on the edit run again, and a training that may continue does (the pipeline's
fingerprints and ``train --resume`` share :func:`lesionprop.config.training_signature`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lesionprop.config import load_config, training_signature
from lesionprop.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow

TINY = ["pipeline.synth_series=10",
        "pipeline.synth_args={image_size: 64, z_extent_mm: 30, progress: false, workers: 1}",
        "train.iterations=12", "train.eval_every=0", "train.checkpoint_every=6",
        "pipeline.parallel_trainings=1", "pipeline.variants=[baseline, lp]"]
ALL = {"synth", "train_baseline", "predict_train", "labels", "train_lp", "eval_baseline", "eval_lp", "report"}


class Killed(Exception):
    """Stands for the SIGKILL of the pipeline process."""


def _cfg(*extra: str):
    return load_config(preset="tiny", overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run folder whose pipeline was killed in the lp retrain, after its checkpoint at iteration 6."""
    import lesionprop.engine.train as train_module

    real_train = train_module.train

    def train_then_die(cfg, root, ann, run, **kw):
        if Path(run).name == "lp":
            real_train(cfg, root, ann, run, stop_after=6, **kw)
            raise Killed
        return real_train(cfg, root, ann, run, **kw)

    run_dir = tmp_path_factory.mktemp("killed") / "run"
    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "train", train_then_die)
    try:
        with pytest.raises(Killed):
            run_pipeline(_cfg(), run_dir, log=lambda s: None)
    finally:
        mp.undo()
    assert (run_dir / "models" / "lp" / "last.pt").is_file() and not (run_dir / "stages" / "train_lp.json").exists()
    return run_dir


def _rerun(killed: Path, tmp_path: Path, *edit: str) -> tuple[Path, set[str], dict]:
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)            # copy2: modification times kept, as after a kill
    logs: list[str] = []
    run_pipeline(_cfg(*edit), run_dir, log=logs.append)
    ran = {line[1:line.index("]")] for line in logs if line.endswith("] running")}
    skipped = {line[1:line.index("]")] for line in logs if line.endswith("up to date, skipped")}
    assert ran | skipped == ALL and not ran & skipped, logs
    lp = json.loads((run_dir / "stages" / "train_lp.json").read_text())["info"]
    return run_dir, ran, lp


def _iterations(run: Path) -> list[int]:
    return [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(x)]


def test_a_label_setting_reruns_the_labels_and_continues_the_killed_retrain(killed_run, tmp_path):
    # labels.score is alpha of mining: labels_lp.csv (propagation alone) comes out byte-identical,
    # so the killed lp retrain has the same inputs and continues from its checkpoint (this
    # failed with "--resume: the config differs" when train compared whole config sections)
    run_dir, ran, lp = _rerun(killed_run, tmp_path, "labels.score=0.8")
    assert ran == {"labels", "train_lp", "eval_baseline", "eval_lp", "report"}
    assert lp["resumed"] is True
    assert _iterations(run_dir / "models" / "lp") == list(range(1, 13))


def test_a_training_setting_retrains_everything_from_scratch(killed_run, tmp_path):
    run_dir, ran, lp = _rerun(killed_run, tmp_path, "train.base_lr=0.005")
    assert ran == ALL - {"synth"}
    assert lp["resumed"] is False
    assert _iterations(run_dir / "models" / "lp") == list(range(1, 13))


def test_a_logging_or_worker_setting_retrains_nothing(killed_run, tmp_path):
    # num_workers=1 also checks that loader workers start clean after this process used
    # OpenCV's thread pool (forked workers waited forever in cv2.setNumThreads)
    run_dir, ran, lp = _rerun(killed_run, tmp_path, "train.log_every=3", "train.checkpoint_every=4",
                              "data.cache_mb=64", "data.num_workers=1")
    assert ran == {"train_lp", "eval_baseline", "eval_lp", "report"}
    assert lp["resumed"] is True
    # logged every iteration up to the kill, every 3rd after it (and the last)
    assert _iterations(run_dir / "models" / "lp") == [1, 2, 3, 4, 5, 6, 9, 12]


def test_training_signature_leaves_out_run_only_settings():
    base = training_signature(_cfg())
    assert "num_workers" not in base["data"] and "log_every" not in base["train"]
    assert "iterations" not in base["train"] and set(base) == {"data", "model", "train"}
    same = ["train.log_every=7", "train.checkpoint_every=3", "data.num_workers=2", "data.cache_dir=/tmp/x",
            "train.iterations=99", "labels.score=0.1", "predict.merge=nms", "pipeline.retrain_from=baseline"]
    for edit in same:
        assert training_signature(_cfg(edit)) == base, edit
    for edit in ("train.base_lr=0.5", "train.seed=3", "model.fpn_channels=8", "data.num_slices=9",
                 "train.eval_every=5"):
        assert training_signature(_cfg(edit)) != base, edit


def test_a_checkpoint_config_with_a_removed_setting_still_loads():
    from lesionprop.config import config_from_dict

    saved = _cfg().to_dict()
    saved["predict"]["tta"] = "flip"            # PredictConfig.tta was never read and is gone
    assert config_from_dict(saved) == _cfg()


def test_dataset_fingerprint_sees_slices_added_or_rewritten_and_the_annotations(tmp_path):
    import time

    import numpy as np

    from helpers import write_blob_dataset
    from lesionprop.data.layout import write_slice
    from lesionprop.pipeline.stages import dataset_fingerprint

    ann = write_blob_dataset(tmp_path, series=2, slices=3, size=32)
    fp = dataset_fingerprint(tmp_path, ann)
    assert dataset_fingerprint(tmp_path, ann) == fp
    (tmp_path / "notes.txt").write_text("not part of the dataset")
    ann.write_bytes(ann.read_bytes())                       # same contents, newer file
    assert dataset_fingerprint(tmp_path, ann) == fp
    seen = {fp}
    for change in (lambda: write_slice(tmp_path, "000001_01_01", 3, np.zeros((32, 32))),     # a slice added
                   lambda: write_slice(tmp_path, "000002_01_01", 0, np.ones((32, 32))),      # one rewritten
                   lambda: (tmp_path / "series_info.csv").write_text("Series\n"),
                   lambda: ann.write_text(ann.read_text().replace(",F,", ",M,"))):
        time.sleep(0.03)                                    # past the file system's clock tick
        change()
        now = dataset_fingerprint(tmp_path, ann)
        assert now not in seen
        seen.add(now)
