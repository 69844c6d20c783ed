"""``lesionprop evaluate``: sensitivity at FPs per image (MULAN / AlignShift protocol), or at FPs
per sub-volume with complete labels (``--protocol lens|harvester``, :mod:`lesionprop.eval.complete`)."""

from __future__ import annotations

import argparse
import json
import sys

from lesionprop.annotations import concat, read_annotations
from lesionprop.cli import CommandError
from lesionprop.eval.froc import CONVENTIONS, DEFAULT_FPS, evaluate
from lesionprop.eval.plot import check_plot_path
from lesionprop.commands.arguments import count, float_list, unit_interval
from lesionprop.commands.label_tool import SPLIT_CHOICES, add_io_arguments, load_predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_io_arguments(parser, out=False)
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES,
                        help="key slices of this split are the images (default test)")
    parser.add_argument("--iou", type=unit_interval, default=0.5, help="IoU for a hit (default 0.5)")
    parser.add_argument("--fps", type=float_list, default=DEFAULT_FPS, help="FP rates, e.g. 0.5,1,2,4,8")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--breakdown", action="store_true", help="with --json: add by_interval, by_type and by_size (the text table always shows them)")
    parser.add_argument("--plot", help="write the FROC curve to this image file")
    parser.add_argument("--truth", help="complete labels (truth.csv): an image's lesions = all truth rows on it")
    add_bootstrap_arguments(parser)
    parser.add_argument("--convention", default="mulan", choices=CONVENTIONS,
                        help="mulan (default: IoU with +0.8 mm / pixel spacing on widths and heights) or 3dce "
                             "(+1 px, at most K-1 FPs, extrapolation)")
    add_protocol_arguments(parser)


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--protocol`` and the options of the complete-label protocols (``lens``, ``harvester``)."""
    from lesionprop.eval.complete_labels import FORMATS

    for action in parser._actions:                                     # noqa: SLF001
        if action.dest == "annotations":
            action.required = False
            action.help = "DL_info.csv-schema file (key-slice: required; lens/harvester with truth.csv: " \
                          "its key slices' sub-volumes are the units)"
    parser.add_argument("--protocol", default="key-slice", choices=("key-slice", "lens", "harvester"),
                        help="key-slice (default), lens (3D boxes, IoBB >= --iobb, FPs per sub-volume at "
                             "0.125-8) or harvester (2D boxes on slices, IoU >= --iou, 0.125-16, AP); "
                             "--predictions then is a linked CSV (lesionprop link) or a LENS-style .pkl")
    parser.add_argument("--truth-format", default="auto", choices=("auto",) + FORMATS,
                        help="format of --truth for lens/harvester (auto: .csv = truth.csv, else the pickle's layout)")
    parser.add_argument("--iobb", type=unit_interval, default=0.3, help="lens: IoBB for a hit (default 0.3)")
    parser.add_argument("--window", type=count(0), metavar="N",
                        help="lens/harvester with truth.csv and --annotations: sub-volumes K-N ... K+N")


def add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ci``, ``--bootstrap``, ``--seed`` (shared with ``compare``)."""
    parser.add_argument("--ci", type=float, metavar="LEVEL",
                        help="confidence intervals at this level (e.g. 0.95) by a bootstrap over patients")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")


def check_bootstrap_arguments(args: argparse.Namespace) -> None:
    if args.ci is not None and not 0 < args.ci < 1:
        raise CommandError(f"--ci must be a level in (0, 1), e.g. 0.95; got {args.ci}")
    if args.bootstrap < 1:
        raise CommandError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    if args.ci is not None and getattr(args, "convention", "mulan") != "mulan":
        raise CommandError("--ci needs --convention mulan (the bootstrap reads the curve with MULAN's rule)")


