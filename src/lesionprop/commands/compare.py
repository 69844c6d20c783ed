"""``lesionprop compare``: several detectors' predictions on one test set, paired bootstrap over patients.

    lesionprop compare --annotations A --predictions P0 P1 ... [--names n0,n1,...] [--truth T]
        [--split test] [--ci 0.95] [--bootstrap 1000] [--seed 0] [--json] [--plot forest.png]

The first predictions file is the reference: every other variant gets its difference to it
(per FP rate and for the mean over 0.5-8 FPs), its CI and the share of resamples where it is > 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lesionprop.cli import CommandError
from lesionprop.eval.froc import DEFAULT_FPS
from lesionprop.commands.arguments import float_list, unit_interval
from lesionprop.commands.label_tool import SPLIT_CHOICES, load_predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="DL_info.csv-schema file")
    parser.add_argument("--predictions", required=True, nargs="+", metavar="CSV",
                        help="two or more prediction files (CSV, .arrow or .parquet); the first is the reference")
    parser.add_argument("--names", help="comma-separated names, one per predictions file (default: file names)")
    parser.add_argument("--truth", help="complete labels (truth.csv): an image's lesions = all truth rows on it")
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES, help="key slices of this split are the images")
    parser.add_argument("--iou", type=unit_interval, default=0.5, help="IoU for a hit (default 0.5)")
    parser.add_argument("--fps", type=float_list, default=DEFAULT_FPS, help="FP rates, e.g. 0.5,1,2,4,8")
    parser.add_argument("--ci", type=float, default=0.95, metavar="LEVEL", help="confidence level (default 0.95)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="paired resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--plot", help="write a forest plot of the differences to this image file")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip malformed prediction rows (and report how many) instead of failing")


def variant_names(paths: list[str], names: str | None) -> list[str]:
    if names is None:
        stems = [Path(p).stem for p in paths]
        return stems if len(set(stems)) == len(stems) else [f"{i}:{s}" for i, s in enumerate(stems)]
    out = [n.strip() for n in names.split(",")]
    if len(out) != len(paths) or any(not n for n in out) or len(set(out)) != len(out):
        raise CommandError(f"--names needs {len(paths)} distinct non-empty names (one per predictions file), "
                           f"got {names!r}")
    return out


def table(c) -> str:
    """The readable table: sensitivity [CI] per variant, then differences to the first."""
    def cell(x, lo, hi, sign=""):
        return f"{100 * x:{sign}6.1f} [{100 * lo:{sign}5.1f},{100 * hi:{sign}5.1f}]"

    width = max(len(n) for n in c.names) + 2
    cols = [f"{f:g} FPs" for f in c.fps] + ["mean 0.5-8"]
    lines = [f"{c.images} images, {c.lesions} lesions, {c.units} patients; {100 * c.level:g}% CIs from "
             f"{c.n_boot} paired resamples of patients", "",
             "sensitivity %".ljust(width) + "".join(f"{h:>21s}" for h in cols)]
    for i, n in enumerate(c.names):
        cells = [cell(*v) for v in zip(c.sensitivity[i], c.ci_low[i], c.ci_high[i])]
        cells.append(cell(c.mean[i], *c.mean_ci[i]))
        lines.append(n.ljust(width) + "".join(f"{x:>21s}" for x in cells))
    lines += ["", f"difference to {c.names[0]} (points) [CI] P(diff > 0)"]
    for i in range(1, len(c.names)):
        cells = [cell(*v, sign="+") + f" {p:.2f}" for v, p in
                 zip(zip(c.diff[i], c.diff_low[i], c.diff_high[i]), c.p_gt_0[i])]
        cells.append(cell(c.mean_diff[i], *c.mean_diff_ci[i], sign="+") + f" {c.mean_p_gt_0[i]:.2f}")
        lines.append(c.names[i].ljust(width) + "".join(f"{x:>26s}" for x in cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lesionprop.annotations import concat, read_annotations
    from lesionprop.eval.compare import compare
    from lesionprop.eval.plot import check_plot_path

    if len(args.predictions) < 2:
        raise CommandError("compare needs at least two --predictions files")
    if not 0 < args.ci < 1:
        raise CommandError(f"--ci must be a level in (0, 1), e.g. 0.95; got {args.ci}")
    if args.bootstrap < 1:
        raise CommandError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    names = variant_names(args.predictions, args.names)
    if args.plot:
        check_plot_path(args.plot, args.annotations, args.truth, *args.predictions)
    lesions = read_annotations(args.annotations)
    truth = read_annotations(args.truth) if args.truth else None
    preds = [load_predictions(p, concat([lesions, truth]), args.skip_bad_rows) for p in args.predictions]
    result = compare(lesions, preds, names, split=args.split, truth=truth, fps=args.fps, iou=args.iou,
                     level=args.ci, n_boot=args.bootstrap, seed=args.seed)
    print(json.dumps(result.to_dict()) if args.json else table(result))
    if args.plot:
        from lesionprop.eval.plot import plot_forest

        plot_forest(result, args.plot)
    return 0
