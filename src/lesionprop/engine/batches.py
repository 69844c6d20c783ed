"""Deterministic, resumable data order shared by all ranks.

The global order is an endless stream: the permutation of epoch 0, then of
epoch 1, ... (each a function of ``(seed, epoch)``).  Iteration ``i`` takes
stream positions ``i*B .. i*B+B-1``; rank ``r`` of ``W`` takes its contiguous
``B/W`` of them.  The position of a run is therefore just its iteration count,
and a resumed or distributed run sees exactly the images of a single run.
Each item is ``(epoch, index)`` so the dataset's augmentation RNG
(``f(seed, epoch, index)``) is right inside DataLoader workers too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lesionprop.errors import InputError


@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def stream_items(n: int, seed: int, start: int, stop: int) -> list[tuple[int, int]]:
    """``(epoch, index)`` at stream positions ``start .. stop-1``."""
    out = []
    for pos in range(start, stop):
        epoch = pos // n
        out.append((epoch, int(epoch_permutation(n, seed, epoch)[pos % n])))
    return out


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's share of the global batch of iterations ``start .. stop-1``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1) -> None:
        if n == 0:
            raise InputError("no training images")
        if batch_size % world:
            raise InputError(f"train.batch_size={batch_size} must be a multiple of the number of processes ({world})")
        self.n, self.batch, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.local = batch_size // world
        self.rank = rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            first = it * self.batch + self.rank * self.local
            yield stream_items(self.n, self.seed, first, first + self.local)


class EpochIndexed(Dataset):
    """``dataset[(epoch, i)]`` = ``dataset.set_epoch(epoch); dataset[i]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def to_device(images: list[torch.Tensor], targets: list[dict],
              device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets
