"""What limits a detector: learning curve, RPN recall, anchor fit, misses by size and contrast.

Boxes: the annotations are in the FILE frame (DL_info numbers, 1-based); they are
moved to the stored slice's pixel frame (file - 1) by the dataset and then to the
SAMPLE frame (the rescaled, border-cropped network input), where every IoU here is
computed (continuous xyxy).  Lesion sizes are long diameters in mm
(``Lesion_diameters_Pixel_`` x the row's pixel spacing).

Two modes (one thread unless ``--threads``):

``curve``: train ``--preset`` (+ ``--set`` overrides) in chunks of ``--every``
iterations (``train(..., stop_after=...)`` then ``resume``: the same run as one
call), and after each chunk measure the sensitivity at 4 FPs per image (no TTA) on
the training key slices and the val key slices; writes ``OUT/curve.json``,
``OUT/curve.png`` and ``OUT/loss.png`` (the loss terms of ``metrics.jsonl``)::

    python benchmarks/diagnose_detector.py curve --data D --out OUT --every 300 \\
        --preset demo --set model.init_backbone=null

``inspect``: for one checkpoint, on the key slices of ``--splits``: per lesion the
best anchor IoU (all anchors of the image), whether a top-``rpn_post_nms_top_n_test``
RPN proposal reaches IoU 0.5, whether a detection above the 4-FPs-per-image score
threshold of that split does, and its contrast (mean HU inside the box's
inscribed ellipse minus mean HU of a ring around the box, on the key slice);
writes ``OUT/inspect.json`` and a markdown table ``OUT/inspect.md``::

    python benchmarks/diagnose_detector.py inspect --data D --checkpoint RUN/last.pt --out OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SIZE_EDGES_MM = (10.0, 20.0, 30.0, 60.0)
SIZE_NAMES = ("< 10 mm", "10-20 mm", "20-30 mm", "30-60 mm", ">= 60 mm")
CONTRAST_EDGES_HU = (20.0, 40.0, 80.0)
CONTRAST_NAMES = ("|c| < 20 HU", "20-40 HU", "40-80 HU", ">= 80 HU")     # absolute contrast


# ---------------------------------------------------------------- pure maths
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Continuous IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def best_iou(gt: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per ground-truth box, the best IoU with any of ``boxes`` (0 when there are none)."""
    if len(boxes) == 0:
        return np.zeros(len(np.asarray(gt).reshape(-1, 4)))
    return box_iou(gt, boxes).max(axis=1)


