"""DataLoaders that keep an accelerator fed: worker count, pinned memory, prefetch, precision.

Loader processes (``data.num_workers``): when unset, chosen from the cores this rank has
(:func:`resolve_workers`): none on a CPU device (the model's own threads want every core),
``cores per rank - 1`` (at most :data:`MAX_AUTO_WORKERS`) on a GPU.  Workers are spawned (not
forked: see :func:`lesionprop.data.dataset.worker_context`), persist for the loader's life and
each keep :data:`PREFETCH` batches ready.  On CUDA, batches land in pinned memory and are copied
with ``non_blocking=True``.  Samples cross the process boundary as ``data.sample_dtype``
(uint8 by default: a quarter of float32's bytes); the model converts them to float.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lesionprop.data.dataset import worker_context, worker_init_fn
from lesionprop.errors import ConfigError

MAX_AUTO_WORKERS = 16
PREFETCH = 4


def cores_per_rank(local_world: int | None = None, cores: int | None = None) -> int:
    """CPU cores this process may use: the machine's (or the affinity mask's) over the local ranks."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    local_world = local_world or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local_world))


def resolve_workers(requested: int | None, device: torch.device | str, local_world: int | None = None,
                    cores: int | None = None) -> int:
    """``requested`` when set (>= 0); otherwise 0 on a CPU device and ``cores per rank - 1``
    (1 .. :data:`MAX_AUTO_WORKERS`) on an accelerator."""
    if requested is not None:
        if requested < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (or unset: chosen from the cores), got {requested}")
        return int(requested)
    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(MAX_AUTO_WORKERS, cores_per_rank(local_world, cores) - 1))


def make_loader(dataset: Dataset, *, workers: int, device: torch.device, collate_fn: Callable[[list], Any],
                batch_size: int | None = None, batch_sampler: Sampler | None = None,
                indices: Sequence[int] | None = None, generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader with this module's policy (module docstring); ``indices``: a subset, in order."""
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=PREFETCH, worker_init_fn=worker_init_fn,
                      multiprocessing_context=worker_context(workers))
    if batch_sampler is not None:
        kwargs["batch_sampler"] = batch_sampler
    else:
        kwargs.update(batch_size=batch_size, shuffle=False)
    return DataLoader(dataset, num_workers=workers, collate_fn=collate_fn, pin_memory=device.type == "cuda",
                      generator=generator, **kwargs)


def amp_dtype(device: torch.device, setting: str = "auto") -> torch.dtype:
    """Mixed precision's dtype: ``auto`` is bf16 where the GPU supports it (no loss scaling, no
    overflow), else fp16; ``bf16`` / ``fp16`` as named."""
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    if setting != "auto":
        raise ConfigError(f"train.amp_dtype must be auto, bf16 or fp16, got {setting!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
