"""Speed of the label tools and the evaluation at DeepLesion scale, step by step, in one process.

Run (one thread)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_labels.py [--key-slices 22919] [--loop-subset 300]

The input is the one of ``bench_io.py`` (22,919 train key slices, 1-3 lesions each,
50 predictions on each of K-1, K, K+1: 3.4 M rows), written to a temp dir.  Timed:
reading both files; for ``mine``, ``propagate`` and ``distill`` the vectorised core
(grouping + prediction index + algorithm, no rows built), the full function (with
the new annotation rows) and writing inputs + new rows; the per-box loops of
``reference_loops.py`` on the first ``--loop-subset`` key slices, extrapolated
linearly (the vectorised functions' output checked equal there); ``evaluate`` on
4,912 test images x 50 boxes.  ``bench_io.py`` measures the whole commands (and, with
``--old``, the same steps on an older checkout).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_loops as loops  # noqa: E402
from bench_io import HEADER, PER_SLICE, dl_info_rows, label_world  # noqa: E402

from lesionprop.annotations import Source, concat, read_annotations, write_annotations  # noqa: E402
from lesionprop.eval.froc import evaluate  # noqa: E402
from lesionprop.slice_index import PredIndex, Vocab, key_slices  # noqa: E402
from lesionprop.labels.distill import distill, distill_arrays  # noqa: E402
from lesionprop.labels.mine import mine, mine_arrays  # noqa: E402
from lesionprop.labels.propagate import REFERENCE_SOURCES, propagate, propagate_arrays  # noqa: E402
from lesionprop.predictions import Predictions, read_predictions, write_predictions  # noqa: E402


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rows_of(x) -> list[tuple]:
    rows = x.rows() if hasattr(x, "rows") else list(x)
    return [(r.file_name, tuple(float(v) for v in r.box), str(r.source), float(r.score)) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--key-slices", type=int, default=22919)
    ap.add_argument("--eval-images", type=int, default=4912)
    ap.add_argument("--loop-subset", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory(prefix="bench_labels_") as tmp:
        tmp = Path(tmp)
        les, names, boxes, scores = label_world(args.key_slices, seed=0)
        zeros = np.zeros(les["key"].size, np.int64)
        ann_csv, pred_csv = tmp / "DL_info.csv", tmp / "predictions.csv"
        ann_csv.write_text(HEADER + "\n" + "\n".join(
            dl_info_rows(les["series"], les["key"], les["boxes"], zeros + 1, les["lesion_type"], zeros)) + "\n")
        write_predictions(pred_csv, names, boxes, scores)

        t_ann, ann = timed(lambda: read_annotations(ann_csv))
        t_pred, preds = timed(lambda: read_predictions(pred_csv))
        out += [(f"read_annotations, {len(ann):,} rows", f"{t_ann:.2f} s"),
                (f"read_predictions, {len(preds):,} rows", f"{t_pred:.2f} s")]

        def core(sources, fn):
            preds.__dict__.pop("_index", None)      # every timing builds the prediction index
            ks = key_slices(ann.select("train", sources=sources, drop_noisy=False), Vocab(preds.series_names))
            return fn(ks, PredIndex.of(preds))

        cores = {
            "mine": ((Source.HUMAN,), lambda ks, ix: mine_arrays(ks, ix, score=0.9, iou=0.5)),
            "propagate": (REFERENCE_SOURCES, lambda ks, ix: propagate_arrays(ks, ix, iou=0.5, offsets=(-1, 1),
                                                                             keep="best")),
            "distill": (REFERENCE_SOURCES, lambda ks, ix: distill_arrays(ks, ix, score=0.9, offsets=(-1, 1))),
        }
        full = {"mine": mine, "propagate": propagate, "distill": distill}
        t_cores = 0.0
        for name, (sources, fn) in cores.items():
            t, _ = timed(lambda s=sources, f=fn: core(s, f), args.repeat)
            t_cores += t
            preds.__dict__.pop("_index", None)
            t_full, new = timed(lambda n=name: full[n](ann, preds), args.repeat)
            t_write, _ = timed(lambda n=name, rows=new: write_annotations(tmp / f"{n}.csv", concat([ann, rows]),
                                                                         with_source=True))
            out += [(f"{name}: vectorised core (grouping + index + algorithm)", f"{t:.3f} s"),
                    (f"{name}(): core + {len(new):,} new rows", f"{t_full:.2f} s"),
                    (f"{name}: write {len(ann):,} input + {len(new):,} new rows", f"{t_write:.2f} s")]

        keys = list(dict.fromkeys(ann.file_name.tolist()))[: args.loop_subset]
        sub = ann.take(np.isin(ann.file_name, keys))
        rows = sub.rows()
        sub_preds = preds.subset(np.isin(preds.series_names[preds.series_index], np.unique(sub.series)))
        t_loops, same = 0.0, True
        for name, loop in (("mine", loops.mine_loop), ("propagate", loops.propagate_loop),
                           ("distill", loops.distill_loop)):
            t, loop_out = timed(lambda f=loop: f(rows, sub_preds))
            t_loops += t
            same &= rows_of(loop_out) == rows_of(full[name](sub, sub_preds))
        scale = args.key_slices / len(keys)
        out += [(f"per-box loops, {len(keys)} key slices, x{scale:.1f} (outputs equal: {same})",
                 f"{t_loops * scale:.1f} s"),
                ("**speed-up of the three vectorised cores vs the loops**", f"**{t_loops * scale / t_cores:.0f}x**")]

        ev, ev_names, ev_boxes, ev_scores = label_world(args.eval_images, seed=1)
        ev_file = np.array([f"{s}_{k:03d}.png" for s, k in zip(ev["series"], ev["key"])])
        first = np.unique(ev_file, return_index=True)[1]            # one lesion per test image
        ones = np.ones(first.size, np.int64)
        ev_csv = tmp / "test.csv"
        ev_csv.write_text(HEADER + "\n" + "\n".join(dl_info_rows(
            ev["series"][first], ev["key"][first], ev["boxes"][first], ones * 3, ev["lesion_type"][first],
            ones * 0)) + "\n")
        on_key = np.zeros((args.eval_images, 3, PER_SLICE), bool)
        on_key[:, 1] = True                                          # the boxes on K only
        on_key = on_key.reshape(-1)
        ev_preds = Predictions.from_arrays(ev_names[on_key], ev_boxes[on_key], ev_scores[on_key])
        ev_ann = read_annotations(ev_csv)
        t_ev, res = timed(lambda: evaluate(ev_ann, ev_preds, split="test"), args.repeat)
        out.append((f"evaluate, {res.images:,} images x {PER_SLICE} boxes", f"{t_ev:.3f} s"))

    width = max(len(r[0]) for r in out)
    print(f"| {'step':<{width}} | time |\n| {'-' * width} | --- |")
    for name, val in out:
        print(f"| {name:<{width}} | {val} |")


if __name__ == "__main__":
    main()
