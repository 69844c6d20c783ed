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
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lesionprop.annotations import Annotations, Source, read_annotations, series_geometry
from lesionprop.boxes import pixel_to_file
from lesionprop.config import Config, config_from_dict, inference_config
from lesionprop.data.dataset import DetectionDataset, items_for_slices
from lesionprop.data.deeplesion import SeriesInfo
from lesionprop.data.layout import slice_file_name, slice_path
from lesionprop.engine import distributed
from lesionprop.engine.checkpoint import load_checkpoint, resolve_checkpoint
from lesionprop.engine.loader import amp_dtype, make_loader, resolve_workers
from lesionprop.engine.tta import merge_views, tta_views
from lesionprop.errors import InputError
from lesionprop.fileio import refuse_overwrite_of_inputs
from lesionprop.model.detector import build_detector
from lesionprop.predictions import Predictions, write_predictions

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


class ShapeBatcher:
    """Forward passes of full batches of ONE padded shape each (``batch_size`` images).

    The detector pads a batch to its largest image (rounded up to 32 pixels), and GroupNorm's
    statistics (and every convolution at the padded border) then see the padding: a slice's
    boxes would depend on which slices share its batch.  Here each image waits in the bucket of
    its padded shape (:func:`padded_shape`: what it is padded to when alone) until the
    bucket is full (or :meth:`flush`), so every pass is full and an image's boxes are those it
    gets alone.  At most ``max_waiting`` images wait; past that the fullest bucket runs.
    ``done(key, output)`` receives each image's output (boxes, scores on the CPU, float32).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int, device: torch.device, amp: torch.dtype | None,
                 done: Callable[[Any, dict[str, torch.Tensor]], None], max_waiting: int | None = None):
        self.model, self.batch_size, self.device, self.amp, self.done = model, max(1, batch_size), device, amp, done
        self.max_waiting = max_waiting or 8 * self.batch_size
        self.buckets: dict[tuple[int, ...], list[tuple[Any, torch.Tensor, bool]]] = {}
        self.waiting = 0
        self.passes = 0

    def add(self, key: Any, image: torch.Tensor, flip: bool = False) -> None:
        """Queue ``image`` (``flip``: mirrored left-right first, on the device)."""
        shape = padded_shape(image.shape)
        bucket = self.buckets.setdefault(shape, [])
        bucket.append((key, image, flip))
        self.waiting += 1
        if len(bucket) >= self.batch_size:
            self._run(shape)
        elif self.waiting > self.max_waiting:
            self._run(max(self.buckets, key=lambda k: len(self.buckets[k])))

    def flush(self) -> None:
        for shape in list(self.buckets):
            self._run(shape)

    def _run(self, shape: tuple[int, ...]) -> None:
        bucket = self.buckets.pop(shape, [])
        self.waiting -= len(bucket)
        for start in range(0, len(bucket), self.batch_size):
            part = bucket[start:start + self.batch_size]
            images = [im.to(self.device, non_blocking=True) for _, im, _ in part]
            images = [im.flip(-1) if f else im for im, (_, _, f) in zip(images, part)]
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                outputs = self.model(images)
            self.passes += 1
            for (key, _, _), out in zip(part, outputs):
                self.done(key, {"boxes": out["boxes"].float().cpu(), "scores": out["scores"].float().cpu()})


def padded_shape(shape: Sequence[int], pad_to: int = 32) -> tuple[int, ...]:
    """What the detector pads an image of ``shape`` (..., H, W) to when it is alone in its batch."""
    return (*shape[:-2], *(-(-int(d) // pad_to) * pad_to for d in shape[-2:]))


def _collate_views(batch: list) -> list:
    return batch


class _Views(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, [(image, geometry) per scale])`` from one decode (DetectionDataset.views)."""

    def __init__(self, ds: DetectionDataset, scales: list[float]):
        self.ds, self.scales = ds, scales

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[int, list]:
        return i, self.ds.views(i, self.scales)


