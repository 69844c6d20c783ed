"""``detect`` on a study or a cohort: every CT series under a folder, one result folder each.

:func:`plan_study` finds the series (:func:`lesionprop.data.dicom_scan.scan_folder`: subfolders,
and several series mixed in one folder told apart by SeriesInstanceUID, or by what a series
shares when the UIDs are blank) and names each one's result folder after where it lies:
``OUT/<its folder relative to SRC>/``, plus ``<SeriesNumber>_<SeriesDescription>`` when a folder
holds several series.  :func:`run_study` runs :func:`lesionprop.scan.run.detect_volume` on each
CT series and keeps ``OUT/series.csv`` (one row per series: status, reason, lesions).

Each series is independent: a finished one holds ``run.json`` with a fingerprint of its files,
the checkpoint and the settings, and a rerun with the same ones skips it; ``--shard K/N`` runs
every N-th series (starting at the K-th), so N processes on any machines sharing OUT (a SLURM
array, GNU parallel, a loop of ssh) cover the cohort once; series.csv is updated under a file
lock by each as it goes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lesionprop.data.dicom_scan import DicomScan, SeriesFiles, scan_folder, series_fingerprint, skip_reason
from lesionprop.data.dicom_series import content_uid, load_series
from lesionprop.engine.checkpoint import resolve_checkpoint
from lesionprop.errors import InputError, LesionpropError
from lesionprop.fileio import atomic_write
from lesionprop.scan.run import detect_volume

CSV_COLUMNS = ("series", "status", "lesions", "slices", "series_number", "description", "modality", "series_uid",
               "folder", "message")
DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"


@dataclass
class Entry:
    """One series of the study and its row of series.csv."""

    name: str                          # result folder, relative to OUT
    series: SeriesFiles
    reason: str = ""                   # why it is skipped ('' = a CT series to run)
    row: dict = field(default_factory=dict)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "series"


def plan_study(scan: DicomScan) -> list[Entry]:
    """Name each series' result folder (unique, stable for the same files) and say which are skipped."""
    per_folder: dict[Path, int] = {}
    for s in scan.series:
        per_folder[s.folder] = per_folder.get(s.folder, 0) + 1
    entries, used = [], set()
    for s in scan.series:
        rel = s.folder.relative_to(scan.root) if s.folder != scan.root else Path()
        parts = [_safe(p) for p in rel.parts]
        if per_folder[s.folder] > 1 or not parts:
            parts.append(_safe("_".join(v for v in (s.attr("SeriesNumber"), s.attr("SeriesDescription")) if v)))
        name, n = "/".join(parts), 2
        while name in used:
            name, n = f"{'/'.join(parts)}_{n}", n + 1
        used.add(name)
        reason = (f"unreadable: {s.unreadable[0].path.name}: {s.unreadable[0].reason}" if not s.files
                  else skip_reason(s))
        entries.append(Entry(name, s, reason))
    return entries


def shared_study_uids(entries: list[Entry]) -> dict[str, str]:
    """A generated StudyInstanceUID shared by the series without one that belong together: same
    patient / study attributes and same parent folder.  Series key -> UID."""

    groups: dict[tuple, list[SeriesFiles]] = {}
    for e in entries:
        s = e.series
        if not s.headers or s.attr("StudyInstanceUID"):
            continue
        key = tuple(s.attr(a) for a in ("PatientID", "PatientName", "StudyDate", "StudyTime", "StudyID",
                                        "AccessionNumber")) + (str(s.folder.parent),)
        groups.setdefault(key, []).append(s)
    out = {}
    for members in groups.values():
        uid = content_uid("StudyInstanceUID", *sorted(series_fingerprint(s) for s in members))
        out.update({s.key: uid for s in members})
    return out


