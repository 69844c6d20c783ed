"""Fault injection in the suite (issue 11): SIGKILL at seeded random moments, rerun, compare.

The harness is ``benchmarks/bench_faults.py`` (a longer seeded run lives there); here a
few kill points per command on a tiny synthetic dataset and the ``tiny`` preset:
``train`` (checkpoints tensor for tensor after ``--resume``), ``predict``,
``mine`` / ``propagate`` / ``distill`` and ``link`` (CSVs byte for byte), every input
hashed before and after.  Also: a failing write (ENOSPC, read-only folder) leaves the
previous good file, and two writers of one run folder are told who holds it.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_faults", REPO / "benchmarks" / "bench_faults.py")
bench_faults = importlib.util.module_from_spec(_spec)
sys.modules["bench_faults"] = bench_faults            # dataclasses look their module up
_spec.loader.exec_module(bench_faults)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("faults")
    data = bench_faults.prepare(work)
    return work, bench_faults.scenarios(data, work)


@pytest.mark.parametrize("name, kills", [("train", 3), ("predict", 2), ("mine", 2), ("propagate", 2),
                                         ("distill", 2), ("link", 2)])
def test_killed_command_rerun_gives_the_uninterrupted_outputs(work, name, kills):
    folder, scenarios = work
    rng = random.Random(f"faults-{name}")
    records = bench_faults.kill_points(scenarios[name], folder, kills, rng, log=lambda s: None)
    failures = [r for r in records if r["problems"]]
    assert failures == []
    assert len([r for r in records if r["kill"] != "inputs"]) == kills