def inference_amp(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of inference (``predict.amp`` on CUDA), None for float32."""
    return amp_dtype(device) if device.type == "cuda" and cfg.predict.amp else None


@torch.no_grad()
def infer(model: torch.nn.Module, cfg: Config, data_root: str | Path, file_names: list[str],
          geometry: dict[str, SeriesInfo], *, tta: str = "none", dist: distributed.DistInfo | None = None,
          progress: bool = True, reader: Any = None
          ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]] | None:
    """Per slice ``(boxes (N, 4) pixel frame of the stored slice, scores (N,))`` on rank 0 (None on
    the other ranks), in ``file_names`` order.

    ``cfg`` decides everything about inference (``predict.*``, ``data.num_workers``); its model
    and data settings must be the model's.  ``file_names`` are sharded round-robin over the
    ranks after sorting by (series, slice), so that neighbouring samples share decoded slices;
    each slice is decoded once for all its test-time views, the views run in full batches of
    one shape (:class:`ShapeBatcher`), each slice's views are merged on its own rank and only the
    merged boxes travel to rank 0.  ``reader``: where slices come from (default: the PNG layout
    under ``data_root``; anything with ``SliceReader.read_hu``, e.g. a CT volume in memory).
    """
    pcfg = cfg.predict
    dist = dist or distributed.setup()
    views = tta_views(tta, pcfg.tta_scales)
    scales = list(dict.fromkeys(s for s, _ in views))
    flips = {s: [f for s2, f in views if s2 == s] for s in scales}
    items = items_for_slices(file_names)
    order = sorted(range(len(items)), key=lambda i: (items[i].series, items[i].slice_index, i))
    mine = order[dist.rank::dist.world]
    model.eval()
    ds = DetectionDataset(data_root, items, cfg.data, geometry=geometry, train=False, reader=reader)
    workers = resolve_workers(cfg.data.num_workers, dist.device)
    loader = make_loader(_Views(ds, scales), workers=workers, device=dist.device, collate_fn=_collate_views,
                         batch_size=max(1, pcfg.batch_size // len(views)), indices=mine)
    pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    merged: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    max_boxes = cfg.model.box_detections_per_img

    def done(key: tuple[int, Any], out: dict[str, torch.Tensor]) -> None:
        index, geom = key
        b = geom.to_stored(out["boxes"].numpy())
        h, w = geom.stored_size
        b[:, 0::2] = b[:, 0::2].clip(0, w)
        b[:, 1::2] = b[:, 1::2].clip(0, h)
        got = pending.setdefault(index, [])
        got.append((b, out["scores"].numpy().astype(np.float64)))
        if len(got) == len(views):
            merged[index] = merge_views(pending.pop(index), pcfg.merge, pcfg.merge_iou, max_boxes)

    batcher = ShapeBatcher(model, pcfg.batch_size, dist.device, inference_amp(cfg, dist.device), done)
    bar = tqdm(total=len(mine), desc=f"predict ({tta})", disable=not (progress and dist.main), dynamic_ncols=True)
    for batch in loader:
        for i, samples in batch:
            for (image, geom), s in zip(samples, scales):
                for f in flips[s]:
                    batcher.add((i, geom.flip() if f else geom), image, flip=f)
        bar.update(len(batch))
    batcher.flush()
    bar.close()
    parts = distributed.gather_to_main(merged)
    if parts is None:
        return None
    everything: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for part in parts:
        everything.update(part)
    names = [it.file_name for it in items]
    return names, [everything[i][0] for i in range(len(items))], [everything[i][1] for i in range(len(items))]


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
            progress: bool = True, window: int | None = None, run_cfg: Config | None = None,
            overrides: Sequence[str] | Mapping[str, Any] = (), reader: Any = None,
            geometry: dict[str, SeriesInfo] | None = None):
    """Predict boxes (FILE frame) on the chosen slices; write ``out_csv`` on rank 0 when given.

    ``file_names`` overrides ``slices``/``split`` (e.g. an imported CT: the
    spacing then comes from ``DATA/series_info.csv``).  ``window``: with ``slices="range"``,
    only K - window ... K + window of each sub-volume.  Inference settings (TTA scales, merge,
    batch size, AMP, loader workers and caches) come from ``run_cfg`` (a run's config) and then
    ``overrides`` (``predict.merge=nms``), never from the checkpoint's training run
    (:func:`lesionprop.config.inference_config`).  ``reader`` and ``geometry``: slices from
    another source than the PNG layout under ``data_root`` (e.g.
    :class:`lesionprop.data.slices.VolumeReader`, a CT in memory) and their series' spacing.
    Returns ``Predictions`` on rank 0, None on the other ranks.
    """

    ckpt = resolve_checkpoint(checkpoint)
    if out_csv is not None:
        refuse_overwrite_of_inputs(out_csv, annotations_path, ckpt)
    dist = distributed.setup(device)
    lesions = read_annotations(annotations_path) if annotations_path is not None else Annotations.empty()
    if file_names is None:
        if annotations_path is None:
            raise InputError("predict needs an annotation file or explicit file_names")
        file_names = slice_names(lesions, data_root, slices, split, window)
    if geometry is None:
        geometry = series_geometry(data_root, lesions)
    model, trained = load_model(ckpt, dist.device)
    extra = dict(overrides) if isinstance(overrides, Mapping) else list(overrides)
    if batch_size is not None:
        extra = {**extra, "predict.batch_size": batch_size} if isinstance(extra, dict) else \
            extra + [f"predict.batch_size={int(batch_size)}"]
    cfg = inference_config(trained, run_cfg, extra)
    result = infer(model, cfg, data_root, list(file_names), geometry, tta=tta, dist=dist, progress=progress,
                   reader=reader)
    preds = None
    if result is not None:
        rows, fboxes, fscores = flatten(*result)
        if out_csv is not None:
            write_predictions(out_csv, rows, fboxes, fscores)
        preds = Predictions.from_arrays(rows, fboxes, fscores)
    distributed.barrier()
    return preds
