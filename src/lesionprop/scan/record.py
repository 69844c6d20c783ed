"""What ``detect`` says about a run: lesions.json's header, the one-line notes it prints, the
page's identification table.  Plain functions over the volume and the lesion rows."""

from __future__ import annotations

import numpy as np

from pathlib import Path

from lesionprop.data.ct import CTVolume

SHIPPED_NOTE = ("trained on synthetic phantom data only: on a real scan it is a demo of the workflow, not a "
                "clinical detector")


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n} bytes"


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


def uid_note(vol: CTVolume) -> str:
    """One line naming the UIDs generated for the derived objects ('' when none)."""
    if vol.dicom is None:
        return ""
    gen = vol.dicom.generated
    names = [n for n in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID") if n in gen]
    if "SOPInstanceUID" in gen:
        names.append(f"SOPInstanceUID ({gen['SOPInstanceUID']})")
    if "SOPClassUID" in gen:
        names.append("SOPClassUID (CT Image Storage)")
    if not names:
        return ""
    why = ("; a generated FrameOfReferenceUID places the SEG and SR in this series only"
           if "FrameOfReferenceUID" in gen else "")
    return (f"{Path(vol.dicom.slices[0].file).parent}: the source has no {', '.join(names)} (anonymised?): "
            f"generated for the DICOM SEG and SR from the files' content (the same on every run), recorded in "
            f"lesions.json under generated_uids{why}")


def loader_notes(vol: CTVolume) -> list[str]:
    """What the reader changed or assumed, then the generated UIDs (one line each)."""
    return [n for n in (*vol.notes, uid_note(vol)) if n]


def series_record(vol: CTVolume) -> dict | None:
    """lesions.json's ``dicom_series``: the UIDs used, the descriptive attributes, the tilt."""
    if vol.dicom is None:
        return None
    d = vol.dicom
    return {**d.ids, "study": d.study, "series": d.series, "images": len({s.file for s in d.slices}),
            "multiframe": d.multiframe, "gantry_tilt_corrected_deg": round(float(d.tilt_deg), 3)}


def identification(vol: CTVolume, src_name: str) -> list[tuple[str, str, bool]]:
    """The page's header table: (name, value, generated?) rows, PACS identifiers first."""
    rows: list[tuple[str, str, bool]] = []
    if vol.dicom is not None:
        d = vol.dicom
        st, se = d.study, d.series
        date = " ".join(v for v in (st.get("StudyDate", ""), st.get("StudyTime", "")) if v)
        for name, value in (("Patient ID", st.get("PatientID", "")), ("Study", " ".join(
                v for v in (date, st.get("StudyDescription", ""), st.get("AccessionNumber", "")) if v)),
                ("Series", " ".join(v for v in (se.get("SeriesNumber", ""), se.get("SeriesDescription", ""),
                                                se.get("SeriesDate", "")) if v)),
                ("Scanner", " ".join(v for v in (se.get("Modality", ""), se.get("Manufacturer", ""),
                                                 se.get("ManufacturerModelName", ""), se.get("ConvolutionKernel", ""))
                                     if v))):
            if value:
                rows.append((name, value, False))
        for name in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            rows.append((name, d.ids[name], name in d.generated))
    zs, ys, xs = vol.hu.shape
    rows += [("input", f"{src_name} ({vol.source})", False),
             ("volume", f"{xs} x {ys} x {zs} voxels, " + " x ".join(f"{v:.3g}" for v in vol.spacing) + " mm", False)]
    return rows