def fingerprint(series: SeriesFiles, ckpt: Path, settings) -> str:
    """What a finished result depends on: the series' files, the checkpoint file, the settings."""
    st = ckpt.stat()
    text = json.dumps({"series": series_fingerprint(series), "files": len(series.files),
                       "checkpoint": [str(ckpt.resolve()), st.st_size, st.st_mtime_ns],
                       "settings": asdict(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) -> (K, N); None -> (1, 1)."""
    if text is None:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InputError(f"--shard must be K/N with 1 <= K <= N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _base_row(e: Entry, root: Path) -> dict:
    s = e.series
    return {"series": e.name, "status": PENDING, "lesions": "", "slices": s.frames() if s.headers else "",
            "series_number": s.attr("SeriesNumber"), "description": s.attr("SeriesDescription"),
            "modality": s.attr("Modality"), "series_uid": s.series_uid,
            "folder": str(s.folder.relative_to(root)) if s.folder != root else ".", "message": ""}


def update_series_csv(out: Path, rows: list[dict]) -> Path:
    """Merge ``rows`` into OUT/series.csv by their ``series`` (under a file lock: shards share it)."""
    from filelock import FileLock

    path = out / "series.csv"
    with FileLock(str(out / ".series.csv.lock")):
        known: dict[str, dict] = {}
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                known = {r["series"]: r for r in csv.DictReader(fh)}
        for r in rows:
            if r["status"] != PENDING or r["series"] not in known:
                known[r["series"]] = r
        with atomic_write(path) as fh:
            w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(known[k] for k in sorted(known))
    return path


@dataclass
class StudyResult:
    out: Path
    entries: list[Entry]
    notes: list[str]

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.row.get("status") == status)


def run_study(src: Path, checkpoint, out: Path, settings, *, device: str | None = None, progress: bool = True,
              shard: tuple[int, int] = (1, 1), scan: DicomScan | None = None) -> StudyResult:
    """Every CT series under ``src`` -> ``out/<name>/`` (module docstring); returns the rows."""
    from tqdm.auto import tqdm


    scan = scan_folder(src) if scan is None else scan
    ckpt = resolve_checkpoint(checkpoint)
    entries = plan_study(scan)
    if not entries:
        raise InputError(f"{src}: no DICOM image series found" + (
            f" ({scan.skipped_note().split(': ', 1)[1]})" if scan.skipped else ""))
    study_uids = shared_study_uids(entries)
    out.mkdir(parents=True, exist_ok=True)
    k, n = shard
    mine = [e for i, e in enumerate(entries) if i % n == k - 1]
    for e in entries:
        e.row = _base_row(e, scan.root)
    for e in mine:
        if e.reason:
            e.row.update(status=SKIPPED if not e.reason.startswith("unreadable") else FAILED, message=e.reason)
    update_series_csv(out, [e.row for e in entries])
    todo = [e for e in mine if not e.reason]
    bar = tqdm(todo, desc="detect", unit="series", disable=not progress)
    for e in bar:
        bar.set_postfix_str(e.name, refresh=False)
        folder = out / e.name
        done = folder / "run.json"
        fp = fingerprint(e.series, ckpt, settings)
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp:
            prev = json.loads(done.read_text())
            e.row.update(status=DONE, lesions=prev["lesions"], slices=prev["slices"], message="done earlier")
        else:
            done.unlink(missing_ok=True)
            try:
                vol = load_series(e.series, study_uid=study_uids.get(e.series.key))
                res = detect_volume(vol, e.series.folder, checkpoint, ckpt, folder, settings, device=device,
                                    progress=False)
            except LesionpropError as exc:
                e.row.update(status=FAILED, message=str(exc))
            else:
                e.row.update(status=DONE, lesions=res.lesions, slices=res.slices, message="; ".join(res.notes))
                with atomic_write(done) as fh:
                    json.dump({"fingerprint": fp, "lesions": res.lesions, "slices": res.slices,
                               "series_uid": vol.dicom.ids["SeriesInstanceUID"]}, fh, indent=1)
        update_series_csv(out, [e.row])
    notes = [x for x in (scan.skipped_note(), *scan.notes) if x]
    return StudyResult(out, entries, notes)
