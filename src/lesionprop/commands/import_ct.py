"""``lesionprop import SRC --out DIR``: a DICOM series folder or a NIfTI volume -> DeepLesion layout.

What the reader changed or assumed (files skipped, padding set to air, a gantry tilt
resampled) is printed as notes on stderr.  Writes ``DIR/Images_png/PPPPPP_SS_SS/001.png ...`` (16-bit, HU + 32768, slice 001
the most superior) and adds the series' row (spacing, size, slice range) to
``DIR/series_info.csv``.  See :mod:`lesionprop.data.volumes` for orientation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionprop.data.deeplesion import read_series_info
from lesionprop.data.layout import list_series, series_dir
from lesionprop.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="DICOM series folder (one file per slice) or NIfTI file (.nii / .nii.gz)")
    parser.add_argument("--out", required=True, help="dataset root to write into (created if missing)")
    parser.add_argument("--series-name", default=None,
                        help="series folder name PPPPPP_SS_SS (default: the next free patient number, _01_01)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing series folder of that name")


def _next_series_name(root: Path) -> str:
    known = set(read_series_info(root / "series_info.csv")) if (root / "series_info.csv").is_file() else set()
    known |= set(list_series(root))
    patients = [int(n[:6]) for n in known if n[:6].isdigit()]
    return f"{(max(patients) + 1) if patients else 1:06d}_01_01"


def run(args: argparse.Namespace) -> int:
    from lesionprop.data.layout import check_series_name
    from lesionprop.data.volumes import label_map_hint, load_ct, write_series
    from lesionprop.fileio import check_output_folder

    src, root = Path(args.src), Path(args.out)
    check_output_folder(root)
    if root.resolve() == src.resolve() or src.resolve() in root.resolve().parents:
        raise InputError(f"--out {root} must not be inside the input {src}")
    name = check_series_name(args.series_name) if args.series_name else _next_series_name(root)
    vol = load_ct(src)
    info = write_series(root, name, vol.hu, vol.spacing, source=f"import:{vol.source}", overwrite=args.overwrite)
    sx, sy, sz = info.spacing
    rows, cols = vol.hu.shape[1:]
    print(f"imported {src} -> {series_dir(root, name)}: {vol.hu.shape[0]} slices of "
          f"{cols} x {rows} pixels (width x height), spacing {sx:.4g} x {sy:.4g} x {sz:.4g} mm, "
          f"HU {int(vol.hu.min())}..{int(vol.hu.max())}; recorded in {root / 'series_info.csv'}")
    for note in vol.notes:
        kind = "warning" if note.startswith("warning: ") else "note"
        print(f"lesionprop import: {kind}: {note.removeprefix('warning: ')}", file=sys.stderr)
    hint = label_map_hint(vol.hu)
    if hint:
        print(f"lesionprop import: note: {src}: {hint}", file=sys.stderr)
    return 0

