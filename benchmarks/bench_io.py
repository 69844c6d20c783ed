"""File I/O at DeepLesion scale: every goal measured, beside an older checkout, in one run.

Run (the numbers in results/io.md came from this command)::

    git worktree add /tmp/lesionprop_old 74189d5        # the row-by-row I/O, once
    .venv/bin/python benchmarks/bench_io.py --old /tmp/lesionprop_old

Commit 74189d5 has the row-by-row readers and writers (``list[Lesion]`` rows, the
csv module), the reference the goals were set against.

One run writes the inputs to a temp dir, then times each step twice, in fresh
subprocesses (one thread: OMP_NUM_THREADS=1, which also sizes pyarrow's pool;
pinned to CPU ``--cpu``), once with ``PYTHONPATH=OLD/src`` (the older checkout) and once
with this checkout's ``src``:

* ``DL_info.csv`` of ``--dlinfo-rows`` rows (all splits), ``read_annotations``;
* a predictions CSV of 3.4 M rows (22,919 train key slices, 50 boxes on each of
  K-1, K, K+1): ``read_predictions`` and ``write_predictions`` (the written file is
  read back with pyarrow and checked equal to the arrays, value for value);
* ``lesionprop propagate / mine / distill`` on those files: the whole command
  (interpreter start, imports, reading, algorithm, writing), wall and CPU time; the
  outputs of the older and this code are compared;
* ``lesionprop label-sets`` (the four label sets MM, LP, MM + LP, DD from one read of the
  predictions, the pipeline's label stage) on the CSV and on the Arrow file; its MM, LP and DD
  files are checked byte-identical to those of mine / propagate / distill;
* the same predictions as an Arrow IPC file (``predictions.arrow``, written by this
  checkout; 74189d5 has no binary form): ``read_predictions`` and the three
  commands on it, their outputs checked byte-identical to the CSV-input outputs;
* pyarrow's CSV parser alone on the predictions CSV (the floor of any reader built on it),
  and from it a bound on the three commands from the CSV;
* the per-box loops of ``reference_loops.py`` on every key slice (checked equal to the
  vectorised functions there; ``--loop-subset N``: the first N key slices, extrapolated
  linearly, a quicker but rougher figure);
* TTA weighted box fusion on ``--tta-slices`` random slices (4 views x 50 boxes):
  the older checkout's, this code's and ``ensemble_boxes.weighted_boxes_fusion``.

Each timing is the step alone (imports and input preparation excluded) except the
CLI lines.  Times are wall-clock seconds; CPU seconds are given beside them because
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_SLICE = 50
#: how the table names the two checkouts timed
LABELS = {"today": "74189d5", "now": "this checkout"}

# --------------------------------------------------------------------------- inputs

def _num(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


def dl_info_rows(series: np.ndarray, key: np.ndarray, boxes: np.ndarray, split: np.ndarray,
                 lesion_type: np.ndarray, noisy: np.ndarray) -> list[str]:
    """DL_info.csv lines (18 columns, DeepLesion's quoting and number style), one per lesion."""
    lines = []
    for s, k, b, sp, t, nz in zip(series.tolist(), key.tolist(), boxes.tolist(), split.tolist(),
                                   lesion_type.tolist(), noisy.tolist()):
        x1, y1, x2, y2 = b
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        p, st, se = (int(v) for v in s.split("_"))
        meas = ", ".join(_num(v) for v in (x1, cy, x2, cy, cx, y1, cx, y2))
        lines.append(
            f'{s}_{k:03d}.png,{p},{st},{se},{k},"{meas}","{_num(x1)}, {_num(y1)}, {_num(x2)}, {_num(y2)}",'
            f'"{_num(max(x2 - x1, y2 - y1))}, {_num(min(x2 - x1, y2 - y1))}","{_num(cx / 512)}, {_num(cy / 512)}, 0.5",'
            f'{t},{nz},"{max(k - 10, 0)}, {k + 10}","0.8, 0.8, 2.5","512, 512","-175, 275",F,50,{sp}')
    return lines


HEADER = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
          "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
          "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,"
          "Train_Val_Test")


