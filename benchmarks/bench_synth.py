"""Time ``lesionprop synth``: 100 series at the default settings (512 px, 60 mm per series).

    .venv/bin/python benchmarks/bench_synth.py                       # 100 series, defaults, auto workers
    .venv/bin/python benchmarks/bench_synth.py --workers 1           # one process (per-core cost)
    .venv/bin/python benchmarks/bench_synth.py --image-size 256 --max-slices 16

Writes into a temporary folder (removed afterwards unless ``--keep DIR``) and
prints wall seconds, CPU seconds of this process and its workers, slices per
second and bytes written, as one JSON line after a readable summary.  On a
machine shared with other work, the CPU seconds are the stable number; wall
time depends on the load (the load average is printed with the result).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from lesionprop.synth.dataset import generate_dataset


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--max-slices", type=int, default=None)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--background", default=None)
    ap.add_argument("--organ-mask", default=None)
    ap.add_argument("--keep", default=None, help="write here and keep the dataset")
    args = ap.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_synth_")) / "data"
    load_before = os.getloadavg()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    summary = generate_dataset(out, series=args.series, seed=args.seed, background=args.background,
                               organ_mask=args.organ_mask, image_size=args.image_size,
                               max_slices=args.max_slices, workers=args.workers, progress=False)
    # this process and its waited-for children, plus the series workers' own CPU time (pool workers of a
    # forkserver are not our children, so their time is reported by each series)
    workers = min(args.workers or min(os.cpu_count() or 1, 4), args.series)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0 + (summary.cpu_seconds if workers > 1 else 0.0)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result = {"series": summary.series, "slices": summary.slices, "lesions": summary.lesions,
              "image_size": args.image_size, "workers": workers,
              "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "slices_per_s": round(summary.slices / wall, 1),
              "cpu_ms_per_slice": round(1000 * cpu / summary.slices, 2), "megabytes": round(size / 1e6, 1),
              "cpu_count": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before],
              "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print(summary)
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
