"""Fault injection in the suite (issue 11): SIGKILL at seeded random moments, rerun, compare.

The harness is ``benchmarks/bench_faults.py`` (a longer seeded run lives there); here a
few kill points per command on a tiny synthetic dataset and the ``tiny`` preset:
``train`` (checkpoints tensor for tensor after ``--resume``), ``predict``,
``mine`` / ``propagate`` / ``distill``, ``link`` and ``detect`` (CSVs byte for byte), every input
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


# 30 kill points in the suite (the pipeline's own kill-and-resume test is in test_pipeline.py;
# benchmarks/bench_faults.py runs more, the pipeline included)
@pytest.mark.parametrize("name, kills", [("train", 5), ("predict", 5), ("mine", 4), ("propagate", 4),
                                         ("distill", 4), ("link", 4), ("detect", 4)])
def test_killed_command_rerun_gives_the_uninterrupted_outputs(work, name, kills):
    folder, scenarios = work
    rng = random.Random(f"faults-{name}")
    records = bench_faults.kill_points(scenarios[name], folder, kills, rng, log=lambda s: None)
    failures = [r for r in records if r["problems"] or r.get("note")]
    assert failures == []
    assert len([r for r in records if r["kill"] != "inputs"]) == kills


# ---------------------------------------------------------------- full disk, read-only folder

def _label_args(work, out: Path) -> list[str]:
    folder, _ = work
    return ["mine", "--annotations", str(folder / "data" / "DL_info.csv"), "--predictions",
            str(folder / "fixed_preds.csv"), "--out", str(out)]


def _assert_refused_cleanly(rc: int, err: str, out: Path, before: bytes, reason: str) -> None:
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and str(out) in err and reason in err, err
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_full_disk_during_a_write_keeps_the_previous_labels(work, tmp_path, monkeypatch, capsys):
    from lesionprop.cli import main as cli_main

    out = tmp_path / "labels.csv"
    assert cli_main(_label_args(work, out)) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    rc = cli_main(_label_args(work, out))
    _assert_refused_cleanly(rc, capsys.readouterr().err, out, before, "No space left on device")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lesionprop", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_real_full_disk_and_read_only_folder(work, small_tmpfs):
    out = small_tmpfs / "labels.csv"
    assert _cli(_label_args(work, out)).returncode == 0
    before = out.read_bytes()
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)    # fill the disk to the last byte
    try:
        for size in (4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    p = _cli(_label_args(work, out))
    assert "Traceback" not in p.stderr
    _assert_refused_cleanly(p.returncode, p.stderr, out, before, "No space left on device")
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    p = _cli(_label_args(work, out))
    _assert_refused_cleanly(p.returncode, p.stderr, out, before, "Read-only file system")


# ---------------------------------------------------------------- two writers

def _train_args(work, out: Path, *extra: str) -> list[str]:
    folder, _ = work
    return ["train", "--data", str(folder / "data"), "--annotations", str(folder / "data" / "DL_info.csv"),
            "--preset", "tiny", "--iterations", "8", "--device", "cpu", "--out", str(out), *extra]


def test_second_writer_of_a_run_folder_is_refused_naming_the_holder(work, tmp_path):
    import socket

    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "lesionprop", *_train_args(work, run, "--iterations", "100000")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    lock = tmp_path / ".run.lock"
    t0 = time.time()
    while not (lock.is_file() and lock.read_text().strip()) and time.time() - t0 < 60:
        time.sleep(0.1)
    second = _cli(_train_args(work, run))
    assert first.poll() is None, first.stderr.read()            # still training
    first.kill()                                                 # SIGKILL: the kernel drops its lock
    first.wait()
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"held by pid {first.pid} on host {socket.gethostname()}" in second.stderr
    third = _cli(_train_args(work, run, *(["--resume"] if (run / "last.pt").exists() else [])))
    assert third.returncode in (0, 2) and "held by" not in third.stderr        # the dead holder blocks nothing


def test_two_runs_share_one_dataset_and_its_slice_cache(work, tmp_path):
    import torch

    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-m", "lesionprop",
                               *_train_args(work, tmp_path / name, "--set", f"data.cache_dir={cache}")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for name in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)      # same seed, same model
    assert sorted(p.suffix for p in cache.iterdir()) and not list(cache.glob(".*.tmp*"))
