"""Straightforward per-box loops written from Algorithms 1 and 2 (and the FROC protocol).

They are the speed baseline of ``bench_labels.py`` and the oracle of the property
tests: same rules, same output order and tie-breaking as the vectorised
``lesionprop.labels`` / ``lesionprop.eval`` code, written as plain Python loops over
boxes.  Boxes are xyxy in the file frame; IoU continuous (no +1).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from lesionprop.annotations import Lesion, derived_lesion
from lesionprop.data.layout import parse_file_name
from lesionprop.predictions import Predictions


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Scalar IoU, the same floating-point operations as the vectorised ``pair_iou`` of the label tools."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _by_slice(preds: Predictions) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i in range(len(preds)):
        out[(str(preds.series_names[preds.series_index[i]]), int(preds.slices[i]))].append(i)
    return out


def _key_slices(lesions: Sequence[Lesion], split: str, sources: Sequence[str]) -> dict[str, list[int]]:
    code = {"train": 1, "val": 2, "test": 3}.get(split)
    out: dict[str, list[int]] = {}
    for i, les in enumerate(lesions):
        if (code is None or les.split == code) and les.source in sources:
            out.setdefault(les.file_name, []).append(i)
    return out


def propagate_loop(lesions: Sequence[Lesion], preds: Predictions, *, iou_thr: float = 0.5,
                   offsets: Sequence[int] = (-1, 1), keep: str = "best", split: str = "train") -> list[Lesion]:
    by_slice = _by_slice(preds)
    boxes, scores = preds.boxes.tolist(), preds.scores.tolist()
    keys = _key_slices(lesions, split, ("human", "mined"))
    key_set = {parse_file_name(k) for k in keys}
    seen: set[int] = set()
    out = []
    for name, refs in keys.items():
        series, k = parse_file_name(name)
        for o in offsets:
            s = (series, k + o)
            if s in key_set:
                continue
            cands = by_slice.get(s, [])
            chosen = []
            for g in refs:
                best = None
                for p in cands:
                    if iou(boxes[p], lesions[g].box) > iou_thr:
                        if keep == "all":
                            chosen.append((p, g))
                        elif best is None or scores[p] > scores[best]:
                            best = p
                if keep == "best" and best is not None:
                    chosen.append((best, g))
            chosen.sort(key=lambda t: t[0])
            for p, g in chosen:
                if p not in seen:
                    seen.add(p)
                    out.append(derived_lesion(lesions[g], slice_index=s[1], box=boxes[p], source="propagated",
                                              score=scores[p], lesion_type=lesions[g].lesion_type))
    return out


def mine_loop(lesions: Sequence[Lesion], preds: Predictions, *, score_thr: float = 0.9, iou_thr: float = 0.5,
              split: str = "train") -> list[Lesion]:
    by_slice = _by_slice(preds)
    boxes, scores = preds.boxes.tolist(), preds.scores.tolist()
    out = []
    for name, refs in _key_slices(lesions, split, ("human",)).items():
        series, k = parse_file_name(name)
        b_set = by_slice.get((series, k), [])
        plus, minus = by_slice.get((series, k + 1), []), by_slice.get((series, k - 1), [])
        found = []
        for b in b_set:
            if scores[b] > score_thr and any(iou(boxes[b], boxes[c]) > iou_thr for c in plus + minus):
                found.append((boxes[b], scores[b]))
        pairs = []
        for p in plus:
            if scores[p] <= score_thr:
                continue
            for q in minus:
                if scores[q] <= score_thr:
                    continue
                v = iou(boxes[p], boxes[q])
                if v > iou_thr and all(iou(boxes[p], boxes[b]) == 0 for b in b_set):
                    pairs.append((-v, p, q))
        pairs.sort()
        used_p, used_q = set(), set()
        for _, p, q in pairs:
            if p in used_p or q in used_q:
                continue
            used_p.add(p)
            used_q.add(q)
            found.append(([(x + y) / 2 for x, y in zip(boxes[p], boxes[q])], (scores[p] + scores[q]) / 2))
        for box, sc in found:
            if not any(iou(box, lesions[g].box) > 0 for g in refs):
                out.append(derived_lesion(lesions[refs[0]], slice_index=k, box=box, source="mined", score=sc))
    return out


def distill_loop(lesions: Sequence[Lesion], preds: Predictions, *, score_thr: float = 0.9,
                 offsets: Sequence[int] = (-1, 1), split: str = "train") -> list[Lesion]:
    by_slice = _by_slice(preds)
    keys = _key_slices(lesions, split, ("human", "mined"))
    key_set = {parse_file_name(k) for k in keys}
    seen: set[int] = set()
    out = []
    for name, refs in keys.items():
        series, k = parse_file_name(name)
        for o in offsets:
            s = (series, k + o)
            if s in key_set:
                continue
            for p in by_slice.get(s, []):
                if preds.scores[p] > score_thr and p not in seen:
                    seen.add(p)
                    out.append(derived_lesion(lesions[refs[0]], slice_index=s[1], box=preds.boxes[p].tolist(),
                                              source="distilled", score=float(preds.scores[p])))
    return out


def iou_padded(a: Sequence[float], b: Sequence[float], pad: float) -> float:
    """Scalar IoU with ``pad`` added to every width and height (MULAN's +1 in its frame)."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + pad, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + pad, 0.0)
    inter = iw * ih
    union = (a[2] - a[0] + pad) * (a[3] - a[1] + pad) + (b[2] - b[0] + pad) * (b[3] - b[1] + pad) - inter
    return inter / union if union > 0 else 0.0


def froc_loop(images: dict[str, list[Sequence[float]]], dets: list[tuple[str, Sequence[float], float]],
              iou_thr: float = 0.5, pad: dict[str, float] | None = None) -> tuple[list[float], list[float]]:
    """MULAN's loop: ``images`` name -> lesion boxes; ``dets`` (name, box, score) on those
    images; ``pad`` name -> IoU pad (0.8 / spacing; continuous IoU when None).
    Returns (fp_curve, sens_curve)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][2])  # stable: ties keep input order
    hit = {name: [False] * len(g) for name, g in images.items()}
    n_les = sum(len(g) for g in images.values())
    fps, found, fp_curve, sens_curve = 0, 0, [], []
    for i in order:
        name, box, _ = dets[i]
        ov = [iou(box, g) if pad is None else iou_padded(box, g, pad[name]) for g in images[name]]
        if not ov or max(ov) < iou_thr:
            fps += 1
        else:
            for j, v in enumerate(ov):
                if v >= iou_thr and not hit[name][j]:
                    hit[name][j] = True
                    found += 1
        fp_curve.append(fps / len(images))
        sens_curve.append(found / n_les)
    return fp_curve, sens_curve


def make_lesion(file_name: str, box: Sequence[float], *, split: int = 1, source: str = "human",
                lesion_type: int = -1, noisy: int = 0, z: float = 1.0, score: float = float("nan")) -> Lesion:
    """A DL_info row built in memory (for tests and the synthetic benchmark input)."""
    series, k = parse_file_name(file_name)
    patient, study, series_id = (int(x) for x in series.split("_"))
    x1, y1, x2, y2 = (float(c) for c in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return Lesion(
        file_name=file_name, patient=patient, study=study, series_id=series_id, key_slice=k,
        measurement=(x1, cy, x2, cy, cx, y1, cx, y2), box=(x1, y1, x2, y2),
        diameters=(max(x2 - x1, y2 - y1), min(x2 - x1, y2 - y1)), location=(cx / 512, cy / 512, 0.5),
        lesion_type=lesion_type, noisy=noisy, slice_range=(max(k - 10, 0), k + 10), spacing=(0.8, 0.8, z),
        image_size=(512, 512), windows=(-175.0, 275.0), gender="F", age=50.0, split=split, source=source,
        score=score,
    )