def score_threshold_at(fp_scores: np.ndarray, n_images: int, fps: float) -> float:
    """The lowest score a detection may have so that at most ``fps * n_images`` FPs score at least as high."""
    s = np.sort(np.asarray(fp_scores, float))[::-1]
    k = int(np.floor(fps * n_images))
    return float(s[k]) + 1e-12 if k < len(s) else -np.inf


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin of each value: 0 below ``edges[0]``, ..., ``len(edges)`` at or above the last edge."""
    return np.searchsorted(np.asarray(edges), np.asarray(values, float), side="right")


def rates_by_bin(flags: dict[str, np.ndarray], bins: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    """One row per bin: the count and the share of True of each flag array."""
    rows = []
    for i, name in enumerate(names):
        m = bins == i
        row = {"group": name, "lesions": int(m.sum())}
        for key, v in flags.items():
            row[key] = float(np.mean(v[m])) if m.any() else float("nan")
        rows.append(row)
    return rows


def ellipse_ring_contrast(hu: np.ndarray, box: np.ndarray, ring: float = 0.5) -> float:
    """Mean HU inside the ellipse inscribed in ``box`` (pixel frame xyxy) minus the mean HU of the
    band between the box and the box grown by ``ring`` of its size on each side."""
    h, w = hu.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    gx0, gy0 = int(max(0, np.floor(x0 - ring * 2 * rx))), int(max(0, np.floor(y0 - ring * 2 * ry)))
    gx1, gy1 = int(min(w, np.ceil(x1 + ring * 2 * rx))), int(min(h, np.ceil(y1 + ring * 2 * ry)))
    yy, xx = np.mgrid[gy0:gy1, gx0:gx1] + 0.5
    patch = hu[gy0:gy1, gx0:gx1]
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    in_box = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    if not inside.any() or in_box.all():
        return float("nan")
    return float(patch[inside].mean() - patch[~in_box].mean())


# ---------------------------------------------------------------- model side
def _key_rows(lesions, split: str):
    from lesionprop.annotations import Source

    return lesions.select(split, sources=(Source.HUMAN,), drop_noisy=True).rows()


def inspect(checkpoint: Path, data: Path, ann: Path, splits: list[str], fps: float = 4.0) -> dict:
    """Per-lesion anchor / RPN / detection outcomes on each split's key slices (see module docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from lesionprop.data.dataset import DetectionDataset, collate, items_from_boxes
    from lesionprop.annotations import read_annotations, series_geometry
    from lesionprop.engine.predict import load_model
    from lesionprop.model.context import central_features

    model, cfg = load_model(checkpoint, torch.device("cpu"))
    lesions = read_annotations(ann)
    geometry = series_geometry(data, lesions)
    out: dict = {"checkpoint": str(checkpoint), "fps": fps, "splits": {}}
    for split in splits:
        rows = _key_rows(lesions, split)
        items = items_from_boxes([r.file_name for r in rows], [r.box for r in rows])
        ds = DetectionDataset(data, items, cfg.data, geometry=geometry, train=False)
        per_les: list[dict] = []
        fp_scores, det_hits = [], []          # per image: detection scores that are FPs; per lesion: (score list)
        with torch.no_grad():
            for images, targets, metas in DataLoader(ds, batch_size=4, collate_fn=collate):
                il, _ = model.transform(images)
                feats = model.backbone(il.tensors)
                central = central_features(feats, model.num_groups)
                anchors = model.rpn.anchor_generator(il, list(central.values()))
                proposals, _ = model.rpn(il, central)
                dets, _ = model.roi_heads(feats, proposals, il.image_sizes)
                for j, (t, m) in enumerate(zip(targets, metas)):
                    gt = t["boxes"].numpy()
                    d_boxes, d_scores = dets[j]["boxes"].numpy(), dets[j]["scores"].numpy()
                    iou = box_iou(gt, d_boxes) if len(d_boxes) else np.zeros((len(gt), 0))
                    fp_scores.append(d_scores[iou.max(axis=0) < 0.5] if len(gt) else d_scores)
                    prop_best = best_iou(gt, proposals[j].numpy())
                    anc_best = best_iou(gt, anchors[j].numpy())
                    for g in range(len(gt)):
                        hit_scores = d_scores[iou[g] >= 0.5] if iou.shape[1] else np.zeros(0)
                        det_hits.append(float(hit_scores.max()) if len(hit_scores) else -np.inf)
                        per_les.append({"file_name": m["file_name"], "anchor_iou": float(anc_best[g]),
                                        "rpn_iou": float(prop_best[g]),
                                        "box_sample_px": [float(v) for v in gt[g]]})
        # attach sizes and contrast, in the order items_from_boxes / clip_boxes kept them
        by_name: dict[str, list] = {}
        for r in rows:
            by_name.setdefault(r.file_name, []).append(r)
        from lesionprop.data.slices import SliceReader
        from lesionprop.data.layout import parse_file_name

        reader = SliceReader(data, cache=False)
        k = 0
        for it in items:
            rs = by_name[it.file_name]
            hu = reader.read_hu(*parse_file_name(it.file_name))
            n = sum(1 for x in per_les[k:] if x["file_name"] == it.file_name)
            for r, rec in zip(rs[:n], per_les[k:k + n]):
                rec["long_mm"] = float(max(r.diameters[:2]) * r.spacing[0])
                rec["contrast_hu"] = ellipse_ring_contrast(hu, np.asarray(r.box) - 1.0)
            k += n
        thr = score_threshold_at(np.concatenate(fp_scores) if fp_scores else np.zeros(0), len(items), fps)
        found = np.asarray(det_hits) >= thr
        for rec, f in zip(per_les, found):
            rec["found"] = bool(f)
        size = bin_index([r.get("long_mm", np.nan) for r in per_les], SIZE_EDGES_MM)
        contrast = bin_index(np.abs([r.get("contrast_hu", np.nan) for r in per_les]), CONTRAST_EDGES_HU)
        flags = {"anchor_iou>=0.7": np.array([r["anchor_iou"] >= 0.7 for r in per_les]),
                 "anchor_iou>=0.5": np.array([r["anchor_iou"] >= 0.5 for r in per_les]),
                 "rpn_recall@0.5": np.array([r["rpn_iou"] >= 0.5 for r in per_les]),
                 f"found@{fps:g}fp": found}
        out["splits"][split] = {
            "images": len(items), "lesions": len(per_les), "score_threshold": thr,
            "sensitivity": float(found.mean()) if len(found) else float("nan"),
            "median_anchor_iou_by_size": {n: float(np.median([r["anchor_iou"] for r, b in zip(per_les, size) if b == i]))
                                          if (size == i).any() else None for i, n in enumerate(SIZE_NAMES)},
            "by_size": rates_by_bin(flags, size, SIZE_NAMES),
            "by_contrast": rates_by_bin(flags, contrast, CONTRAST_NAMES),
            "lesion_records": per_les,
        }
    return out


