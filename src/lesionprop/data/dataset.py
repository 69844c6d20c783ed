"""Torch dataset of 3DCE samples with their boxes, for training and inference.

Boxes: :class:`SliceItem` holds xyxy boxes in the 0-based *pixel frame* of the
stored slice (``DL_info.csv`` file frame minus 1, :mod:`lesionprop.boxes`); the
dataset returns them in the *sample frame* (after crop, rescale, shift, flip)
and hands back the :class:`SampleGeometry` that maps predictions back with
``geometry.to_stored``.

Augmentation (training only, as MULAN): a random scale in ``cfg.aug_scale``, a
random shift of at most ``cfg.aug_shift_px`` whole pixels of the stored slice (it
moves the crop window, so it costs no extra pass), a horizontal flip with
probability 1/2 when ``cfg.aug_flip``, and with ``cfg.aug_crop_px`` a square window
of that many sample pixels holding one of the slice's lesions (a CPU speed-up: the
network sees a fraction of the pixels; inference always sees whole slices).  Its random numbers are a function of
``(seed, epoch, index)`` only, so a resumed run and any split of the indices over
workers or ranks see exactly the same samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import torch

from lesionprop.boxes import file_to_pixel
from lesionprop.config import DataConfig
from lesionprop.data.deeplesion import SeriesInfo
from lesionprop.data.layout import parse_file_name
from lesionprop.data.sample import crop_sample, crop_window, flip_sample, sample_for
from lesionprop.data.slices import SliceReader
from lesionprop.errors import InputError

#: Boxes narrower or lower than this (sample pixels) after clipping are dropped.
MIN_BOX_SIZE = 1e-2


@dataclass(frozen=True)
class SliceItem:
    """One image of the dataset: a slice and the pixel-frame boxes on it ((N, 4) float32, N may be 0)."""

    series: str
    slice_index: int
    boxes: np.ndarray
    file_name: str


def items_from_boxes(file_names: Sequence[str] | np.ndarray, boxes: np.ndarray) -> list[SliceItem]:
    """One item per distinct file name (key or adjacent slice), in first-appearance order, holding
    the boxes of all its rows (``boxes`` (N, 4), file frame) converted to the pixel frame."""
    names = np.asarray(file_names, dtype=object).reshape(-1)
    px = file_to_pixel(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)).astype(np.float32)
    uniq, first, inv = np.unique(names.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(inv.reshape(-1), kind="stable")
    per_name = np.split(px[order], np.cumsum(np.bincount(inv.reshape(-1), minlength=uniq.size))[:-1])
    items = []
    for g in np.argsort(first, kind="stable").tolist():
        name = str(uniq[g])
        series, idx = parse_file_name(name)
        items.append(SliceItem(series, idx, per_name[g], name))
    return items


def items_for_slices(file_names: Iterable[str]) -> list[SliceItem]:
    """Inference items, one per name in the given order (duplicates kept), with no boxes."""
    items = []
    for name in file_names:
        series, idx = parse_file_name(name)
        items.append(SliceItem(series, idx, np.zeros((0, 4), np.float32), name))
    return items


def clip_boxes(boxes: np.ndarray, height: int, width: int, min_size: float = MIN_BOX_SIZE) -> np.ndarray:
    """Clip ``(N, 4)`` boxes to the image and drop those left narrower/lower than ``min_size``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = b[:, 0::2].clip(0, width)
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    keep = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    return b[keep]


