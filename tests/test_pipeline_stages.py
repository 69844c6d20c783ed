"""The pipeline's stage declarations: after a finished run, an edit of any config section reruns
exactly the stages whose outputs depend on it (bodies replaced by fakes whose outputs depend on
precisely what their stage declares, so a missing declaration shows as a stage not rerun)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import lesionprop.pipeline.plan as plan
import lesionprop.pipeline.run as run_module
from lesionprop.config import load_config
from lesionprop.pipeline.stages import Stage, StageContext, config_part

BASE = ["pipeline.variants=[baseline, lp, mm]", "pipeline.parallel_trainings=1"]


def _fake(stage: Stage):
    """A body writing each output from the stage's declared config values and input files."""
    def body(ctx: StageContext) -> dict:
        h = hashlib.sha256(json.dumps({k: config_part(ctx.cfg, k) for k in stage.config}, default=str).encode())
        for name in stage.inputs:
            if name == "dataset":
                name = "annotations"
            p = ctx.path(name)
            if p.is_file():
                h.update(p.read_bytes())
        for out in stage.outputs:
            path = ctx.run_dir / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(h.hexdigest())
        return {}
    return body


@pytest.fixture()
def fake_pipeline(monkeypatch):
    real_build = plan.build_stages

    def build(cfg, paths):
        return [Stage(**{**s.__dict__, "run": _fake(s)}) for s in real_build(cfg, paths)]

    monkeypatch.setattr(run_module, "build_stages", build)
    monkeypatch.setattr(run_module, "check_data", lambda cfg, paths: [])
    monkeypatch.setattr(run_module, "collect_results", lambda run_dir, names: plan.PipelineResult(run_dir, {}, {}, {}))

    def run(run_dir: Path, *overrides: str) -> set[str]:
        logs: list[str] = []
        cfg = load_config(preset="tiny", overrides=BASE + list(overrides))
        run_module.run_pipeline(cfg, run_dir, log=logs.append)
        return {line[1:line.index("]")] for line in logs if line.endswith("] running")}

    return run


TRAINED = {"train_baseline", "predict_train", "labels", "train_lp", "train_mm", "eval_baseline", "eval_lp",
           "eval_mm", "report"}
AFTER_PREDICTIONS = TRAINED - {"train_baseline", "eval_baseline"}
ALL = TRAINED | {"synth"}


@pytest.mark.parametrize("edit, expected", [
    ("data.window=[-100, 200]", TRAINED),                  # a model setting: every model, then all after
    ("data.num_workers=3", set()),                         # run-only: nothing
    ("data.cache_mb=7", set()),
    ("model.fpn_channels=24", TRAINED),
    ("train.base_lr=0.05", TRAINED),
    ("train.log_every=3", set()),
    ("train.iterations=5", TRAINED),
    ("predict.tta_scales=[1.0, 1.5]", AFTER_PREDICTIONS),   # the TTA predictions, labels, retrains, evals
    ("predict.merge=nms", AFTER_PREDICTIONS),
    ("predict.batch_size=1", set()),                       # never changes a box (one padded shape per pass)
    ("labels.score=0.5", AFTER_PREDICTIONS - {"predict_train"}),
    ("pipeline.label_tta=flip", AFTER_PREDICTIONS),
    ("pipeline.retrain_iterations=3", {"train_lp", "train_mm", "eval_lp", "eval_mm", "report"}),
    ("pipeline.eval_3d_slices=1", {"eval_baseline", "eval_lp", "eval_mm", "report"}),
    ("pipeline.parallel_trainings=2", set()),
    ("pipeline.synth_seed=3", ALL),
])
def test_an_edit_reruns_exactly_the_stages_that_depend_on_it(fake_pipeline, tmp_path, edit, expected):
    run_dir = tmp_path / "run"
    assert fake_pipeline(run_dir) == ALL
    assert fake_pipeline(run_dir) == set()
    assert fake_pipeline(run_dir, edit) == expected


def test_the_variant_table_is_read_by_the_label_tools_the_config_and_the_report():
    from lesionprop.config import PipelineConfig
    from lesionprop.labels.sets import LABEL_FILES
    from lesionprop.pipeline.report import PAPER
    from lesionprop.variants import LABEL_SETS, VARIANTS

    assert PipelineConfig().variants == tuple(v.name for v in VARIANTS)
    assert LABEL_FILES == {v.name: v.label_file for v in LABEL_SETS}
    assert set(PAPER) == {v.name for v in VARIANTS}


