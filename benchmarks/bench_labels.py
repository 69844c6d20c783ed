"""Speed of the label tools and the evaluation at DeepLesion scale, against per-box loops.

Run (one thread; the numbers in results/labels.md came from this command)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_labels.py [--key-slices 22919] [--loop-subset 300]

In one run it generates the synthetic input (22,919 key slices in the train split,
1-3 lesions each, 50 predictions on each of K-1, K, K+1; written as DL_info.csv and
a predictions CSV in a temp dir), then times: parsing both files; ``mine`` and
``propagate`` (vectorised core alone, and the full functions returning Lesion rows);
the whole CLIs (subprocess wall time); ``evaluate`` on 4,912 test images x 50 boxes;
and the per-box loops of ``reference_loops.py`` on the first ``--loop-subset`` key
slices, extrapolated linearly to all key slices (the vectorised code is timed on the
same subset too, and its output checked equal to the loop's).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loops import make_lesion, mine_loop, propagate_loop  # noqa: E402

from lesionprop.data.deeplesion import read_annotations, slice_file_name, write_annotations  # noqa: E402
from lesionprop.eval.froc import evaluate  # noqa: E402
from lesionprop.labels.index import PredIndex, Vocab, key_slices, lesion_series, split_rows  # noqa: E402
from lesionprop.labels.mine import mine, mine_arrays  # noqa: E402
from lesionprop.labels.propagate import propagate, propagate_arrays  # noqa: E402
from lesionprop.predictions import Predictions, read_predictions, write_predictions  # noqa: E402

PER_SLICE = 50


def _jitter(box: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    w = (box[:, 2] - box[:, 0])[:, None]
    h = (box[:, 3] - box[:, 1])[:, None]
    d = rng.uniform(-amount, amount, size=box.shape) * np.hstack([w, h, w, h])
    out = box + d
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return out


def synth(n_keys: int, split: int, seed: int, with_neighbours: bool = True):
    """Lesions (1-3 per key slice) and predictions (50 per slice on K-1, K, K+1)."""
    rng = np.random.default_rng(seed)
    lesions = []
    names, boxes, scores = [], [], []
    k_slices = 3 if with_neighbours else 1
    les_per_key = rng.integers(1, 4, n_keys)
    for i in range(n_keys):
        # two key slices per series, sometimes adjacent (then K+1 is a key slice)
        series = f"{1 + i // 2:06d}_01_01"
        k = 30 if i % 2 == 0 else (31 if rng.random() < 0.05 else 40)
        name = slice_file_name(series, k)
        wh = rng.uniform(10, 60, (les_per_key[i], 2))
        xy = rng.uniform(20, 440, (les_per_key[i], 2))
        g = np.hstack([xy, xy + wh])
        for b in g:
            lesions.append(make_lesion(name, b.round(3), split=split, lesion_type=int(rng.integers(1, 9))))
        # an unlabelled lesion seen on all three slices (for mining)
        extra = np.hstack([rng.uniform(20, 440, 2), 0])[:2]
        extra = np.hstack([extra, extra + rng.uniform(10, 50, 2)])[None]
        for o in (range(-1, 2) if with_neighbours else [0]):
            n_true = len(g) + 1
            true = _jitter(np.vstack([g, extra]), rng, 0.08)
            rand_xy = rng.uniform(0, 470, (PER_SLICE - n_true, 2))
            rand = np.hstack([rand_xy, rand_xy + rng.uniform(8, 60, (PER_SLICE - n_true, 2))])
            sl_boxes = np.vstack([true, rand])
            sl_scores = np.concatenate([rng.uniform(0.6, 1.0, n_true), rng.beta(1, 6, PER_SLICE - n_true)])
            perm = rng.permutation(PER_SLICE)
            names.extend([slice_file_name(series, k + o)] * PER_SLICE)
            boxes.append(sl_boxes[perm])
            scores.append(sl_scores[perm])
    del k_slices
    return lesions, np.asarray(names, dtype=object), np.vstack(boxes).round(4), np.concatenate(scores).round(6)


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--key-slices", type=int, default=22919)
    ap.add_argument("--eval-images", type=int, default=4912)
    ap.add_argument("--loop-subset", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory(prefix="bench_labels_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        lesions, names, boxes, scores = synth(args.key_slices, split=1, seed=0)
        ann, pred_csv = tmp / "DL_info.csv", tmp / "predictions.csv"
        write_annotations(ann, lesions)
        write_predictions(pred_csv, names, boxes, scores)
        print(f"generated {len(lesions)} lesions on {args.key_slices} key slices, {len(scores)} predictions "
              f"({pred_csv.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)

        t_ann, lesions = timed(lambda: read_annotations(ann))
        t_pred, preds = timed(lambda: read_predictions(pred_csv, known_series={les.series for les in lesions}))
        rows += [("parse DL_info.csv (%d rows)" % len(lesions), f"{t_ann:.2f} s"),
                 ("parse predictions CSV (%d rows)" % len(preds), f"{t_pred:.2f} s")]

        vocab = Vocab(lesion_series(lesions), preds.series_names)

        def core_mine():
            ks = key_slices(lesions, split_rows(lesions, "train", ("human",)), vocab)
            return mine_arrays(ks, PredIndex(preds, vocab), score=0.9, iou=0.5)

        def core_prop():
            ks = key_slices(lesions, split_rows(lesions, "train", ("human", "mined")), vocab)
            return propagate_arrays(ks, PredIndex(preds, vocab), iou=0.5, offsets=(-1, 1), keep="best")

        t_cm, _ = timed(core_mine, args.repeat)
        t_cp, _ = timed(core_prop, args.repeat)
        t_m, new_m = timed(lambda: mine(lesions, preds), args.repeat)
        t_p, new_p = timed(lambda: propagate(lesions, preds), args.repeat)
        rows += [("mine, vectorised core (arrays)", f"{t_cm:.2f} s"),
                 ("propagate, vectorised core (arrays)", f"{t_cp:.2f} s"),
                 (f"mine() -> {len(new_m)} Lesion rows", f"{t_m:.2f} s"),
                 (f"propagate() -> {len(new_p)} Lesion rows", f"{t_p:.2f} s"),
                 ("**mine + propagate, full functions**", f"**{t_m + t_p:.2f} s**")]

        # per-box loops on a subset, extrapolated
        sub_names = list(dict.fromkeys(les.file_name for les in lesions))[: args.loop_subset]
        keep_names = set(sub_names)
        sub_les = [les for les in lesions if les.file_name in keep_names]
        sub_series = {les.series for les in sub_les}
        sub_preds = preds.subset(np.isin(preds.series_names[preds.series_index], list(sub_series)))
        t_lm, loop_m = timed(lambda: mine_loop(sub_les, sub_preds))
        t_lp, loop_p = timed(lambda: propagate_loop(sub_les, sub_preds))
        t_vm, vec_m = timed(lambda: mine(sub_les, sub_preds), args.repeat)
        t_vp, vec_p = timed(lambda: propagate(sub_les, sub_preds), args.repeat)
        assert loop_m == vec_m and loop_p == vec_p, "vectorised output differs from the loop"
        n_sub = len({les.file_name for les in sub_les})
        scale = args.key_slices / n_sub
        loop_total = (t_lm + t_lp) * scale
        rows += [(f"per-box loops, {n_sub} key slices (mine + propagate)", f"{t_lm + t_lp:.2f} s"),
                 (f"vectorised on the same {n_sub} key slices", f"{t_vm + t_vp:.3f} s"),
                 (f"per-box loops extrapolated x{scale:.1f} to {args.key_slices}", f"{loop_total:.0f} s"),
                 ("**speed-up, full functions vs loops (all key slices)**",
                  f"**{loop_total / (t_m + t_p):.0f}x**")]

        env = dict(os.environ)
        for cmd in ("mine", "propagate"):
            out = tmp / f"{cmd}.csv"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lesionprop", cmd, "--annotations", str(ann), "--predictions",
                            str(pred_csv), "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
            rows.append((f"CLI `lesionprop {cmd}` wall time", f"{time.perf_counter() - t:.2f} s"))

        # evaluation: test images x 50 boxes on the key slice only
        ev_les, ev_names, ev_boxes, ev_scores = synth(args.eval_images, split=3, seed=1, with_neighbours=False)
        first = {}
        for les in ev_les:
            first.setdefault(les.file_name, les)
        ev_les = list(first.values())  # one lesion per image: 4,912 images
        ev_preds = Predictions.from_arrays(ev_names, ev_boxes, ev_scores)
        t_ev, res = timed(lambda: evaluate(ev_les, ev_preds, split="test"), args.repeat)
        rows.append((f"evaluate, {res.images} images x {PER_SLICE} boxes", f"{t_ev:.3f} s"))

    width = max(len(r[0]) for r in rows)
    print(f"| {'step':<{width}} | time |\n| {'-' * width} | --- |")
    for name, val in rows:
        print(f"| {name:<{width}} | {val} |")


if __name__ == "__main__":
    main()