class DetectionDataset(torch.utils.data.Dataset):
    """``(image, target, meta)`` per item.

    ``image``: ``(3M, H, W)``, windowed 0..255, no mean subtracted; uint8 (rounded) or float32
    as ``data.sample_dtype`` says (:func:`to_tensor`).
    ``target``: ``{"boxes": float32 (N, 4) sample frame, "labels": int64 (N,) ones}``.
    ``meta``: ``{"index", "file_name", "series", "slice_index", "geometry"}``.
    ``geometry``: series -> :class:`SeriesInfo` (from ``deeplesion.series_geometry``).
    ``scale``: an extra resize factor (test-time scales), applied on top of augmentation.
    """

    def __init__(self, root: str | os.PathLike, items: Sequence[SliceItem], cfg: DataConfig, *,
                 geometry: dict[str, SeriesInfo], train: bool, seed: int = 0,
                 reader: SliceReader | None = None, scale: float = 1.0):
        self.root = root
        self.items = list(items)
        self.cfg = cfg
        self.geometry = geometry
        self.train = bool(train)
        self.seed = int(seed)
        self.scale = float(scale)
        self.epoch = 0
        if cfg.aug_crop_px < 0 or 0 < cfg.aug_crop_px < 3:
            raise InputError(f"data.aug_crop_px must be 0 (whole slices) or a crop size of at least 3 pixels, "
                             f"got {cfg.aug_crop_px}")
        missing = sorted({it.series for it in self.items} - set(geometry))
        if missing:
            raise InputError(f"no spacing known for series {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} (not in series_info.csv or the annotations)")
        self.reader = reader if reader is not None else SliceReader(
            root, cache=True, cache_dir=cfg.cache_dir, max_cache_bytes=int(cfg.cache_mb) << 20)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (call before iterating, like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def augmentation(self, index: int) -> tuple[float, int, int, bool, tuple[float, float, float]]:
        """``(scale, dx, dy, flip, crop_u)`` of item ``index`` in the current epoch (identity when not
        training); ``crop_u``: the uniform numbers that place the crop window (:func:`crop_window`)."""
        if not self.train:
            return 1.0, 0, 0, False, (0.0, 0.0, 0.0)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        lo, hi = self.cfg.aug_scale
        s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        m = int(self.cfg.aug_shift_px)
        dx, dy = (int(v) for v in rng.integers(-m, m + 1, size=2)) if m > 0 else (0, 0)
        flip = bool(rng.random() < 0.5) if self.cfg.aug_flip else False
        crop_u = tuple(float(v) for v in rng.random(3)) if self.cfg.aug_crop_px > 0 else (0.0, 0.0, 0.0)
        return s, dx, dy, flip, crop_u

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict, dict]:
        item = self.items[index]
        s, dx, dy, flip, crop_u = self.augmentation(index)
        image, geom = sample_for(self.reader, item.series, item.slice_index, self.geometry[item.series],
                                 self.cfg, scale=self.scale * s, shift=(dx, dy))
        if self.train and self.cfg.aug_crop_px > 0:
            inside = clip_boxes(geom.to_sample(item.boxes), *geom.size)
            image, geom = crop_sample(image, geom, crop_window(geom.size, self.cfg.aug_crop_px, inside, crop_u))
        if flip:
            image, geom = flip_sample(image, geom)
        boxes = clip_boxes(geom.to_sample(item.boxes), *geom.size)
        target = {"boxes": torch.from_numpy(boxes.astype(np.float32)),
                  "labels": torch.ones(len(boxes), dtype=torch.int64)}
        meta = {"index": int(index), "file_name": item.file_name, "series": item.series,
                "slice_index": item.slice_index, "geometry": geom}
        return to_tensor(image, self.cfg.sample_dtype), target, meta

    def views(self, index: int, scales: Sequence[float]) -> list[tuple[torch.Tensor, Any]]:
        """Inference samples of item ``index`` at each of ``scales`` (test-time scales), each slice
        decoded once for all of them: ``[(image, geometry), ...]`` in ``scales`` order."""
        item = self.items[index]
        with self.reader.pinned():
            out = []
            for s in scales:
                image, geom = sample_for(self.reader, item.series, item.slice_index, self.geometry[item.series],
                                         self.cfg, scale=self.scale * s)
                out.append((to_tensor(image, self.cfg.sample_dtype), geom))
        return out


#: what a sample crosses process boundaries as (``data.sample_dtype``)
SAMPLE_DTYPES = ("uint8", "float32")


def to_tensor(image: np.ndarray, dtype: str) -> torch.Tensor:
    """A 0..255 float32 sample as the tensor the loader hands on: ``uint8`` rounds to the nearest
    level (a quarter of the bytes through shared memory and to the GPU), ``float32`` keeps it."""
    if dtype == "uint8":
        out = np.empty(image.shape, np.uint8)
        np.add(image, 0.5, out=out, casting="unsafe")        # 0..255 -> nearest integer (floor of x + 0.5)
        return torch.from_numpy(out)
    if dtype == "float32":
        return torch.from_numpy(image)
    raise InputError(f"data.sample_dtype must be one of {', '.join(SAMPLE_DTYPES)}, got {dtype!r}")


def collate(batch: Sequence[tuple[torch.Tensor, dict, dict]]) -> tuple[list[torch.Tensor], list[dict], list[dict]]:
    """Keep variable-size samples as lists (the detector batches and pads them)."""
    images, targets, metas = zip(*batch) if batch else ((), (), ())
    return list(images), list(targets), list(metas)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader workers: one OpenCV thread each (the workers are the parallelism)."""
    cv2.setNumThreads(1)


#: what the forkserver imports once; every loader worker is forked from it and shares those pages
FORKSERVER_PRELOAD = ["torch", "cv2", "lesionprop.data.dataset"]


def worker_context(num_workers: int) -> Any:
    """The multiprocessing context of DataLoader workers (None without workers): ``forkserver``
    where the platform has it, else ``spawn``.

    A worker forked from the main process inherits OpenCV's thread pool in whatever state the
    parent left it: after the parent has resized images (e.g. the pipeline's predictions before
    a retrain), ``cv2.setNumThreads`` in the forked worker waits forever.  A forkserver is a
    fresh process that imports torch and OpenCV once (:data:`FORKSERVER_PRELOAD`) and never
    resizes, and each worker is forked from it: clean like a spawned worker, but sharing the
    server's imported pages instead of holding its own copy (importing the CUDA build of torch
    costs a process ~0.7 GB of private memory; 15 spawned workers would hold ~10 GB).  The
    dataset's samples depend on (seed, epoch, index) only, so the data are the same either way.
    """
    import multiprocessing

    if num_workers <= 0:
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx
