"""Lesion annotations (the DeepLesion ``DL_info.csv`` schema) as one columnar table.

Boxes are xyxy in the file frame (see :mod:`lesionprop.boxes`).  :mod:`.table` holds the
:class:`Annotations` type (selection, grouping by key slice, derived rows), :mod:`.csv_io`
the reader and the writer; everything is imported from here::

    from lesionprop.annotations import Annotations, Source, Split, read_annotations, write_annotations
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

from lesionprop.annotations.csv_io import read_annotations_csv, write_annotations_csv, write_with_new_rows_csv
from lesionprop.annotations.table import (
    COLUMNS, LESION_TYPES, SOURCE_COLUMNS, SOURCES, AnnotationError, Annotations, KeySliceGroups, Lesion, Source,
    Split, as_annotations, concat, derived_lesion, series_geometry,
)


def read_annotations(path: str | os.PathLike) -> Annotations:
    """Read a ``DL_info.csv``-schema file (see :func:`.csv_io.read_annotations_csv`)."""
    return read_annotations_csv(path)


def write_annotations(path: str | os.PathLike, rows: Annotations | Iterable[Lesion], *,
                      with_source: bool | None = None, extra_columns: Sequence[str] | None = None) -> None:
    """Write rows (a table or :class:`Lesion` rows) in the DL_info.csv schema, atomically
    (see :func:`.csv_io.write_annotations_csv`)."""
    write_annotations_csv(path, as_annotations(rows), with_source=with_source, extra_columns=extra_columns)


def write_with_new_rows(rows: Annotations, new: Mapping[str | os.PathLike, Annotations]) -> None:
    """Write file ``p`` = ``rows`` then ``new[p]`` (with Source and Score) for every ``p``, atomically;
    the text of ``rows`` is built once (see :func:`.csv_io.write_with_new_rows_csv`)."""
    write_with_new_rows_csv(rows, new)


__all__ = ["COLUMNS", "LESION_TYPES", "SOURCES", "SOURCE_COLUMNS", "AnnotationError", "Annotations",
           "KeySliceGroups", "Lesion", "Source", "Split", "as_annotations", "concat", "derived_lesion",
           "read_annotations", "series_geometry", "write_annotations", "write_with_new_rows"]
