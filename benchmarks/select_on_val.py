"""Choose between two retrain settings per run and model on the validation split, offline.

Given two roots of finished ``bench_pipeline.py`` run folders that differ in one retrain
setting (e.g. ``pipeline.retrain_base_lr``; same seeds, same data, same baseline), build a
third root whose every (background, seed, model) takes the test predictions of the setting
whose fine-tune scored higher on validation at 4 FPs (a tie keeps ``--default``).  The
tables' baseline row is the baseline fine-tuned on its own labels, chosen the same way.
Then summarise it as any other root::

    python benchmarks/select_on_val.py --default RUNS_A --other RUNS_B --out RUNS_SEL
    python benchmarks/bench_pipeline.py --only realct --seeds 0 1 2 3 4 5 --out RUNS_SEL --summarize-only

The new root holds links into the two roots (nothing is copied or changed there), and a
``report/table.json`` per run with the chosen rows.  Results: benchmarks/results/pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lesionprop.pipeline.report import model_validation  # noqa: E402

VARIANTS = ["baseline", "lp", "mm", "mm_lp", "dd"]


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)


def select_run(default: Path, other: Path, out: Path) -> dict[str, str]:
    """Build ``out`` from two finished run folders; return ``{model: "default" | "other"}``."""
    val = {"default": model_validation(default / "models", VARIANTS),
           "other": model_validation(other / "models", VARIANTS)}
    table = json.loads((default / "report" / "table.json").read_text())
    other_table = json.loads((other / "report" / "table.json").read_text())
    for sub in ("preds", "models", "report"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name in ("data", "labels"):
        _link(default / name, out / name)
    _link(default / "models" / "baseline", out / "models" / "baseline")    # the same model in both roots
    picks = {}
    for v in VARIANTS:
        model = "baseline_finetuned" if v == "baseline" and "baseline_finetuned" in val["default"] else v
        scores = {k: val[k][model]["val_sensitivity_4fp"] for k in val}
        if any(s is None for s in scores.values()):
            raise SystemExit(f"{default} / {other}: no validation record for {model}")
        pick = "other" if scores["other"] > scores["default"] else "default"
        src, src_table = (other, other_table) if pick == "other" else (default, table)
        picks[v] = pick
        _link(src / "preds" / f"test_{v}.csv", out / "preds" / f"test_{v}.csv")
        if model != "baseline":
            _link(src / "models" / model, out / "models" / model)
        table["variants"][v] = src_table["variants"][v]
        if "truth" in table:
            table["truth"]["variants"][v] = src_table["truth"]["variants"][v]
    (out / "report" / "table.json").write_text(json.dumps(table, indent=1))
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--default", required=True, type=Path, help="root of run folders at the default setting")
    ap.add_argument("--other", required=True, type=Path, help="root of the same runs at the other setting")
    ap.add_argument("--out", required=True, type=Path, help="new root (must not be either input)")
    args = ap.parse_args()
    if args.out.resolve() in (args.default.resolve(), args.other.resolve()):
        raise SystemExit("--out must be a new folder, not one of the inputs")
    runs = sorted(p.name for p in args.default.iterdir()
                  if (p / "report" / "table.json").is_file() and (args.other / p.name / "report" / "table.json").is_file())
    if not runs:
        raise SystemExit(f"no run folder finished in both {args.default} and {args.other}")
    counts: dict[str, dict[str, int]] = {}
    for name in runs:
        picks = select_run((args.default / name).resolve(), (args.other / name).resolve(), args.out / name)
        background = name.rsplit("_seed", 1)[0]
        for v, pick in picks.items():
            counts.setdefault(background, {}).setdefault(v, 0)
            counts[background][v] += pick == "other"
        print(name, picks)
    for background, c in counts.items():
        n = sum(r.startswith(background + "_seed") for r in runs)
        print(f"{background}: runs that took --other, per model (of {n}): {c}")


if __name__ == "__main__":
    main()
