"""What a logging window of training cost: images per second, the share of time spent waiting
for data, peak GPU memory and host memory (this process and its loader workers).

Host memory is read from ``/proc`` (Linux).  ``host_pss_mb``: the proportional set size (shared
pages split between the processes sharing them) of this process and every descendant, i.e. the
loader workers and their forkserver, summed: what they take from the machine together, at the
moment of reading.  ``host_peak_rss_mb``: this process's own peak resident set (``VmHWM``).
Summing the workers' resident sets instead would count the torch libraries they share once per
worker (~0.7 GB each for the CUDA build).  Elsewhere only this process's peak
(``resource.getrusage``).
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


def _descendants() -> list[str]:
    out, todo = [], ["self"]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += _children(pid)
    return out


def _pss_kb(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def host_pss_mb() -> float:
    """Proportional set size of this process and all its descendants, MiB (0 off Linux)."""
    return sum(_pss_kb(pid) for pid in _descendants()) / 1024


def peak_host_rss_mb() -> float:
    """This process's peak resident set, MiB."""
    if not sys.platform.startswith("linux"):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)   # bytes on macOS
    return _status_kb("self", "VmHWM") / 1024


#: the keys of a metrics.jsonl record that measure the machine, not the training: they differ between
#: two runs of the same training (e.g. one resumed after a kill)
MEASURED_KEYS = frozenset({"seconds", "images_per_s", "data_wait_share", "host_pss_mb", "host_peak_rss_mb",
                           "gpu_peak_mb"})


class ThroughputMeter:
    """Times one logging window: :meth:`waited` after each batch arrives, :meth:`stepped` after
    each optimiser step, :meth:`exclude` after work that is not training (validation,
    checkpoints); :meth:`window` returns the record and starts the next window."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()
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
        rec = {"seconds": round(time.perf_counter() - self.start, 3), "images_per_s": round(self.images / elapsed, 3), "data_wait_share": round(self.wait / elapsed, 4),
               "host_pss_mb": round(host_pss_mb(), 1), "host_peak_rss_mb": round(peak_host_rss_mb(), 1)}
        if self.device.type == "cuda":
            rec["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 20, 1)
        self._reset()
        return rec
