"""COCO detection JSON out (annotations) and COCO results in (any framework's detections).

Box conventions
---------------
Our annotation and prediction files hold xyxy boxes in the **file frame**
(``DL_info.csv`` ``Bounding_boxes`` numbers, 1-based; see :mod:`lesionprop.boxes`).
COCO's ``bbox`` is ``[x, y, width, height]`` in continuous 0-based pixel
coordinates of the image, i.e. our **pixel frame** (``file - 1``).  So::

    COCO  [x, y, w, h] = [x1 - 1, y1 - 1, x2 - x1, y2 - y1]      (x1..y2 file frame)
    file  x1, y1, x2, y2 = x + 1, y + 1, x + w + 1, y + h + 1

``area`` = ``w * h`` (continuous, no +1, as our IoU).

Images are slices: ``id`` (1, 2, ... in output order), ``file_name`` relative to
the dataset root (``Images_png/PPPPPP_SS_SS/III.png``), ``width``, ``height``
(``Image_size`` of the row: rows, columns) and the extra fields ``series``,
``slice_index``, ``spacing`` ([x, y, z] mm), ``slice_interval`` (z mm) and
``split`` (train / val / test).

Categories: DeepLesion's 8 coarse lesion types with their codes as ids (1 bone,
2 abdomen, 3 mediastinum, 4 liver, 5 lung, 6 kidney, 7 soft tissue, 8 pelvis)
and ``9 unknown`` for DeepLesion's ``-1``; every category also carries
``deeplesion_code``.  Annotations carry ``source`` (human / mined / propagated /
distilled), ``score`` (null for human rows) and ``noisy`` (``Possibly_noisy``).

The maths is pure functions over arrays (:func:`file_to_coco_bbox`,
:func:`coco_bbox_to_file`, :func:`build_coco`); :func:`lesions_to_coco` and
:func:`read_coco_results` adapt them to lesionprop's tables and files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lesionprop.annotations import LESION_TYPES, Annotations, Lesion, Source, Split, as_annotations
from lesionprop.data.layout import IMAGES_DIR, parse_file_name
from lesionprop.errors import InputError
from lesionprop.fileio import require_file

UNKNOWN_ID = 9
SLICE_MODES = ("key", "labeled")


class CocoError(InputError):
    """A malformed COCO file: the message names the file and the offending entry."""


def categories() -> list[dict]:
    """DeepLesion's 8 coarse types (id = DeepLesion code) + ``unknown`` (id 9, code -1)."""
    cats = [{"id": code, "name": LESION_TYPES[code], "supercategory": "lesion", "deeplesion_code": code}
            for code in range(1, 9)]
    cats.append({"id": UNKNOWN_ID, "name": "unknown", "supercategory": "lesion", "deeplesion_code": -1})
    return cats


def category_ids(lesion_types: np.ndarray) -> np.ndarray:
    """DeepLesion ``Coarse_lesion_type`` codes -> COCO category ids (-1 and anything outside 1..8 -> 9)."""
    t = np.asarray(lesion_types, dtype=np.int64)
    return np.where((t >= 1) & (t <= 8), t, UNKNOWN_ID)


