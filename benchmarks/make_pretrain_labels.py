"""Annotations for pre-training a detector on a synthetic dataset with its COMPLETE labels
(train split from ``truth.csv``, val / test from ``DL_info.csv``): the command line of
:func:`lesionprop.synth.pretrain_labels.pretrain_labels`, where the rules are written down.

Only for synthetic data of seeds that no evaluation uses (the pre-training set)::

    python benchmarks/make_pretrain_labels.py PRE/DL_info.csv PRE/truth.csv PRE/pretrain_labels.csv \\
        [--max-slices-per-lesion 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionprop.synth.pretrain_labels import pretrain_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dl_info", type=Path)
    ap.add_argument("truth", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-slices-per-lesion", type=int, default=None,
                    help="balance the train split by lesion: each lesion's N slices nearest its key slice")
    args = ap.parse_args()
    try:
        n_train, n_other = pretrain_labels(args.dl_info, args.truth, args.out, args.max_slices_per_lesion)
    except FileExistsError as e:
        raise SystemExit(str(e)) from None
    print(f"wrote {args.out}: {n_train} train rows from {args.truth.name}, {n_other} val/test rows "
          f"from {args.dl_info.name}")


if __name__ == "__main__":
    main()
