"""``detect``: one CT series -> 3D lesions -> lesions.csv / .json, lesions.nii.gz, DICOM SEG and SR,
index.html.  A folder of several series: :mod:`lesionprop.scan.study`.

Steps: load the scan (:func:`lesionprop.data.volumes.load_ct` for a DICOM folder or
NIfTI file, same checks and errors as ``lesionprop import``; or a series folder
``ROOT/Images_png/PPPPPP_SS_SS`` of a DeepLesion-layout dataset), check that the derived
DICOM objects can reference the source (before any detection), predict every slice with the
inference every command uses (:func:`lesionprop.engine.predict.predict`, TTA; slices read from
the volume in memory, :class:`lesionprop.data.slices.VolumeReader`), keep boxes scoring
``>= score``, link them into 3D lesions (:func:`lesionprop.labels.link.link_boxes`), then
write the outputs.

Boxes: predictions come back in the FILE frame of the slices; they are converted
once to the pixel frame (``file - 1``) of the display-orientation volume, the
frame :mod:`lesionprop.scan.lesions` works in.  ``predictions.csv`` keeps the
file frame (slice names ``SERIES_NNN.png``, NNN = slice number, or the source dataset's).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lesionprop.annotations import read_annotations, series_geometry
from lesionprop.boxes import file_to_pixel
from lesionprop.data.deeplesion import SeriesInfo
from lesionprop.data.layout import decode_png, list_slices
from lesionprop.data.slices import VolumeReader
from lesionprop.data.volumes import CTVolume, VolumeError, file_voxel_index, load_ct, spacing_affine
from lesionprop.engine.checkpoint import resolve_checkpoint, shipped_name
from lesionprop.engine import predict as inference
from lesionprop.errors import InputError, MissingInputError
from lesionprop.fileio import atomic_write
from lesionprop.labels.link import link_boxes
from lesionprop.predictions import write_predictions
from lesionprop.scan.figures import lesion_figures
from lesionprop.scan.lesions import (
    file_voxel_box,
    label_coverage,
    label_volume,
    lesion_hu,
    lesion_masks,
    lesion_table,
    table_rows,
)
from lesionprop.scan.outputs import build_dicom_seg, plan_seg, source_datasets, write_label_nifti, write_tables
from lesionprop.scan.page import write_page
from lesionprop.scan.record import (  # noqa: F401  (the command's API)
    SHIPPED_NOTE,
    hidden_text,
    identification,
    loader_notes,
    seg_note,
    seg_record,
    series_record,
)
from lesionprop.scan.report_sr import build_measurement_report, write_measurement_report

SERIES_NAME = "000001_01_01"


@dataclass(frozen=True)
class Settings:
    """The options of a run (lesions.json records them; a study rerun compares them)."""

    tta: str = "none"
    score: float = 0.5
    iou: float = 0.5
    max_gap: int = 1
    max_lesions: int = 100
    seg_memory_gb: float | None = None
    seg_crop: bool = False
    inference: tuple[str, ...] = ()        # --set predict.* / data.num_workers ... (engine.predict's overrides)


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
    sr: bool = False                                                    # lesions_sr.dcm written
    notes: tuple[str, ...] = ()                                         # what the reader changed or assumed


def load_layout_series(folder: Path) -> tuple[CTVolume, Path, str, np.ndarray]:
    """``ROOT/Images_png/SERIES`` -> (volume, ROOT, SERIES, slice numbers); spacing from series_info / DL_info."""

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


def is_layout_series(src: Path) -> bool:
    return src.is_dir() and src.parent.name == "Images_png" and any(src.glob("*.png"))


def check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise MissingInputError(f"CT input not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise InputError(f"--out {out} must not be inside the input {src}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a folder")


def detect(src: str | Path, checkpoint: str | Path, out: str | Path, *, tta: str = "none", score: float = 0.5,
           iou: float = 0.5, max_gap: int = 1, max_lesions: int = 100, device: str | None = None,
           progress: bool = True, seg_memory_gb: float | None = None,
           seg_crop: bool = False, inference: tuple[str, ...] = ()) -> DetectResult:
    """One series (module docstring); returns counts.

    ``seg_memory_gb``: memory budget (GiB) of the DICOM SEG's stacked form, default
    :data:`lesionprop.scan.outputs.SEG_MEMORY_GIB`; above it the SEG is written from the
    label volume (:func:`lesionprop.scan.outputs.plan_seg`).  ``seg_crop``: SEG frames cover only
    the lesions' region instead of whole slices (less memory; some viewers mishandle them).
    """

    src, out = Path(src), Path(out)
    check_paths(src, out)
    ckpt = resolve_checkpoint(checkpoint)
    settings = Settings(tta, score, iou, max_gap, max_lesions, seg_memory_gb, seg_crop, tuple(inference))
    if is_layout_series(src):
        vol, root, series, numbers = load_layout_series(src)
        return detect_volume(vol, src, checkpoint, ckpt, out, settings, device=device, progress=progress,
                             layout=(root, series, numbers))
    return detect_volume(load_ct(src), src, checkpoint, ckpt, out, settings, device=device, progress=progress)


def _predict(vol: CTVolume, ckpt: Path, out: Path, settings: Settings, device, progress, layout):
    """Every slice's boxes: from the PNGs of a DeepLesion-layout series, else straight from the
    volume in memory (slices numbered 1..Z, as ``lesionprop import`` would write them)."""

    out.mkdir(parents=True, exist_ok=True)
    reader, geometry = None, None
    if layout is not None:
        root, series, numbers = layout
    else:
        root, series = out, SERIES_NAME
        numbers = np.arange(1, vol.hu.shape[0] + 1, dtype=np.int64)
        reader = VolumeReader(series, vol.hu, first=1)
        geometry = {series: SeriesInfo(series, tuple(float(v) for v in vol.spacing),  # type: ignore[arg-type]
                                       (int(vol.hu.shape[1]), int(vol.hu.shape[2])),
                                       (1, int(vol.hu.shape[0])), f"detect:{vol.source}")}
    names = [f"{series}_{k:03d}.png" for k in numbers]
    with warnings.catch_warnings():      # the first / last slice's 3D context repeats the edge slice
        warnings.filterwarnings("ignore", message=r".*is missing, using slice", category=UserWarning)
        preds = inference.predict(ckpt, root, None, tta=settings.tta, file_names=names, device=device, progress=progress,
                        reader=reader, geometry=geometry, overrides=settings.inference)
    return preds, numbers


def _key_refs(vol: CTVolume, key_z: np.ndarray) -> list[dict] | None:
    if vol.dicom is None:
        return None
    refs = [vol.dicom.slices[int(z)] for z in key_z]
    return [{"instance_number": r.instance_number, "frame": r.frame, "slice_location": r.slice_location}
            for r in refs]


def detect_volume(vol: CTVolume, src: Path, checkpoint, ckpt: Path, out: Path, settings: Settings, *,
                  device: str | None = None, progress: bool = True, layout=None) -> DetectResult:
    """Detect on a loaded volume and write every output to ``out`` (``layout``: (ROOT, SERIES, slice
    numbers) of a DeepLesion-layout series, predicted in place)."""

    sources = source_datasets(vol) if vol.source == "dicom" else None    # unreadable headers fail before detecting
    preds, numbers = _predict(vol, ckpt, out, settings, device, progress, layout)
    preds = preds.subset(preds.scores >= settings.score)
    write_predictions(out / "predictions.csv", preds.file_names, preds.boxes, preds.scores)
    z = np.searchsorted(numbers, preds.slices)
    boxes = file_to_pixel(preds.boxes)
    ids = link_boxes(np.zeros(len(preds), dtype=np.int64), preds.slices, preds.boxes, preds.scores,
                     iou=settings.iou, max_gap=settings.max_gap)
    affine = vol.affine if vol.affine is not None else spacing_affine(vol.spacing)
    table = lesion_table(ids, z, boxes, preds.scores, affine, vol.spacing, vol.hu.shape,
                         max_lesions=settings.max_lesions)
    labels = label_volume(table, z, boxes, preds.scores, vol.hu.shape)
    masks = lesion_masks(table, z, boxes, vol.hu.shape)
    coverage = label_coverage(table, masks, labels)
    rows = table_rows(table, numbers, coverage,
                      file_box=file_voxel_box(table.voxel_box, lambda p: file_voxel_index(vol, p)),
                      hu=lesion_hu(vol.hu, masks), key_refs=_key_refs(vol, table.key_z))
    shipped = shipped_name(checkpoint)
    hidden = coverage.hidden(table.id)
    plan, seg = None, None
    if vol.source == "dicom" and len(table):
        budget = None if settings.seg_memory_gb is None else int(settings.seg_memory_gb * 2 ** 30)
        plan = plan_seg(masks, vol.hu.shape, vol.meta, budget, crop=settings.seg_crop)
        seg = seg_record(plan, table.id, coverage)
    notes = loader_notes(vol)
    header = {"source": str(src), "input_kind": vol.source, "checkpoint": str(ckpt), "shipped_detector": shipped,
              "tta": settings.tta, "inference": list(settings.inference), "score_threshold": settings.score, "link_iou": settings.iou,
              "link_max_gap": settings.max_gap, "max_lesions": settings.max_lesions,
              "seg_memory_gb": settings.seg_memory_gb, "seg_crop": settings.seg_crop,
              "shape_zyx": list(vol.hu.shape), "spacing_xyz_mm": list(vol.spacing),
              "affine_voxel_to_lps_mm": np.round(affine, 6).tolist(),
              "conventions": "key_slice / slice_first / slice_last: slice numbers (1 = most superior for an "
                             "imported scan, the PNG numbers of a DeepLesion-layout series); voxel_i/j/k: indices "
                             "into the input's own grid, which lesions.nii.gz shares (NIfTI: the file's array; "
                             "DICOM: column, row of the stored images and slice number - 1); patient coordinates "
                             "LPS mm; affine_voxel_to_lps_mm: display voxel (x right-to-left, y anterior-to-"
                             "posterior, z superior-to-inferior) -> LPS",
              "dicom_series": series_record(vol), "generated_uids": dict(vol.dicom.generated) if vol.dicom else {},
              "notes": notes, "dicom_seg": seg, "dicom_sr": "lesions_sr.dcm" if seg else None}
    for stale in [*(out / "figures").glob("lesion_*.png"), out / "lesions_seg.dcm", out / "lesions_sr.dcm"]:
        stale.unlink(missing_ok=True)                                         # a previous run's
    write_tables(out, rows, header)
    write_label_nifti(out / "lesions.nii.gz", vol, labels)
    segments = 0
    if plan is not None:
        segments = _write_dicom(out, vol, sources, rows, table, masks, plan, labels, coverage)
    _write_page(out, src, vol, shipped or ckpt.name, rows, table, z, boxes, settings, segments, len(preds),
                hidden, shipped is not None, seg, notes)
    return DetectResult(out, len(table), len(preds), int(vol.hu.shape[0]), segments, hidden, shipped, seg,
                        bool(segments), tuple(notes))


def _write_dicom(out: Path, vol: CTVolume, sources, rows, table, masks, plan, labels, coverage) -> int:
    """lesions_seg.dcm and lesions_sr.dcm (the SR measures the SEG's segments); returns the segments."""

    seg = build_dicom_seg(vol, masks, table.id, table.score, plan=plan, labels_zyx=labels, coverage=coverage,
                          sources=sources)
    sr = build_measurement_report(vol, rows, table.key_z, table.key_box, seg, sources)
    with atomic_write(out / "lesions_seg.dcm", "wb") as fh:
        seg.save_as(fh)
    write_measurement_report(out / "lesions_sr.dcm", sr)
    return len(masks)


def _write_page(out: Path, src: Path, vol: CTVolume, ckpt_name: str, rows: list[dict], table, z: np.ndarray,
                boxes: np.ndarray, settings: Settings, segments: int, n_boxes: int,
                hidden: dict[int, tuple[int, ...]], shipped: bool, seg: dict | None, notes: list[str]) -> None:

    figures = []
    for i, row in enumerate(rows):
        mine = np.flatnonzero(table.box_lesion == i)
        by_z = {int(z[j]): boxes[j] for j in mine}
        figures.append(lesion_figures(out / "figures", row["id"], vol.hu, int(table.key_z[i]), table.key_box[i],
                                      by_z, mm_per_px=float(vol.spacing[0])))
    ident = identification(vol, src.name) + [
        ("detector", f"{ckpt_name}, TTA {settings.tta}, score >= {settings.score:g}", False),
        ("found", f"{len(rows)} lesions from {n_boxes} boxes", False)]
    page_notes = ["Slices are numbered 1 = most superior (as in lesions.csv); above / below = the neighbouring "
                  "slices of the key slice. Scale bars in mm (column spacing)."]
    whole = bool(segments) and seg is not None and seg["form"] == "stacked"
    if segments:
        page_notes.append(f"DICOM SEG with {segments} segments: lesions_seg.dcm (segment number = lesion id, "
                          + ("each with its whole mask" if whole else "from the label volume") +
                          "; references the source series); DICOM SR lesions_sr.dcm measures each segment.")
    warnings_ = [f"Detector: the shipped {ckpt_name}, {SHIPPED_NOTE}."] if shipped else []
    warnings_ += [n[len("warning: "):] if n.startswith("warning: ") else n for n in notes if n.startswith("warning")]
    if hidden:
        where = (", in lesions.csv and in the DICOM SEG" if whole else
                 " and in lesions.csv (the DICOM SEG describes them, without voxels)" if segments
                 else " and in lesions.csv")
        warnings_.append(f"{len(hidden)} of {len(rows)} lesions have no voxel in the label volume lesions.nii.gz: "
                         f"{hidden_text(hidden)}, a better-scoring lesion covers all of their voxels. They are "
                         "listed here" + where + ".")
    title = vol.dicom.series.get("SeriesDescription", "") if vol.dicom is not None else ""
    write_page(out, f"lesionprop detect: {title or src.name}", ident, rows, figures,
               page_notes + [n for n in notes if not n.startswith("warning")], warnings_,
               seg_note(seg) if segments and seg is not None else None, slices=int(vol.hu.shape[0]))
