"""``lesionprop synth --out DIR``: a synthetic DeepLesion-format dataset with complete truth.

Prints a summary and, with ``--compare CSV`` (real DL_info.csv rows), the dataset's
label statistics side by side with those rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionprop.commands.arguments import int_list
from lesionprop.errors import MissingInputError


def _intervals(text: str) -> tuple[tuple[float, float], ...]:
    try:
        pairs = [p.split(":") for p in text.split(",") if p.strip()]
        return tuple((float(a), float(b)) for a, b in pairs)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MM:WEIGHT pairs like 1:0.48,2:0.03,5:0.49, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lesionprop.synth.dataset import DEFAULT_INTERVALS, SynthOptions

    d = SynthOptions()
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--series", type=int, default=100, help="number of series (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files")
    parser.add_argument("--background", default=None, help="real CT (DICOM folder or NIfTI) to insert lesions into")
    parser.add_argument("--organ-mask", default=None, help="NIfTI label map aligned with --background")
    parser.add_argument("--organ-labels", type=int_list, default=d.organ_labels,
                        help="labels of --organ-mask that host lesions (default 5 = liver in TotalSegmentator)")
    parser.add_argument("--image-size", type=int, default=d.image_size, help="slice size in px (default 512)")
    parser.add_argument("--z-extent", type=float, default=d.z_extent_mm, help="mm of slices per series (default 60)")
    parser.add_argument("--max-slices", type=int, default=None, help="at most this many slices per series")
    parser.add_argument("--intervals", type=_intervals, default=DEFAULT_INTERVALS,
                        help="slice interval mix MM:WEIGHT,... (default 1:0.48,2:0.03,5:0.49)")
    parser.add_argument("--lesions-per-series", type=float, default=d.lesions_per_series, help="mean (default 3)")
    parser.add_argument("--unlabeled-share", type=float, default=d.unlabeled_share,
                        help="share of lesions left unannotated in every split (default 0.3)")
    parser.add_argument("--on-key-share", type=float, default=d.on_key_share,
                        help="share of the unannotated ones picked on another lesion's key slice (default 0.5)")
    parser.add_argument("--noisy-share", type=float, default=d.noisy_share,
                        help="share of test labels flagged Possibly_noisy (default 0.02)")
    parser.add_argument("--noise-hu", type=float, default=d.noise_hu, help="image noise std in HU (default 12)")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes (0: auto, 1: none)")
    parser.add_argument("--preview", action="store_true", help="write preview.png (slices with truth boxes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset written by lesionprop synth in --out (other data is refused)")
    parser.add_argument("--compare", default=None, help="real DL_info.csv rows to compare the label statistics with")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lesionprop.synth.dataset import generate_dataset

    summary = generate_dataset(
        args.out, series=args.series, seed=args.seed, background=args.background, organ_mask=args.organ_mask,
        organ_labels=args.organ_labels, image_size=args.image_size, z_extent_mm=args.z_extent,
        max_slices=args.max_slices, intervals=args.intervals, lesions_per_series=args.lesions_per_series,
        unlabeled_share=args.unlabeled_share, on_key_share=args.on_key_share, noisy_share=args.noisy_share,
        noise_hu=args.noise_hu, workers=args.workers, preview=args.preview, overwrite=args.overwrite,
        progress=not args.quiet)
    print(summary)
    if args.compare:
        from lesionprop.annotations import read_annotations
        from lesionprop.dataset_stats import comparison_table

        compare = Path(args.compare)
        if not compare.is_file():
            raise MissingInputError(f"--compare file not found: {compare}")
        print(comparison_table(read_annotations(Path(args.out) / "DL_info.csv"), read_annotations(compare),
                               str(compare)))
    if args.preview:
        print(f"preview: {Path(args.out) / 'preview.png'}")
    return 0
