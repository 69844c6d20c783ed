"""A review in progress: the label file, its items, the decisions so far, and the files they are kept in.

``DIR/decisions.csv`` is the record; ``DIR/labels_reviewed.csv`` is rebuilt from it after each
decision.  Each is written atomically (temp file + rename), decisions first, so a kill at any
moment leaves every acknowledged decision on disk; opening the review again rebuilds
``labels_reviewed.csv`` from the record, which also repairs a kill between the two writes.
The label file itself is only read.  Boxes: file frame (see :mod:`lesionprop.review.items`).

One lock serialises decisions and slice reads, so the threads of a web server can share one
store (:class:`~lesionprop.data.slices.SliceReader` is not thread-safe).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from lesionprop.annotations import Annotations, Source, read_annotations, write_annotations
from lesionprop.data.slices import SliceReader
from lesionprop.fileio import atomic_write, check_output_folder, refuse_overwrite_of_inputs, require_file
from lesionprop.review.decisions import read_decisions, write_decisions
from lesionprop.review.images import slice_png
from lesionprop.review.items import (
    Decision, ReviewInputError, check_decision, id_of_row, item_rows, row_of_id, select_items,
)
from lesionprop.review.reviewed import reviewed_table, summarize

DECISIONS_FILE = "decisions.csv"
REVIEWED_FILE = "labels_reviewed.csv"
SUMMARY_FILE = "summary.json"


class UnknownItemError(ReviewInputError):
    """An id that is not one of the items under review (HTTP 404)."""


class ReviewStore:
    """The state of one review (see the module docstring); open it with :meth:`open`."""

    def __init__(self, ann: Annotations, reader: SliceReader, out: Path, sources: Sequence[Source],
                 decisions: dict[int, Decision]) -> None:
        self.ann = ann
        self.reader = reader
        self.out = out
        self.sources = tuple(sources)
        self.rows = item_rows(ann, self.sources)
        self._offered = set(self.rows.tolist())
        self.decisions = decisions
        self._lock = threading.Lock()
        human = np.flatnonzero(ann.mask(None, sources=(Source.HUMAN,), drop_noisy=False))
        self._human: dict[str, list[int]] = {}
        for r in human.tolist():
            self._human.setdefault(str(ann.file_name[r]), []).append(r)

    @classmethod
    def open(cls, annotations: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
             sources: Sequence[Source]) -> "ReviewStore":
        """Read the label file and any earlier decisions in ``out``; write ``labels_reviewed.csv``.

        Raises :class:`ReviewInputError` when the label file has no row of ``sources`` or the
        decisions in ``out`` belong to another label file, and the usual missing-file errors.
        """
        out = Path(out)
        check_output_folder(out)
        for name in (DECISIONS_FILE, REVIEWED_FILE, SUMMARY_FILE):
            refuse_overwrite_of_inputs(out / name, annotations, option="--out")
        ann = read_annotations(require_file(annotations, "label file"))
        reader = SliceReader(data)
        record = out / DECISIONS_FILE
        decisions = read_decisions(record, ann) if record.is_file() else {}
        store = cls(ann, reader, out, sources, decisions)
        if not store.rows.size:
            raise ReviewInputError(f"{annotations}: no row has Source {', '.join(s.value for s in sources)}: "
                                   "nothing to review (label files from mine, propagate, distill or label-sets have)")
        store._write_reviewed()
        return store

    # ------------------------------------------------------------ reading
    def item(self, row: int) -> dict:
        """The API's item: id, File_name, box (the label file's), source, score, decision."""
        d = self.decisions.get(id_of_row(row))
        score = float(self.ann.score[row])
        return {"id": id_of_row(row), "File_name": str(self.ann.file_name[row]),
                "box": [float(v) for v in self.ann.boxes[row]], "source": str(self.ann.source[row]),
                "score": None if np.isnan(score) else score, "decision": None if d is None else d.decision}

    def items(self, only: Sequence[str] | None = None, min_score: float | None = None) -> list[dict]:
        """The items in file order, those of source ``only`` with a score of at least ``min_score``."""
        rows = select_items(self.rows, self.ann.source[self.rows], self.ann.score[self.rows],
                            only=only, min_score=min_score)
        with self._lock:
            return [self.item(r) for r in rows.tolist()]

    def _row(self, item_id: int) -> int:
        r = row_of_id(item_id)
        if r not in self._offered:
            raise UnknownItemError(f"no item {item_id}: ids are rows of {self.ann.path} with Source "
                                   f"{', '.join(s.value for s in self.sources)}")
        return r

    def detail(self, item_id: int) -> dict:
        """The item plus what the page draws: the redrawn box, the slice and its neighbours
        (None where the file is missing), the image size (rows, columns) and the human boxes
        on that slice."""
        r = self._row(item_id)
        series, k = str(self.ann.series[r]), int(self.ann.slice_index[r])
        with self._lock:
            d = self.decisions.get(item_id)
            neighbours = [j if self.reader.exists(series, j) else None for j in (k - 1, k, k + 1)]
            out = self.item(r)
        human = self._human.get(str(self.ann.file_name[r]), [])
        out.update(edited_box=list(d.box) if d is not None and d.box is not None else None, series=series,
                   slices=neighbours, image_size=[int(v) for v in self.ann.image_size[r]],
                   human_boxes=[[float(v) for v in self.ann.boxes[h]] for h in human])
        return out

    def image(self, item_id: int, offset: int, window: str) -> bytes:
        """PNG of slice K + ``offset`` (-1, 0, 1) of item ``item_id`` in a window preset."""
        r = self._row(item_id)
        if offset not in (-1, 0, 1):
            raise ReviewInputError(f"offset must be -1, 0 or 1, got {offset!r}")
        with self._lock:
            hu = self.reader.read_hu(str(self.ann.series[r]), int(self.ann.slice_index[r]) + offset)
            return slice_png(hu, window)

    # ------------------------------------------------------------ deciding
    def decide(self, item_id: int, body: object) -> dict:
        """Check and record one decision (JSON body of ``POST /api/items/<id>``); returns the item."""
        r = self._row(item_id)
        d = check_decision(body, self.ann.image_size[r])
        with self._lock:
            new = dict(self.decisions)
            new[item_id] = Decision(d.decision, d.box, datetime.now(timezone.utc).isoformat(timespec="seconds"))
            write_decisions(self.out / DECISIONS_FILE, self.ann, new)   # the record first: then it counts
            self.decisions = new
            self._write_reviewed()
            return self.item(r)

    def _write_reviewed(self) -> None:
        write_annotations(self.out / REVIEWED_FILE, reviewed_table(self.ann, self.decisions), with_source=True)

    def summary(self) -> dict:
        with self._lock:
            return summarize(self.ann, self.rows, self.decisions)

    def write_summary(self) -> dict:
        """Write ``DIR/summary.json`` atomically; returns the summary."""
        s = self.summary()
        s["label_file"] = str(self.ann.path)
        with atomic_write(self.out / SUMMARY_FILE) as fh:
            fh.write(json.dumps(s, indent=2) + "\n")
        return s
