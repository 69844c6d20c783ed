"""Declared pipeline stages and the one runner that owns their state.

A :class:`Stage` says what it reads and writes: the config keys its outputs depend on, its
input files (named inputs such as ``annotations`` or paths in the run folder written by an
earlier stage) and its outputs.  The :class:`StageRunner` alone

* derives each stage's fingerprint from that declaration (:meth:`StageRunner.fingerprint`):
  the stage's name, the declared config values (``data``/``train`` sections without their
  run-only settings, see :data:`lesionprop.config.RUN_ONLY_SETTINGS`) and a content hash of
  every declared input;
* skips a stage whose marker ``RUN/stages/NAME.json`` holds that fingerprint and whose outputs
  exist; markers are written atomically after the outputs, so a killed run never leaves a
  stage marked done with missing or partial outputs;
* tells a stage whether it may continue earlier work (``StageContext.resume``: it was started
  before with the same fingerprint and not finished, e.g. a training killed half-way) and
  otherwise empties the stage's own folder (``Stage.workdir``) before it starts;
* holds the run folder's lock (one pipeline per run folder);
* knows about ``torchrun`` ranks: rank 0 decides what is done and writes every marker;
  ``ranks="all"`` stages (trainings, predictions) run on every rank, ``ranks="main"`` stages
  (data, label sets, report) on rank 0 while the others wait, and an error on rank 0 ends
  every rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from lesionprop.config import RUN_ONLY_SETTINGS, Config
from lesionprop.data.layout import IMAGES_DIR
from lesionprop.engine.distributed import broadcast_object
from lesionprop.errors import LesionpropError
from lesionprop.fileio import atomic_write, exclusive_lock

#: the run folder's lock file (one pipeline per run folder)
LOCK_FILE = ".pipeline.lock"
MARKER_DIR = "stages"


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


def config_part(cfg: Config, key: str) -> Any:
    """The value of a dotted config key, or of a whole section without its run-only settings
    (``data``: workers and caches; ``train``: logging and checkpoint intervals)."""
    section, _, name = key.partition(".")
    if not hasattr(cfg, section):
        raise KeyError(f"stage declaration names an unknown config section {section!r}")
    values = cfg.to_dict()[section]
    if name:
        if name not in values:
            raise KeyError(f"stage declaration names an unknown config key {key!r}")
        return values[name]
    return {k: v for k, v in values.items() if k not in RUN_ONLY_SETTINGS.get(section, ())}


@dataclass(frozen=True)
class StageContext:
    """What a stage body gets (picklable: side-by-side trainings run it in another process)."""

    cfg: Config
    run_dir: Path
    sources: dict[str, str | None]          # named inputs -> their paths (None: absent, e.g. no truth)
    resume: bool = False                    # continue earlier work of the same fingerprint
    params: dict[str, Any] = field(default_factory=dict)
    device: str | None = None               # e.g. cuda:1 for the second of several side-by-side trainings
    threads: int | None = None              # CPU threads of a side-by-side training
    progress: bool = True

    def path(self, name: str) -> Path:
        """A named input (``annotations``, ``truth``, ``label:NAME``) or a path in the run folder."""
        if name in self.sources:
            p = self.sources[name]
            return Path(p) if p is not None else Path(os.devnull)
        return self.run_dir / name


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline and everything its outputs depend on.

    ``config``: dotted keys or whole sections (see :func:`config_part`).  ``inputs``: named
    inputs (keys of the runner's ``sources``, plus ``dataset`` for :func:`dataset_fingerprint`)
    or paths relative to the run folder.  ``outputs``: paths relative to the run folder.
    ``workdir``: a folder the stage owns, emptied before a fresh (not resumed) start.
    ``ranks``: ``all`` (every torchrun rank runs the body) or ``main`` (rank 0 only).
    ``group``: consecutive stages of one group may run side by side (trainings).
    ``constants``: further values the outputs depend on (e.g. the report's bootstrap settings).
    """

    name: str
    run: Callable[[StageContext], dict[str, Any] | None]
    config: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    workdir: str | None = None
    ranks: str = "main"
    group: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    constants: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.ranks not in ("all", "main"):
            raise ValueError(f"stage {self.name}: ranks must be 'all' or 'main', got {self.ranks!r}")


