"""Multi-seed pipeline benchmark: paired differences to the baseline, pooled over seeds.

Runs ``lesionprop pipeline`` for each seed on (a) the procedural phantom and
(b) lesions inserted into the real CT ``../shared/data/realct/ct_small_3mm.nii.gz``
(inside its liver mask; skipped when the file is absent), several runs in
parallel.  Then, per background, on official labels and on truth: each variant's
sensitivity and its paired difference to the baseline, with 95% CIs POOLED over
seeds: a bootstrap over (seed, patient) units, each seed's test patients resampled
within that seed (the same draw for every variant of the seed), the statistic being
the mean over seeds (:func:`lesionprop.eval.compare.pooled_comparison`).  Also
each seed's pseudo-label precision and recall against truth.

    python benchmarks/bench_pipeline.py --seeds 0 1 2 --jobs 2 --preset demo \
        --set pipeline.parallel_trainings=1 --out bench_out/pipeline
    python benchmarks/bench_pipeline.py --seeds 0 1 2 --out bench_out/pipeline --summarize-only
    python benchmarks/bench_pipeline.py --seeds 0 1 2 --jobs 2 --set pipeline.rounds=3 \
        --set "pipeline.variants=[baseline, mm_lp]" --set pipeline.parallel_trainings=1 --out bench_out/rounds

Results: ``OUT/summary.md`` and ``OUT/summary.json`` (copy the tables into
``benchmarks/results/pipeline.md``).  ``--summarize-only`` recomputes them from
finished run folders without running anything.
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


VARIANTS = ["baseline", "lp", "mm", "mm_lp", "dd"]


def run_outcomes(run: Path, variants: list[str]) -> tuple[list, list | None]:
    """Per-variant evaluation outcomes of one finished pipeline folder: official labels, truth."""
    from lesionprop.annotations import read_annotations
    from lesionprop.eval.froc import evaluate
    from lesionprop.predictions import read_predictions

    rows = read_annotations(run / "data" / "DL_info.csv")
    truth_csv = run / "data" / "truth.csv"
    truth = read_annotations(truth_csv) if truth_csv.is_file() else None
    official, complete = [], [] if truth is not None else None
    for v in variants:
        name, _, r = v.partition("@r")            # "mm_lp@r3": round 3's MM + LP model (pipeline.rounds)
        preds = read_predictions(run / (f"round{r}" if r else "") / "preds" / f"test_{name}.csv")
        official.append(evaluate(rows, preds, split="test", fps=FPS).outcomes)
        if truth is not None:
            complete.append(evaluate(rows, preds, split="test", fps=FPS, truth=truth).outcomes)
    return official, complete


def summarize_background(runs: dict[int, Path], n_boot: int, seed: int) -> dict:
    """Pooled paired comparison over the seeds' run folders (official and truth) and per-seed label quality."""
    from lesionprop.eval.compare import pooled_comparison

    seeds = sorted(runs)
    tables = {s: json.loads((runs[s] / "report" / "table.json").read_text()) for s in seeds}
    variants = [v for v in VARIANTS if all(v in t["variants"] for t in tables.values())]
    per_seed = {s: run_outcomes(runs[s], variants) for s in seeds}
    out: dict = {"seeds": seeds, "variants": variants}
    for kind, k in (("official", 0), ("truth", 1)):
        if any(per_seed[s][k] is None for s in seeds):
            continue
        c = pooled_comparison([per_seed[s][k] for s in seeds], variants, FPS, n_boot=n_boot, seed=seed)
        out[kind] = c.to_dict()
        out[kind]["per_seed"] = {str(s): {v: _sens(tables[s], kind, v) for v in variants} for s in seeds}
    out["label_quality"] = {str(s): tables[s].get("label_quality", {}) for s in seeds}
    rounds = min(len(t.get("rounds", [])) for t in tables.values())
    if rounds > 1:
        out["rounds"] = summarize_rounds(runs, tables, rounds, n_boot, seed)
    from lesionprop.pipeline.report import model_validation      # from metrics.jsonl: older runs too

    out["validation"] = {str(s): model_validation(runs[s] / "models", variants) for s in seeds}
    return out


