"""The miniature pipeline end to end (tiny preset, a few iterations), then killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lesionprop.config import load_config
from lesionprop.pipeline.run import run_pipeline
from lesionprop.pipeline.stages import Stage, StageRunner

pytestmark = pytest.mark.slow

TINY = ["pipeline.synth_series=10", "pipeline.synth_args={image_size: 64, z_extent_mm: 30, progress: false, workers: 1}", "train.iterations=12", "train.eval_every=0", "train.checkpoint_every=6",
        "pipeline.parallel_trainings=2"]


def _tiny_cfg(tmp_path: Path, extra=()):
    return load_config(preset="tiny", overrides=TINY + list(extra))


def test_stage_runner_skips_done_and_reruns_changed(tmp_path):
    """The runner alone decides: same declared config and inputs -> skipped; changed -> rerun;
    an output gone -> rerun; a body that does not write its outputs -> an error."""
    calls = []
    src = tmp_path / "in.txt"
    src.write_text("a")

    def make(ctx):
        calls.append(ctx.resume)
        (ctx.run_dir / "a.txt").write_text(ctx.path("src").read_text())

    stage = Stage("a", make, config=("labels.iou",), inputs=("src",), outputs=("a.txt",))

    def runner(cfg):
        return StageRunner(tmp_path / "run", cfg, sources={"src": src}, log=lambda s: None)

    cfg = load_config(preset="tiny")
    runner(cfg).run(stage)
    runner(cfg).run(stage)
    assert calls == [False]
    runner(load_config(preset="tiny", overrides=["labels.score=0.5"])).run(stage)   # not declared: skipped
    assert len(calls) == 1
    runner(load_config(preset="tiny", overrides=["labels.iou=0.4"])).run(stage)     # declared key changed
    assert len(calls) == 2
    src.write_text("b")                                                             # input changed
    runner(load_config(preset="tiny", overrides=["labels.iou=0.4"])).run(stage)
    assert len(calls) == 3 and (tmp_path / "run" / "a.txt").read_text() == "b"
    (tmp_path / "run" / "a.txt").unlink()                                           # output gone
    runner(load_config(preset="tiny", overrides=["labels.iou=0.4"])).run(stage)
    assert len(calls) == 4
    with pytest.raises(RuntimeError, match="without writing"):
        runner(cfg).run(Stage("b", lambda ctx: None, outputs=("never.txt",)))
    # a stage started and cut short is resumable under the same fingerprint only
    assert json.loads((tmp_path / "run" / "stages" / "b.started.json").read_text())["fingerprint"]
    seen = []
    runner(cfg).run(Stage("b", lambda ctx: (seen.append(ctx.resume), (ctx.run_dir / "never.txt").write_text("x")),
                          outputs=("never.txt",)))
    assert seen == [True] and not (tmp_path / "run" / "stages" / "b.started.json").exists()


def test_pipeline_end_to_end_then_kill_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "lesionprop", "pipeline", "--preset", "tiny", "--out", str(run_dir)]
    for o in TINY:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run_dir / "stages" / "labels.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.2)
    assert marker.exists(), "pipeline did not reach the labels stage"
    proc.send_signal(signal.SIGKILL)        # killed while retraining the variants
    proc.wait()
    done_before = {p.name: p.stat().st_mtime for p in (run_dir / "stages").glob("*.json")}
    assert {"synth.json", "train_baseline.json", "predict_train.json", "labels.json"} <= set(done_before)

    logs: list[str] = []
    result = run_pipeline(_tiny_cfg(tmp_path), run_dir, log=logs.append)
    for name in ("synth", "train_baseline", "predict_train", "labels"):
        assert f"[{name}] up to date, skipped" in logs
        assert (run_dir / "stages" / f"{name}.json").stat().st_mtime == done_before[f"{name}.json"]

    report = run_dir / "report"
    table = json.loads((report / "table.json").read_text())
    assert table["fps"] == [0.5, 1, 2, 4, 8]
    assert set(table["variants"]) == {"baseline", "dd", "lp", "mm", "mm_lp"}
    for v in list(table["variants"].values()) + list(table["truth"]["variants"].values()):
        assert set(v) >= {"sensitivity", "ci_low", "ci_high", "mean"}
        assert all(len(v[k]) == 5 for k in ("sensitivity", "ci_low", "ci_high"))
        assert all(0 <= lo <= hi <= 1 and 0 <= x <= 1
                   for lo, x, hi in zip(v["ci_low"], v["sensitivity"], v["ci_high"]))
    assert set(table["truth"]["variants"]) == set(table["variants"])
    assert set(table["differences"]) == {"dd", "lp", "mm", "mm_lp"} and table["images"] > 0 and table["lesions"] > 0
    assert "Paired difference to FPN-3DCE (baseline)" in (report / "table.md").read_text()
    assert (report / "table.md").read_text().count("|") > 20
    assert (report / "table.csv").is_file() and (report / "froc.png").stat().st_size > 1000
    assert set(table["label_quality"]) == {"mm", "lp", "mm_lp", "dd"}
    # the baseline's fit to its training key slices: the label tools' predictions, evaluated on split train
    from lesionprop.annotations import read_annotations
    from lesionprop.eval.froc import evaluate
    from lesionprop.predictions import read_predictions

    fit = table["baseline_train"]
    direct = evaluate(read_annotations(run_dir / "data" / "DL_info.csv"),
                      read_predictions(run_dir / "preds" / "train_tta.csv"), split="train")
    assert fit["predictions"] == "train_tta.csv" and fit["tta"] == "flip+scales"
    assert fit["official"]["sensitivity"] == [float(x) for x in direct.sensitivity]
    assert fit["official"]["lesions"] == direct.lesions and fit["truth"]["lesions"] >= direct.lesions
    assert "The baseline on its own training key slices" in (report / "table.md").read_text()
    # the labels written for the retrains hold every human row first, unchanged
    human = (run_dir / "data" / "DL_info.csv").read_text().splitlines()
    for name in ("mm", "lp", "mm_lp", "dd"):
        lines = (run_dir / "labels" / f"labels_{name}.csv").read_text().splitlines()
        assert [ln.rsplit(",", 2)[0] for ln in lines[1:len(human)]] == human[1:]

    # a third run does nothing
    logs.clear()
    run_pipeline(_tiny_cfg(tmp_path), run_dir, log=logs.append)
    assert all(line.endswith("skipped") for line in logs), logs
    assert result.official.keys() == table["variants"].keys()


def test_finetune_mode_gives_the_baseline_the_same_extra_training(tmp_path):
    """retrain_from=baseline: every row, the baseline's too, is the baseline fine-tuned for
    pipeline.retrain_iterations on its own labels (no extra training credited to pseudo-labels)."""
    cfg = _tiny_cfg(tmp_path, ["pipeline.retrain_from=baseline", "pipeline.retrain_iterations=4",
                               "pipeline.parallel_trainings=1", "pipeline.variants=[baseline, lp]",
                               "pipeline.eval_3d_slices=1"])
    run_dir = tmp_path / "ft"
    result = run_pipeline(cfg, run_dir, log=lambda s: None)
    models = run_dir / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["baseline", "baseline_finetuned", "lp"]
    for name, iterations in (("baseline", 12), ("baseline_finetuned", 4), ("lp", 4)):
        records = [json.loads(x) for x in (models / name / "metrics.jsonl").read_text().splitlines()]
        assert max(r["iteration"] for r in records) == iterations, name
    marker = json.loads((run_dir / "stages" / "train_baseline_finetuned.json").read_text())
    assert marker["info"]["best_checkpoint"] == str(models / "baseline_finetuned" / "best.pt")
    evaluated = json.loads((run_dir / "stages" / "eval_baseline.json").read_text())
    assert set(result.official) == {"baseline", "lp"} and evaluated["outputs"]
    # eval_3d_slices=1: one prediction run on K-1..K+1 serves the key-slice and the 3D (lens) evaluation
    assert set(result.lens) == {"baseline", "lp"} and result.lens["lp"]["window"] == 1
    assert result.lens["lp"]["protocol"] == "lens" and len(result.lens["lp"]["sensitivity"]) == 7
    table = json.loads((result.report_dir / "table.json").read_text())
    assert set(table["lens"]) == {"baseline", "lp"}
    lens = table["lens"]["lp"]         # with bootstrap CIs over the test patients around each value
    assert len(lens["ci_low"]) == len(lens["ci_high"]) == 7 and len(lens["mean_ci"]) == 2
    assert all(lo <= s <= hi for s, lo, hi in zip(lens["sensitivity"], lens["ci_low"], lens["ci_high"]))
    text = (result.report_dir / "table.md").read_text()
    assert "In 3D against complete labels" in text and "bootstrap resamples of the test patients)" in text
    # the report says which initialisation and training lengths its numbers came from
    assert table["setup"]["initialisation"] == "from scratch (every weight random)"
    assert table["setup"]["baseline_iterations"] == 12
    assert table["setup"]["retrains"] == ("every row, the baseline's too, is the baseline fine-tuned on its "
                                          "labels for 4 iterations")
    assert "Initialisation: from scratch (every weight random). Baseline: 12 iterations" in text
    # each model's validation sensitivity (its best.pt's), the fine-tunes' beside the baseline's
    val = table["validation"]
    assert list(val) == ["baseline", "baseline_finetuned", "lp"]
    for name, r in val.items():
        bests = [json.loads(x)["best"] for x in (models / name / "metrics.jsonl").read_text().splitlines()
                 if "best" in json.loads(x)]
        assert bests and r["val_sensitivity_4fp"] == bests[-1], name
        assert r["vs_baseline"] == pytest.approx(bests[-1] - val["baseline"]["val_sensitivity_4fp"])
    assert "Each model on the validation split" in text and "| baseline as trained, before the fine-tunes |" in text


def test_report_names_each_initialisation():
    from lesionprop.config import load_config
    from lesionprop.pipeline.report import describe_setup, initialisation

    scratch = describe_setup(load_config(preset="cpu", overrides=["pipeline.retrain_iterations=7"]))
    assert scratch["retrains"] == "each variant trains like the baseline, from the same start, for 7 iterations"

    def init(*overrides):
        return initialisation(load_config(preset="cpu", overrides=list(overrides)).model)

    assert init() == "from scratch (every weight random)"
    assert init("model.init_backbone=synthetic-cpu").startswith("ResNet + FPN from `synthetic-cpu`")
    assert init("model.init_detector=synthetic-cpu-detector").startswith("whole detector")
    assert init("model.pretrained=w.pth").startswith("ImageNet ResNet from `w.pth`")


def test_retrain_settings_are_checked(tmp_path):
    from lesionprop.pipeline.plan import retrain_config

    with pytest.raises(ValueError, match="retrain_from"):
        retrain_config(_tiny_cfg(tmp_path, ["pipeline.retrain_from=imagenet"]))
    with pytest.raises(ValueError, match="retrain_iterations"):
        retrain_config(_tiny_cfg(tmp_path, ["pipeline.retrain_iterations=0"]))
    with pytest.raises(ValueError, match="retrain_base_lr"):
        retrain_config(_tiny_cfg(tmp_path, ["pipeline.retrain_base_lr=0"]))
    cfg = _tiny_cfg(tmp_path, ["pipeline.retrain_iterations=3", "pipeline.retrain_base_lr=0.001"])
    assert retrain_config(cfg).train.iterations == 3 and retrain_config(cfg).train.base_lr == 0.001
    assert retrain_config(cfg).train.warmup_iters == cfg.train.warmup_iters
    assert retrain_config(_tiny_cfg(tmp_path)) == _tiny_cfg(tmp_path)


def test_a_second_pipeline_in_the_same_run_folder_is_refused(tmp_path):
    from filelock import FileLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with FileLock(str(run_dir / ".pipeline.lock")):          # a pipeline already running there
        with pytest.raises(RuntimeError, match="another lesionprop pipeline is running"):  # LockHeldError
            run_pipeline(_tiny_cfg(tmp_path), run_dir, log=lambda s: None)
    assert not (run_dir / "stages").exists()                 # nothing was started


def test_a_worker_whose_pipeline_already_died_exits(tmp_path):
    # the initializer of the parallel trainings: a parent pid that is not the parent's means
    # the pipeline died while the worker was starting; the worker must not go on training
    code = "from lesionprop.pipeline.workers import die_with_parent; die_with_parent(-1); print('still alive')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "still alive" not in proc.stdout
    ok = subprocess.run([sys.executable, "-c", code.replace("-1", "__import__('os').getppid()")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "still alive" in ok.stdout


def test_model_validation_reads_each_models_best_and_skips_a_cut_line(tmp_path):
    from lesionprop.pipeline.report import model_validation

    logs = {"baseline": ['{"iteration": 10, "val_sensitivity_4fp": 0.5, "best": 0.5}'],
            "lp": ['{"iteration": 5, "best": 0.25}', '{"iteration": 10, "val_sens']}    # killed mid-line
    for name, lines in logs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines))
    val = model_validation(tmp_path, ["baseline", "lp", "mm"])
    assert list(val) == ["baseline", "lp", "mm"]                # no baseline_finetuned folder: not listed
    assert val["lp"] == {"val_sensitivity_4fp": 0.25, "vs_baseline": -0.25}
    assert val["mm"] == {"val_sensitivity_4fp": None, "vs_baseline": None}     # not trained (yet)


@pytest.mark.parametrize("cmd", ["pipeline", "demo"])
def test_a_file_given_as_the_run_folder_is_one_line(tmp_path, capsys, cmd):
    from lesionprop.cli import main

    target = tmp_path / "run.txt"
    target.write_text("keep\n")
    assert main([cmd, "--out", str(target)] + (["--preset", "demo"] if cmd == "pipeline" else [])) == 2
    assert capsys.readouterr().err == f"lesionprop {cmd}: error: --out {target} is a file, expected a folder\n"
    assert target.read_text() == "keep\n" and list(tmp_path.iterdir()) == [target]


def test_two_harvesting_rounds_report_each_rounds_labels_and_tables(tmp_path):
    """pipeline.rounds=2 on the miniature pipeline: round 2's label sets come from round 1's
    MM + LP model; the report has one entry per round with label quality and tables with CIs."""
    cfg = _tiny_cfg(tmp_path, ["pipeline.rounds=2", "pipeline.variants=[baseline, mm_lp]",
                               "pipeline.parallel_trainings=1"])
    run_dir = tmp_path / "rounds"
    run_pipeline(cfg, run_dir, log=lambda s: None)
    marker = json.loads((run_dir / "stages" / "predict_train_r2.json").read_text())
    assert marker["outputs"] == ["round2/preds/train_tta.csv"]
    table = json.loads((run_dir / "report" / "table.json").read_text())
    assert [e["round"] for e in table["rounds"]] == [1, 2]
    assert table["rounds"][1]["teacher"] == "round 1 MM + LP"
    for e in table["rounds"]:
        assert set(e["variants"]) == {"baseline", "mm_lp"} and set(e["label_quality"]) == {"mm", "lp", "mm_lp", "dd"}
        assert len(e["variants"]["mm_lp"]["ci_low"]) == 5
    # round 1's entry is the main table's numbers
    assert table["rounds"][0]["variants"]["mm_lp"]["sensitivity"] == table["variants"]["mm_lp"]["sensitivity"]
    text = (run_dir / "report" / "table.md").read_text()
    assert "## Harvesting in rounds" in text and "| 2 | FPN-3DCE + MM + LP (ours) |" in text
    logs: list[str] = []
    run_pipeline(cfg, run_dir, log=logs.append)
    assert all(line.endswith("skipped") for line in logs), logs