def file_to_coco_bbox(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy file frame -> ``(N, 4)`` COCO xywh (pixel frame, see module docstring)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([b[:, 0] - 1.0, b[:, 1] - 1.0, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])


def coco_bbox_to_file(bboxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` COCO xywh -> ``(N, 4)`` xyxy file frame (inverse of :func:`file_to_coco_bbox`)."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    x1, y1 = b[:, 0] + 1.0, b[:, 1] + 1.0
    return np.column_stack([x1, y1, x1 + b[:, 2], y1 + b[:, 3]])


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def build_coco(image_names: Sequence[str], image_sizes: np.ndarray, image_spacing: np.ndarray,
               image_splits: Sequence[str], ann_image: np.ndarray, ann_boxes: np.ndarray,
               ann_types: np.ndarray, ann_sources: Sequence[str], ann_scores: np.ndarray,
               ann_noisy: np.ndarray, *, description: str = "") -> dict:
    """A COCO detection dict.

    ``image_names`` (I,) slice names ``PPPPPP_SS_SS_III.png``; ``image_sizes`` (I, 2)
    (rows, columns); ``image_spacing`` (I, 3) (x, y, z) mm; ``image_splits`` (I,) names.
    ``ann_image`` (A,) index into the images; ``ann_boxes`` (A, 4) file frame;
    ``ann_types`` (A,) DeepLesion codes; ``ann_scores`` (A,) NaN for none; ``ann_noisy`` (A,).
    """
    sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
    spacing = np.asarray(image_spacing, dtype=np.float64).reshape(-1, 3)
    images = []
    for i, name in enumerate(image_names):
        series, k = parse_file_name(name)
        images.append({"id": i + 1, "file_name": f"{IMAGES_DIR}/{series}/{k:03d}.png",
                       "height": int(sizes[i, 0]), "width": int(sizes[i, 1]),
                       "series": series, "slice_index": k, "spacing": [float(v) for v in spacing[i]],
                       "slice_interval": float(spacing[i, 2]), "split": image_splits[i]})
    xywh = file_to_coco_bbox(ann_boxes)
    areas = xywh[:, 2] * xywh[:, 3]
    cats = category_ids(ann_types)
    img = np.asarray(ann_image, dtype=np.int64)
    scores = np.asarray(ann_scores, dtype=np.float64)
    noisy = np.asarray(ann_noisy, dtype=np.int64)
    annotations = [{"id": a + 1, "image_id": int(img[a]) + 1, "category_id": int(cats[a]),
                    "bbox": [float(v) for v in xywh[a]], "area": float(areas[a]), "iscrowd": 0,
                    "source": ann_sources[a], "score": _num(scores[a]), "noisy": int(noisy[a])}
                   for a in range(len(img))]
    return {"info": {"description": description or "DeepLesion-format annotations exported by lesionprop",
                     "box_convention": "bbox = [x1 - 1, y1 - 1, x2 - x1, y2 - y1] of the DL_info file frame"},
            "licenses": [], "images": images, "annotations": annotations, "categories": categories()}


def lesions_to_coco(lesions: Annotations | Iterable[Lesion], *, split: str = "all", slices: str = "key",
                    description: str = "") -> dict:
    """Rows of ``split`` -> COCO dict.

    ``slices="key"``: images = the slices of human rows (DeepLesion's key slices),
    annotations = the human rows; ``"labeled"``: images = every slice holding a row
    of any Source (pseudo-labels included), annotations = all those rows.
    """
    if slices not in SLICE_MODES:
        raise InputError(f"slices must be one of {', '.join(SLICE_MODES)}, got {slices!r}")
    rows = as_annotations(lesions).select(split, sources=(Source.HUMAN,) if slices == "key" else None,
                                          drop_noisy=False)
    images = rows.by_key_slice()
    image_of = np.empty(len(rows), np.int64)
    image_of[images.rows] = np.repeat(np.arange(len(images)), images.count)
    first = images.first_row
    split_name = {s.value: s.name.lower() for s in Split}
    return build_coco(
        [str(n) for n in images.file_names], rows.image_size[first], rows.spacing[first],
        [split_name.get(int(c), str(int(c))) for c in rows.split[first].tolist()],
        image_of, rows.boxes, rows.lesion_type, [str(x) for x in rows.source.tolist()], rows.score,
        rows.noisy.astype(np.int64), description=description)


# ---------------------------------------------------------------- reading COCO files

def _load_json(path: Path, what: str):
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise CocoError(f"{path}: not a UTF-8 JSON file (byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def read_coco_images(path: str | os.PathLike) -> dict[int, str]:
    """COCO ``images`` -> ``{image_id: slice name PPPPPP_SS_SS_III.png}``.

    The slice comes from the extra fields ``series`` + ``slice_index`` when present,
    else from a ``file_name`` ending in ``PPPPPP_SS_SS/III.png`` or ``PPPPPP_SS_SS_III.png``.
    """
    path = Path(path)
    data = _load_json(path, "COCO images file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoError(f"{path}: expected a COCO object with an 'images' list")
    out: dict[int, str] = {}
    for i, im in enumerate(data["images"]):
        where = f"{path}, images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
            raise CocoError(f"{where}: expected an object with an integer 'id', got {str(im)[:80]}")
        if im["id"] in out:
            raise CocoError(f"{where}: duplicate image id {im['id']}")
        out[im["id"]] = _slice_name(im, where)
    return out


def _slice_name(im: dict, where: str) -> str:
    if "series" in im and "slice_index" in im:
        try:
            name = f"{im['series']}_{int(im['slice_index']):03d}.png"
            parse_file_name(name)
            return name
        except (ValueError, TypeError):
            raise CocoError(f"{where}: series {im.get('series')!r} / slice_index {im.get('slice_index')!r} "
                            "do not name a DeepLesion slice") from None
    fn = str(im.get("file_name", ""))
    parts = fn.replace("\\", "/").split("/")
    candidates = [parts[-1]] + ([f"{parts[-2]}_{parts[-1]}"] if len(parts) >= 2 else [])
    for c in candidates:
        try:
            parse_file_name(c)
            return c
        except ValueError:
            continue
    raise CocoError(f"{where}: file_name {fn!r} is not a DeepLesion slice (…/PPPPPP_SS_SS/III.png) "
                    "and there are no series / slice_index fields")


def read_coco_results(path: str | os.PathLike, images: dict[int, str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """COCO results (``[{image_id, bbox: [x, y, w, h], score, ...}]``) -> (slice names, file-frame boxes, scores).

    Also accepts ``{"annotations": [...]}`` (a detections file in the dataset layout).
    Errors name the file, the entry index and the bad value.
    """
    path = Path(path)
    data = _load_json(path, "COCO results file")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise CocoError(f"{path}: expected a list of detections [{{image_id, bbox, score}}, ...]")
    n = len(data)
    img = np.empty(n, dtype=np.int64)
    bbox = np.empty((n, 4), dtype=np.float64)
    score = np.empty(n, dtype=np.float64)
    for i, det in enumerate(data):
        where = f"{path}, entry [{i}]"
        if not isinstance(det, dict):
            raise CocoError(f"{where}: expected an object, got {str(det)[:80]}")
        for key in ("image_id", "bbox", "score"):
            if key not in det:
                raise CocoError(f"{where}: missing '{key}'")
        iid = det["image_id"]
        if not isinstance(iid, int) or isinstance(iid, bool) or iid not in images:
            raise CocoError(f"{where}: image_id {iid!r} is not an image of the COCO images file")
        b = det["bbox"]
        if (not isinstance(b, list) or len(b) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
            raise CocoError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {b!r}")
        s = det["score"]
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise CocoError(f"{where}: score must be a finite number, got {s!r}")
        img[i], bbox[i], score[i] = iid, b, s
    bad = ~np.isfinite(bbox).all(1) | (bbox[:, 2] < 0) | (bbox[:, 3] < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CocoError(f"{path}, entry [{i}]: bbox must be finite with width, height >= 0, got {data[i]['bbox']!r}")
    names = [images[int(k)] for k in img]
    return names, coco_bbox_to_file(bbox), score


__all__ = ["CocoError", "categories", "category_ids", "file_to_coco_bbox", "coco_bbox_to_file", "build_coco",
           "lesions_to_coco", "read_coco_images", "read_coco_results", "UNKNOWN_ID", "SLICE_MODES"]
