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
import csv
import os
import tempfile
from pathlib import Path


def rows_of(path: Path, header: list[str] | None) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        cols = header or head
        missing = [c for c in cols if c not in head]
        if missing:
            raise SystemExit(f"{path}: missing columns {missing}")
        idx = [head.index(c) for c in cols]
        return cols, [[r[i] for i in idx] for r in reader if r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dl_info", type=Path)
    ap.add_argument("truth", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new file")
    header, official = rows_of(args.dl_info, None)
    _, truth = rows_of(args.truth, header)
    split = header.index("Train_Val_Test")
    rows = [r for r in truth if r[split] == "1"] + [r for r in official if r[split] != "1"]
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header] + rows)
    os.replace(tmp, args.out)
    n_train = sum(r[split] == "1" for r in rows)
    print(f"wrote {args.out}: {n_train} train rows from {args.truth.name}, {len(rows) - n_train} val/test rows "
          f"from {args.dl_info.name}")


if __name__ == "__main__":
    main()
