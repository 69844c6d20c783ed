"""How fast a detector preset learns from scratch: train, then sensitivity on train / val / test.

Each named setting is a list of config overrides on top of ``--preset``; every run
trains on the same synthetic dataset, then predicts (no TTA) on the key slices of
the three splits and reports the sensitivity at 1, 2, 4, 8 FPs per image.  The
table in ``docs/detector.md`` ("Why the cpu preset looks the way it does") came
from these settings (the ``old_2mm*`` ones at ``--iterations 400``, the others at 1200):

    python benchmarks/bench_train_settings.py --jobs 2 --iterations 400 \
        --settings old_2mm old_2mm_window old_2mm_anchors025 old_2mm_adamw old_2mm_bn --out bench_out/ts400
    python benchmarks/bench_train_settings.py --jobs 2 --iterations 1200 \
        --settings preset 2mm_window_anchors025 16mm_window 16mm_window_clip --out bench_out/ts1200

``--train-patients-every K`` trains on every K-th training patient only (a copy of
the annotations in OUT; val and test unchanged), for a data-size ablation.
``--data DIR`` uses an existing dataset; otherwise 100 synthetic series (seed 0,
256 px, the demo's) are written to ``OUT/data``.  One thread per run; ``--jobs``
runs side by side.  Results: ``OUT/results.jsonl`` and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WINDOW = "data.window=[-200,300]"
#: name -> overrides on top of the preset (the experiments behind the cpu preset)
OLD_2MM = ["data.target_spacing_mm=2.0", "data.max_size=224", "data.clip_border=false", "data.window=[-1024,3071]"]
INIT_DET = ["data.aug_crop_px=160", "model.init_detector=synthetic-cpu-detector"]
TWO_MM = ["data.target_spacing_mm=2.0", "data.max_size=224", "data.clip_border=false"]
SETTINGS = {
    "preset": [],
    "old_2mm": OLD_2MM,                                    # 2 mm whole slices, 3DCE's window: the cpu preset's alternative
    "old_2mm_window": OLD_2MM + [WINDOW],
    "old_2mm_anchors025": OLD_2MM + ["model.anchor_scale=0.25"],
    "old_2mm_adamw": OLD_2MM + ["train.optimizer=adamw", "train.base_lr=0.002"],
    "old_2mm_bn": OLD_2MM + ["model.norm=bn"],
    "2mm_window_anchors025": TWO_MM + [WINDOW, "model.anchor_scale=0.25"],
    "16mm_window": ["data.target_spacing_mm=1.6", "data.max_size=288", "data.clip_border=false", WINDOW],
    "16mm_window_clip": ["data.target_spacing_mm=1.6", "data.max_size=288", "data.clip_border=true", WINDOW],
    "lr_x2": ["train.reference_batch_size=2"],            # lr 0.02 at 2 images (the preset: 0.01)
    "box_pos05": ["model.box_positive_fraction=0.5"],    # half the box head's RoIs positive (preset 0.25)
    "crop160": ["data.aug_crop_px=160"],                 # train on 160 px windows holding a lesion
    "crop128": ["data.aug_crop_px=128"],
    "crop160_x2": ["data.aug_crop_px=160", "train.iterations=2400"],   # about the preset's time
    "demo_baseline": ["data.aug_crop_px=160", "train.iterations=1800"],   # the demo's baseline training
    # backbone (ResNet + FPN) from the shipped synthetic pre-training (model card: docs/cpu_synth_backbone.md)
    "scratch_1800": ["data.aug_crop_px=160", "train.iterations=1800", "model.init_backbone=null"],
    "init_1800": ["data.aug_crop_px=160", "train.iterations=1800", "model.init_backbone=synthetic-cpu"],
    "init_1000": ["data.aug_crop_px=160", "train.iterations=1000", "model.init_backbone=synthetic-cpu"],
    "init_1200": ["data.aug_crop_px=160", "train.iterations=1200", "model.init_backbone=synthetic-cpu"],
    "init_oct_1800": ["data.aug_crop_px=160", "train.iterations=1800", "model.init_backbone=synthetic-cpu",
                      "model.anchor_octaves=[1,1.41]"],
    "init_oct_1000": ["data.aug_crop_px=160", "train.iterations=1000", "model.init_backbone=synthetic-cpu",
                      "model.anchor_octaves=[1,1.41]"],
    "scratch_oct_1800": ["data.aug_crop_px=160", "train.iterations=1800", "model.init_backbone=null",
                         "model.anchor_octaves=[1,1.41]"],
    # RPN positives from IoU 0.5 instead of 0.7: the cpu anchors reach 0.7 for only 5-47% of
    # lesions (docs/detector.md), so most lesions train the RPN through one best anchor
    "init_1000_rpnfg05": ["data.aug_crop_px=160", "train.iterations=1000", "model.init_backbone=synthetic-cpu",
                          "model.rpn_fg_iou_thresh=0.5"],
    # 1.0 mm pixels instead of 1.3 (lesions under 10 mm are the largest loss: 5-8 px at 1.3 mm);
    # same 160 px crops, so a step costs the same and inference 1.7x
    "init_1000_10mm": ["data.aug_crop_px=160", "train.iterations=1000", "model.init_backbone=synthetic-cpu",
                       "data.target_spacing_mm=1.0", "data.max_size=416"],
    # the whole detector (RPN and box head too) from the shipped synthetic-cpu-detector
    "init_det_1000": INIT_DET + ["train.iterations=1000"],
    "init_det_500": INIT_DET + ["train.iterations=500"],
    # the whole detector fine-tuned at a quarter / half of the cpu preset's lr (half: the demo's baseline)
    "init_det_1000_lr025": INIT_DET + ["train.iterations=1000", "train.base_lr=0.005"],
    "init_det_1000_lr05": INIT_DET + ["train.iterations=1000", "train.base_lr=0.01"],
}
SPLITS = ("train", "val", "test")
FPS = (1, 2, 4, 8)


def run_one(preset: str, overrides: list[str], data: Path, ann: Path, out: Path) -> dict:
    """Train one setting (this process) and evaluate it on the three splits."""
    import numpy as np
    import torch

    from lesionprop.config import load_config
    from lesionprop.annotations import read_annotations, series_geometry
    from lesionprop.engine.predict import flatten, infer, load_model, slice_names
    from lesionprop.engine.train import train
    from lesionprop.eval.froc import evaluate
    from lesionprop.predictions import Predictions

    cfg = load_config(None, preset, overrides)
    t0 = time.time()
    result = train(cfg, data, ann, out, progress=False)
    summary = {"seconds": round(time.time() - t0, 1), "iterations": result.iterations}
    lesions = read_annotations(ann)
    geometry = series_geometry(data, lesions)
    model, mcfg = load_model(out / "last.pt", torch.device("cpu"))
    for split in SPLITS:
        names = slice_names(lesions, data, "key", split)
        t1 = time.time()
        preds = Predictions.from_arrays(*flatten(*infer(model, mcfg, data, names, geometry, tta="none",
                                                        progress=False)))
        sens = evaluate(lesions, preds, split=split, fps=FPS).sensitivity
        summary[split] = [round(float(x), 3) for x in np.asarray(sens).reshape(-1)]
        summary[f"{split}_predict"] = {"images": len(names), "seconds": round(time.time() - t1, 1)}
    return summary


def thin_training_patients(ann: Path, every: int, out: Path) -> Path:
    """A copy of ``ann`` keeping every ``every``-th training patient (by index) and all val/test rows."""
    import csv

    with open(ann, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], rows[1:]
    split, patient = head.index("Train_Val_Test"), head.index("Patient_index")
    train_patients = sorted({r[patient] for r in body if r[split] == "1"}, key=int)
    keep = set(train_patients[::every])
    path = out / f"DL_info_train_patients_every{every}.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([head] + [r for r in body if r[split] != "1" or r[patient] in keep])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--settings", nargs="+", default=["preset"], help=f"any of {', '.join(SETTINGS)}")
    ap.add_argument("--iterations", type=int, default=None, help="train.iterations (default: the preset's)")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--train-patients-every", type=int, default=1, metavar="K",
                    help="train on every K-th training patient only (val and test unchanged): data-size ablation")
    ap.add_argument("--annotations", type=Path, default=None, help=argparse.SUPPRESS)   # worker mode
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench_out/train_settings"))
    ap.add_argument("--one", nargs=2, metavar=("NAME", "RUN_DIR"), help=argparse.SUPPRESS)   # worker mode
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="one more override for every setting, e.g. model.init_backbone=PATH (repeatable)")
    args = ap.parse_args()
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    extra = ([f"train.iterations={args.iterations}"] if args.iterations else []) + args.overrides
    if args.one:
        name, run_dir = args.one
        res = run_one(args.preset, SETTINGS[name] + extra, args.data, args.annotations, Path(run_dir))
        print(json.dumps(res))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.out / "data"
        if not (data / "DL_info.csv").is_file():
            subprocess.run([sys.executable, "-m", "lesionprop", "synth", "--out", str(data), "--series", "100",
                            "--seed", "0", "--image-size", "256", "--quiet"], check=True)
    ann = data / "DL_info.csv"
    if args.train_patients_every > 1:
        ann = thin_training_patients(ann, args.train_patients_every, args.out)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def launch(name: str) -> dict:
        run_dir = args.out / name
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists: choose another --out or remove it")
        cmd = [sys.executable, __file__, "--preset", args.preset, "--data", str(data), "--annotations", str(ann),
               "--settings", name,
               "--one", name, str(run_dir)] + (["--iterations", str(args.iterations)] if args.iterations else []) \
            + [a for o in args.overrides for a in ("--set", o)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"setting {name} failed:\n{proc.stderr[-2000:]}")
        res = {"setting": name, "overrides": SETTINGS[name] + extra, **json.loads(proc.stdout.strip().splitlines()[-1])}
        with open(args.out / "results.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(res) + "\n")
        print(json.dumps(res), flush=True)
        return res

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(launch, args.settings))
    lines = [f"Sensitivity at 4 FPs per image, no TTA, preset `{args.preset}`, data `{data}`", "",
             "| setting | iterations | seconds | train | val | test |", "| --- | --- | --- | --- | --- | --- |"]
    k = FPS.index(4)
    for r in results:
        lines.append(f"| {r['setting']} | {r['iterations']} | {r['seconds']:.0f} | "
                     + " | ".join(f"{r[s][k]:.2f}" for s in SPLITS) + " |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
