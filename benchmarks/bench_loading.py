"""Loading speed of 9-slice 3DCE samples at 512 x 512: first touch (PNG decode) vs cached.

    .venv/bin/python benchmarks/bench_loading.py                  # builds bench_out/loading_data once
    .venv/bin/python benchmarks/bench_loading.py --data DIR       # any DeepLesion-layout root
    .venv/bin/python benchmarks/bench_loading.py --synth          # lesionprop synth data instead

Single process, one OpenCV / torch thread (per-core numbers; ``--threads`` changes
it).  Rates are given per wall-clock second and per CPU second of this process;
the latter is the per-core throughput even on a machine shared with other work.  Modes, each over the same items (every slice of every series, i.e. key and
adjacent slices, in a shuffled order):

* ``decode``: no cache, every slice of every sample decoded from PNG;
* ``first epoch``: in-memory cache starting empty (neighbours shared between
  items are decoded once);
* ``cached``: in-memory cache warm (what every later epoch costs);
* ``disk cache``: memory-mapped per-series arrays (``DataConfig.cache_dir``), warm;
* ``dataset train``: ``DetectionDataset.__getitem__`` with augmentation, cached.

The data is built once (unless ``--data`` names an existing root): by default a
local writer of noisy 512 x 512 body phantoms with DeepLesion's mix of slice
intervals and pixel spacings; with ``--synth``, ``lesionprop synth`` output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from lesionprop.config import DataConfig
from lesionprop.data.dataset import DetectionDataset, items_for_slices
from lesionprop.annotations import Lesion, read_annotations, series_geometry, write_annotations
from lesionprop.data.sample import sample_for
from lesionprop.data.layout import write_slice
from lesionprop.data.slices import SliceReader

# DeepLesion: 48% of series at 1 mm, 49% at 5 mm, the rest in between.
INTERVALS = (1.0, 5.0, 1.0, 5.0, 2.0, 5.0, 1.0, 5.0)
SPACINGS = (0.70, 0.78, 0.86, 0.74, 0.95, 0.68, 0.82, 0.80)


def write_local_dataset(root: Path, series: int, slices: int, size: int, seed: int = 0) -> None:
    """Noisy elliptic body phantoms as 16-bit PNG series + a DL_info.csv (one lesion per series)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rows = []
    for s in range(series):
        name = f"{s + 1:06d}_01_01"
        z, px = INTERVALS[s % len(INTERVALS)], SPACINGS[s % len(SPACINGS)]
        ax, ay = size * rng.uniform(0.35, 0.45), size * rng.uniform(0.28, 0.38)
        body = ((xx - size / 2) / ax) ** 2 + ((yy - size / 2) / ay) ** 2 < 1
        for i in range(1, slices + 1):
            organ = 60 * np.sin(xx / 23 + i * z / 17) * np.cos(yy / 31)
            hu = np.where(body, 40 + organ, -1000) + rng.normal(0, 25, (size, size))
            write_slice(root, name, i, hu)
        key = slices // 2
        rows.append(Lesion(
            file_name=f"{name}_{key:03d}.png", patient=s + 1, study=1, series_id=1, key_slice=key,
            measurement=(0.0,) * 8, box=(200.0, 200.0, 240.0, 230.0), diameters=(40.0, 30.0),
            location=(0.5, 0.5, 0.5), lesion_type=-1, noisy=0, slice_range=(1, slices),
            spacing=(px, px, z), image_size=(size, size), windows=(-175.0, 275.0), gender="F",
            age=60.0, split=1))
    write_annotations(root / "DL_info.csv", rows)


