"""Slice access: ``ROOT/Images_png/SERIES/III.png`` -> HU (int16), with a decoded-slice cache.

DeepLesion stores each axial slice as a single-channel 16-bit PNG holding
``HU + 32768``.  :class:`SliceReader` decodes one slice to an ``(H, W)`` int16 HU
array, lists a series' slices, and falls back to the nearest existing slice
(stepping toward a given centre slice) when a *neighbour* file is missing, as
the 3DCE / MULAN loaders do at series edges.

Two caches make repeated epochs free of PNG decoding:

* **in memory** (default): a least-recently-used dict of decoded slices bounded
  in bytes (``max_cache_bytes``).  Each DataLoader worker process has its own.
* **on disk** (``cache_dir``): a one-off pre-pass decodes a whole series into
  ``CACHE/SERIES.hu.npy`` (``(Z, H, W)`` int16, one plane per existing slice)
  plus ``CACHE/SERIES.idx.npy`` (the slice indices), written atomically and
  memory-mapped afterwards.  All workers share the OS page cache, so a dataset is
  decoded once per machine, not once per worker and epoch.  A series folder
  whose listing changed (files added, removed or rewritten) is re-cached.

Arrays returned by :meth:`SliceReader.read_hu` are read-only views into the
cache: copy before writing to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np

from lesionprop.data.layout import IMAGES_DIR, SliceReadError, decode_png, list_slices, series_dir, slice_path
from lesionprop.errors import MissingInputError


def _listing(folder: Path) -> dict[int, os.stat_result]:
    return {i: e.stat() for i, e in list_slices(folder).items()}


class SliceReader:
    """Read HU slices of a DeepLesion-layout dataset with nearest-existing fallback and caching.

    ``cache``: keep decoded slices in an in-process LRU dict of at most
    ``max_cache_bytes``.  ``cache_dir``: use (and build on first touch) the
    memory-mapped per-series arrays described in the module docstring; the
    in-memory cache is then not needed and not used.
    ``fallbacks`` counts the missing neighbour files replaced so far.  Not
    thread-safe: use one reader per thread (DataLoader workers each get a copy).
    """

    def __init__(self, root: str | os.PathLike, cache: bool = True, *,
                 cache_dir: str | os.PathLike | None = None, max_cache_bytes: int = 1 << 30):
        self.root = Path(root)
        if not (self.root / IMAGES_DIR).is_dir():
            raise MissingInputError(f"no Images_png folder in dataset root {self.root}")
        self.cache = bool(cache)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_cache_bytes = int(max_cache_bytes)
        self.fallbacks = 0
        self.decoded = 0                      # PNGs decoded by this reader (for benchmarks / tests)
        self._lru: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lru_bytes = 0
        self._listings: dict[str, dict[int, os.stat_result]] = {}
        self._volumes: dict[str, tuple[np.ndarray, dict[int, int]]] = {}
        self._warned: set[str] = set()
        self._pinned: dict[tuple[str, int], np.ndarray] | None = None

    # ------------------------------------------------------------ pickling (DataLoader workers)
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # a worker starts with an empty in-memory cache; memmaps are re-opened lazily
        state.update(_lru=OrderedDict(), _lru_bytes=0, _volumes={}, _pinned=None)
        return state

    @contextlib.contextmanager
    def pinned(self) -> Iterator["SliceReader"]:
        """Inside the block every slice is decoded at most once, whatever the cache's size (the
        views of one sample at several test-time scales read the same slices)."""
        outer = self._pinned
        if outer is None:
            self._pinned = {}
        try:
            yield self
        finally:
            if outer is None:
                self._pinned = None

    # ------------------------------------------------------------ listing
    def series_dir(self, series: str) -> Path:
        return series_dir(self.root, series)

    def _files(self, series: str) -> dict[int, os.stat_result]:
        files = self._listings.get(series)
        if files is None:
            files = _listing(self.series_dir(series))
            self._listings[series] = files
        return files

    def available_slices(self, series: str) -> list[int]:
        """Sorted slice indices present in ``Images_png/SERIES`` (empty if the folder is missing)."""
        return sorted(self._files(series))

    def exists(self, series: str, slice_index: int) -> bool:
        return int(slice_index) in self._files(series)

    def resolve(self, series: str, slice_index: int, toward: int | None = None) -> int:
        """The slice index actually read for ``slice_index``.

        An existing file is used as is.  A missing one is replaced by the nearest
        existing slice stepping from ``slice_index`` toward ``toward`` (the centre
        slice of a sample), counted in ``fallbacks`` and warned about once per
        series.  Raises :class:`SliceReadError` naming the path when nothing exists
        between them (or when ``toward`` is None).
        """
        files = self._files(series)
        idx = int(slice_index)
        if idx in files:
            return idx
        if toward is not None:
            toward = int(toward)
            step = 1 if toward > idx else -1
            for j in range(idx + step, toward + step, step) if toward != idx else ():
                if j in files:
                    self.fallbacks += 1
                    if series not in self._warned:
                        self._warned.add(series)
                        warnings.warn(f"series {series}: slice {idx} is missing, using slice {j} "
                                      f"(nearest toward {toward}); further fallbacks in this series "
                                      f"are counted in SliceReader.fallbacks", stacklevel=3)
                    return j
        path = slice_path(self.root, series, idx)
        if not files:
            raise SliceReadError(f"slice file not found (series folder missing or empty): {path}")
        where = "" if toward is None else f" and no slice exists between it and slice {toward}"
        raise SliceReadError(f"slice file not found: {path}{where}")

    # ------------------------------------------------------------ reading
    def read_hu(self, series: str, slice_index: int, toward: int | None = None) -> np.ndarray:
        """``(H, W)`` int16 HU of a slice (read-only); see :meth:`resolve` for ``toward``."""
        idx = self.resolve(series, slice_index, toward)
        if self.cache_dir is not None:
            vol, pos = self._volume(series)
            return vol[pos[idx]]
        key = (series, idx)
        if self._pinned is not None and key in self._pinned:
            return self._pinned[key]
        if self.cache:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                if self._pinned is not None:
                    self._pinned[key] = hit
                return hit
        arr = decode_png(slice_path(self.root, series, idx))
        self.decoded += 1
        arr.flags.writeable = False
        if self._pinned is not None:
            self._pinned[key] = arr
        if self.cache and arr.nbytes <= self.max_cache_bytes:
            self._lru[key] = arr
            self._lru_bytes += arr.nbytes
            while self._lru_bytes > self.max_cache_bytes:
                _, old = self._lru.popitem(last=False)
                self._lru_bytes -= old.nbytes
        return arr

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the in-memory cache (the on-disk cache is not counted)."""
        return self._lru_bytes

    # ------------------------------------------------------------ on-disk pre-pass
    def _signature(self, series: str) -> str:
        files = self._files(series)
        h = hashlib.sha1()
        for idx in sorted(files):
            st = files[idx]
            h.update(f"{idx}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()[:16]

    def _cache_paths(self, series: str) -> tuple[Path, Path]:
        assert self.cache_dir is not None
        sig = self._signature(series)
        return (self.cache_dir / f"{series}.{sig}.hu.npy", self.cache_dir / f"{series}.{sig}.idx.npy")

    def prepare_series(self, series: str) -> Path:
        """Build (if needed) the on-disk cache of ``series``; returns the ``.hu.npy`` path."""
        if self.cache_dir is None:
            raise ValueError("prepare_series needs a SliceReader with cache_dir")
        hu_path, idx_path = self._cache_paths(series)
        if hu_path.is_file() and idx_path.is_file():
            return hu_path
        indices = self.available_slices(series)
        if not indices:
            raise SliceReadError(f"no slices in series folder {self.series_dir(series)}")
        first = decode_png(slice_path(self.root, series, indices[0]))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for old in self.cache_dir.glob(f"{series}.*.npy"):     # stale versions of this series
            if old not in (hu_path, idx_path):
                old.unlink(missing_ok=True)
        tmp = hu_path.with_name(f".{hu_path.name}.{os.getpid()}.tmp")
        try:
            vol = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16,
                                            shape=(len(indices),) + first.shape)
            vol[0] = first
            for z, idx in enumerate(indices[1:], start=1):
                path = slice_path(self.root, series, idx)
                arr = decode_png(path)
                if arr.shape != first.shape:
                    raise SliceReadError(f"slice shape {arr.shape} differs from the series' "
                                         f"{first.shape}: {path}")
                vol[z] = arr
            self.decoded += len(indices)
            vol.flush()
            del vol
            tmp_idx = idx_path.with_name(f".{idx_path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp_idx, np.asarray(indices, dtype=np.int32))
            os.replace(tmp_idx, idx_path)
            os.replace(tmp, hu_path)        # the .hu.npy last: its presence means "complete"
        finally:
            tmp.unlink(missing_ok=True)
        return hu_path

    def _volume(self, series: str) -> tuple[np.ndarray, dict[int, int]]:
        got = self._volumes.get(series)
        if got is None:
            hu_path = self.prepare_series(series)
            idx_path = hu_path.with_name(hu_path.name.replace(".hu.npy", ".idx.npy"))
            vol = np.load(hu_path, mmap_mode="r")
            indices = np.load(idx_path)
            got = (vol, {int(i): z for z, i in enumerate(indices)})
            self._volumes[series] = got
        return got


class VolumeReader:
    """The :class:`SliceReader` interface over one CT volume in memory: slice ``first + z`` of
    series ``series`` is ``hu[z]``, a slice outside the volume falls back to the nearest one toward
    the sample's centre (as a missing PNG does).  The volume lives in shared memory (a torch
    tensor), so loader workers receive a handle to it, not a copy.
    """

    def __init__(self, series: str, hu: np.ndarray, first: int = 1):
        import torch

        self.series, self.first = series, int(first)
        self._hu = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.int16)).share_memory_()
        self.fallbacks = 0
        self.decoded = 0

    def resolve(self, series: str, slice_index: int, toward: int | None = None) -> int:
        if series != self.series:
            raise SliceReadError(f"series {series} is not the volume in memory ({self.series})")
        idx, lo, hi = int(slice_index), self.first, self.first + self._hu.shape[0] - 1
        if lo <= idx <= hi:
            return idx
        if toward is None or not lo <= int(toward) <= hi:
            raise SliceReadError(f"slice {idx} of series {series} is outside the volume ({lo}..{hi})")
        self.fallbacks += 1
        return min(max(idx, lo), hi)

    def read_hu(self, series: str, slice_index: int, toward: int | None = None) -> np.ndarray:
        """``(H, W)`` int16 HU of a slice (read-only)."""
        arr = self._hu[self.resolve(series, slice_index, toward) - self.first].numpy()
        arr.flags.writeable = False
        return arr

    @contextlib.contextmanager
    def pinned(self) -> Iterator["VolumeReader"]:
        yield self                          # nothing to decode: every slice is in memory already