def label_world(n_keys: int, seed: int, with_predictions: bool = True):
    """Lesions (1-3 per key slice) and predictions (50 per slice on K-1, K, K+1), vectorised.

    Two key slices per series (slices 30 and 40; 5% of the second ones at 31, next to
    the first).  Each slice block holds jittered copies of the key slice's lesions and of
    one unlabelled lesion (scores 0.6-1) plus random boxes (scores ~ Beta(1, 6)), shuffled.
    """
    rng = np.random.default_rng(seed)
    n_les = rng.integers(1, 4, n_keys)
    series = np.array([f"{1 + i // 2:06d}_01_01" for i in range(n_keys)])
    k = np.where(np.arange(n_keys) % 2 == 0, 30, np.where(rng.random(n_keys) < 0.05, 31, 40))
    wh = rng.uniform(10, 60, (n_keys, 4, 2))
    xy = rng.uniform(20, 440, (n_keys, 4, 2))
    true = np.concatenate([xy, xy + wh], 2).round(3)          # slots 0..2 lesions, slot 3 the unlabelled one
    true[:, 3] = np.roll(true[:, 3], 1, axis=0)
    les = np.repeat(np.arange(n_keys), n_les)
    slot = np.arange(les.size) - np.repeat(np.cumsum(n_les) - n_les, n_les)
    lesions = dict(series=series[les], key=k[les], boxes=true[les, slot], lesion_type=rng.integers(1, 9, les.size))
    if not with_predictions:
        return lesions, None, None, None
    blocks = []
    for o in (-1, 0, 1):
        rand_xy = rng.uniform(0, 470, (n_keys, PER_SLICE, 2))
        boxes = np.concatenate([rand_xy, rand_xy + rng.uniform(8, 60, (n_keys, PER_SLICE, 2))], 2)
        scores = rng.beta(1, 6, (n_keys, PER_SLICE))
        is_true = (np.arange(4)[None, :] < n_les[:, None]) | (np.arange(4)[None, :] == 3)
        wh_t = true[..., 2:] - true[..., :2]
        jit = true + rng.uniform(-0.08, 0.08, true.shape) * np.concatenate([wh_t, wh_t], 2)
        boxes[:, :4] = np.where(is_true[..., None], jit, boxes[:, :4])
        scores[:, :4] = np.where(is_true, rng.uniform(0.6, 1.0, (n_keys, 4)), scores[:, :4])
        perm = np.argsort(rng.random((n_keys, PER_SLICE)), axis=1)
        names = np.array([f"{s}_{kk + o:03d}.png" for s, kk in zip(series.tolist(), k.tolist())])
        blocks.append((names, np.take_along_axis(boxes, perm[..., None], 1), np.take_along_axis(scores, perm, 1)))
    names = np.repeat(np.stack([b[0] for b in blocks], 1).reshape(-1), PER_SLICE)   # key by key: K-1, K, K+1
    boxes = np.stack([b[1] for b in blocks], 1).reshape(-1, 4)
    scores = np.stack([b[2] for b in blocks], 1).reshape(-1)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return lesions, names, boxes.round(4), scores.round(6)


def make_inputs(tmp: Path, n_keys: int, dlinfo_rows: int) -> dict[str, Path]:
    from lesionprop.predictions import write_predictions

    les, names, boxes, scores = label_world(n_keys, seed=0)
    n = les["key"].size
    zeros = np.zeros(n, np.int64)
    lines = dl_info_rows(les["series"], les["key"], les["boxes"], zeros + 1, les["lesion_type"], zeros)
    paths = {"ann": tmp / "DL_info.csv", "preds": tmp / "predictions.csv", "big": tmp / "DL_info_big.csv",
             "arrow": tmp / "predictions.arrow"}
    paths["ann"].write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    write_predictions(paths["preds"], names, boxes, scores)
    write_predictions(paths["arrow"], names, boxes, scores)      # this checkout's binary form (Arrow IPC)
    np.save(tmp / "names.npy", names)
    np.save(tmp / "boxes.npy", boxes)
    np.save(tmp / "scores.npy", scores)
    big, _, _, _ = label_world(int(dlinfo_rows * 0.7) + 10, seed=1, with_predictions=False)   # 2 rows per key
    rng = np.random.default_rng(2)
    m = dlinfo_rows
    lines = dl_info_rows(big["series"][:m], big["key"][:m], big["boxes"][:m], rng.choice([1, 1, 1, 2, 3], m),
                         big["lesion_type"][:m], (rng.random(m) < 0.03).astype(int))
    paths["big"].write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    return paths