def test_a_label_file_of_your_own_is_a_variant(fake_pipeline, tmp_path):
    """pipeline.extra_label_sets: a reviewed (or any) label file trains, evaluates and reports like
    the built-in sets; editing it reruns its own training and what follows."""
    own = tmp_path / "labels_reviewed.csv"
    own.write_text("my rows\n")
    run_dir = tmp_path / "run"
    extra = f"pipeline.extra_label_sets={{reviewed: {own}}}"
    assert {"train_reviewed", "eval_reviewed"} <= fake_pipeline(run_dir, extra)
    assert fake_pipeline(run_dir, extra) == set()
    own.write_text("my rows, reviewed again\n")
    assert fake_pipeline(run_dir, extra) == {"train_reviewed", "eval_reviewed", "report"}
    with pytest.raises(ValueError, match="extra_label_sets: lp is a built-in variant's name"):
        fake_pipeline(tmp_path / "other", f"pipeline.extra_label_sets={{lp: {own}}}")


def test_settings_that_cannot_work_are_refused_before_anything_runs(tmp_path):
    from lesionprop.errors import ConfigError
    from lesionprop.pipeline.checks import check_settings

    for edit, message in (("labels.iou=1.5", "labels.iou must be in"), ("predict.merge=mean", "predict.merge"),
                          ("pipeline.label_tta=rotate", "pipeline.label_tta"),
                          ("pipeline.variants=[baseline, xx]", "unknown pipeline.variants"),
                          ("model.init_detector=nothing.pt", "model.init_detector: no file nothing.pt")):
        with pytest.raises(Exception, match=message) as err:
            check_settings(load_config(preset="tiny", overrides=[edit]))
        assert isinstance(err.value, (ConfigError, FileNotFoundError))
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        check_settings(load_config(preset="tiny", overrides=["train.batch_size=3"]), world=2)


def test_data_that_cannot_give_a_result_is_refused_before_training(tmp_path):
    """A pipeline on a handful of synthetic series refuses at once when the test split has no
    lesions (before, it trained the baseline for minutes and then failed)."""
    from helpers import write_blob_dataset

    from lesionprop.pipeline.checks import check_data
    from lesionprop.pipeline.plan import DataPaths

    ann = write_blob_dataset(tmp_path, series=2, slices=3, size=64, splits=(1, 2))     # no test rows
    cfg = load_config(preset="tiny")
    with pytest.raises(ValueError, match="no lesions in split 'test'"):
        check_data(cfg, DataPaths(tmp_path, ann, None, False))
    ann = write_blob_dataset(tmp_path / "ok", series=4, slices=3, size=64, splits=(1, 1, 2, 3))
    assert check_data(cfg, DataPaths(tmp_path / "ok", ann, None, False)) == []
    (tmp_path / "ok" / "Images_png" / "000004_01_01" / "001.png").unlink()      # a test key slice's PNG
    with pytest.raises(FileNotFoundError, match="1 key slice.*have no PNG"):
        check_data(cfg, DataPaths(tmp_path / "ok", ann, None, False))


def test_rounds_are_the_same_stages_per_round_each_resumable(fake_pipeline, tmp_path):
    """pipeline.rounds = 2: round 2 predicts with round 1's MM + LP model, remakes the label sets,
    retrains and evaluates them; the baseline is trained once."""
    run_dir = tmp_path / "run"
    rounds = ["pipeline.rounds=2", "pipeline.variants=[baseline, lp, mm_lp]"]
    ran = fake_pipeline(run_dir, *rounds)
    second = {"predict_train_r2", "labels_r2", "train_lp_r2", "train_mm_lp_r2", "eval_lp_r2", "eval_mm_lp_r2"}
    assert second <= ran and "train_baseline_r2" not in ran and "eval_baseline_r2" not in ran
    assert (run_dir / "round2" / "labels" / "labels_mm_lp.csv").is_file()
    assert fake_pipeline(run_dir, *rounds) == set()
    # round 1's teacher output changes -> everything after it, both rounds
    assert fake_pipeline(run_dir, *rounds, "labels.score=0.5") >= second | {"labels", "train_mm_lp"}
    with pytest.raises(ValueError, match="pipeline.rounds > 1 needs mm_lp"):
        fake_pipeline(tmp_path / "x", "pipeline.rounds=2", "pipeline.variants=[baseline, lp]")
