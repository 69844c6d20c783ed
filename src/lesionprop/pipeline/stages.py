"""Resumable pipeline stages.

A stage is skipped on rerun when its marker ``RUN/stages/NAME.json`` holds the
same fingerprint (a hash of its input files and its part of the config) and its
outputs exist.  Markers are written atomically after the outputs, so a killed
run never leaves a stage marked done with missing or partial outputs; stages
that can continue (training) are resumed rather than restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from lesionprop.data.layout import IMAGES_DIR
from lesionprop.fileio import atomic_write


def hash_object(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(root: str | os.PathLike, annotations: str | os.PathLike) -> str:
    """What the pipeline's stages depend on in a dataset, cheaply (a rerun on DeepLesion's
    ~900,000 PNGs must not stat every file).

    Hashes the annotation file and ``ROOT/series_info.csv`` (contents), and the name and
    modification time of every series folder under ``ROOT/Images_png`` (one stat per series,
    ~10,000 for DeepLesion).  A folder's modification time changes when a slice file is
    added, removed or renamed in it, and so also when a slice is rewritten atomically (a
    temporary file renamed over it, as every lesionprop writer does).  Not seen: a PNG
    rewritten in place under the same name by another tool; touch its series folder then.
    """
    root = Path(root)
    folders = []
    try:
        with os.scandir(root / IMAGES_DIR) as it:
            folders = sorted((e.name, e.stat().st_mtime_ns) for e in it if e.is_dir())
    except FileNotFoundError:
        pass
    info = root / "series_info.csv"
    return hash_object(["dataset", hash_file(annotations), hash_file(info) if info.is_file() else None, folders])


@dataclass
class StageRecord:
    name: str
    fingerprint: str
    outputs: list[str]
    seconds: float
    info: dict[str, Any]


class StageRunner:
    """Runs named stages under ``run_dir`` with skip-if-done semantics."""

    def __init__(self, run_dir: str | os.PathLike, log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.marker_dir = self.run_dir / "stages"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.records: dict[str, StageRecord] = {}

    def _marker(self, name: str) -> Path:
        return self.marker_dir / f"{name}.json"

    def is_done(self, name: str, fingerprint: str, outputs: Iterable[Path]) -> bool:
        m = self._marker(name)
        if not m.is_file():
            return False
        try:
            rec = json.loads(m.read_text())
        except json.JSONDecodeError:
            return False
        return rec.get("fingerprint") == fingerprint and all(Path(o).exists() for o in outputs)

    def run(self, name: str, fingerprint: str, outputs: list[Path],
            fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """Run ``fn`` unless the stage is done with this fingerprint; return its info dict."""
        outputs = [Path(o) for o in outputs]
        if self.is_done(name, fingerprint, outputs):
            rec = json.loads(self._marker(name).read_text())
            self.log(f"[{name}] up to date, skipped")
            self.records[name] = StageRecord(name, fingerprint, rec["outputs"], rec["seconds"], rec.get("info", {}))
            return rec.get("info", {})
        self.log(f"[{name}] running")
        t0 = time.time()
        info = fn() or {}
        missing = [str(o) for o in outputs if not o.exists()]
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {', '.join(missing)}")
        self.mark(name, fingerprint, outputs, time.time() - t0, info)
        return info

    def mark(self, name: str, fingerprint: str, outputs: list[Path], seconds: float,
             info: dict[str, Any]) -> None:
        """Record stage ``name`` as done (its outputs exist)."""
        rec = StageRecord(name, fingerprint, [str(o) for o in outputs], seconds, info)
        with atomic_write(self._marker(name)) as fh:
            json.dump(rec.__dict__, fh, indent=2, default=str)
        self.records[name] = rec
        self.log(f"[{name}] done in {seconds:.1f} s")