# --------------------------------------------------------------------------- one step in a subprocess

RUNNER = r'''
import hashlib, json, sys, time
import numpy as np
op, args = sys.argv[1], json.loads(sys.argv[2])
def digest(*arrays):
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]
def timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c
res = {}
if op == "read_dlinfo":
    try:
        from lesionprop.annotations import read_annotations
        new = True
    except ImportError:                      # 74189d5: list[Lesion] rows
        import importlib
        read_annotations = importlib.import_module("lesionprop.data.deeplesion").read_annotations
        new = False
    ann, res["wall"], res["cpu"] = timed(lambda: read_annotations(args["path"]))
    if new:
        boxes, split = np.asarray(ann.boxes, np.float64), np.asarray(ann.split, np.int64)
        noisy, spacing = np.asarray(ann.noisy, np.int64), np.asarray(ann.spacing, np.float64)
    else:
        boxes = np.array([l.box for l in ann]); split = np.array([l.split for l in ann])
        noisy = np.array([l.noisy for l in ann]); spacing = np.array([l.spacing for l in ann])
    res["rows"] = len(ann)
    res["digest"] = digest(boxes, split, noisy, spacing)
elif op == "read_preds":
    from lesionprop.predictions import read_predictions
    p, res["wall"], res["cpu"] = timed(lambda: read_predictions(args["path"]))
    res["rows"] = len(p)
    res["digest"] = digest(p.boxes, p.scores, p.slices, np.array(p.series_names[p.series_index], dtype="U"))
elif op == "parse_floor":                    # pyarrow's CSV parser alone: the floor of any CSV read
    import pyarrow as pa, pyarrow.csv as pacsv
    types = {"File_name": pa.string(), **{c: pa.float64() for c in ("x1", "y1", "x2", "y2", "score")}}
    t, res["wall"], res["cpu"] = timed(lambda: pacsv.read_csv(
        args["path"], read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 22),
        convert_options=pacsv.ConvertOptions(column_types=types)))
    res["rows"] = t.num_rows
elif op == "write_preds":
    from lesionprop.predictions import write_predictions
    d = args["dir"]
    names = np.load(d + "/names.npy").astype(object)
    boxes, scores = np.load(d + "/boxes.npy"), np.load(d + "/scores.npy")
    _, res["wall"], res["cpu"] = timed(lambda: write_predictions(args["out"], names, boxes, scores))
    import pyarrow as pa, pyarrow.csv as pacsv
    t = pacsv.read_csv(args["out"], convert_options=pacsv.ConvertOptions(column_types={c: pa.float64() for c in ("x1", "y1", "x2", "y2", "score")}))
    back = np.stack([t.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")], 1)
    res["rows"] = t.num_rows
    res["exact"] = bool(np.array_equal(back, boxes) and np.array_equal(t.column("score").to_numpy(), scores)
                        and t.column("File_name").to_pylist() == names.tolist())
elif op in ("tta", "tta_ensemble"):
    import warnings
    from lesionprop.engine.tta import weighted_box_fusion
    rng = np.random.default_rng(args["seed"])
    cases = []
    for _ in range(args["slices"]):
        centres, sizes = rng.uniform(40, 470, (8, 2)), rng.uniform(8, 60, (8, 2))
        views = []
        for _ in range(4):
            k = rng.integers(0, 8, 50)
            c = centres[k] + rng.normal(0, 3, (50, 2)); wh = sizes[k] * rng.uniform(0.85, 1.15, (50, 2))
            rnd = rng.random(50) < 0.6
            c[rnd] = rng.uniform(20, 490, (rnd.sum(), 2)); wh[rnd] = rng.uniform(5, 50, (rnd.sum(), 2))
            s = np.where(rnd, rng.beta(1, 6, 50), rng.uniform(0.5, 1, 50))
            views.append((np.concatenate([c - wh / 2, c + wh / 2], 1).clip(0, 512), s))
        cases.append(views)
    if op == "tta":
        out, res["wall"], res["cpu"] = timed(lambda: [weighted_box_fusion(v, 0.55, 50) for v in cases])
        res["digest"] = digest(*[a for b, s in out for a in (b, s)])
    else:
        from ensemble_boxes import weighted_boxes_fusion as wbf
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [wbf([b / 512 for b, _ in v], [s for _, s in v], [np.zeros(len(s)) for _, s in v],
                            iou_thr=0.55)[:2] for v in cases]
        out, res["wall"], res["cpu"] = timed(run)
        ours = [weighted_box_fusion(v, 0.55, 10**6) for v in cases]
        res["same_boxes"] = sum(int(b.shape == ob.shape and np.allclose(b * 512, ob, atol=1e-3)
                                    and np.allclose(s, os_, atol=1e-6)) for (b, s), (ob, os_) in zip(out, ours))
    res["wall"] /= args["slices"]; res["cpu"] /= args["slices"]
elif op == "fingerprint":
    from pathlib import Path
    try:
        from lesionprop.pipeline.stages import dataset_fingerprint
        fp = lambda: dataset_fingerprint(args["root"], args["ann"])
    except ImportError:                      # 74189d5: a stat of every file under Images_png
        from lesionprop.pipeline.stages import hash_file, hash_object, hash_tree_listing
        fp = lambda: hash_object([hash_file(args["ann"]), hash_tree_listing(Path(args["root"]) / "Images_png")])
    _, res["wall"], res["cpu"] = timed(fp)
elif op == "loops":
    sys.path.insert(0, args["bench"])
    import reference_loops as L
    from lesionprop.annotations import read_annotations
    from lesionprop.labels.distill import distill
    from lesionprop.labels.mine import mine
    from lesionprop.labels.propagate import propagate
    from lesionprop.predictions import read_predictions
    ann = read_annotations(args["ann"])
    preds = read_predictions(args["preds"])
    keys = set(list(dict.fromkeys(ann.file_name.tolist()))[: args["subset"]])
    # set lookups: np.isin on two object (string) arrays compares every pair (minutes at full size)
    sub = ann.take(np.fromiter((f in keys for f in ann.file_name.tolist()), bool, len(ann)))
    rows = sub.rows()
    series = set(np.asarray(sub.series).tolist())
    kept = [i for i, s in enumerate(preds.series_names.tolist()) if s in series]
    sp = preds.subset(np.isin(preds.series_index, kept))
    def as_rows(x):
        rs = x.rows() if hasattr(x, "rows") else list(x)
        return [(r.file_name, tuple(float(v) for v in r.box), str(r.source), float(r.score)) for r in rs]
    same = True
    for name, loop, vec in (("mine", L.mine_loop, mine), ("propagate", L.propagate_loop, propagate),
                            ("distill", L.distill_loop, distill)):
        out, res[name], res[name + "_cpu"] = timed(lambda: loop(rows, sp))
        same &= as_rows(out) == as_rows(vec(sub, sp))
        if name == "mine":
            mined = out
    # label-sets' fourth set, MM + LP: propagation over the human and mined rows
    from lesionprop.annotations import concat
    out, res["mm_lp"], res["mm_lp_cpu"] = timed(lambda: L.propagate_loop(rows + list(mined), sp))
    same &= as_rows(out) == as_rows(propagate(concat([sub, mine(sub, sp)]), sp))
    res["same"] = bool(same)
    res["keys"] = len(keys)
print("RESULT " + json.dumps(res))
'''


