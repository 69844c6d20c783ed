"""torchrun support: process group set-up (NCCL on GPU, gloo on CPU), rank helpers, gathering.

A plain ``python`` run is a world of one: every helper then is a no-op.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lesionprop.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


class DeviceError(InputError):
    """A ``--device`` value this machine cannot use: one line naming the option and value (CLI exit 2)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(device: str | None, option: str = "--device") -> str | None:
    """``device`` (cpu, cuda, cuda:N, mps; None = cuda when available, else cpu) if this machine has it.

    Raises :class:`DeviceError` naming ``option`` and the value: an unknown string lists the valid
    forms; cuda without a CUDA device, cuda:N past the last device, or mps without MPS says so.
    Called by ``train``, ``predict`` and ``detect`` before any work, and by :func:`setup`.
    """
    if device is None or device == "cpu":
        return device
    cuda = re.fullmatch(r"cuda(?::(\d+))?", device)
    if cuda:
        if not torch.cuda.is_available():
            raise DeviceError(f"{option} {device}: no CUDA device is available here "
                              f"(torch.cuda.is_available() is False); use {option} cpu")
        count = torch.cuda.device_count()
        if cuda.group(1) is not None and int(cuda.group(1)) >= count:
            raise DeviceError(f"{option} {device}: this machine has {count} CUDA device(s): "
                              f"cuda:0 ... cuda:{count - 1}")
        return device
    if device == "mps":
        if not _mps_available():
            raise DeviceError(f"{option} mps: no MPS device is available here "
                              f"(torch.backends.mps.is_available() is False); use {option} cpu")
        return device
    forms = "cpu, cuda, cuda:N" + (", mps" if _mps_available() else "")
    raise DeviceError(f"{option} {device!r} is not a device; use one of {forms}")


def setup(device: str | None = None) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (once per process)."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (for logging and the finite-loss check)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself without a process group)."""
    if not active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the other ranks (``[obj]`` without a
    process group): what only rank 0 writes need not reach every rank."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out