def inspect_markdown(res: dict) -> str:
    lines = [f"checkpoint `{res['checkpoint']}`"]
    for split, r in res["splits"].items():
        lines += ["", f"### {split} key slices: {r['images']} images, {r['lesions']} lesions, "
                      f"found at {res['fps']:g} FPs/image {r['sensitivity']:.2f}", ""]
        keys = [k for k in r["by_size"][0] if k not in ("group", "lesions")]
        for title, rows in (("long diameter", r["by_size"]), ("abs. contrast", r["by_contrast"])):
            lines += [f"| {title} | lesions | median best-anchor IoU | " + " | ".join(keys) + " |",
                      "| --- " * (len(keys) + 3) + "|"]
            for row in rows:
                med = r["median_anchor_iou_by_size"].get(row["group"]) if title == "long diameter" else None
                lines.append(f"| {row['group']} | {row['lesions']} | {'' if med is None else f'{med:.2f}'} | "
                             + " | ".join("" if row[k] != row[k] else f"{row[k]:.2f}" for k in keys) + " |")
            lines.append("")
    return "\n".join(lines)


def split_sensitivity(model, cfg, data: Path, lesions, geometry, split: str, fps: float = 4.0) -> float:
    """Official-protocol sensitivity at ``fps`` on ``split``'s key slices (no TTA)."""
    from lesionprop.engine.predict import flatten, infer, slice_names
    from lesionprop.eval.froc import evaluate
    from lesionprop.predictions import Predictions

    names = slice_names(lesions, data, "key", split)
    preds = Predictions.from_arrays(*flatten(*infer(model, cfg, data, names, geometry, tta="none", progress=False)))
    return float(np.asarray(evaluate(lesions, preds, split=split, fps=(fps,)).sensitivity).reshape(-1)[0])


def curve(data: Path, ann: Path, out: Path, preset: str, overrides: list[str], every: int,
          splits: list[str], test_at_end: bool = False) -> dict:
    import torch

    from lesionprop.config import load_config
    from lesionprop.annotations import read_annotations, series_geometry
    from lesionprop.engine.predict import load_model
    from lesionprop.engine.train import train

    cfg = load_config(None, preset, overrides)
    run = out / "run"
    lesions = read_annotations(ann)
    geometry = series_geometry(data, lesions)
    points, t_train = [], 0.0
    for stop in range(every, cfg.train.iterations + every, every):
        stop = min(stop, cfg.train.iterations)
        t0 = time.time()
        train(cfg, data, ann, run, resume=(run / "last.pt").is_file(), stop_after=stop, progress=False)
        t_train += time.time() - t0
        model, mcfg = load_model(run / "last.pt", torch.device("cpu"))
        pt = {"iteration": stop, "train_seconds": round(t_train, 1)}
        for split in splits + (["test"] if test_at_end and stop == cfg.train.iterations else []):
            t1 = time.time()
            pt[split] = split_sensitivity(model, mcfg, data, lesions, geometry, split)
            pt[f"{split}_predict_seconds"] = round(time.time() - t1, 1)
        points.append(pt)
        print(json.dumps(pt), flush=True)
        (out / "curve.json").write_text(json.dumps({"preset": preset, "overrides": overrides, "points": points}))
    plot_curves(out, points, splits, run / "metrics.jsonl")
    return {"points": points}


