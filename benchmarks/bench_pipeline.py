"""Multi-seed pipeline benchmark: mean and spread of every variant's sensitivity.

Runs ``lesionprop pipeline`` for each seed on (a) the procedural phantom and
(b) lesions inserted into the real CT ``../shared/data/realct/ct_small_3mm.nii.gz``
(inside its liver mask; skipped when the file is absent), several runs in
parallel, then aggregates ``report/table.json`` into mean +/- std per variant.

    python benchmarks/bench_pipeline.py --seeds 0 1 2 --jobs 3 --preset demo \
        --set train.iterations=400 --out bench_out/pipeline

Results: ``OUT/summary.md`` and ``OUT/summary.json`` (copy the table into
``benchmarks/results/pipeline.md``).
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALCT = REPO.parent / "shared" / "data" / "realct"
FPS = [0.5, 1, 2, 4, 8]


def backgrounds(realct: Path) -> dict[str, list[str]]:
    out = {"phantom": []}
    ct, mask = realct / "ct_small_3mm.nii.gz", realct / "ct_small_3mm_organs.nii.gz"
    if ct.is_file() and mask.is_file():
        out["realct"] = [f"pipeline.synth_args.background={ct}", f"pipeline.synth_args.organ_mask={mask}"]
    else:
        print(f"real CT not found under {realct}: only the phantom is benchmarked", file=sys.stderr)
    return out


def run_one(out: Path, preset: str, seed: int, extra: list[str], log: Path, threads: int) -> dict:
    cmd = [sys.executable, "-m", "lesionprop", "pipeline", "--preset", preset, "--out", str(out),
           "--set", f"pipeline.synth_seed={seed}", "--set", f"train.seed={seed}"]
    for o in extra:
        cmd += ["--set", o]
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"pipeline failed (exit {rc}); see {log}")
    table = json.loads((out / "report" / "table.json").read_text())
    table["seconds"] = time.time() - t0
    return table


def aggregate(tables: list[dict], key: str | None) -> dict[str, dict[str, list[float]]]:
    out = {}
    for v in tables[0]["variants"]:
        rows = np.array([(t[key]["variants"] if key else t["variants"])[v] for t in tables], dtype=float)
        out[v] = {"mean": rows.mean(0).tolist(), "std": rows.std(0, ddof=1 if len(rows) > 1 else 0).tolist(),
                  "runs": rows.tolist()}
    return out


def _pct(x: float) -> str:
    return "n/a (no boxes)" if np.isnan(x) else f"{100 * x:.1f}%"


def markdown(name: str, agg: dict, n: int, title: str) -> str:
    lines = [f"**{name}, {title}** ({n} seeds; sensitivity % mean +/- std)", "",
             "| variant | " + " | ".join(f"{f:g} FP" for f in FPS) + " |", "|" + " --- |" * (len(FPS) + 1)]
    for v, a in agg.items():
        lines.append(f"| {v} | " + " | ".join(f"{100 * m:.1f} +/- {100 * s:.1f}"
                                              for m, s in zip(a["mean"], a["std"])) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="pipelines run in parallel")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--realct", default=str(REALCT), help="folder with ct_small_3mm(.nii.gz, _organs.nii.gz)")
    ap.add_argument("--only", choices=["phantom", "realct"], help="benchmark one background only")
    ap.add_argument("--out", default="bench_out/pipeline")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for bg, extra in backgrounds(Path(args.realct)).items():
        if args.only and bg != args.only:
            continue
        for seed in args.seeds:
            jobs.append((bg, seed, out / f"{bg}_seed{seed}", extra + args.overrides))
    threads = max(1, (os.cpu_count() or 1) // args.jobs)     # parallel pipelines share the cores
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(bg, seed): pool.submit(run_one, run, args.preset, seed, extra, out / f"{bg}_seed{seed}.log",
                                           threads)
                   for bg, seed, run, extra in jobs}
        results: dict[str, list[dict]] = {}
        for (bg, seed), fut in futures.items():
            try:
                results.setdefault(bg, []).append(fut.result())
                print(f"{bg} seed {seed}: done", flush=True)
            except RuntimeError as exc:      # keep the other runs' results
                print(f"{bg} seed {seed}: FAILED: {exc}", flush=True)
        results = {bg: tables for bg, tables in results.items() if tables}
    summary, md = {}, [f"preset {args.preset}, overrides {args.overrides or 'none'}", ""]
    for bg, tables in results.items():
        summary[bg] = {"official": aggregate(tables, None), "seconds": [t["seconds"] for t in tables]}
        md += [markdown(bg, summary[bg]["official"], len(tables), "official key-slice labels"), ""]
        if all("truth" in t for t in tables):
            summary[bg]["truth"] = aggregate(tables, "truth")
            md += [markdown(bg, summary[bg]["truth"], len(tables), "complete truth labels"), ""]
        if all("label_quality" in t for t in tables):
            q = {k: {m: float(np.nanmean([np.nan if t["label_quality"][k][m] is None else t["label_quality"][k][m]
                                          for t in tables])) for m in ("boxes", "precision", "missing_recall",
                                                                        "neighbour_recall")}
                 for k in tables[0]["label_quality"]}
            summary[bg]["label_quality"] = q
            md += [f"**{bg}, pseudo-labels** (mean over seeds)", "",
                   "| labels | boxes | precision | missing recall | neighbour recall |", "| --- | --- | --- | --- | --- |"]
            md += [f"| {k} | {v['boxes']:.0f} | {_pct(v['precision'])} | {100 * v['missing_recall']:.1f}% | "
                   f"{100 * v['neighbour_recall']:.1f}% |" for k, v in q.items()]
            md.append("")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
