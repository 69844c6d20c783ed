"""The whole pipeline under torchrun: two gloo processes on the CPU run every stage (trainings and
predictions on both ranks, data, label sets and report on rank 0), and a plain rerun of the
finished folder finds every stage up to date."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from lesionprop.config import load_config
from lesionprop.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow

TINY = ["pipeline.synth_series=10",
        "pipeline.synth_args={image_size: 64, z_extent_mm: 30, progress: false, workers: 1}",
        "train.iterations=6", "train.eval_every=0", "train.checkpoint_every=3",
        "pipeline.variants=[baseline, lp]"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pipeline_on_two_torchrun_ranks_then_resumes_in_one_process(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "lesionprop", "pipeline", "--preset", "tiny",
           "--out", str(run_dir)]
    for o in TINY:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Table 1 / 2 with our numbers") == 1          # the report is printed by rank 0 only
    for name in ("synth", "train_baseline", "predict_train", "labels", "train_lp", "eval_baseline", "eval_lp",
                 "report"):
        assert (run_dir / "stages" / f"{name}.json").is_file(), name
    # both ranks trained: the logged loss is the mean over two ranks of one image each
    records = [json.loads(x) for x in (run_dir / "models" / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert {r["ranks"] for r in records if "loss" in r} == {2}
    table = json.loads((run_dir / "report" / "table.json").read_text())
    assert set(table["variants"]) == {"baseline", "lp"}
    logs: list[str] = []
    run_pipeline(load_config(preset="tiny", overrides=TINY), run_dir, log=logs.append)
    assert logs and all(line.endswith("up to date, skipped") for line in logs), logs
