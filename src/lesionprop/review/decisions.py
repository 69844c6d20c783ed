"""``DIR/decisions.csv``: one row per decided item, the record a review restarts from.

Columns: ``id`` (the item's row in the label file, first data row = 1), the row as the label
file has it (``File_name``, ``Source``, ``Score``, ``x1 y1 x2 y2``: file frame), then
``decision`` (accept / reject / edit), the redrawn box ``new_x1 .. new_y2`` (edit only) and
``decided_at`` (ISO 8601, UTC).  Numbers are written with Python's ``repr`` (shortest text that
reads back to the same float64), so a box read back equals the box decided.

The row's copy of the label file is how a restart knows the decisions belong to this label
file: a row that no longer matches is an error naming the line, never a decision silently
moved to another lesion.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from lesionprop.annotations import Annotations
from lesionprop.fileio import atomic_write
from lesionprop.review.items import DECISIONS, EDIT, Decision, ReviewInputError, check_box, id_of_row, row_of_id

HEADER: tuple[str, ...] = ("id", "File_name", "Source", "Score", "x1", "y1", "x2", "y2", "decision",
                           "new_x1", "new_y1", "new_x2", "new_y2", "decided_at")


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


def decisions_text(ann: Annotations, decisions: dict[int, Decision]) -> str:
    """The text of ``decisions.csv`` (rows by id) for decisions on rows of ``ann``."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    for item_id in sorted(decisions):
        d, r = decisions[item_id], row_of_id(item_id)
        new = [_num(v) for v in d.box] if d.box is not None else ["", "", "", ""]
        w.writerow([item_id, ann.file_name[r], ann.source[r], _num(ann.score[r]),
                    *(_num(v) for v in ann.boxes[r]), d.decision, *new, d.at])
    return out.getvalue()


def write_decisions(path: str | os.PathLike, ann: Annotations, decisions: dict[int, Decision]) -> None:
    """Write ``decisions.csv`` atomically (temp file + rename: a kill leaves the old or the new file)."""
    with atomic_write(path) as fh:
        fh.write(decisions_text(ann, decisions))


def _float(text: str, where: str, column: str) -> float:
    try:
        return float(text) if text.strip() else math.nan
    except ValueError:
        raise ReviewInputError(f"{where}: {column} is not a number: {text!r}") from None


def read_decisions(path: str | os.PathLike, ann: Annotations) -> dict[int, Decision]:
    """``decisions.csv`` -> {id: Decision}, each row checked against the label file ``ann``.

    Raises :class:`ReviewInputError` naming the file, line and value for a bad header, a bad
    value, a repeated id, or a row that does not match the label file (another label file's
    decisions).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise ReviewInputError(f"{path}: not a decisions file: its header must be {','.join(HEADER)}, got {got!r}")
    out: dict[int, Decision] = {}
    for line, values in enumerate(rows[1:], start=2):
        where = f"{path} line {line}"
        if len(values) != len(HEADER):
            raise ReviewInputError(f"{where}: {len(values)} fields, expected {len(HEADER)}")
        v = dict(zip(HEADER, values))
        try:
            item_id = int(v["id"])
        except ValueError:
            raise ReviewInputError(f"{where}: id is not a whole number: {v['id']!r}") from None
        r = row_of_id(item_id)
        if not 0 <= r < len(ann):
            raise ReviewInputError(f"{where}: id {item_id} is not a row of {ann.path} ({len(ann)} rows): "
                                   "these decisions belong to another label file")
        if item_id in out:
            raise ReviewInputError(f"{where}: id {item_id} is decided twice")
        box = tuple(_float(v[c], where, c) for c in ("x1", "y1", "x2", "y2"))
        if v["File_name"] != ann.file_name[r] or v["Source"] != ann.source[r] or box != tuple(ann.boxes[r]):
            raise ReviewInputError(
                f"{where}: id {item_id} is {v['File_name']} ({v['Source']}, box {list(box)}) here, but row "
                f"{id_of_row(r)} of {ann.path} is {ann.file_name[r]} ({ann.source[r]}, box {ann.boxes[r].tolist()}): "
                "these decisions belong to another label file")
        decision = v["decision"]
        if decision not in DECISIONS:
            raise ReviewInputError(f"{where}: decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        new = None
        if decision == EDIT:
            try:
                new = check_box([_float(v[c], where, c) for c in ("new_x1", "new_y1", "new_x2", "new_y2")],
                                ann.image_size[r])
            except ReviewInputError as exc:
                raise ReviewInputError(f"{where}: new box: {exc}") from None
        out[item_id] = Decision(decision, new, v["decided_at"])
    return out
