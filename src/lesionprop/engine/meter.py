"""What a logging window of training cost: images per second, the share of time spent waiting
for data, peak GPU memory and peak host memory (this process and its loader workers).

Host memory is read from ``/proc`` (Linux): ``VmHWM`` (peak resident set) of this process plus
that of each child process (the loader workers; each child's own peak, so their sum bounds the
combined peak from above).  Elsewhere only this process's peak (``resource.getrusage``).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int | str) -> list[str]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += (task / "children").read_text().split()
    except OSError:
        pass
    return out


def peak_host_rss_mb() -> float:
    """Peak resident memory of this process and (recursively) its children, MiB."""
    if not sys.platform.startswith("linux"):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)   # bytes on macOS
    total, todo, seen = 0, ["self"], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _status_kb(pid, "VmHWM")
        todo += _children(pid)
    return total / 1024


class ThroughputMeter:
    """Times one logging window: :meth:`waited` after each batch arrives, :meth:`stepped` after
    each optimiser step, :meth:`exclude` after work that is not training (validation,
    checkpoints); :meth:`window` returns the record and starts the next window."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.t0 = self.mark = time.perf_counter()
        self.wait = 0.0
        self.excluded = 0.0
        self.images = 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def waited(self) -> None:
        """The batch is here: the time since the last step ended was spent waiting for data."""
        now = time.perf_counter()
        self.wait += now - self.mark
        self.mark = now

    def stepped(self, images: int) -> None:
        self.images += images
        self.mark = time.perf_counter()

    def exclude(self) -> None:
        """The time since the last step (validation, a checkpoint) is not training: leave it out."""
        now = time.perf_counter()
        self.excluded += now - self.mark
        self.mark = now

    def window(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.t0 - self.excluded, 1e-9)
        rec = {"images_per_s": round(self.images / elapsed, 3), "data_wait_share": round(self.wait / elapsed, 4),
               "host_peak_rss_mb": round(peak_host_rss_mb(), 1)}
        if self.device.type == "cuda":
            rec["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 20, 1)
        self._reset()
        return rec