def ensure_dataset(args: argparse.Namespace) -> Path:
    """``--data`` if it holds a dataset, else build one there (default under bench_out/)."""
    default = "bench_out/loading_synth" if args.synth else "bench_out/loading_data"
    root = Path(args.data or default)
    if (root / "DL_info.csv").is_file():
        return root
    t = time.perf_counter()
    if args.synth:
        from lesionprop.synth.dataset import generate_dataset

        generate_dataset(root, series=args.series, seed=0)
    else:
        write_local_dataset(root, args.series, args.slices, args.size)
    print(f"wrote {root} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return root


def timed(fn, items, min_seconds: float) -> tuple[float, float, int]:
    """(samples per wall second, samples per CPU second of this process, samples) over at
    least one pass and ``min_seconds``.  The CPU-time rate is the per-core throughput even
    when other processes share the machine."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        for it in items:
            fn(it)
            n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt, n / max(time.process_time() - c0, 1e-9), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="DeepLesion-layout root; built there when it has no DL_info.csv "
                                  "(default bench_out/loading_data, or bench_out/loading_synth with --synth)")
    p.add_argument("--synth", action="store_true", help="build the data with lesionprop.synth.dataset")
    p.add_argument("--series", type=int, default=8)
    p.add_argument("--slices", type=int, default=40, help="slices per series (local writer)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum time per cached mode")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)

    root = ensure_dataset(args)
    load = os.getloadavg()
    lesions = read_annotations(root / "DL_info.csv")
    geometry = series_geometry(root, lesions)
    probe = SliceReader(root)
    names = [f"{s}_{i:03d}.png" for s in sorted(geometry) for i in probe.available_slices(s)]
    items = items_for_slices(names)
    order = np.random.default_rng(0).permutation(len(items))
    items = [items[i] for i in order]
    cfg = DataConfig()
    shapes = set()

    def runner(reader):
        def fn(it):
            img, _ = sample_for(reader, it.series, it.slice_index, geometry[it.series], cfg)
            shapes.add(img.shape)
        return fn

    results = {}
    import warnings
    warnings.simplefilter("ignore")                 # series-edge fallbacks are expected here
    no_cache = SliceReader(root, cache=False)
    sub = items[: max(1, min(len(items), 60))]
    results["decode"] = timed(runner(no_cache), sub, 0.0)
    first = SliceReader(root, max_cache_bytes=8 << 30)
    results["first epoch"] = timed(runner(first), items, 0.0)
    results["cached"] = timed(runner(first), items, args.seconds)
    cache_dir = root.parent / (root.name + "_cache")
    shutil.rmtree(cache_dir, ignore_errors=True)           # time the pre-pass from scratch
    disk = SliceReader(root, cache_dir=cache_dir)
    t = time.perf_counter()
    for s in geometry:
        disk.prepare_series(s)
    prepass = time.perf_counter() - t
    results["disk cache"] = timed(runner(disk), items, args.seconds)
    ds = DetectionDataset(root, items, cfg, geometry=geometry, train=True, reader=first)
    results["dataset train"] = timed(lambda i: ds[i], range(len(ds)), args.seconds)
    ds_eval = DetectionDataset(root, items, cfg, geometry=geometry, train=False, reader=first)
    results["dataset eval"] = timed(lambda i: ds_eval[i], range(len(ds_eval)), args.seconds)

    intervals = sorted({g.spacing[2] for g in geometry.values()})
    print(f"data: {root} ({len(geometry)} series, {len(items)} slices, intervals {intervals} mm, "
          f"sample shapes {sorted(shapes)})")
    print(f"machine: {platform.processor() or platform.machine()}, threads {args.threads}, "
          f"python {platform.python_version()}, opencv {cv2.__version__}, numpy {np.__version__}")
    print(f"disk-cache pre-pass: {prepass:.1f} s for {len(items)} slices "
          f"({len(items) / max(prepass, 1e-9):.0f} slices/s)\n")
    print(f"load average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)\n")
    print("| mode | samples/s (wall) | samples per CPU-second | samples timed |")
    print("| --- | ---: | ---: | ---: |")
    for mode, (rate, cpu_rate, n) in results.items():
        print(f"| {mode} | {rate:.1f} | {cpu_rate:.1f} | {n} |")
    ratio = results["cached"][1] / results["decode"][1]
    print(f"\ncached / decode (CPU-second rates): {ratio:.1f}x; cached / first epoch: "
          f"{results['cached'][1] / results['first epoch'][1]:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({k: {"wall": v[0], "cpu": v[1]} for k, v in results.items()} | {
            "ratio_cached_decode": ratio, "threads": args.threads, "prepass_s": prepass}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