def summarize_rounds(runs: dict[int, Path], tables: dict[int, dict], rounds: int, n_boot: int, seed: int) -> dict:
    """Harvesting in rounds: each later round's MM + LP model against round 1's (paired, pooled
    over seeds, official and truth), and the label sets' quality per round and seed."""
    from lesionprop.eval.compare import pooled_comparison

    names = ["mm_lp"] + [f"mm_lp@r{r}" for r in range(2, rounds + 1)]
    per_seed = {s: run_outcomes(runs[s], names) for s in sorted(runs)}
    out: dict = {"rounds": rounds, "compared": names}
    for kind, k in (("official", 0), ("truth", 1)):
        if all(per_seed[s][k] is not None for s in per_seed):
            out[kind] = pooled_comparison([per_seed[s][k] for s in per_seed], names, FPS, n_boot=n_boot,
                                          seed=seed).to_dict()
    out["label_quality"] = {str(s): {str(e["round"]): e.get("label_quality", {}) for e in t["rounds"][:rounds]}
                            for s, t in tables.items()}
    return out


def rounds_markdown(name: str, summary: dict) -> str:
    rs = summary["rounds"]
    lines = [f"**{name}, harvesting in rounds** ({rs['rounds']} rounds; round r's labels from round r - 1's "
             "MM + LP model)", "", "Pseudo-labels per round (training split, against truth; summed over seeds):", "",
             "| round | labels | boxes | precision | missing key-slice lesions recovered | "
             "unlabeled K+/-1 lesion slices covered |", "| --- | --- | --- | --- | --- | --- |"]
    for r in range(1, rs["rounds"] + 1):
        for labels in ("mm", "mm_lp"):
            q = [rs["label_quality"][s][str(r)][labels] for s in rs["label_quality"]
                 if labels in rs["label_quality"][s].get(str(r), {})]
            if not q:
                continue
            tot = {k: sum(x[k] for x in q) for k in ("boxes", "correct", "missing_recovered", "missing_targets",
                                                      "neighbour_recovered", "neighbour_targets")}
            frac = lambda a, b: _pct(tot[a] / tot[b] if tot[b] else float("nan"))     # noqa: E731
            lines.append(f"| {r} | {labels} | {tot['boxes']} | {frac('correct', 'boxes')} | "
                         f"{tot['missing_recovered']}/{tot['missing_targets']} ({frac('missing_recovered', 'missing_targets')}) | "
                         f"{tot['neighbour_recovered']}/{tot['neighbour_targets']} "
                         f"({frac('neighbour_recovered', 'neighbour_targets')}) |")
    for kind, title in (("official", "official key-slice labels"), ("truth", "complete truth labels")):
        if kind not in rs:
            continue
        c = rs[kind]
        lines += ["", f"MM + LP of each later round against round 1's, {title} (paired, pooled over seeds; points; "
                      "P = share of resamples with a difference > 0):", "",
                  "| model | " + " | ".join(f"{f:g} FP" for f in FPS) + " | mean 0.5-8 |",
                  "|" + " --- |" * (len(FPS) + 2)]
        for v, d in c["differences"].items():
            cells = [_cell(x, lo, hi, "+") + f" P={p:.2f}" for x, lo, hi, p in
                     zip(d["diff"], d["ci_low"], d["ci_high"], d["p_gt_0"])]
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {_cell(d['mean_diff'], *d['mean_ci'], '+')} "
                         f"P={d['mean_p_gt_0']:.2f} |")
    return "\n".join(lines)


def _sens(table: dict, kind: str, v: str) -> list[float]:
    entry = (table["truth"] if kind == "truth" else table)["variants"][v]
    return entry["sensitivity"] if isinstance(entry, dict) else entry       # older table.json: a plain list


def _pct(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.1f}%"


def _cell(x: float, lo: float, hi: float, sign: str = "") -> str:
    return f"{100 * x:{sign}.1f} ({100 * lo:{sign}.1f}, {100 * hi:{sign}.1f})"


def markdown(name: str, summary: dict, kind: str, title: str) -> str:
    c = summary[kind]
    n = len(summary["seeds"])
    lines = [f"**{name}, {title}** ({n} seeds, {c['units']} test patients, {c['lesions']} lesions in all; "
             f"mean over seeds, {100 * c['ci_level']:g}% CI from {c['bootstrap']} resamples of (seed, patient))", "",
             "| variant | " + " | ".join(f"{f:g} FP" for f in FPS) + " | mean 0.5-8 |", "|" + " --- |" * (len(FPS) + 2)]
    for v, e in c["variants"].items():
        lines.append(f"| {v} | " + " | ".join(_cell(*x) for x in zip(e["sensitivity"], e["ci_low"], e["ci_high"]))
                     + f" | {_cell(e['mean'], *e['mean_ci'])} |")
    lines += ["", "Paired difference to the baseline (points; P = share of resamples with a difference > 0)", "",
              "| variant | " + " | ".join(f"{f:g} FP" for f in FPS) + " | mean 0.5-8 |",
              "|" + " --- |" * (len(FPS) + 2)]
    for v, d in c["differences"].items():
        cells = [_cell(x, lo, hi, "+") + f" P={p:.2f}" for x, lo, hi, p in
                 zip(d["diff"], d["ci_low"], d["ci_high"], d["p_gt_0"])]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {_cell(d['mean_diff'], *d['mean_ci'], '+')} "
                     f"P={d['mean_p_gt_0']:.2f} |")
    per = "; ".join(f"seed {s}: " + " / ".join(f"{100 * vals[v][FPS.index(4)]:.1f}" for v in c["variants"])
                    for s, vals in c["per_seed"].items())
    lines += ["", f"Per seed at 4 FPs ({' / '.join(c['variants'])}): {per}."]
    return "\n".join(lines)


