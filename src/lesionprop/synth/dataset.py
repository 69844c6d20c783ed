"""Synthetic DeepLesion-format datasets with complete truth (``lesionprop synth``).

Writes into ``OUT``::

    Images_png/PPPPPP_SS_SS/III.png   16-bit PNG (HU + 32768), III = 001 ... (001 most superior)
    DL_info.csv                       labels, DeepLesion's 18 columns, one row per annotated lesion
    truth.csv                         18 columns + Lesion_id: EVERY lesion on EVERY slice it appears on
    series_info.csv                   spacing / size / slice range of every series
    lesions.csv                       one row per lesion: id, key slice, labeled, true type, sizes
    preview.png                       (with --preview) slices with truth boxes

Boxes are in the file frame (1-based, see :mod:`lesionprop.boxes`), drawn by one
function (:func:`lesionprop.synth.series.mask_box`) for labels and truth, so a
label row equals the truth row of its lesion on the key slice (all 18 fields).
The truth rows follow the label rules too (type -1 on train, same Possibly_noisy);
the true type of every lesion is in ``lesions.csv``.  ``docs/synthetic.md``
documents every choice and its DeepLesion counterpart.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lesionprop.annotations import Lesion, write_annotations
from lesionprop.data.deeplesion import SeriesInfo, read_series_info, write_series_info
from lesionprop.data.layout import IMAGES_DIR, series_name, slice_file_name
from lesionprop.data.volumes import load_ct, load_label_volume
from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write
from lesionprop.synth import phantom as ph
from lesionprop.synth.policy import PolicyLesion, choose_unlabeled
from lesionprop.synth.preview import write_preview
from lesionprop.synth.series import SeriesResult, SeriesTask, make_series

# DeepLesion: 48.3% of series at 1 mm, 48.9% at 5 mm; the rest (0.25-22.5 mm) is represented by 2 mm
DEFAULT_INTERVALS: tuple[tuple[float, float], ...] = ((1.0, 0.48), (2.0, 0.03), (5.0, 0.49))
_OUTPUTS = ("DL_info.csv", "truth.csv", "series_info.csv", "lesions.csv", "preview.png")
_TISSUE_NAMES = {getattr(ph, n): n.lower() for n in ("FAT", "MUSCLE", "LIVER", "SPLEEN", "KIDNEY", "BONE", "MARROW",
                                                     "LUNG", "GAS", "BOWEL", "HEART", "VESSEL", "BLADDER", "SKIN",
                                                     "CANAL", "DISC", "SOFT")}


@dataclass(frozen=True)
class SynthOptions:
    image_size: int = 512                  # px; the field of view stays 310-500 mm, so spacing scales
    fov_mm: tuple[float, float] = (310.0, 500.0)   # 0.6-0.98 mm pixels at 512 px
    intervals: tuple[tuple[float, float], ...] = DEFAULT_INTERVALS
    z_extent_mm: float = 60.0              # DeepLesion releases about +-30 mm around key slices
    max_slices: int | None = None          # cap on slices per series (fewer slices for thin series)
    lesions_per_series: float = 3.0        # mean; 1 + Poisson(mean - 1), at most 10
    near_share: float = 0.35               # chance a lesion is placed next to an earlier one
    unlabeled_share: float = 0.3           # share of lesions left unannotated, every split
    on_key_share: float = 0.5              # of those, share chosen on another lesion's key slice
    noisy_share: float = 0.02              # test labels flagged Possibly_noisy = 1
    box_pad: float = 5.0                   # px at 512 px, scaled with image_size
    noise_hu: float = 12.0
    diameter_mu: float = ph.LESION_LOGNORMAL_MU
    diameter_sigma: float = ph.LESION_LOGNORMAL_SIGMA
    organ_labels: tuple[int, ...] = (5,)
    split_shares: tuple[float, float, float] = (0.7, 0.15, 0.15)   # patients to train / val / test
    workers: int = 0                       # 0: min(cpu count, 4); 1: no pool
    preview: bool = False
    progress: bool = True
    overwrite: bool = False


@dataclass
class SynthSummary:
    out: str
    series: int
    patients: int
    slices: int
    lesions: int
    labeled: int
    unlabeled: int
    unlabeled_on_key: int
    truth_rows: int
    dropped_lesions: int
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    intervals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0               # CPU time of the series generation, all workers together

    def __str__(self) -> str:
        share = self.unlabeled / max(self.lesions, 1)
        lines = [f"synthetic dataset {self.out}: {self.series} series of {self.patients} patients, "
                 f"{self.slices} slices, {self.lesions} lesions ({self.labeled} labeled, {self.unlabeled} unlabeled "
                 f"= {share:.0%}, {self.unlabeled_on_key} of them on another lesion's key slice), "
                 f"{self.truth_rows} truth rows, {self.seconds:.1f} s ({self.cpu_seconds:.1f} CPU s in series workers)",
                 "slice intervals: " + ", ".join(f"{k} mm: {v}" for k, v in self.intervals.items())]
        for name, d in self.splits.items():
            lines.append(f"  {name:5s}: " + ", ".join(f"{k} {v}" for k, v in d.items()))
        return "\n".join(lines)


def make_options(**options: Any) -> SynthOptions:
    """:class:`SynthOptions` from keyword arguments, with checks that name the bad value."""
    known = {f.name for f in fields(SynthOptions)}
    unknown = set(options) - known
    if unknown:
        raise InputError(f"unknown synth option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if "intervals" in options:
        iv = options["intervals"]
        iv = list(iv.items()) if isinstance(iv, dict) else list(iv)
        options["intervals"] = tuple((float(a), float(b)) for a, b in iv)
    for key in ("fov_mm", "organ_labels", "split_shares"):
        if key in options and options[key] is not None:
            options[key] = tuple(options[key])
    opt = SynthOptions(**options)
    if not 32 <= opt.image_size <= 1024:
        raise InputError(f"image_size must be in 32..1024, got {opt.image_size}")
    if not opt.intervals or any(a <= 0 or b < 0 for a, b in opt.intervals) or sum(b for _, b in opt.intervals) <= 0:
        raise InputError(f"intervals must be (mm > 0, weight >= 0) pairs with a positive total, got {opt.intervals}")
    if opt.z_extent_mm <= 0 or (opt.max_slices is not None and opt.max_slices < 1):
        raise InputError(f"z_extent_mm must be > 0 and max_slices >= 1, got {opt.z_extent_mm}, {opt.max_slices}")
    for name in ("unlabeled_share", "on_key_share", "noisy_share", "near_share"):
        if not 0 <= getattr(opt, name) <= 1 or (name == "unlabeled_share" and opt.unlabeled_share >= 1):
            raise InputError(f"{name} must be within [0, 1), got {getattr(opt, name)}")
    shares = opt.split_shares
    if len(shares) != 3 or any(not x >= 0 for x in shares) or not shares[0] > 0:
        raise InputError(f"split_shares must be three shares (train, val, test) >= 0 with train > 0, got {shares}")
    if opt.lesions_per_series < 1:
        raise InputError(f"lesions_per_series must be >= 1, got {opt.lesions_per_series}")
    return opt


def _patients(rng: np.random.Generator, n_series: int) -> list[tuple[int, int, int]]:
    """(patient, study, series id) for ``n_series`` series: 1-3 studies per patient, 1-2 series per study."""
    out: list[tuple[int, int, int]] = []
    patient = 0
    while len(out) < n_series:
        patient += 1
        for study in range(1, 1 + int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))):
            for sid in range(1, 1 + (2 if rng.random() < 0.15 else 1)):
                out.append((patient, study, sid))
    return out[:n_series]


def _split_patients(rng: np.random.Generator, n_patients: int,
                    shares: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[int, int]:
    """Patient -> split code (1 train, 2 val, 3 test) in proportion to ``shares`` (train, val, test).

    Val and test get ``round(share * n_patients)`` patients each, at least one when their share is
    positive and there are 3 patients or more; train keeps the rest (at least one patient).
    The default ~70/15/15 draws the same permutation as before the shares existed.
    """
    order = rng.permutation(np.arange(1, n_patients + 1))
    total = float(sum(shares))

    def count(share: float) -> int:
        return max(1, int(round(share / total * n_patients))) if n_patients >= 3 and share > 0 else 0

    n_val, n_test = count(shares[1]), count(shares[2])
    while n_val + n_test > n_patients - 1 and n_val + n_test > 0:     # keep a training patient
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    split = {int(p): 1 for p in order}
    for p in order[:n_test]:
        split[int(p)] = 3
    for p in order[n_test:n_test + n_val]:
        split[int(p)] = 2
    return split


_BANK: dict[tuple[int, int], np.ndarray] = {}
_BACKGROUND: Any = None


def _init_worker(background: Any) -> None:
    global _BACKGROUND
    _BACKGROUND = background


def _init_pool_worker(background: Any) -> None:
    cv2.setNumThreads(1)        # one process per core already
    _init_worker(background)


def _run_task(task: SeriesTask) -> SeriesResult:
    # one noise bank per dataset seed (the high bits of every task seed) and image size, shared by its series
    t0 = time.process_time()
    key = (task.seed >> 32, max(1024, 2 * task.image_size))
    if key not in _BANK:
        _BANK[key] = ph.noise_bank(*key)
    result = make_series(task, _BANK[key], _BACKGROUND)
    result.cpu_seconds = time.process_time() - t0
    return result


def _load_background(background, organ_mask) -> Any:
    if background is None:
        if organ_mask is not None:
            raise InputError("--organ-mask needs --background")
        return None
    vol = load_ct(background)
    organs = None
    if organ_mask is not None:
        organs, sp = load_label_volume(organ_mask)
        if organs.shape != vol.hu.shape or not np.allclose(sp, vol.spacing, rtol=1e-3):
            raise InputError(f"organ mask {organ_mask} (shape {organs.shape}, spacing {sp}) does not match "
                             f"background {background} (shape {vol.hu.shape}, spacing {vol.spacing})")
    return vol.hu, vol.spacing, organs


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"output folder {out} is not empty (use --overwrite to replace a synthetic dataset)")
        info = out / "series_info.csv"
        synthetic = (out / "lesions.csv").is_file() and info.is_file() and \
            all(r.source == "synth" for r in read_series_info(info).values())
        if (out / IMAGES_DIR).exists() and not synthetic:
            raise InputError(f"refusing to replace {out}: it is not a dataset written by lesionprop synth "
                             "(no lesions.csv, or series_info.csv lists non-synthetic series)")
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_dataset(out: str | os.PathLike, series: int = 100, seed: int = 0, background: str | None = None,
                     organ_mask: str | None = None, **options: Any) -> SynthSummary:
    """Write a synthetic DeepLesion-format dataset into ``out`` (see module docstring)."""
    t0 = time.perf_counter()
    opt = make_options(**options)
    if series < 1:
        raise InputError(f"series must be >= 1, got {series}")
    if not 0 <= seed < 2 ** 31:
        raise InputError(f"seed must be in 0..2**31-1, got {seed}")
    out = Path(out)
    bg = _load_background(background, organ_mask)
    _prepare_out(out, opt.overwrite)
    rng = np.random.default_rng([seed, 1])
    names = _patients(rng, series)
    n_patients = names[-1][0]
    split_of = _split_patients(rng, n_patients, opt.split_shares)
    demo = {p: ("M" if rng.random() < 0.5 else "F", float(rng.integers(20, 86))) for p in range(1, n_patients + 1)}
    fov_lo, fov_hi = opt.fov_mm
    if bg is not None:      # a real body should fit the field of view: at least the background's own width
        fov_lo = min(fov_hi, max(fov_lo, bg[0].shape[2] * bg[1][0]))
    ivals = np.array([a for a, _ in opt.intervals])
    weights = np.array([b for _, b in opt.intervals])
    tasks = []
    for i, (p, st, sid) in enumerate(names):
        r = np.random.default_rng([seed, 2, i])
        dz = float(ivals[int(r.choice(len(ivals), p=weights / weights.sum()))])
        n = max(3, int(round(opt.z_extent_mm / dz)))
        if opt.max_slices is not None:
            n = min(n, opt.max_slices)
        fov = float(np.round(r.uniform(fov_lo, fov_hi) * 2) / 2)
        n_les = int(min(10, 1 + r.poisson(opt.lesions_per_series - 1)))
        tasks.append(SeriesTask(i, series_name(p, st, sid), p, (seed << 32) | int(r.integers(2 ** 31)), str(out),
                                opt.image_size, dz, fov, n, n_les, opt.near_share, opt.box_pad, opt.noise_hu,
                                opt.diameter_mu, opt.diameter_sigma, tuple(opt.organ_labels or ())))
    results = _run_all(tasks, bg, opt)
    summary = _write_tables(out, results, names, split_of, demo, opt, np.random.default_rng([seed, 3]))
    if opt.preview:
        write_preview(out, out / "preview.png")
    summary.seconds = time.perf_counter() - t0
    summary.cpu_seconds = sum(r.cpu_seconds for r in results)
    return summary


def _run_all(tasks: list[SeriesTask], bg: Any, opt: SynthOptions) -> list[SeriesResult]:
    from tqdm.auto import tqdm

    workers = opt.workers or min(os.cpu_count() or 1, 4)
    workers = min(workers, len(tasks))
    bar = tqdm(total=len(tasks), desc="synth series", unit="series", disable=not opt.progress)
    try:
        if workers <= 1:
            _init_worker(bg)
            results = []
            for t in tasks:
                results.append(_run_task(t))
                bar.update()
            return results
        # fresh worker processes (no fork of a parent that may hold OpenCV / torch thread pools).  An
        # executor, not mp.Pool: a worker that dies while starting is an error here, where a Pool
        # would start it again for ever (a script without the __main__ guard hung that way)
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(bg,)) as pool:
            results = []
            try:
                for r in pool.map(_run_task, tasks):
                    results.append(r)
                    bar.update()
            except BrokenProcessPool as exc:
                raise RuntimeError(
                    f"a synth worker process died ({exc}). Each of the {workers} workers imports the main "
                    "script: from a script, call generate_dataset under `if __name__ == \"__main__\":` "
                    "(or pass workers=1: no worker processes); otherwise a worker may have run out of "
                    "memory") from exc
            return results
    finally:
        bar.close()


def _write_tables(out: Path, results: list[SeriesResult], names, split_of, demo, opt: SynthOptions,
                  rng: np.random.Generator) -> SynthSummary:
    gid = 0
    flat = []                                   # (gid, series result, lesion, patient, study, sid)
    for res, (p, st, sid) in zip(results, names):
        for les in res.lesions:
            gid += 1
            flat.append((gid, res, les, p, st, sid))
    pol = [PolicyLesion(g, r.name, split_of[p], les.key_slice, frozenset(les.boxes)) for g, r, les, p, _, _ in flat]
    unlabeled, _ = choose_unlabeled(pol, opt.unlabeled_share, opt.on_key_share, rng)
    # unlabeled lesions visible on the key slice of a labeled lesion (what missing-annotation mining can find)
    labeled_keys = {(x.series, x.key_slice) for x in pol if x.gid not in unlabeled}
    on_key = {x.gid for x in pol if x.gid in unlabeled and any((x.series, z) in labeled_keys for z in x.slices)}
    test_labeled = [g for g, r, les, p, _, _ in flat if split_of[p] == 3 and g not in unlabeled]
    n_noisy = int(round(opt.noisy_share * len(test_labeled)))
    noisy = set(rng.choice(test_labeled, size=n_noisy, replace=False).tolist()) if n_noisy else set()
    labels, truth, lesion_rows = [], [], []
    for g, res, les, p, st, sid in flat:
        split = split_of[p]
        gender, age0 = demo[p]
        typ = les.lesion_type if split != 1 else -1
        window = (-1500.0, 500.0) if les.lesion_type == 5 else (-175.0, 275.0)
        for z in sorted(les.boxes):
            if z == les.key_slice:
                meas, diam = les.recist, les.diameters
            else:                                   # no RECIST off the key slice: the mask's extent axes
                x1, y1, x2, y2 = les.extents[z]
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                meas = (x1, cy, x2, cy, cx, y1, cx, y2)
                diam = (max(x2 - x1, y2 - y1), min(x2 - x1, y2 - y1))
            b = les.boxes[z]
            loc = ((b[0] + b[2]) / 2 / res.image_size[1], (b[1] + b[3]) / 2 / res.image_size[0], les.location[2])
            row = Lesion(slice_file_name(res.name, z), p, st, sid, z, tuple(round(v, 4) for v in meas),
                         tuple(round(v, 4) for v in b), tuple(round(v, 4) for v in diam), loc, typ,
                         int(g in noisy), res.slice_range, res.spacing, res.image_size, window, gender,
                         age0 + st - 1, split, extras={"Lesion_id": str(g)})
            truth.append(row)
            if z == les.key_slice and g not in unlabeled:
                labels.append(row)
        sp = res.spacing
        lesion_rows.append([g, res.name, les.key_slice, int(g not in unlabeled), int(g in on_key), split,
                            les.lesion_type, _TISSUE_NAMES.get(les.tissue, str(les.tissue)), f"{les.long_mm:.2f}",
                            f"{les.diameters[0] * sp[0]:.2f}", f"{les.diameters[1] * sp[0]:.2f}",
                            les.areas[les.key_slice], min(les.boxes), max(les.boxes), int(g in noisy)])
    labels.sort(key=lambda r: (r.file_name, int(r.extras["Lesion_id"])))
    truth.sort(key=lambda r: (r.file_name, int(r.extras["Lesion_id"])))
    write_annotations(out / "DL_info.csv", labels, with_source=False, extra_columns=())
    write_annotations(out / "truth.csv", truth, with_source=False, extra_columns=["Lesion_id"])
    write_series_info(out / "series_info.csv", [SeriesInfo(r.name, r.spacing, r.image_size, r.slice_range, "synth")
                                                for r in results])
    with atomic_write(out / "lesions.csv") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["Lesion_id", "Series", "Key_slice_index", "Labeled", "On_other_key_slice", "Train_Val_Test",
                    "Lesion_type", "Tissue", "Drawn_long_diameter_mm", "Recist_long_mm", "Recist_short_mm",
                    "Key_area_px", "First_slice", "Last_slice", "Possibly_noisy"])
        w.writerows(lesion_rows)
    splits: dict[str, dict[str, int]] = {}
    for code, name in ((1, "train"), (2, "val"), (3, "test")):
        ids = [g for g, r, les, p, _, _ in flat if split_of[p] == code]
        splits[name] = {"patients": sum(1 for v in split_of.values() if v == code),
                        "series": sum(1 for r, n in zip(results, names) if split_of[n[0]] == code),
                        "lesions": len(ids), "labeled": sum(1 for g in ids if g not in unlabeled)}
    ivals: dict[str, int] = {}
    for r in results:
        k = f"{r.spacing[2]:g}"
        ivals[k] = ivals.get(k, 0) + 1
    return SynthSummary(str(out), len(results), len(split_of), sum(r.slice_range[1] for r in results), len(flat),
                        len(flat) - len(unlabeled), len(unlabeled), len(on_key), len(truth),
                        sum(r.dropped for r in results), splits,
                        dict(sorted(ivals.items(), key=lambda kv: float(kv[0]))))


__all__ = ["generate_dataset", "SynthOptions", "SynthSummary", "make_options", "DEFAULT_INTERVALS"]
