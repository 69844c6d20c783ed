"""Inference with test-time augmentation, sharded over ``torchrun`` ranks.

Boxes: the detector predicts in the sample frame; each view's boxes are mapped
back to the 0-based pixel frame of the stored slice (``SampleGeometry.to_stored``,
the flip undone by the geometry), clipped to the slice, merged per slice
(:mod:`lesionprop.engine.tta`), and written in the FILE frame (pixel + 1,
``boxes.pixel_to_file``) like ``DL_info.csv``.

Slices: ``key`` = distinct ``File_name`` of the split's human rows; ``adjacent``
= slices K-1 and K+1 of each key slice whose PNG exists; ``both`` = their union;
``range`` = every slice of each key slice's ``Slice_range`` (the sub-volume
DeepLesion ships, both ends included) whose PNG exists, or only K - n ... K + n of it
with ``window=n`` (what a 3D evaluation needs: predictions on all its slices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from lesionprop.annotations import Annotations, Source, read_annotations, series_geometry
from lesionprop.boxes import pixel_to_file
from lesionprop.config import Config, PredictConfig, config_from_dict
from lesionprop.data.dataset import DetectionDataset, collate, items_for_slices, worker_context, worker_init_fn
from lesionprop.data.deeplesion import SeriesInfo
from lesionprop.data.layout import slice_file_name, slice_path
from lesionprop.engine import distributed
from lesionprop.engine.checkpoint import load_checkpoint, resolve_checkpoint
from lesionprop.engine.tta import merge_views, tta_views
from lesionprop.errors import InputError
from lesionprop.fileio import refuse_overwrite_of_inputs
from lesionprop.model.detector import build_detector

SLICE_MODES = ("key", "adjacent", "both", "range")


def range_slices(ann: Annotations, window: int | None = None) -> list[tuple[str, int, int]]:
    """``(series, first, last)`` of each distinct key slice's sub-volume: its ``Slice_range``,
    or ``K - window ... K + window`` clipped to it; in annotation order, duplicates dropped."""
    lo, hi = ann.slice_range[:, 0], ann.slice_range[:, 1]
    if window is not None:
        lo, hi = np.maximum(lo, ann.slice_index - window), np.minimum(hi, ann.slice_index + window)
    return list(dict.fromkeys(zip(ann.series.tolist(), lo.astype(int).tolist(), hi.astype(int).tolist())))


def slice_names(ann: Annotations, data_root: str | Path, slices: str, split: str,
                window: int | None = None) -> list[str]:
    """File names to predict on (see the module docstring), in annotation order."""
    if slices not in SLICE_MODES:
        raise InputError(f"slices must be one of {', '.join(SLICE_MODES)}, got {slices!r}")
    if window is not None and (int(window) != window or window < 0):
        raise InputError(f"window must be an integer >= 0, got {window!r}")
    human = ann.select(split, sources=(Source.HUMAN,), drop_noisy=False)
    groups = human.by_key_slice()
    keys = [str(f) for f in groups.file_names]
    if slices == "range":
        names = [slice_file_name(series, j) for series, lo, hi in range_slices(human, window)
                 for j in range(max(lo, 0), hi + 1) if slice_path(data_root, series, j).is_file()]
        return list(dict.fromkeys(names))
    adjacent = []
    for series, k in zip(groups.series.tolist(), groups.slices.tolist()):
        adjacent += [slice_file_name(series, j) for j in (k - 1, k + 1)
                     if j >= 0 and slice_path(data_root, series, j).is_file()]
    chosen = {"key": keys, "adjacent": adjacent, "both": keys + adjacent}[slices]
    return list(dict.fromkeys(chosen))


@torch.no_grad()
def infer(model: torch.nn.Module, cfg: Config, data_root: str | Path, file_names: list[str],
          geometry: dict[str, SeriesInfo], *, tta: str = "none", pcfg: PredictConfig | None = None,
          dist: distributed.DistInfo | None = None, progress: bool = True
          ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Per slice ``(boxes (N, 4) pixel frame of the stored slice, scores (N,))``, gathered on every rank.

    ``file_names`` is sharded round-robin over the ranks; each rank runs batches
    of ``pcfg.batch_size`` images, the flipped copies in the same batch.
    """
    pcfg = pcfg or cfg.predict
    dist = dist or distributed.setup()
    views = tta_views(tta, pcfg.tta_scales)
    items = items_for_slices(file_names)
    mine = list(range(dist.rank, len(items), dist.world))
    per_item: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {i: [] for i in mine}
    model.eval()
    scales = list(dict.fromkeys(s for s, _ in views))
    bar = tqdm(total=len(mine) * len(scales), desc=f"predict ({tta})", disable=not (progress and dist.main),
               dynamic_ncols=True)
    reader = None     # one slice reader (and its decoded-slice cache) for every scale
    for scale in scales:
        flips = [f for s, f in views if s == scale]
        ds = DetectionDataset(data_root, items, cfg.data, geometry=geometry, train=False, scale=scale,
                              reader=reader)
        reader = ds.reader
        loader = DataLoader(Subset(ds, mine), batch_size=pcfg.batch_size, collate_fn=collate,
                            num_workers=cfg.data.num_workers, worker_init_fn=worker_init_fn,
                            multiprocessing_context=worker_context(cfg.data.num_workers))
        for images, _, metas in loader:
            batch = [im.to(dist.device) for im in images for f in flips
                     for im in ([im.flip(-1)] if f else [im])]
            geoms = [m["geometry"].flip() if f else m["geometry"] for m in metas for f in flips]
            outputs = run_by_shape(model, batch)
            for j, (out, geom) in enumerate(zip(outputs, geoms)):
                meta = metas[j // len(flips)]
                b = geom.to_stored(out["boxes"].float().cpu().numpy())
                h, w = geom.stored_size
                b[:, 0::2] = b[:, 0::2].clip(0, w)
                b[:, 1::2] = b[:, 1::2].clip(0, h)
                per_item[meta["index"]].append((b, out["scores"].float().cpu().numpy().astype(np.float64)))
            bar.update(len(images))
    bar.close()
    max_boxes = cfg.model.box_detections_per_img
    local = {i: merge_views(v, pcfg.merge, pcfg.merge_iou, max_boxes) for i, v in per_item.items()}
    merged: dict[int, Any] = {}
    for part in distributed.all_gather_objects(local):
        merged.update(part)
    names = [items[i].file_name for i in range(len(items))]
    return names, [merged[i][0] for i in range(len(items))], [merged[i][1] for i in range(len(items))]


def run_by_shape(model: torch.nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` with one call per image shape, outputs in input order.

    The detector pads a batch to its largest image and GroupNorm's statistics then
    include the padding, so mixing shapes in one call would make an image's boxes
    depend on which other slices share its batch (up to 2 points of sensitivity).
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(i)
    outputs: list[dict[str, torch.Tensor] | None] = [None] * len(images)
    for idx in by_shape.values():
        for i, out in zip(idx, model([images[i] for i in idx])):
            outputs[i] = out
    return outputs  # type: ignore[return-value]


def flatten(names: list[str], boxes: list[np.ndarray], scores: list[np.ndarray]
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-slice lists -> one row per box (file name, FILE-frame box, score)."""
    rows = [n for n, b in zip(names, boxes) for _ in range(len(b))]
    all_boxes = np.concatenate([b.reshape(-1, 4) for b in boxes]) if boxes else np.zeros((0, 4))
    all_scores = np.concatenate([s.reshape(-1) for s in scores]) if scores else np.zeros(0)
    return rows, pixel_to_file(all_boxes), all_scores


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """The detector of ``checkpoint`` (a file, a run directory or a shipped name such as
    ``synthetic-cpu-detector``) on ``device``, in eval mode, and the config it was trained with."""
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    # the weights come from the checkpoint: never read the ImageNet file again
    model = build_detector(cfg.model, cfg.data.num_slices, load_pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def predict(checkpoint: str | Path, data_root: str | Path, annotations_path: str | Path | None, *,
            slices: str = "key", split: str = "test", tta: str = "none", out_csv: str | Path | None = None,
            file_names: list[str] | None = None, batch_size: int | None = None, device: str | None = None,
            progress: bool = True, window: int | None = None):
    """Predict boxes (FILE frame) on the chosen slices; write ``out_csv`` on rank 0 when given.

    ``file_names`` overrides ``slices``/``split`` (e.g. an imported CT: the
    spacing then comes from ``DATA/series_info.csv``).  ``window``: with ``slices="range"``,
    only K - window ... K + window of each sub-volume.  Returns ``Predictions``.
    """
    from lesionprop.predictions import Predictions, write_predictions

    ckpt = resolve_checkpoint(checkpoint)
    if out_csv is not None:
        refuse_overwrite_of_inputs(out_csv, annotations_path, ckpt)
    dist = distributed.setup(device)
    lesions = read_annotations(annotations_path) if annotations_path is not None else Annotations.empty()
    if file_names is None:
        if annotations_path is None:
            raise InputError("predict needs an annotation file or explicit file_names")
        file_names = slice_names(lesions, data_root, slices, split, window)
    geometry = series_geometry(data_root, lesions)
    model, cfg = load_model(ckpt, dist.device)
    pcfg = cfg.predict if batch_size is None else cfg.predict.__class__(
        **{**cfg.predict.__dict__, "batch_size": batch_size})
    names, boxes, scores = infer(model, cfg, data_root, list(file_names), geometry, tta=tta, pcfg=pcfg,
                                 dist=dist, progress=progress)
    rows, fboxes, fscores = flatten(names, boxes, scores)
    if out_csv is not None and dist.main:
        write_predictions(out_csv, rows, fboxes, fscores)
    distributed.barrier()
    return Predictions.from_arrays(rows, fboxes, fscores)
