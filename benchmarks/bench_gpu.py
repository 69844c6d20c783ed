"""DeepLesion-scale speed on one GPU, measured on synthetic 512 px data, projected to the full pipeline.

    python benchmarks/bench_gpu.py                         # one GPU: about 5-8 minutes
    python benchmarks/bench_gpu.py --tiny --device cpu     # the CPU twin (tests/test_bench_gpu.py)

One script, in this order (each part writes its rows as soon as it has them):

1. data: a synthetic DeepLesion-format dataset (512 px slices, ``lesionprop synth``) made with
   every core of the machine;
2. loader: uncached 9-slice training samples per second for 0, 1, 2, 4, ... loader workers,
   and per worker-second;
3. training (the ``resnet50`` preset: ResNet-50 FPN-3DCE, 512 px): images/s, the share of time
   spent waiting for data, peak GPU and host memory, for AMP on/off x channels_last on/off at
   a one-GPU batch, and at the per-GPU share of an 8-GPU batch (2 images);
4. inference: the model alone (random 512 px inputs, the preset's batch) and ``predict``
   end to end (decode, flip + 3 scales, merge, write) on the training key slices and their
   neighbours, AMP and fp32, with the largest score difference between them;
5. a stage-by-stage projection of the full pipeline on DeepLesion (22,919 training key slices,
   68,757 K / K +/- 1 slices, 4,817 test key slices; 36,000 iterations of 16 images per
   training, five trainings) on 1 and 8 GPUs.

Results go to ``--out`` (default ``benchmarks/results/gpu.md``) with the command, date and device.
The backbone is randomly initialised with frozen BatchNorm (the ImageNet run's normalisation;
the hub weights cannot be fetched offline): every stage trains, a little more backward work
than the ImageNet run, which freezes the stem and layer1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from lesionprop.annotations import Split, read_annotations, write_annotations
from lesionprop.config import load_config
from lesionprop.engine.meter import host_pss_mb

#: DeepLesion's sizes (REFERENCE.md) and the paper's schedule
DEEPLESION = {"train_key_slices": 22919, "k_pm1_slices": 68757, "test_key_slices": 4817, "iterations": 36000,
              "batch": 16, "trainings": 5, "evaluations": 5, "tta_views": 6}
#: what an 8-GPU step keeps of 8 single GPUs' work (gradient all-reduce over NVLink); an assumption,
#: stated beside every 8-GPU figure: one GPU cannot measure it
DDP_EFFICIENCY = 0.9


def make_data(work: Path, series: int, image_size: int) -> tuple[Path, Path, float]:
    """A synthetic dataset and its annotations without the val split (no validation in timed runs)."""
    from lesionprop.synth.dataset import generate_dataset

    root = work / "data"
    t0 = time.perf_counter()
    if not (root / "DL_info.csv").is_file():
        shutil.rmtree(root, ignore_errors=True)
        generate_dataset(root, series=series, seed=0, image_size=image_size, workers=os.cpu_count() or 1,
                         progress=False)
    seconds = time.perf_counter() - t0
    rows = read_annotations(root / "DL_info.csv")
    keep = rows.take(np.flatnonzero(rows.split != int(Split.VAL)))
    ann = work / "train_test.csv"
    write_annotations(ann, keep)
    return root, ann, seconds


def loader_rates(cfg, root: Path, ann: Path, workers: list[int], seconds: float) -> list[dict]:
    """Uncached training samples per second for each worker count (the decode-bound case)."""
    from dataclasses import replace

    from lesionprop.annotations import series_geometry
    from lesionprop.data.dataset import DetectionDataset, collate, items_from_boxes
    from lesionprop.engine.loader import make_loader

    rows = read_annotations(ann)
    train = rows.select(Split.TRAIN, sources=None, drop_noisy=False)
    data_cfg = replace(cfg.data, cache_mb=0)
    ds = DetectionDataset(root, items_from_boxes(train.file_name, train.boxes), data_cfg,
                          geometry=series_geometry(root, rows), train=True)
    out = []
    for w in workers:
        order = np.random.default_rng(w).permutation(len(ds)).tolist() * max(50, 20000 // max(len(ds), 1))
        loader = make_loader(ds, workers=w, device=torch.device("cpu"), collate_fn=collate, batch_size=4,
                             indices=order)
        it = iter(loader)
        next(it)                                # workers started, first batches in flight
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += len(next(it)[0])
        rate = n / (time.perf_counter() - t0)
        del it, loader
        out.append({"workers": w, "samples_per_s": rate, "per_worker_s": rate / max(w, 1)})
    return out


def training_rate(cfg, root: Path, ann: Path, run: Path, device: str) -> dict:
    """``train`` itself (workers, AMP, channels_last as ``cfg`` says): the mean of every logging
    window after the first (warm-up, cudnn tuning, worker start)."""
    from lesionprop.engine.train import train

    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):         # the run's own notes (no val split) are expected
        train(cfg, root, ann, run, device=device, progress=False)
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    win = [r for r in recs if "images_per_s" in r][1:] or [r for r in recs if "images_per_s" in r]
    shutil.rmtree(run, ignore_errors=True)
    return {"images_per_s": float(np.mean([r["images_per_s"] for r in win])),
            "data_wait_share": float(np.mean([r["data_wait_share"] for r in win])),
            "gpu_peak_mb": max((r.get("gpu_peak_mb", 0.0) for r in win), default=0.0),
            "host_pss_mb": max(r["host_pss_mb"] for r in win), "wall_s": wall}


@torch.no_grad()
def model_only_rate(cfg, device: torch.device, amp: bool, steps: int) -> float:
    """Images per second of eval forward passes on random uint8 inputs of the preset's size."""
    from lesionprop.engine.loader import amp_dtype
    from lesionprop.model.detector import build_detector

    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.data.num_slices, load_pretrained=False).to(device).eval()
    size, batch = cfg.data.max_size, cfg.predict.batch_size
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (cfg.data.num_slices, size, size), generator=g, dtype=torch.uint8).to(device)
              for _ in range(batch)]
    dtype = amp_dtype(device) if amp and device.type == "cuda" else None
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model(images)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(images)
        _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Samples :func:`host_pss_mb` (this process, its loader workers and their forkserver) every
    ``every`` seconds in a thread; ``peak`` is the largest sample."""

    def __init__(self, every: float = 0.25):
        import threading

        self.peak, self.every, self._stop = 0.0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, host_pss_mb())
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, host_pss_mb())


def predict_run(ckpt: Path, root: Path, ann: Path, cfg, out: Path, device: str, amp: bool,
                slices: str = "both", split: str = "train", tta: str = "flip+scales",
                extra: list[str] | None = None, names: list[str] | None = None) -> dict:
    """``predict`` end to end (decode, views, merge, write); by default the label tools' job: the
    training key slices and their neighbours with flip + scales."""
    from lesionprop.engine.predict import predict, slice_names
    from lesionprop.engine.tta import tta_views

    names = names or slice_names(read_annotations(ann), root, slices, split)
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        preds = predict(ckpt, root, ann, tta=tta, out_csv=out, device=device, file_names=names, progress=False,
                        overrides=[f"predict.amp={'true' if amp else 'false'}"] + list(extra or []))
    wall = time.perf_counter() - t0
    views = len(names) * len(tta_views(tta, cfg.predict.tta_scales))
    return {"slices": len(names), "views_per_s": views / wall, "slices_per_s": len(names) / wall, "wall_s": wall,
            "host_pss_mb": mem.peak, "preds": preds}


def predict_memory(ckpt: Path, root: Path, ann: Path, cfg, work: Path, device: str) -> dict:
    """Peak host memory of ``predict`` (every process, PSS) at two slice counts (the training key
    slices and their neighbours, and four times as many: the same slices again) and two worker
    counts, projected to DeepLesion's 68,757 K / K +/- 1 slices with the default workers.  On a
    CPU device the model's activations live in host memory too; on a GPU they do not."""
    from lesionprop.engine.loader import resolve_workers
    from lesionprop.engine.predict import slice_names

    names = slice_names(read_annotations(ann), root, "both", "train")
    small, large = names, names * 4                 # the same slices again: only the results grow
    runs = {}
    for key, (subset, workers) in {"small_2": (small, 2), "large_2": (large, 2), "large_4": (large, 4)}.items():
        runs[key] = predict_run(ckpt, root, ann, cfg, work / f"mem_{key}.csv", device, True, tta="none",
                                extra=[f"data.num_workers={workers}"], names=subset)["host_pss_mb"]
    per_slice = max(0.0, (runs["large_2"] - runs["small_2"]) / max(1, len(large) - len(small)))
    per_worker = max(0.0, (runs["large_4"] - runs["large_2"]) / 2)
    workers = resolve_workers(None, "cuda", local_world=1, cores=os.cpu_count() or 1)
    projected = runs["large_2"] + per_slice * (DEEPLESION["k_pm1_slices"] - len(large)) + per_worker * (workers - 2)
    return {**runs, "slices_small": len(small), "slices_large": len(large), "per_slice_mb": per_slice,
            "per_worker_mb": per_worker, "default_workers": workers, "projected_mb": projected}


