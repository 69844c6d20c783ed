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
from lesionprop.labels.index import PredIndex, Vocab, key_slices, split_rows  # noqa: E402
from lesionprop.labels.mine import mine, mine_arrays  # noqa: E402
from lesionprop.labels.propagate import propagate, propagate_arrays  # noqa: E402
from lesionprop.predictions import Predictions, read_predictions, write_predictions  # noqa: E402

PER_SLICE = 50


def synth(n_keys: int, split: int, seed: int, with_neighbours: bool = True):
    """Lesions (1-3 per key slice) and predictions (50 per slice on K-1, K, K+1), vectorised.

    Two key slices per series (slices 30 and 40; 5% of the second ones at 31, next to
    the first).  Each slice block holds jittered copies of the key slice's lesions and of
    one unlabelled lesion (scores 0.6-1) plus random boxes (scores ~ Beta(1, 6)), shuffled.
    """
    rng = np.random.default_rng(seed)
    n_les = rng.integers(1, 4, n_keys)
    series = np.array([f"{1 + i // 2:06d}_01_01" for i in range(n_keys)], dtype=object)
    k = np.where(np.arange(n_keys) % 2 == 0, 30, np.where(rng.random(n_keys) < 0.05, 31, 40))
    wh = rng.uniform(10, 60, (n_keys, 4, 2))
    xy = rng.uniform(20, 440, (n_keys, 4, 2))
    true = np.concatenate([xy, xy + wh], 2).round(3)          # slots 0..2 lesions, slot 3 the unlabelled one
    true[:, 3] = np.roll(true[:, 3], 1, axis=0)
    lesions = [make_lesion(slice_file_name(series[i], int(k[i])), true[i, j], split=split,
                           lesion_type=int(rng.integers(1, 9)))
               for i in range(n_keys) for j in range(n_les[i])]
    offsets = (-1, 0, 1) if with_neighbours else (0,)
    blocks = []
    for o in offsets:
        rand_xy = rng.uniform(0, 470, (n_keys, PER_SLICE, 2))
        boxes = np.concatenate([rand_xy, rand_xy + rng.uniform(8, 60, (n_keys, PER_SLICE, 2))], 2)
        scores = rng.beta(1, 6, (n_keys, PER_SLICE))
        slot = np.arange(4)[None, :]
        is_true = (slot < n_les[:, None]) | (slot == 3)
        wh_t = (true[..., 2:] - true[..., :2])
        jit = true + rng.uniform(-0.08, 0.08, true.shape) * np.concatenate([wh_t, wh_t], 2)
        boxes[:, :4] = np.where(is_true[..., None], jit, boxes[:, :4])
        scores[:, :4] = np.where(is_true, rng.uniform(0.6, 1.0, (n_keys, 4)), scores[:, :4])
        perm = np.argsort(rng.random((n_keys, PER_SLICE)), axis=1)
        boxes = np.take_along_axis(boxes, perm[..., None], 1)
        scores = np.take_along_axis(scores, perm, 1)
        names = np.array([slice_file_name(series[i], int(k[i]) + o) for i in range(n_keys)], dtype=object)
        blocks.append((np.repeat(names, PER_SLICE), boxes.reshape(-1, 4), scores.reshape(-1)))
    # file order: key slice by key slice, K-1, K, K+1
    names = np.stack([b[0].reshape(n_keys, PER_SLICE) for b in blocks], 1).reshape(-1)
    boxes = np.stack([b[1].reshape(n_keys, PER_SLICE, 4) for b in blocks], 1).reshape(-1, 4)
    scores = np.stack([b[2].reshape(n_keys, PER_SLICE) for b in blocks], 1).reshape(-1)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return lesions, names, boxes.round(4), scores.round(6)


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

        def algo(sources, core):
            vocab = Vocab(preds.series_names)
            ks = key_slices(lesions, split_rows(lesions, "train", sources), vocab)
            return core(ks, PredIndex(preds))

        t_cm, _ = timed(lambda: algo(("human",), lambda ks, ix: mine_arrays(ks, ix, score=0.9, iou=0.5)),
                        args.repeat)
        t_cp, _ = timed(lambda: algo(("human", "mined"), lambda ks, ix: propagate_arrays(
            ks, ix, iou=0.5, offsets=(-1, 1), keep="best")), args.repeat)
        def fresh(fn):  # drop the cached prediction index so every timing includes building it
            preds.__dict__.pop("_index", None)
            return fn(lesions, preds)

        t_ix, ix = timed(lambda: PredIndex(preds), args.repeat)
        vocab = Vocab(preds.series_names)
        ks_h = key_slices(lesions, split_rows(lesions, "train", ("human",)), vocab)
        ks_hm = key_slices(lesions, split_rows(lesions, "train", ("human", "mined")), vocab)
        t_core, _ = timed(lambda: (mine_arrays(ks_h, ix, score=0.9, iou=0.5),
                                   propagate_arrays(ks_hm, ix, iou=0.5, offsets=(-1, 1), keep="best")), args.repeat)
        t_m, new_m = timed(lambda: fresh(mine), args.repeat)
        t_p, new_p = timed(lambda: fresh(propagate), args.repeat)
        t_w, _ = timed(lambda: write_annotations(tmp / "w.csv", lesions + new_p, with_source=True))
        rows += [("index predictions by slice (part of each line below)", f"{t_ix:.3f} s"),
                 ("mine algorithm (index + vectorised core, no row objects)", f"{t_cm:.3f} s"),
                 ("propagate algorithm (index + vectorised core, no row objects)", f"{t_cp:.3f} s"),
                 ("**mine + propagate algorithms**", f"**{t_cm + t_cp:.3f} s**"),
                 (f"mine() incl. {len(new_m)} Lesion rows (derived_lesion)", f"{t_m:.2f} s"),
                 (f"propagate() incl. {len(new_p)} Lesion rows (derived_lesion)", f"{t_p:.2f} s"),
                 (f"write_annotations, {len(lesions)} input + {len(new_p)} new rows", f"{t_w:.2f} s")]

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
                 (f"vectorised functions on the same {n_sub} key slices (equal output)", f"{t_vm + t_vp:.3f} s"),
                 (f"per-box loops extrapolated x{scale:.1f} to {args.key_slices} key slices",
                  f"{loop_total:.1f} s"),
                 ("**speed-up: algorithms vs loops (all key slices)**", f"**{loop_total / (t_cm + t_cp):.0f}x**"),
                 ("speed-up: vectorised cores alone (index, key slices prebuilt) vs loops",
                  f"{loop_total / t_core:.0f}x ({t_core:.3f} s)"),
                 ("speed-up: full functions (with Lesion rows) vs loops", f"{loop_total / (t_m + t_p):.0f}x")]

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