@dataclass
class StageRecord:
    name: str
    fingerprint: str
    outputs: list[str]
    seconds: float
    info: dict[str, Any]


class StageFailed(LesionpropError):
    """A ``main`` stage failed on rank 0: the other ranks stop with this."""


class StageRunner:
    """Runs declared stages under ``run_dir`` with skip-if-done semantics (module docstring).

    ``sources``: named input files (``annotations``, ``truth``, ...); ``data_root``: the dataset
    root that the ``dataset`` input fingerprints.  Use as a context manager to hold the run
    folder's lock for the whole run.
    """

    def __init__(self, run_dir: str | os.PathLike, cfg: Config, *, sources: Mapping[str, str | os.PathLike | None]
                 = (), data_root: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                 rank: int = 0, world: int = 1):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.sources = {k: (str(v) if v is not None else None) for k, v in dict(sources).items()}
        self.data_root = Path(data_root) if data_root is not None else None
        self.log = log if rank == 0 else (lambda s: None)
        self.rank, self.world = rank, world
        self.records: dict[str, StageRecord] = {}
        self._hashes: dict[tuple[str, int, int], str] = {}

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def locked(self, timeout_s: float = 1.0) -> Iterator["StageRunner"]:
        """Hold the run folder's lock (rank 0; the other ranks follow rank 0's outcome)."""
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock = exclusive_lock(self.run_dir / LOCK_FILE, timeout_s,
                                  f"another lesionprop pipeline is running in {self.run_dir}: let it finish, "
                                  "or choose another --out")
            try:
                lock.__enter__()
            except LesionpropError as exc:
                self._share(str(exc))
                raise
            self._share(None)
            try:
                yield self
            finally:
                lock.__exit__(None, None, None)
        else:
            error = self._share(None)
            if error is not None:
                raise StageFailed(error)
            yield self

    # ------------------------------------------------------------------ fingerprints
    def _file_hash(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._hashes:
            self._hashes[key] = hash_file(path)
        return self._hashes[key]

    def input_digest(self, name: str) -> str | None:
        if name == "dataset":
            if self.data_root is None or self.sources.get("annotations") is None:
                raise KeyError("the 'dataset' input needs the runner's data_root and an 'annotations' source")
            return dataset_fingerprint(self.data_root, self.sources["annotations"])
        if name in self.sources:
            p = self.sources[name]
            return None if p is None or not Path(p).is_file() else self._file_hash(Path(p))
        p = self.run_dir / name
        if not p.is_file():
            raise RuntimeError(f"{p} is missing: an earlier stage should have written it (a stage declares "
                               f"it as an input but no stage before it outputs it)")
        return self._file_hash(p)

    def fingerprint(self, stage: Stage) -> str:
        return hash_object({"stage": stage.name,
                            "config": {k: config_part(self.cfg, k) for k in stage.config},
                            "inputs": {k: self.input_digest(k) for k in stage.inputs},
                            "constants": list(stage.constants)})

    # ------------------------------------------------------------------ markers
    def _marker(self, name: str, suffix: str = "") -> Path:
        return self.run_dir / MARKER_DIR / f"{name}{suffix}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, stage: Stage, fingerprint: str) -> bool:
        rec = self._read(self._marker(stage.name))
        return bool(rec and rec.get("fingerprint") == fingerprint
                    and all((self.run_dir / o).exists() for o in stage.outputs))

    def _started_with(self, stage: Stage, fingerprint: str) -> bool:
        rec = self._read(self._marker(stage.name, ".started"))
        return bool(rec and rec.get("fingerprint") == fingerprint)

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            json.dump(record, fh, indent=2, default=str)

    # ------------------------------------------------------------------ running
    def plan(self, stage: Stage) -> tuple[str, bool, bool]:
        """``(fingerprint, done, resume)`` as rank 0 sees them, on every rank."""
        decision = None
        if self.rank == 0:
            fp = self.fingerprint(stage)
            done = self.is_done(stage, fp)
            decision = (fp, done, (not done) and self._started_with(stage, fp))
        return self._share(decision)

    def skip(self, stage: Stage, fingerprint: str) -> dict[str, Any]:
        rec = self._read(self._marker(stage.name)) if self.rank == 0 else None
        rec = self._share(rec) or {}
        self.log(f"[{stage.name}] up to date, skipped")
        self.records[stage.name] = StageRecord(stage.name, fingerprint, rec.get("outputs", []),
                                               rec.get("seconds", 0.0), rec.get("info", {}))
        return rec.get("info", {})

    def start(self, stage: Stage, fingerprint: str, resume: bool) -> StageContext:
        """Rank 0: empty the stage's folder unless it resumes, and record the start."""
        if self.rank == 0:
            if stage.workdir and not resume:
                shutil.rmtree(self.run_dir / stage.workdir, ignore_errors=True)
            self._write(self._marker(stage.name, ".started"), {"fingerprint": fingerprint})
            self.log(f"[{stage.name}] running")
            if resume:
                self.log(f"[{stage.name}] continues its earlier start (same fingerprint)")
        return StageContext(self.cfg, self.run_dir, dict(self.sources), resume, dict(stage.params))

    def finish(self, stage: Stage, fingerprint: str, seconds: float, info: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0: check the outputs and write the marker; every rank returns rank 0's info."""
        info = info or {}
        if self.rank == 0:
            missing = [o for o in stage.outputs if not (self.run_dir / o).exists()]
            if missing:
                raise RuntimeError(f"stage {stage.name} finished without writing {', '.join(missing)}")
            rec = StageRecord(stage.name, fingerprint, list(stage.outputs), round(seconds, 3), info)
            self._write(self._marker(stage.name), dataclasses.asdict(rec))
            self._marker(stage.name, ".started").unlink(missing_ok=True)
            self.records[stage.name] = rec
            self.log(f"[{stage.name}] done in {seconds:.1f} s")
        return self._share(info)

    def run(self, stage: Stage) -> dict[str, Any]:
        """Run ``stage`` unless it is done with its current fingerprint; return its info dict."""
        fp, done, resume = self.plan(stage)
        if done:
            return self.skip(stage, fp)
        ctx = self.start(stage, fp, resume)
        t0 = time.time()
        if stage.ranks == "all":
            self._barrier()
            info = stage.run(ctx)
            self._barrier()
        else:
            info = self.on_main(lambda: stage.run(ctx), f"stage {stage.name}")
        return self.finish(stage, fp, time.time() - t0, info)

    # ------------------------------------------------------------------ ranks
    def on_main(self, fn: Callable[[], Any], what: str = "a pipeline step") -> Any:
        """``fn()`` on rank 0 while the other ranks wait; its result on every rank.  An error on
        rank 0 is raised there and ends the other ranks with :class:`StageFailed`."""
        if self.world == 1:
            return fn()
        if self.rank == 0:
            try:
                out = fn()
            except BaseException as exc:
                self._share((False, f"{what} failed on rank 0: {type(exc).__name__}: {exc}"))
                raise
            return self._share((True, out))[1]
        ok, out = self._share(None)
        if not ok:
            raise StageFailed(out)
        return out

    def _share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (itself without a process group)."""
        if self.world == 1:
            return obj

        return broadcast_object(obj)

    def _barrier(self) -> None:
        if self.world > 1:
            from lesionprop.engine.distributed import barrier

            barrier()