def validation_markdown(name: str, summary: dict) -> str:
    """Each seed's models on the validation split: how far each fine-tune moved from the baseline."""
    val = summary.get("validation") or {}
    models = list(next(iter(val.values()), {}))
    lines = [f"**{name}, each model on the validation split, per seed** (sensitivity % at 4 FPs of the "
             "checkpoint used; the baseline as trained, then each model's difference to it in points; "
             "`baseline_finetuned` is the tables' baseline row when the variants are fine-tunes)", "",
             "| seed | " + " | ".join(models) + " |", "|" + " --- |" * (len(models) + 1)]
    for s, v in val.items():
        cells = [("n/a" if r["val_sensitivity_4fp"] is None else f"{100 * r['val_sensitivity_4fp']:.1f}")
                 if m == "baseline" else ("n/a" if r["vs_baseline"] is None else f"{100 * r['vs_baseline']:+.1f}")
                 for m, r in ((m, v.get(m, {"val_sensitivity_4fp": None, "vs_baseline": None})) for m in models)]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quality_markdown(name: str, summary: dict) -> str:
    lines = [f"**{name}, pseudo-labels against truth, per seed** (training split; IoU >= 0.5)", "",
             "| seed | labels | boxes | precision | missing key-slice recall | neighbour-slice recall |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s, q in summary["label_quality"].items():
        for k, v in q.items():
            lines.append(f"| {s} | {k} | {v['boxes']} | {_pct(v['precision'])} | "
                         f"{v['missing_recovered']}/{v['missing_targets']} ({_pct(v['missing_recall'])}) | "
                         f"{v['neighbour_recovered']}/{v['neighbour_targets']} ({_pct(v['neighbour_recall'])}) |")
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
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples of (seed, patient) (default 1000)")
    ap.add_argument("--boot-seed", type=int, default=0, help="seed of the resampling")
    ap.add_argument("--summarize-only", action="store_true", help="only summarize finished run folders under --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed in args.seeds:           # backgrounds interleaved: a failing one shows up in the first round
        for bg, extra in backgrounds(Path(args.realct)).items():
            if not args.only or bg == args.only:
                jobs.append((bg, seed, out / f"{bg}_seed{seed}", extra + args.overrides))
    done: dict[str, dict[int, Path]] = {}
    seconds: dict[str, list[float]] = {}
    if args.summarize_only:
        for bg, seed, run, _ in jobs:
            if (run / "report" / "table.json").is_file():
                done.setdefault(bg, {})[seed] = run
    else:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)     # parallel pipelines share the cores
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {(bg, seed, run): pool.submit(run_one, run, args.preset, seed, extra,
                                                    out / f"{bg}_seed{seed}.log", threads)
                       for bg, seed, run, extra in jobs}
            for (bg, seed, run), fut in futures.items():
                try:
                    seconds.setdefault(bg, []).append(fut.result()["seconds"])
                    done.setdefault(bg, {})[seed] = run
                    print(f"{bg} seed {seed}: done", flush=True)
                except RuntimeError as exc:      # keep the other runs' results
                    print(f"{bg} seed {seed}: FAILED: {exc}", flush=True)
    summary, md = {}, [f"preset {args.preset}, overrides {args.overrides or 'none'}", ""]
    for bg, runs in done.items():
        summary[bg] = summarize_background(runs, args.bootstrap, args.boot_seed)
        summary[bg]["seconds"] = seconds.get(bg, [])
        for kind, title in (("official", "official key-slice labels"), ("truth", "complete truth labels")):
            if kind in summary[bg]:
                md += [markdown(bg, summary[bg], kind, title), ""]
        md += [quality_markdown(bg, summary[bg]), "", validation_markdown(bg, summary[bg]), ""]
        if "rounds" in summary[bg]:
            md += [rounds_markdown(bg, summary[bg]), ""]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