def plot_curves(out: Path, points: list[dict], splits: list[str], metrics: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lesionprop.fileio import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for s in splits:
        ax.plot([p["iteration"] for p in points], [p[s] for p in points], marker="o", label=f"{s} key slices")
    ax.set(xlabel="iteration", ylabel="sensitivity at 4 FPs/image", ylim=(0, 1))
    ax.axhline(0.85, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "curve.png")
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    recs = [r for r in recs if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    it = np.array([r["iteration"] for r in recs])
    for key in ("loss", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"):
        v = np.array([r[key] for r in recs])
        k = max(1, len(v) // 30)            # running mean over ~1/30 of the run
        sm = np.convolve(v, np.ones(k) / k, mode="valid")
        ax.plot(it[k - 1:], sm, label=key)
    ax.set(xlabel="iteration", ylabel="loss (running mean)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, out / "loss.png")


def anchor_fit(data: Path, ann: Path, preset: str, overrides: list[str], splits: list[str]) -> dict:
    """Best-anchor IoU of every key-slice lesion of ``splits`` for the preset's anchors (no weights needed)."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.models.detection.image_list import ImageList

    from lesionprop.config import load_config
    from lesionprop.data.dataset import DetectionDataset, collate, items_from_boxes
    from lesionprop.annotations import read_annotations, series_geometry
    from lesionprop.model.detector import build_detector

    cfg = load_config(None, preset, overrides)
    model = build_detector(cfg.model, cfg.data.num_slices, load_pretrained=False)
    lesions = read_annotations(ann)
    geometry = series_geometry(data, lesions)
    rows = [r for s in splits for r in _key_rows(lesions, s)]
    ds = DetectionDataset(data, items_from_boxes([r.file_name for r in rows], [r.box for r in rows]), cfg.data, geometry=geometry, train=False)
    ious, sizes = [], []
    spacing = {r.file_name: r.spacing[0] for r in rows}
    for images, targets, metas in DataLoader(ds, batch_size=1, collate_fn=collate):
        h, w = images[0].shape[-2:]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        il = ImageList(torch.zeros(1, 3, ph, pw), [(h, w)])
        feats = [torch.zeros(1, 1, ph // s, pw // s) for s in (4, 8, 16, 32, 64)]
        anchors = model.rpn.anchor_generator(il, feats)[0].numpy()
        gt = targets[0]["boxes"].numpy()
        ious.append(best_iou(gt, anchors))
        # long side of the BOX in mm (sample px / scale x spacing): boxes are padded, so this
        # exceeds the lesion's long diameter by a few mm
        scale = float(metas[0]["geometry"].scale[0])
        sizes.append(np.max(gt[:, 2:] - gt[:, :2], axis=1) / scale * spacing[metas[0]["file_name"]])
    iou, size = np.concatenate(ious), np.concatenate(sizes)
    b = bin_index(size, SIZE_EDGES_MM)
    rows_out = rates_by_bin({"anchor_iou>=0.7": iou >= 0.7, "anchor_iou>=0.5": iou >= 0.5}, b, SIZE_NAMES)
    for i, r in enumerate(rows_out):
        r["median_anchor_iou"] = float(np.median(iou[b == i])) if (b == i).any() else float("nan")
    return {"preset": preset, "overrides": overrides, "by_box_size": rows_out, "lesions": int(len(iou))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("curve")
    c.add_argument("--preset", default="demo")
    c.add_argument("--set", action="append", default=[], dest="overrides")
    c.add_argument("--every", type=int, default=300)
    c.add_argument("--test-at-end", action="store_true", help="also the test split, once, after the last chunk")
    a = sub.add_parser("anchors")
    a.add_argument("--preset", default="demo")
    a.add_argument("--set", action="append", default=[], dest="overrides")
    i = sub.add_parser("inspect")
    i.add_argument("--checkpoint", type=Path, required=True)
    for p in (c, i, a):
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--annotations", type=Path, default=None)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--splits", nargs="+", default=["train", "val"])
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ann = args.annotations or args.data / "DL_info.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "anchors":
        res = anchor_fit(args.data, ann, args.preset, args.overrides, args.splits)
        (args.out / "anchors.json").write_text(json.dumps(res))
        print(json.dumps(res, indent=1))
    elif args.mode == "curve":
        curve(args.data, ann, args.out, args.preset, args.overrides, args.every, args.splits, args.test_at_end)
    else:
        res = inspect(args.checkpoint, args.data, ann, args.splits)
        (args.out / "inspect.json").write_text(json.dumps(res))
        md = inspect_markdown(res)
        (args.out / "inspect.md").write_text(md + "\n")
        print(md)


if __name__ == "__main__":
    main()
