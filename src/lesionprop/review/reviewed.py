"""The reviewed label set, and the summary of a review: pure functions of the label file and the decisions.

``labels_reviewed.csv`` = every input row in file order, except: a rejected row is left out, a
redrawn row has its new box (file frame; measurement, diameters and location follow from it,
as for any derived row), and an accepted or redrawn row has ``Source`` = ``reviewed`` (its
score is kept).  Human rows and undecided pseudo-labels keep their text byte for byte.
"""

from __future__ import annotations

import numpy as np

from lesionprop.annotations import Annotations, Source, concat
from lesionprop.boxes import box_iou
from lesionprop.review.items import ACCEPT, EDIT, REJECT, Decision, id_of_row, row_of_id


def reviewed_table(ann: Annotations, decisions: dict[int, Decision]) -> Annotations:
    """The rows of ``labels_reviewed.csv`` (see the module docstring)."""
    n = len(ann)
    kind = np.full(n, "", dtype=object)
    for item_id, d in decisions.items():
        kind[row_of_id(item_id)] = d.decision
    edits = np.flatnonzero(kind == EDIT)
    boxes = np.array([decisions[id_of_row(r)].box for r in edits.tolist()], np.float64).reshape(-1, 4)
    redrawn = ann.derive(edits, slices=ann.slice_index[edits], boxes=boxes, source=Source.REVIEWED,
                         scores=ann.score[edits], lesion_type=ann.lesion_type[edits])
    # row i of the input, or n + k for the k-th redrawn row, in file order
    pick = np.arange(n)
    pick[edits] = n + np.arange(edits.size)
    out = concat([ann, redrawn]).take(pick[kind != REJECT])
    # an accepted row keeps its text; only who vouches for it changes (take made fresh arrays)
    out.source = np.where(kind[kind != REJECT] == ACCEPT, Source.REVIEWED.value, out.source).astype(object)
    return out


def summarize(ann: Annotations, items: np.ndarray, decisions: dict[int, Decision]) -> dict:
    """Counts per source of the reviewed items (``items``: 0-based rows offered for review;
    decided rows outside them, from an earlier ``--sources``, count too) and their precision:
    (accepted + edited) / decided, None before any decision.  ``edit_iou_median``: median IoU of
    the redrawn boxes with the boxes they replaced (how far off the localisation was)."""
    rows = sorted(set(np.asarray(items).tolist()) | {row_of_id(i) for i in decisions})
    per: dict[str, dict] = {}
    for src in dict.fromkeys(str(ann.source[r]) for r in rows):
        per[src] = _counts(ann, [r for r in rows if ann.source[r] == src], decisions)
    return {"sources": per, "all": _counts(ann, rows, decisions)}


def _counts(ann: Annotations, rows: list[int], decisions: dict[int, Decision]) -> dict:
    got = [decisions.get(id_of_row(r)) for r in rows]
    count = {k: sum(1 for d in got if d is not None and d.decision == k) for k in (ACCEPT, REJECT, EDIT)}
    decided = sum(count.values())
    edited = [(r, d.box) for r, d in zip(rows, got) if d is not None and d.decision == EDIT]
    ious = [float(box_iou(ann.boxes[r], np.asarray(b))[0, 0]) for r, b in edited]
    return {"items": len(rows), "accepted": count[ACCEPT], "rejected": count[REJECT], "edited": count[EDIT],
            "undecided": len(rows) - decided,
            "precision": (count[ACCEPT] + count[EDIT]) / decided if decided else None,
            "edit_iou_median": float(np.median(ious)) if ious else None}


def summary_text(summary: dict) -> str:
    """The summary as lines for the terminal."""
    lines = [f"{'source':<12} {'items':>6} {'accepted':>9} {'rejected':>9} {'edited':>7} {'undecided':>10} "
             f"{'precision':>10}"]
    for name, c in [*summary["sources"].items(), ("all", summary["all"])]:
        prec = "-" if c["precision"] is None else f"{c['precision']:.3f}"
        lines.append(f"{name:<12} {c['items']:>6} {c['accepted']:>9} {c['rejected']:>9} {c['edited']:>7} "
                     f"{c['undecided']:>10} {prec:>10}")
    return "\n".join(lines)
