"""Fault injection: SIGKILL a command at seeded random moments, rerun it, compare with an uninterrupted run.

For each scenario (``train``, ``predict``, ``propagate`` / ``mine`` / ``distill``, ``link``,
``detect``, ``pipeline``) the harness runs the command once uninterrupted (the reference), then for
each kill point starts it again in a fresh folder, sends SIGKILL after a seeded random
delay in ``[0.3, 1.0] x`` the reference's wall time, checks that no expected output
stands half-written (an existing one must already equal the reference), reruns the very
same command to the end and checks:

* CSV / YAML / JSON outputs equal the reference byte for byte, checkpoints tensor for
  tensor (``model`` and ``optimizer`` states, iteration), the pipeline report's numbers;
* every input file hashes the same before and after.

Usage (the test suite runs a few kill points of the fast scenarios; this runs more)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_faults.py --kills 40 --seed 0 \
        --scenarios train,predict,mine,propagate,distill,link,detect,pipeline --out /tmp/faults

Results are printed as one line per kill point and a summary (kill points, survived,
failures with their reason); record them in ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PY = [sys.executable, "-m", "lesionprop"]
TINY_PIPELINE = ["--preset", "tiny", "--set", "pipeline.synth_series=10",
                 "--set", "pipeline.synth_args={image_size: 64, z_extent_mm: 30, progress: false, workers: 1}",
                 "--set", "train.iterations=12", "--set", "train.eval_every=0", "--set", "train.checkpoint_every=6",
                 "--set", "pipeline.parallel_trainings=2"]


@dataclass
class Scenario:
    """``cmd(out_dir)`` -> argv; ``outputs``: paths relative to ``out_dir`` compared with the reference."""

    name: str
    cmd: Callable[[Path], list[str]]
    outputs: list[str]
    inputs: list[Path] = field(default_factory=list)
    rerun: Callable[[Path], list[str]] | None = None     # the rerun's argv when it is not ``cmd``


def sha256_tree(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_to_end(argv: list[str], timeout: float = 900) -> float:
    """Run ``argv`` to completion; returns the wall time; RuntimeError on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(), start_new_session=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:4])} exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def run_and_kill(argv: list[str], delay: float) -> bool:
    """Start ``argv``, SIGKILL it (its main process only, as a crash would) after ``delay`` s.
    Returns True when it was killed, False when it finished first.  Children left behind in
    its process group are killed after a short grace, so the next run starts clean."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                         start_new_session=True)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        time.sleep(0.5)
        try:
            os.killpg(p.pid, signal.SIGKILL)        # pipeline workers that outlived the parent
        except ProcessLookupError:
            pass
        return True


def _tensors_equal(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def same_output(ref: Path, got: Path) -> str:
    """'' when ``got`` equals ``ref`` (bytes; checkpoints tensor for tensor; report JSON numbers), else why."""
    if not got.exists():
        return f"{got.name} missing"
    if got.suffix == ".pt":
        import torch

        a, b = torch.load(ref, weights_only=True), torch.load(got, weights_only=True)
        keys = [k for k in ("model", "optimizer", "iteration") if k in a]
        bad = [k for k in keys if not _tensors_equal(a[k], b.get(k))]
        return f"{got.name}: {', '.join(bad)} differ" if bad else ""
    if got.name.endswith(".nii.gz"):                # gzip stamps a time: compare voxels and affine
        import nibabel as nib
        import numpy as np

        a, b = nib.load(str(ref)), nib.load(str(got))
        same = np.array_equal(a.get_fdata(), b.get_fdata()) and np.array_equal(a.affine, b.affine)
        return "" if same else f"{got.name}: voxels or affine differ"
    if got.name == "metrics.jsonl":                 # every record but what measures the machine (time, memory)
        from lesionprop.engine.meter import MEASURED_KEYS

        def rows(p: Path) -> list[dict]:
            return [{k: v for k, v in json.loads(t).items() if k not in MEASURED_KEYS}
                    for t in p.read_text().splitlines()]
        return "" if rows(ref) == rows(got) else f"{got.name}: records differ"
    if got.name == "table.json":
        a, b = json.loads(ref.read_text()), json.loads(got.read_text())
        return "" if a == b else f"{got.name}: numbers differ"
    return "" if ref.read_bytes() == got.read_bytes() else f"{got.name}: bytes differ"


def half_written(ref_dir: Path, out_dir: Path, outputs: list[str]) -> list[str]:
    """Expected outputs that exist after the kill but are not a finished file.  A checkpoint
    must load; a text output must equal the reference (outputs are written once, atomically)."""
    bad = []
    for rel in outputs:
        got = out_dir / rel
        if not got.exists():
            continue
        if got.suffix == ".pt":
            import torch
            try:
                torch.load(got, weights_only=True)
            except Exception as exc:              # noqa: BLE001
                bad.append(f"{rel}: does not load ({type(exc).__name__})")
        elif rel.endswith((".csv", ".json", ".md", ".nii.gz")) and "stages/" not in rel and "metrics" not in rel \
                and "config" not in rel and same_output(ref_dir / rel, got):
            bad.append(f"{rel}: differs from a finished file")
    return bad


def kill_points(sc: Scenario, work: Path, kills: int, rng: random.Random, log=print) -> list[dict]:
    """The reference run, then ``kills`` killed-and-rerun copies; one record per kill point."""
    ref = work / f"{sc.name}_ref"
    shutil.rmtree(ref, ignore_errors=True)
    before = sha256_tree(sc.inputs)
    wall = run_to_end(sc.cmd(ref))
    records = []
    wall = max(wall, 1.0)
    for k in range(kills):
        out = work / f"{sc.name}_kill{k}"
        shutil.rmtree(out, ignore_errors=True)
        delay = rng.uniform(0.3, 1.0) * wall             # the first ~30% is mostly Python imports
        killed = run_and_kill(sc.cmd(out), delay)
        problems = half_written(ref, out, sc.outputs)
        note = ""
        try:
            if killed:
                run_to_end((sc.rerun or sc.cmd)(out))
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())
            if "nothing to train: the run is already at iteration" in msg:
                note = "killed after its last checkpoint: the rerun exits 2 'nothing to train'"
            else:
                problems.append(f"rerun failed: {msg[-200:]}")
        problems += [p for p in (same_output(ref / rel, out / rel) for rel in sc.outputs) if p]
        rec = {"scenario": sc.name, "kill": k, "delay_s": round(delay, 2), "killed": killed, "problems": problems,
               **({"note": note} if note else {})}
        log(json.dumps(rec))
        records.append(rec)
        shutil.rmtree(out, ignore_errors=True)
    after = sha256_tree(sc.inputs)
    if after != before:
        changed = [f for f in before if before[f] != after.get(f)]
        records.append({"scenario": sc.name, "kill": "inputs", "killed": False,
                        "problems": [f"input changed: {', '.join(changed)}"]})
    return records


def scenarios(data: Path, work: Path) -> dict[str, Scenario]:
    """Scenarios on a synthetic dataset ``data`` (tiny preset); the predict / label / link ones use
    the trained reference checkpoint and predictions made under ``work``."""
    ann = data / "DL_info.csv"
    ckpt, preds = work / "fixed_model", work / "fixed_preds.csv"
    train = ["train", "--data", str(data), "--annotations", str(ann), "--preset", "tiny", "--iterations", "12",
             "--set", "train.checkpoint_every=2", "--device", "cpu"]
    # `train --resume` refuses a folder without last.pt and `train` one with it: the rerun adds
    # --resume once a checkpoint exists (what a user does after a crash)
    out: dict[str, Scenario] = {
        "train": Scenario("train", lambda o: PY + train + ["--out", str(o)],
                          ["last.pt", "best.pt", "config.yaml", "metrics.jsonl"], [data],
                          rerun=lambda o: PY + train + ["--out", str(o)] + (["--resume"] if (o / "last.pt").exists()
                                                                            else [])),
        "predict": Scenario("predict", lambda o: PY + ["predict", "--checkpoint", str(ckpt), "--data", str(data),
                                                       "--annotations", str(ann), "--slices", "both", "--split", "all",
                                                       "--tta", "flip", "--device", "cpu", "--out", str(o / "p.csv")],
                            ["p.csv"], [data, ckpt]),
        "pipeline": Scenario("pipeline", lambda o: PY + ["pipeline", "--out", str(o)] + TINY_PIPELINE,
                             ["report/table.json", "report/table.csv", "report/table.md", "preds/train_tta.csv",
                              "preds/test_baseline.csv", "preds/test_lp.csv", "labels/labels_mm.csv",
                              "labels/labels_lp.csv", "labels/labels_mm_lp.csv", "labels/labels_dd.csv",
                              "models/baseline/last.pt"], []),
    }
    for tool in ("mine", "propagate", "distill"):
        out[tool] = Scenario(tool, lambda o, t=tool: PY + [t, "--annotations", str(ann), "--predictions", str(preds),
                                                           "--out", str(o / "labels.csv")],
                             ["labels.csv"], [data, preds])
    series = sorted(p.name for p in (data / "Images_png").iterdir())[0]
    out["detect"] = Scenario("detect", lambda o: PY + ["detect", str(data / "Images_png" / series), "--checkpoint",
                                                       str(ckpt), "--score", "0.05", "--device", "cpu", "--out", str(o)],
                             ["lesions.csv", "lesions.json", "predictions.csv", "lesions.nii.gz"], [data, ckpt])
    out["link"] = Scenario("link", lambda o: PY + ["link", "--predictions", str(preds),
                                                   "--out", str(o / "linked.csv")], ["linked.csv"], [data, preds])
    return out


def prepare(work: Path, data: Path | None = None) -> Path:
    """A tiny synthetic dataset, a trained tiny checkpoint and its predictions under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = work / "data"
        if not (data / "DL_info.csv").is_file():
            run_to_end(PY + ["synth", "--out", str(data), "--series", "6", "--seed", "0", "--image-size", "96",
                             "--z-extent", "20", "--workers", "1"])
    ann = data / "DL_info.csv"
    model = work / "fixed_model"
    if not (model / "best.pt").is_file():
        run_to_end(PY + ["train", "--data", str(data), "--annotations", str(ann), "--preset", "tiny",
                         "--iterations", "6", "--device", "cpu", "--out", str(model)])
    preds = work / "fixed_preds.csv"
    if not preds.is_file():
        run_to_end(PY + ["predict", "--checkpoint", str(model), "--data", str(data), "--annotations", str(ann),
                         "--slices", "both", "--split", "all", "--tta", "none", "--device", "cpu", "--out", str(preds)])
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/lesionprop_faults", help="work folder (deleted scenario by scenario)")
    ap.add_argument("--kills", type=int, default=40, help="kill points in all, shared among the scenarios")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default="train,predict,mine,propagate,distill,link,detect,pipeline")
    args = ap.parse_args(argv)
    work = Path(args.out)
    data = prepare(work)
    rng = random.Random(args.seed)
    names = [s for s in args.scenarios.split(",") if s]
    all_sc = scenarios(data, work)
    per = {n: args.kills // len(names) + (1 if i < args.kills % len(names) else 0) for i, n in enumerate(names)}
    records = []
    t0 = time.perf_counter()
    for n in names:
        records += kill_points(all_sc[n], work, per[n], rng)
    points = [r for r in records if r["kill"] != "inputs"]
    failed = [r for r in records if r["problems"]]
    print(json.dumps({"kill_points": len(points), "killed_before_end": sum(r["killed"] for r in points),
                      "survived": len(points) - sum(1 for r in points if r["problems"]), "failures": failed,
                      "seconds": round(time.perf_counter() - t0)}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
