"""What there is to review: the pseudo-label rows of a label file, and the checks of a decision.

Boxes are xyxy in the **file frame** (the numbers of ``Bounding_boxes``, see
:mod:`lesionprop.boxes`).  An item's id is its row in the label file, first data row = 1, so
ids stay the same whatever ``--sources`` selects and a decision always names one input row.
Everything here is pure: no file, no web framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from lesionprop.annotations import Annotations, Source
from lesionprop.errors import InputError

#: the sources a person can review (the label tools' outputs)
PSEUDO_SOURCES: tuple[Source, ...] = (Source.MINED, Source.PROPAGATED, Source.DISTILLED)
ACCEPT, REJECT, EDIT = "accept", "reject", "edit"
DECISIONS: tuple[str, ...] = (ACCEPT, REJECT, EDIT)


class ReviewInputError(InputError):
    """A request or a decisions file the review cannot use; the message says which value and why."""


@dataclass(frozen=True)
class Decision:
    """A person's verdict on one item; ``box`` (file frame) only for ``edit``; ``at``: ISO time (UTC)."""

    decision: str
    box: tuple[float, float, float, float] | None = None
    at: str = ""


def parse_sources(text: str | Iterable[str]) -> tuple[Source, ...]:
    """``"mined,propagated"`` (or a list of names) -> the sources, each a pseudo-label source, no repeats."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    allowed = [s.value for s in PSEUDO_SOURCES]
    bad = [n for n in names if n not in allowed]
    if bad or not any(names):
        raise ReviewInputError(f"sources must be a comma-separated list of {', '.join(allowed)}; got {bad or text!r}")
    return tuple(Source(n) for n in dict.fromkeys(names))


def item_rows(ann: Annotations, sources: Sequence[Source]) -> np.ndarray:
    """0-based row indices of the rows whose Source is one of ``sources``, in file order."""
    return np.flatnonzero(ann.mask(None, sources=sources, drop_noisy=False))


def row_of_id(item_id: int) -> int:
    """Item id (first data row = 1) -> 0-based row index."""
    return int(item_id) - 1


def id_of_row(row: int) -> int:
    return int(row) + 1


def _number(value: Any, what: str) -> float:
    # bool is an int to Python, never a coordinate to a person
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ReviewInputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_box(box: Any, image_size: Sequence[int]) -> tuple[float, float, float, float]:
    """A redrawn box -> 4 floats, or :class:`ReviewInputError` naming the value.

    The rule of human rows in a label file: x1 < x2, y1 < y2 and inside the image, which in
    the 1-based file frame spans 0 .. columns + 1 and 0 .. rows + 1 (``image_size`` = rows, columns).
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ReviewInputError(f"box must be a list of 4 numbers [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (_number(v, f"box[{k}]") for k, v in enumerate(box))
    if not (x1 < x2 and y1 < y2):
        raise ReviewInputError(f"box must have x1 < x2 and y1 < y2, got {list(box)!r}")
    rows, cols = int(image_size[0]), int(image_size[1])
    if x1 < 0 or y1 < 0 or x2 > cols + 1 or y2 > rows + 1:
        raise ReviewInputError(f"box {list(box)!r} is outside the image: x in [0, {cols + 1}], "
                               f"y in [0, {rows + 1}] (file frame, image {cols} x {rows} px)")
    return x1, y1, x2, y2


def check_decision(body: Any, image_size: Sequence[int]) -> Decision:
    """The JSON body of ``POST /api/items/<id>`` -> a :class:`Decision` (without its time)."""
    if not isinstance(body, dict):
        raise ReviewInputError(f"the request body must be a JSON object, got {body!r}")
    extra = sorted(set(body) - {"decision", "box"})
    if extra:
        raise ReviewInputError(f"unknown field(s) {', '.join(map(repr, extra))}: give only 'decision' and 'box'")
    decision = body.get("decision")
    if decision not in DECISIONS:
        raise ReviewInputError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if decision != EDIT:
        if body.get("box") is not None:
            raise ReviewInputError(f"a box is given only with decision 'edit', not with {decision!r}")
        return Decision(decision)
    if "box" not in body:
        raise ReviewInputError("decision 'edit' needs a box [x1, y1, x2, y2] (file frame)")
    return Decision(EDIT, check_box(body["box"], image_size))


def select_items(ids: np.ndarray, sources: np.ndarray, scores: np.ndarray, *,
                 only: Sequence[str] | None = None, min_score: float | None = None) -> np.ndarray:
    """The ids whose source is in ``only`` (None: any) and whose score is at least ``min_score``
    (None: any; a row without a score is kept only when no minimum is asked)."""
    keep = np.ones(len(ids), dtype=bool)
    if only is not None:
        keep &= np.isin(sources.astype(str), list(only))
    if min_score is not None:
        with np.errstate(invalid="ignore"):
            keep &= scores >= min_score
    return ids[keep]