def largest_score_difference(a, b) -> tuple[float, int]:
    """Max |score difference| of boxes matched (IoU > 0.9, same slice) between two predictions,
    and how many boxes found no match."""
    from torchvision.ops import box_iou

    worst, unmatched = 0.0, 0
    names = sorted(set(a.file_names) | set(b.file_names))
    for n in names:
        ia, ib = np.flatnonzero(a.file_names == n), np.flatnonzero(b.file_names == n)
        if len(ia) == 0 or len(ib) == 0:
            unmatched += len(ia) + len(ib)
            continue
        iou = box_iou(torch.as_tensor(a.boxes[ia]), torch.as_tensor(b.boxes[ib])).numpy()
        j = iou.argmax(1)
        ok = iou[np.arange(len(ia)), j] > 0.9
        unmatched += int((~ok).sum())
        if ok.any():
            worst = max(worst, float(np.abs(a.scores[ia][ok] - b.scores[ib][j[ok]]).max()))
    return worst, unmatched


def projection(train_1: float, train_8: float, infer_views: float, infer_key: float,
               label_s: float = 10.0, report_s: float = 120.0) -> list[tuple[str, float, float]]:
    """``(stage, hours on 1 GPU, hours on 8 GPUs)`` of the full pipeline on DeepLesion.

    ``train_1``: training images/s on one GPU at 16 images per step; ``train_8``: per-GPU images/s
    at 2 images per step (one GPU's share of 16 over 8), scaled by :data:`DDP_EFFICIENCY`;
    ``infer_views``: predict's TTA views/s end to end; ``infer_key``: its slices/s without TTA.
    """
    d = DEEPLESION
    images = d["iterations"] * d["batch"]
    eight = 8 * train_8 * DDP_EFFICIENCY
    rows = [("baseline training", images / train_1, images / eight),
            ("TTA predictions, K and K +/- 1", d["k_pm1_slices"] * d["tta_views"] / infer_views,
             d["k_pm1_slices"] * d["tta_views"] / (8 * infer_views)),
            ("four label sets (CPU, one read)", label_s, label_s),
            ("four retrains", 4 * images / train_1, 4 * images / eight),
            ("five test evaluations", d["evaluations"] * d["test_key_slices"] / infer_key,
             d["evaluations"] * d["test_key_slices"] / (8 * infer_key)),
            ("report", report_s, report_s)]
    rows = [(name, a / 3600, b / 3600) for name, a, b in rows]
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the CPU twin: tiny preset, 64 px, a few iterations")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--work", default="bench_out/gpu", help="scratch folder (data, runs)")
    ap.add_argument("--out", default="benchmarks/results/gpu.md")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per loader measurement")
    ap.add_argument("--loader-only", action="store_true",
                    help="data and loader rows only (512 px samples on a machine without a GPU)")
    ap.add_argument("--memory-only", action="store_true",
                    help="data and predict's host memory only (the projection to 68,757 slices)")
    ap.add_argument("--series", type=int, default=None, help="synthetic series (default 100; tiny 8)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tiny = args.tiny
    preset, size, series = ("tiny", 64, 8) if tiny else ("resnet50", 512, 100)
    series = args.series or series
    iters, log_every = (6, 2) if tiny else (60, 10)
    seconds = args.seconds or (1.0 if tiny else 8.0)
    base = ["model.pretrained=null", "model.norm=frozen_bn", f"train.iterations={iters}",
            f"train.log_every={log_every}", "train.eval_every=0", "train.checkpoint_every=100000"]
    cfg = load_config(preset=preset, overrides=base)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [f"# GPU benchmark: {'CPU twin (tiny mode)' if tiny else 'ResNet-50 FPN-3DCE at 512 px'}", "",
             f"    python benchmarks/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}", "",
             f"{date.today().isoformat()}, {name}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
             f"Python {platform.python_version()}.", ""]

    def emit(*new: str) -> None:
        lines.extend(new)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(new), flush=True)

    root, ann, synth_s = make_data(work, series, size)
    emit(f"Data: {series} synthetic series at {size} px (`lesionprop synth`, {os.cpu_count()} workers) in "
         f"{synth_s:.1f} s.", "")

    cores = os.cpu_count() or 1
    counts = sorted({0, 1, 2, 4, 8, max(1, cores - 1)} if not tiny else {0, 1})
    counts = [c for c in counts if c < max(2, cores)]
    emit("## Loader: uncached 9-slice training samples (PNG decode, z-interpolation, window, resize, "
         "augmentation)", "", "| workers | samples/s | per worker-second |", "| ---: | ---: | ---: |")
    for r in loader_rates(cfg, root, ann, counts, seconds):
        emit(f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['per_worker_s']:.1f} |")
    if args.loader_only:
        return 0
    if args.memory_only:
        from lesionprop.engine.train import train

        c = load_config(preset=preset, overrides=base)
        ckpt_run = work / "ckpt"
        shutil.rmtree(ckpt_run, ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()):
            train(load_config(preset=preset, overrides=base + ["train.iterations=1"]), root, ann, ckpt_run,
                  device=args.device, progress=False)
        mem = predict_memory(ckpt_run / "last.pt", root, ann, c, work, args.device)
        emit("", "## Host memory of predict", "", "```", json.dumps(mem, indent=1), "```")
        return 0

    emit("", f"## Training (`{preset}` preset, {iters} iterations, default workers)", "",
         "| batch | AMP | channels_last | images/s | data wait | peak GPU MiB | host MiB (all processes) |",
         "| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    rates = {}
    settings = [(16 if not tiny else 2, amp, cl) for amp in (True, False) for cl in (True, False)]
    settings.append((2, True, True))
    for batch, amp, cl in settings:
        c = load_config(preset=preset, overrides=base + [f"train.batch_size={batch}", f"train.amp={amp}",
                                                          f"train.channels_last={cl}"])
        r = training_rate(c, root, ann, work / "run", args.device)
        rates[(batch, amp, cl)] = r
        emit(f"| {batch} | {'on' if amp else 'off'} | {'on' if cl else 'off'} | {r['images_per_s']:.1f} | "
             f"{100 * r['data_wait_share']:.1f} % | {r['gpu_peak_mb']:.0f} | {r['host_pss_mb']:.0f} |")

    emit("", "## Inference", "")
    c = load_config(preset=preset, overrides=base)
    alone = {amp: model_only_rate(c, device, amp, 3 if tiny else 20) for amp in (True, False)}
    from lesionprop.engine.train import train

    ckpt_run = work / "ckpt"
    shutil.rmtree(ckpt_run, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):
        train(load_config(preset=preset, overrides=base + ["train.iterations=2"]), root, ann, ckpt_run,
              device=args.device, progress=False)
    runs = {amp: predict_run(ckpt_run / "last.pt", root, ann, c, work / f"preds_{amp}.csv", args.device, amp)
            for amp in (True, False)}
    worst, unmatched = largest_score_difference(runs[True]["preds"], runs[False]["preds"])
    emit("| | model alone, images/s | predict end to end, views/s | end to end / model | slices | "
         "peak host MiB (all processes) |", "| --- | ---: | ---: | ---: | ---: | ---: |")
    for amp in (True, False):
        r = runs[amp]
        emit(f"| {'AMP' if amp else 'fp32'} | {alone[amp]:.1f} | {r['views_per_s']:.1f} | "
             f"{100 * r['views_per_s'] / alone[amp]:.0f} % | {r['slices']} | {r['host_pss_mb']:.0f} |")
    emit("", f"AMP vs fp32 predictions: largest score difference of matched boxes {worst:.4f}; "
             f"{unmatched} boxes without a match (IoU > 0.9 on the same slice).")

    one_gpu = [r for (batch, _, _), r in rates.items() if batch == settings[0][0]]
    best_1 = max(one_gpu, key=lambda r: r["images_per_s"])
    eight = rates[(2, True, True)]
    key = predict_run(ckpt_run / "last.pt", root, ann, c, work / "preds_test.csv", args.device, True,
                      slices="key", split="test", tta="none")
    emit(f"Test key slices without TTA (the evaluations' job): {key['slices_per_s']:.1f} slices/s end to end "
         f"({key['slices']} slices).")
    mem = predict_memory(ckpt_run / "last.pt", root, ann, c, work, args.device)
    emit("", f"Host memory of `predict` (all processes, PSS, no TTA): {mem['small_2']:.0f} MiB for "
             f"{mem['slices_small']} slices and {mem['large_2']:.0f} MiB for {mem['slices_large']} with 2 loader "
             f"workers, {mem['large_4']:.0f} MiB with 4: {mem['per_slice_mb'] * 1024:.1f} KiB per slice, "
             f"{mem['per_worker_mb']:.0f} MiB per worker. Projected for DeepLesion's "
             f"{DEEPLESION['k_pm1_slices']:,} K / K +/- 1 slices with the default {mem['default_workers']} workers of "
             f"this machine: **{mem['projected_mb'] / 1024:.1f} GiB per rank**.")
    rows = projection(best_1["images_per_s"], eight["images_per_s"], runs[True]["views_per_s"], key["slices_per_s"])
    emit("", "## Projection: the full pipeline on DeepLesion", "",
         f"From the rates above (best one-GPU training setting; 8 GPUs: {8} x the 2-image rate x "
         f"{DDP_EFFICIENCY} assumed all-reduce efficiency; TTA predictions and evaluations sharded over the "
         "ranks; label sets and report on one process)."
         + (" Tiny mode: the projection's arithmetic on a toy model, not a forecast." if tiny else ""), "",
         "| stage | 1 GPU, h | 8 GPUs, h |", "| --- | ---: | ---: |")
    for stage, a, b in rows:
        emit(f"| {stage} | {a:.2f} | {b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