class Runner:
    def __init__(self, cpu: int) -> None:
        self.prefix = ["taskset", "-c", str(cpu)] if cpu >= 0 and shutil.which("taskset") else []

    def env(self, src: Path) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(src))
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[v] = "1"
        return env

    def step(self, src: Path, op: str, **args) -> dict:
        out = subprocess.run(self.prefix + [sys.executable, "-c", RUNNER, op, json.dumps(args)],
                             env=self.env(src), capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{op} with {src} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.rsplit("RESULT ", 1)[1])

    def cli(self, src: Path, cmd: str, ann: Path, preds: Path, out: Path, out_option: str = "--out") -> dict:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        done = subprocess.run(self.prefix + [sys.executable, "-m", "lesionprop", cmd, "--annotations", str(ann),
                                             "--predictions", str(preds), out_option, str(out)],
                              env=self.env(src), capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise RuntimeError(f"lesionprop {cmd} with {src} failed:\n{done.stderr[-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"wall": wall, "cpu": cpu, "said": done.stdout.strip()}


def _same_rows(a: Path, b: Path) -> str:
    if a.read_bytes() == b.read_bytes():
        return "identical bytes"
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    return f"differ ({len(la)} vs {len(lb)} lines)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/tmp/lesionprop_old"), help="an older checkout to time beside this one (74189d5: the row-by-row I/O)")
    ap.add_argument("--key-slices", type=int, default=22919)
    ap.add_argument("--dlinfo-rows", type=int, default=100_000)
    ap.add_argument("--loop-subset", type=int, default=0,
                    help="time the loops on the first N key slices and extrapolate (0: all of them, ~35 s)")
    ap.add_argument("--tta-slices", type=int, default=200)
    ap.add_argument("--fingerprint-series", type=int, default=1000,
                    help="series folders (x 87 empty slice files) for the dataset fingerprint step; 0: skip")
    ap.add_argument("--cpu", type=int, default=0, help="pin every step to this CPU (-1: no pinning)")
    args = ap.parse_args()
    old_src, new_src = args.old.resolve() / "src", REPO / "src"
    if not (old_src / "lesionprop").is_dir():
        sys.exit(f"{old_src}/lesionprop not found: git worktree add {args.old} 74189d5")
    run = Runner(args.cpu)
    codes = {"today": old_src, "now": new_src}
    rows: list[tuple[str, str, str, str, str]] = []

    def fmt(r: dict) -> str:
        return f"{r['wall']:.2f} s (cpu {r['cpu']:.2f})"

    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_inputs(tmp, args.key_slices, args.dlinfo_rows)
        n_pred = sum(1 for _ in open(paths["preds"], "rb")) - 1
        print(f"inputs in {time.perf_counter() - t0:.0f} s: {n_pred:,} prediction rows "
              f"({paths['preds'].stat().st_size / 1e6:.0f} MB)", flush=True)

        r = {k: run.step(src, "read_dlinfo", path=str(paths["big"])) for k, src in codes.items()}
        same = "same values" if r["today"]["digest"] == r["now"]["digest"] else "VALUES DIFFER"
        rows.append((f"read DL_info.csv, {r['now']['rows']:,} rows", fmt(r["today"]), fmt(r["now"]), "<= 0.3 s", same))
        print(rows[-1], flush=True)

        r = {k: run.step(src, "read_preds", path=str(paths["preds"])) for k, src in codes.items()}
        same = "same values" if r["today"]["digest"] == r["now"]["digest"] else "VALUES DIFFER"
        digest_csv = r["now"]["digest"]
        rows.append((f"read predictions, {r['now']['rows']:,} rows", fmt(r["today"]), fmt(r["now"]), "<= 1.5 s", same))
        print(rows[-1], flush=True)

        floor = run.step(new_src, "parse_floor", path=str(paths["preds"]))
        rows.append(("pyarrow's CSV parser alone on that file (no checks, names as text)", "", fmt(floor), "",
                     "the floor of any read of the CSV on one core"))
        print(rows[-1], flush=True)

        r = {k: run.step(src, "write_preds", dir=str(tmp), out=str(tmp / f"written_{k}.csv")) for k, src in codes.items()}
        exact = " / ".join(f"{LABELS[k]}: {'exact' if v['exact'] else 'NOT EXACT'}" for k, v in r.items())
        rows.append((f"write predictions, {r['now']['rows']:,} rows", fmt(r["today"]), fmt(r["now"]), "<= 1.5 s",
                     f"read back {exact}"))
        print(rows[-1], flush=True)

        r = arrow_read = run.step(new_src, "read_preds", path=str(paths["arrow"]))
        same = "same values as the CSV" if r["digest"] == digest_csv else "VALUES DIFFER FROM THE CSV"
        rows.append((f"read predictions, Arrow IPC file ({paths['arrow'].stat().st_size / 1e6:.0f} MB)", "",
                     fmt(r), "", same))
        print(rows[-1], flush=True)

        totals = {"today": [0.0, 0.0], "now": [0.0, 0.0], "arrow": [0.0, 0.0]}
        for cmd in ("propagate", "mine", "distill"):
            r = {k: run.cli(src, cmd, paths["ann"], paths["preds"], tmp / f"{cmd}_{k}.csv") for k, src in codes.items()}
            for k in r:
                totals[k][0] += r[k]["wall"]
                totals[k][1] += r[k]["cpu"]
            rows.append((f"`lesionprop {cmd}` end to end", fmt(r["today"]), fmt(r["now"]), "<= 4 s",
                         f"{r['now']['said'].split(' -> ')[0]}; output {_same_rows(tmp / f'{cmd}_today.csv', tmp / f'{cmd}_now.csv')}"))
            print(rows[-1], flush=True)
        for cmd in ("propagate", "mine", "distill"):
            r = run.cli(new_src, cmd, paths["ann"], paths["arrow"], tmp / f"{cmd}_arrow.csv")
            totals["arrow"][0] += r["wall"]
            totals["arrow"][1] += r["cpu"]
            rows.append((f"`lesionprop {cmd}` end to end, `--predictions predictions.arrow`", "", fmt(r), "<= 4 s",
                         f"output vs the CSV input's: {_same_rows(tmp / f'{cmd}_now.csv', tmp / f'{cmd}_arrow.csv')}"))
            print(rows[-1], flush=True)

        # the four label sets from one read (the pipeline's label stage as a command): its MM, LP and
        # DD files must be the bytes of the commands above; MM + LP is one more propagation on top
        sets = {}
        for k, preds in (("now", paths["preds"]), ("arrow", paths["arrow"])):
            sets[k] = run.cli(new_src, "label-sets", paths["ann"], preds, tmp / f"sets_{k}", out_option="--out-dir")
            same = [_same_rows(tmp / f"{cmd}_now.csv", tmp / f"sets_{k}" / f"labels_{short}.csv")
                    for cmd, short in (("mine", "mm"), ("propagate", "lp"), ("distill", "dd"))]
            check = ("MM, LP, DD files: identical bytes to mine / propagate / distill" if set(same) == {"identical bytes"}
                     else f"MM, LP, DD files vs the commands': {same}")
            rows.append(("`lesionprop label-sets` end to end (MM, LP, MM + LP, DD from one read)"
                         + (", `--predictions predictions.arrow`" if k == "arrow" else ", CSV predictions"),
                         "", fmt(sets[k]), "", check))
            print(rows[-1], flush=True)

        lp = run.step(new_src, "loops", ann=str(paths["ann"]), preds=str(paths["preds"]),
                      subset=args.loop_subset or args.key_slices, bench=str(REPO / "benchmarks"))
        scale = args.key_slices / lp["keys"]
        loops = (lp["mine"] + lp["propagate"] + lp["distill"]) * scale
        loops_cpu = (lp["mine_cpu"] + lp["propagate_cpu"] + lp["distill_cpu"]) * scale
        on = "every key slice" if scale == 1 else f"{lp['keys']} key slices x {scale:.1f}"
        rows.append((f"per-box loops (reference_loops.py), {on}", "",
                     f"{loops:.1f} s (cpu {loops_cpu:.1f})", "", f"vectorised output equal: {lp['same']}"))
        def speedup(k: str) -> str:
            return (f"{loops / totals[k][0]:.1f}x ({totals[k][0]:.1f} s); cpu {loops_cpu / totals[k][1]:.1f}x "
                    f"({totals[k][1]:.1f} s)")

        rows.append(("the three commands together vs the loops alone, CSV predictions", speedup("today"),
                     speedup("now"), ">= 5x", "wall (cpu) times"))
        rows.append(("the three commands together vs the loops alone, Arrow IPC predictions", "", speedup("arrow"),
                     ">= 5x", "wall (cpu) times"))
        # what the CSV route could reach if reading the CSV cost only pyarrow's parse: the Arrow-input
        # commands with their Arrow read swapped for the parse, three times
        bound = totals["arrow"][0] + 3 * (floor["wall"] - arrow_read["wall"])
        rows.append(("bound for the three commands on the CSV: Arrow-input commands + 3 x (CSV parse alone - "
                     "Arrow read)", "", f"{loops / bound:.1f}x ({bound:.1f} s)", ">= 5x",
                     "a reader built on pyarrow's CSV parser cannot do better"))
        loops4, loops4_cpu = loops + lp["mm_lp"] * scale, loops_cpu + lp["mm_lp_cpu"] * scale
        rows.append((f"per-box loops of the four label sets (the three + propagation over human and mined "
                     f"rows for MM + LP)", "", f"{loops4:.1f} s (cpu {loops4_cpu:.1f})", "",
                     f"vectorised output equal: {lp['same']}"))
        for k, what in (("now", "CSV"), ("arrow", "Arrow IPC")):
            rows.append((f"`lesionprop label-sets` (four sets, one read) vs the loops of the same four sets, "
                         f"{what} predictions", "", f"{loops4 / sets[k]['wall']:.1f}x ({sets[k]['wall']:.1f} s); cpu "
                         f"{loops4_cpu / sets[k]['cpu']:.1f}x ({sets[k]['cpu']:.1f} s)", ">= 5x", "wall (cpu) times"))
        print(rows[-6:], flush=True)

        r = {k: run.step(src, "tta", slices=args.tta_slices, seed=3) for k, src in codes.items()}
        ens = run.step(new_src, "tta_ensemble", slices=args.tta_slices, seed=3)
        same = "same boxes" if r["today"]["digest"] == r["now"]["digest"] else "BOXES DIFFER"
        rows.append((f"TTA fusion per slice (4 views x 50 boxes, {args.tta_slices} slices)",
                     f"{r['today']['wall'] * 1e3:.2f} ms", f"{r['now']['wall'] * 1e3:.2f} ms",
                     f"<= ensemble_boxes {ens['wall'] * 1e3:.2f} ms",
                     f"74189d5 = this checkout: {same}; ensemble_boxes gives the same boxes on {ens['same_boxes']}/{args.tta_slices}"))
        print(rows[-1], flush=True)

        if args.fingerprint_series:
            root = tmp / "dataset"
            for i in range(args.fingerprint_series):
                folder = root / "Images_png" / f"{i + 1:06d}_01_01"
                folder.mkdir(parents=True)
                for k in range(1, 88):
                    (folder / f"{k:03d}.png").touch()
            r = {k: run.step(src, "fingerprint", root=str(root), ann=str(paths["ann"])) for k, src in codes.items()}
            n_png = args.fingerprint_series * 87
            rows.append((f"dataset fingerprint, {args.fingerprint_series:,} series / {n_png:,} slice files",
                         fmt(r["today"]), fmt(r["now"]), "no stat per PNG",
                         f"DeepLesion (~10,600 series, ~900,000 PNGs): 74189d5 a stat of every PNG "
                         f"(~{r['today']['wall'] * 900_000 / n_png:.0f} s here), this checkout one per series folder"))
            print(rows[-1], flush=True)

    print(f"load average at end: {os.getloadavg()}")
    print("\n| goal | 74189d5 (row-by-row I/O) | this checkout | target | check |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