def _table(result, ci=None) -> str:
    head = "FPs/image    " + "  ".join(f"{f:>6g}" for f in result.fps)
    lines = [f"split {result.split}: {result.images} images, {result.lesions} lesions, "
             f"IoU {result.iou:g}, convention {result.convention}", head,
             "sensitivity  " + "  ".join(f"{100 * s:6.2f}" for s in result.sensitivity)]
    if ci is not None:
        lines += [f"{100 * ci.level:g}% CI low".ljust(13) + "  ".join(f"{100 * s:6.2f}" for s in ci.ci_low),
                  f"{100 * ci.level:g}% CI high".ljust(13) + "  ".join(f"{100 * s:6.2f}" for s in ci.ci_high),
                  f"mean over 0.5-8 FPs: {100 * ci.mean:.2f} ({100 * ci.level:g}% CI {100 * ci.mean_ci[0]:.2f}-"
                  f"{100 * ci.mean_ci[1]:.2f}; bootstrap of {ci.n_boot} resamples over "
                  f"{result.outcomes.units.size} patients)"]
    for title, groups in (("slice interval", result.by_interval), ("lesion type", result.by_type),
                          ("lesion size", result.by_size)):
        if groups:
            lines.append(f"by {title} (images / lesions):")
            for name, sub in groups.items():
                lines.append(f"  {name:<14s} {sub.images:>6d} / {sub.lesions:<6d} "
                             + "  ".join(f"{100 * s:6.2f}" for s in sub.sensitivity))
    return "\n".join(lines)


def _print_result(args: argparse.Namespace, result, ci, table) -> None:
    """``--json``: the result's dict (plus the CI fields); otherwise the readable ``table()``."""
    if args.json:
        out = result.to_dict(breakdown=args.breakdown)
        if ci is not None:
            out.update(ci.to_dict())
        print(json.dumps(out))
    else:
        print(table())


def run_complete(args: argparse.Namespace) -> int:
    """``--protocol lens|harvester``."""
    from lesionprop.eval import complete

    check_bootstrap_arguments(args)
    if args.truth is None:
        raise CommandError(f"--protocol {args.protocol} needs --truth (truth.csv, a LENS or Lesion Harvester pickle)")
    if args.plot:
        check_plot_path(args.plot, args.annotations, args.predictions, args.truth)
    annotations = read_annotations(args.annotations) if args.annotations else None
    labels = complete.load_truth(args.truth, args.truth_format, split=args.split, annotations=annotations,
                                 window=args.window)
    dets = complete.load_detections(args.predictions, labels, split=args.split)
    fps = None if tuple(args.fps) == tuple(DEFAULT_FPS) else args.fps
    result = complete.evaluate_complete(args.protocol, labels, dets, fps=fps, iou=args.iou, iobb=args.iobb)
    ci = None
    if args.ci is not None:
        from lesionprop.eval.lens import bootstrap_protocol

        ci = bootstrap_protocol(result, level=args.ci, n_boot=args.bootstrap, seed=args.seed)
    threshold = f"IoBB {args.iobb:g}" if args.protocol == "lens" else f"IoU(+1) {args.iou:g}"
    _print_result(args, result, ci, lambda: complete.table(result, labels, dets, threshold, ci))
    if args.plot:
        from lesionprop.eval.plot import plot_froc

        plot_froc(result, args.plot, title=f"{args.protocol}: {result.units} sub-volumes, {result.lesions} lesions "
                                           "(x: FPs per sub-volume)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.protocol != "key-slice":
        return run_complete(args)
    if args.annotations is None:
        raise CommandError("--annotations is required for --protocol key-slice")
    check_bootstrap_arguments(args)
    if args.plot:
        check_plot_path(args.plot, args.annotations, args.predictions, args.truth)
    lesions = read_annotations(args.annotations)
    truth = read_annotations(args.truth) if args.truth else None
    preds = load_predictions(args.predictions, concat([lesions, truth]), args.skip_bad_rows)
    result = evaluate(lesions, preds, split=args.split, iou=args.iou, fps=args.fps, truth=truth,
                      convention=args.convention)
    ci = None
    if args.ci is not None:
        from lesionprop.eval.bootstrap import bootstrap_ci

        ci = bootstrap_ci(result.outcomes, result.fps, level=args.ci, n_boot=args.bootstrap, seed=args.seed)
    _print_result(args, result, ci, lambda: _table(result, ci))
    warn_if_off_split(len(preds), result.outcomes.det_image.size, result.images, args.split)
    if args.plot:
        from lesionprop.eval.plot import plot_froc

        plot_froc(result, args.plot)
    return 0


def warn_if_off_split(n_boxes: int, n_on: int, images: int, split: str) -> None:
    """Say on stderr when boxes were given but none lies on the evaluated key slices: the usual
    cause is predictions made for another split than ``--split`` (default test).  (Boxes on
    other slices too are normal: ``predict --slices both`` adds the K +/- 1 slices.)"""
    if n_boxes == 0 or n_on > 0:
        return
    print(f"lesionprop evaluate: note: none of the {n_boxes} prediction boxes lie on the {images} key slices "
          f"of split {split} (--split, default test), so every sensitivity is 0", file=sys.stderr)
