"""Annotations for pre-training a detector on a synthetic dataset with its COMPLETE labels.

A synthetic dataset (``lesionprop synth``) has the official, partial labels in
``DL_info.csv`` (one row per labeled lesion, on its key slice; ~30 % of lesions have no
row) and the complete truth in ``truth.csv`` (every lesion on every slice it touches).
For pre-training (``docs/cpu_synth_backbone.md``) this writes one file with

* the train split from ``truth.csv``: every slice of every lesion, all lesions boxed, so
  training sees ~15x more slices and no unlabeled lesion is taught as background;
* the val and test splits from ``DL_info.csv`` unchanged, so the end-of-training
  validation is the usual official key-slice protocol.

Only for synthetic data of seeds that no evaluation uses (the pre-training set):

    python benchmarks/make_pretrain_labels.py PRE/DL_info.csv PRE/truth.csv PRE/pretrain_labels.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionprop.annotations import concat, read_annotations, write_annotations

TRAIN = 1        # Train_Val_Test


def pretrain_labels(dl_info: Path, truth: Path, out: Path) -> tuple[int, int]:
    """Write the train rows of ``truth`` then the val / test rows of ``dl_info`` to ``out`` (a new
    file, written atomically; truth's ``Lesion_id`` column is dropped); returns the two row counts."""
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new file")
    official, complete = read_annotations(dl_info), read_annotations(truth)
    train = complete.take(complete.split == TRAIN)
    others = official.take(official.split != TRAIN)
    write_annotations(out, concat([train, others]), extra_columns=[])
    return len(train), len(others)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dl_info", type=Path)
    ap.add_argument("truth", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    n_train, n_other = pretrain_labels(args.dl_info, args.truth, args.out)
    print(f"wrote {args.out}: {n_train} train rows from {args.truth.name}, {n_other} val/test rows "
          f"from {args.dl_info.name}")


if __name__ == "__main__":
    main()
