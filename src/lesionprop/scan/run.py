"""``detect``: one CT scan -> 3D lesions -> lesions.csv / .json, lesions.nii.gz, DICOM SEG, index.html.

Steps: load the scan (:func:`lesionprop.data.volumes.load_ct` for a DICOM folder or
NIfTI file, same checks and errors as ``lesionprop import``; or a series folder
``ROOT/Images_png/PPPPPP_SS_SS`` of a DeepLesion-layout dataset), write it in the
DeepLesion layout to a temporary folder (DICOM / NIfTI), predict every slice with
the existing inference (:func:`lesionprop.engine.predict.predict`, progress bar
over slices, TTA), keep boxes scoring ``>= score``, link them into 3D lesions
(:func:`lesionprop.labels.link.link_boxes`), then write the outputs.

Boxes: predictions come back in the FILE frame of the slices; they are converted
once to the pixel frame (``file - 1``) of the display-orientation volume, the
frame :mod:`lesionprop.scan.lesions` works in.  ``predictions.csv`` keeps the
file frame (slice names as in the temporary / source dataset).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lesionprop.boxes import file_to_pixel
from lesionprop.data.volumes import CTVolume, VolumeError, load_ct, spacing_affine
from lesionprop.errors import InputError, MissingInputError

SERIES_NAME = "000001_01_01"


@dataclass
class DetectResult:
    out: Path
    lesions: int
    boxes: int
    slices: int
    seg_segments: int
    hidden: dict[int, tuple[int, ...]] = field(default_factory=dict)   # id -> ids covering it in the label map
    shipped: str | None = None                                          # the shipped detector's name, if used
    seg: dict | None = None                                             # lesions.json's "dicom_seg" (SEG written)


def load_layout_series(folder: Path) -> tuple[CTVolume, Path, str, np.ndarray]:
    """``ROOT/Images_png/SERIES`` -> (volume, ROOT, SERIES, slice numbers); spacing from series_info / DL_info."""
    from lesionprop.annotations import read_annotations, series_geometry
    from lesionprop.data.layout import decode_png, list_slices

    root, series = folder.parent.parent, folder.name
    numbers = np.array(sorted(list_slices(folder)), dtype=np.int64)
    if numbers.size == 0:
        raise VolumeError(f"{folder}: no slice PNGs (III.png)")
    gaps = np.flatnonzero(np.diff(numbers) != 1)
    if gaps.size:
        i = int(gaps[0])
        raise VolumeError(f"{folder}: missing slices between {numbers[i]:03d}.png and {numbers[i + 1]:03d}.png")
    ann = root / "DL_info.csv"
    geometry = series_geometry(root, read_annotations(ann) if ann.is_file() else None)
    if series not in geometry:
        raise VolumeError(f"{folder}: no spacing for series {series} in {root / 'series_info.csv'} or {ann}")
    hu = np.stack([decode_png(folder / f"{k:03d}.png") for k in numbers])
    spacing = tuple(float(v) for v in geometry[series].spacing)
    return (CTVolume(hu, spacing, tuple(str(folder / f"{k:03d}.png") for k in numbers), source="deeplesion",
                     affine=spacing_affine(spacing)), root, series, numbers)


def _source(src: Path) -> str:
    if src.is_dir() and src.parent.name == "Images_png" and any(src.glob("*.png")):
        return "deeplesion"
    return "ct"


def detect(src: str | Path, checkpoint: str | Path, out: str | Path, *, tta: str = "none", score: float = 0.5,
           iou: float = 0.5, max_gap: int = 1, max_lesions: int = 100, device: str | None = None,
           progress: bool = True, seg_memory_gb: float | None = None,
           seg_crop: bool = False) -> DetectResult:
    """Run the whole workflow (module docstring); returns counts.

    ``seg_memory_gb``: memory budget (GiB) of the DICOM SEG's stacked form, default
    :data:`lesionprop.scan.outputs.SEG_MEMORY_GIB`; above it the SEG is written from the
    label volume (:func:`lesionprop.scan.outputs.plan_seg`).  ``seg_crop``: SEG frames cover only
    the lesions' region instead of whole slices (less memory; some viewers mishandle them).
    """
    from lesionprop.data.volumes import write_series
    from lesionprop.engine.checkpoint import resolve_checkpoint, shipped_name
    from lesionprop.engine.predict import predict
    from lesionprop.labels.link import link_boxes
    from lesionprop.predictions import write_predictions
    from lesionprop.scan.lesions import label_coverage, label_volume, lesion_masks, lesion_table, table_rows
    from lesionprop.scan.outputs import plan_seg, write_dicom_seg, write_label_nifti, write_tables

    src, out = Path(src), Path(out)
    if not src.exists():
        raise MissingInputError(f"CT input not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise InputError(f"--out {out} must not be inside the input {src}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a folder")
    ckpt = resolve_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".detect-", dir=out) as tmp:
        if _source(src) == "deeplesion":
            vol, root, series, numbers = load_layout_series(src)
        else:
            vol = load_ct(src)
            root, series = Path(tmp), SERIES_NAME
            write_series(root, series, vol.hu, vol.spacing, source=f"detect:{vol.source}")
            numbers = np.arange(1, vol.hu.shape[0] + 1, dtype=np.int64)
        names = [f"{series}_{k:03d}.png" for k in numbers]
        with warnings.catch_warnings():      # the first / last slice's 3D context repeats the edge slice
            warnings.filterwarnings("ignore", message=r".*is missing, using slice", category=UserWarning)
            preds = predict(ckpt, root, None, tta=tta, file_names=names, device=device, progress=progress)
    keep = preds.scores >= score
    preds = preds.subset(keep)
    write_predictions(out / "predictions.csv", preds.file_names, preds.boxes, preds.scores)
    z = np.searchsorted(numbers, preds.slices)
    boxes = file_to_pixel(preds.boxes)
    ids = link_boxes(np.zeros(len(preds), dtype=np.int64), preds.slices, preds.boxes, preds.scores,
                     iou=iou, max_gap=max_gap)
    affine = vol.affine if vol.affine is not None else spacing_affine(vol.spacing)
    table = lesion_table(ids, z, boxes, preds.scores, affine, vol.spacing, vol.hu.shape, max_lesions=max_lesions)
    labels = label_volume(table, z, boxes, preds.scores, vol.hu.shape)
    masks = lesion_masks(table, z, boxes, vol.hu.shape)
    coverage = label_coverage(table, masks, labels)
    rows = table_rows(table, numbers, coverage)
    shipped = shipped_name(checkpoint)
    hidden = coverage.hidden(table.id)
    plan, seg = None, None
    if vol.source == "dicom" and len(table):
        budget = None if seg_memory_gb is None else int(seg_memory_gb * 2 ** 30)
        plan = plan_seg(masks, vol.hu.shape, vol.meta, budget, crop=seg_crop)
        seg = seg_record(plan, table.id, coverage)
    header = {"source": str(src), "input_kind": vol.source, "checkpoint": str(ckpt), "shipped_detector": shipped,
              "tta": tta,
              "score_threshold": score, "link_iou": iou, "link_max_gap": max_gap,
              "shape_zyx": list(vol.hu.shape), "spacing_xyz_mm": list(vol.spacing),
              "affine_voxel_to_lps_mm": np.round(affine, 6).tolist(),
              "conventions": "voxel x = column, y = row, z = slice (0 = most superior) of the display-orientation "
                             "volume; patient coordinates LPS mm (DICOM); key_slice / slice_first / slice_last = "
                             "slice numbers of the DeepLesion-layout series (001.png = z 0 for imported scans)",
              "dicom_seg": seg}
    for stale in [*(out / "figures").glob("lesion_*.png"), out / "lesions_seg.dcm"]:   # a previous run's
        stale.unlink(missing_ok=True)
    write_tables(out, rows, header)
    write_label_nifti(out / "lesions.nii.gz", vol, labels)
    segments = 0
    if plan is not None:
        segments = write_dicom_seg(out / "lesions_seg.dcm", vol, masks, table.id, table.score, plan=plan,
                                   labels_zyx=labels, coverage=coverage)
    _write_page(out, src, vol, shipped or ckpt.name, rows, table, z, boxes, score, tta, segments, len(preds),
                hidden, shipped is not None, seg)
    return DetectResult(out, len(table), len(preds), int(vol.hu.shape[0]), segments, hidden, shipped, seg)


def seg_record(plan, ids: np.ndarray, coverage) -> dict:
    """lesions.json's ``dicom_seg``: the SEG's form, why (bytes vs budget), its frames, and the
    lesions it shows partly or not at all (label-map form only; the stacked form shows every one whole)."""
    from lesionprop.scan.outputs import LABEL_MAP

    label_map = plan.form == LABEL_MAP
    absent = sorted(coverage.hidden(ids)) if label_map else []
    partial = ([int(ids[i]) for i in np.flatnonzero((coverage.in_label_map > 0) &
                                                   (coverage.in_label_map < coverage.voxels))]
               if label_map else [])
    r1, r2, c1, c2 = plan.box
    return {"form": plan.form, "segments": int(len(ids)), "stacked_bytes_needed": int(plan.stacked_bytes),
            "memory_budget_bytes": int(plan.budget_bytes), "frames_slices": int(plan.frames.size),
            "frame_rows": r2 - r1, "frame_columns": c2 - c1, "frame_first_row": r1, "frame_first_column": c1,
            "lesions_absent": absent, "lesions_partial": partial}


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n} bytes"


def seg_note(seg: dict) -> str:
    """Which SEG form was written, why, and which lesions it shows partly or not at all (one line;
    the command prints it after ``DICOM SEG: ``, the page next to the SEG's link)."""
    need, budget = _size(seg["stacked_bytes_needed"]), _size(seg["memory_budget_bytes"])
    if seg["form"] == "stacked":
        return f"every lesion whole, segments may overlap (stacked form: {need}, budget {budget})"
    text = (f"label-map form, one lesion per voxel as in lesions.nii.gz (the stacked form needs {need} "
            f"> budget {budget}, --seg-memory-gb)")
    if not seg["lesions_absent"] and not seg["lesions_partial"]:
        return text + "; no lesions overlap, so every lesion is whole"
    if seg["lesions_absent"]:
        text += "; no voxel in the SEG: " + ", ".join(map(str, seg["lesions_absent"]))
    if seg["lesions_partial"]:
        text += "; partial: " + ", ".join(map(str, seg["lesions_partial"]))
    return text


def hidden_text(hidden: dict[int, tuple[int, ...]]) -> str:
    """``"39 (under 12), 49 (under 3)"``: the lesions the label volume does not show, and what covers them."""
    return ", ".join(f"{i} (under {' and '.join(map(str, by))})" for i, by in sorted(hidden.items()))


SHIPPED_NOTE = ("trained on synthetic phantom data only: on a real scan it is a demo of the workflow, not a "
                "clinical detector")


def _write_page(out: Path, src: Path, vol: CTVolume, ckpt_name: str, rows: list[dict], table, z: np.ndarray,
                boxes: np.ndarray, score: float, tta: str, segments: int, n_boxes: int,
                hidden: dict[int, tuple[int, ...]], shipped: bool, seg: dict | None) -> None:
    from lesionprop.scan.page import lesion_figures, write_page

    figures = []
    for i, row in enumerate(rows):
        mine = np.flatnonzero(table.box_lesion == i)
        by_z = {int(z[j]): boxes[j] for j in mine}
        figures.append(lesion_figures(out / "figures", row["id"], vol.hu, int(table.key_z[i]), table.key_box[i],
                                      by_z))
    zs, ys, xs = vol.hu.shape
    facts = [("input", f"{src.name} ({vol.source})"), ("volume", f"{xs} x {ys} x {zs} voxels"),
             ("spacing", " x ".join(f"{v:.3g}" for v in vol.spacing) + " mm"),
             ("checkpoint", ckpt_name), ("TTA", tta), ("score threshold", f"{score:g}"),
             ("lesions", str(len(rows))), ("boxes", str(n_boxes))]
    notes = ["Soft-tissue window (W 400, L 40). Slices above / below are the neighbours of the key slice in the "
             "volume (superior / inferior)."]
    whole = bool(segments) and seg is not None and seg["form"] == "stacked"
    if segments:
        notes.append(f"DICOM SEG with {segments} segments: lesions_seg.dcm (segment number = lesion id, "
                     + ("each with its whole mask" if whole else "from the label volume") +
                     "; references the source series).")
    warnings_ = [f"Detector: the shipped {ckpt_name}, {SHIPPED_NOTE}."] if shipped else []
    if hidden:
        where = (", in lesions.csv and in the DICOM SEG" if whole else
                 " and in lesions.csv (the DICOM SEG describes them, without voxels)" if segments
                 else " and in lesions.csv")
        warnings_.append(f"{len(hidden)} of {len(rows)} lesions have no voxel in the label volume lesions.nii.gz: "
                         f"{hidden_text(hidden)}, a better-scoring lesion covers all of their voxels. They are "
                         "listed here" + where + ".")
    write_page(out, f"lesionprop detect: {src.name}", facts, rows, figures, notes, warnings_,
               seg_note(seg) if segments and seg is not None else None)
