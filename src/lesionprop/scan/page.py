"""The static report of ``lesionprop detect``: ``index.html`` + ``figures/`` (no server, no script).

Boxes are in the pixel frame of the display-orientation slices (0-based continuous,
see :mod:`lesionprop.scan.lesions`); figures use the soft-tissue window (W 400, L 40).
Lesions are listed best score first; each shows its key slice (the slice of its
largest box) with the box, a close-up of the key slice and of the slices above
and below (with the lesion's box where it has one there), size, volume, score and
how many of its voxels the label volume shows (a lesion with none is flagged, and
the page's warnings list it).
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from lesionprop.fileio import atomic_write

WINDOW = (40.0, 400.0)        # level, width: soft tissue
THUMB = 256                   # px, whole slice
CROP = 160                    # px, close-ups
BOX_BGR = (40, 220, 255)


def window_u8(hu: np.ndarray, level: float = WINDOW[0], width: float = WINDOW[1]) -> np.ndarray:
    """HU -> uint8 grey (soft-tissue window by default)."""
    lo = level - width / 2
    return (np.clip((np.asarray(hu, dtype=np.float32) - lo) / width, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())


def _draw(grey: np.ndarray, box: np.ndarray | None, scale: float, offset=(0.0, 0.0)) -> np.ndarray:
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if box is not None:
        x1, y1, x2, y2 = ((np.asarray(box, dtype=float) - np.r_[offset, offset]) * scale).tolist()
        cv2.rectangle(img, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), BOX_BGR, 1,
                      cv2.LINE_AA)
    return img


def _crop_window(box: np.ndarray, shape_yx: tuple[int, int]) -> tuple[int, int, int]:
    """Square window (x0, y0, side) around a box: 3x its larger side, at least 48 px, inside the slice."""
    h, w = shape_yx
    side = int(min(max(48, 3 * max(box[2] - box[0], box[3] - box[1])), h, w))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side


def lesion_figures(fig_dir: Path, lesion_id: int, hu: np.ndarray, key_z: int, key_box: np.ndarray,
                   boxes_by_z: dict[int, np.ndarray]) -> dict[str, str]:
    """Write this lesion's figures; returns ``{"slice" | "above" | "key" | "below": relative path}``."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    h, w = hu.shape[1:]
    out = {}
    scale = THUMB / max(h, w)
    grey = cv2.resize(window_u8(hu[key_z]), (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)
    name = f"lesion_{lesion_id:03d}_slice.png"
    _write_png(fig_dir / name, _draw(grey, key_box, scale))
    out["slice"] = f"figures/{name}"
    x0, y0, side = _crop_window(key_box, (h, w))
    s = CROP / side
    for tag, z in (("above", key_z - 1), ("key", key_z), ("below", key_z + 1)):
        if not 0 <= z < hu.shape[0]:
            continue
        crop = window_u8(hu[z, y0:y0 + side, x0:x0 + side])
        crop = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
        box = boxes_by_z.get(z)
        name = f"lesion_{lesion_id:03d}_{tag}.png"
        _write_png(fig_dir / name, _draw(crop, box, s, (x0, y0)))
        out[tag] = f"figures/{name}"
    return out


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin-bottom: 4px; } .meta { color: #555; font-size: 13px; margin-bottom: 18px; }
.lesion { display: flex; gap: 14px; align-items: flex-start; background: #fff; border: 1px solid #ddd;
          border-radius: 6px; padding: 12px; margin-bottom: 12px; }
.lesion img { display: block; border: 1px solid #333; background: #000; }
.cap { font-size: 11px; color: #666; text-align: center; margin-top: 2px; }
table.facts { border-collapse: collapse; font-size: 13px; } table.facts td { padding: 2px 8px 2px 0; }
.score { font-size: 20px; font-weight: 600; } .none { padding: 24px; background: #fff; border: 1px solid #ddd; }
.warn { background: #fff4e0; border: 1px solid #e0a040; border-radius: 6px; padding: 8px 12px; font-size: 14px; }
.hidden { border-color: #e0a040; } .flag { color: #a05a00; font-weight: 600; }
"""


def _fig(path: str | None, caption: str) -> str:
    if path is None:
        return ""
    return (f'<figure style="margin:0"><a href="{html.escape(path)}"><img src="{html.escape(path)}" '
            f'alt="{html.escape(caption)}"></a><div class="cap">{html.escape(caption)}</div></figure>')


def _label_map_fact(row: dict) -> tuple[str, str] | None:
    """The "label map" line of a lesion: its voxels in lesions.nii.gz, and which lesions cover the rest."""
    if "voxels_in_label_map" not in row:
        return None
    shown, total, by = row["voxels_in_label_map"], row["voxels"], row["covered_by"]
    text = f"{shown} of {total} voxels"
    if by:
        text += (" (all" if shown == 0 else " (the rest") + " under lesion " + ", ".join(
            f"<a href='#lesion-{i}'>{i}</a>" for i in by) + ")"
    if shown == 0:
        text = f"<span class='flag'>hidden: {text}</span>"
    return "label map", text


def write_page(out: Path, title: str, facts: list[tuple[str, str]], rows: list[dict],
               figures: list[dict[str, str]], notes: list[str], warnings: list[str] = (),
               seg_note: str | None = None) -> Path:
    """``out/index.html``: header facts, warnings, notes, then one block per lesion (``rows`` best score first);
    ``seg_note`` (which form the DICOM SEG has) goes next to the SEG's link."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>",
             "<div class='meta'>" + " &middot; ".join(f"{e(k)}: {e(v)}" for k, v in facts) + "</div>"]
    for warning in warnings:
        parts.append(f"<p class='warn'>{e(warning)}</p>")
    for note in notes:
        parts.append(f"<p class='meta'>{e(note)}</p>")
    if not rows:
        parts.append("<div class='none'>No lesion found above the score threshold.</div>")
    for row, fig in zip(rows, figures):
        facts_rows = [
            ("slices", f"{row['slice_first']}&ndash;{row['slice_last']} (key {row['key_slice']})"),
            ("size", f"{row['long_axis_mm']:.1f} &times; {row['short_axis_mm']:.1f} mm (box sides, key slice)"),
            ("volume", f"{row['volume_ml']:.2f} mL (ellipses &times; slice interval)"),
            ("boxes", str(row["n_boxes"])),
            ("voxels", f"x {row['voxel_x1']}&ndash;{row['voxel_x2']}, y {row['voxel_y1']}&ndash;{row['voxel_y2']}, "
                       f"z {row['voxel_z1']}&ndash;{row['voxel_z2']}"),
            ("LPS mm", f"x {row['lps_x_min_mm']:.1f}..{row['lps_x_max_mm']:.1f}, "
                       f"y {row['lps_y_min_mm']:.1f}..{row['lps_y_max_mm']:.1f}, "
                       f"z {row['lps_z_min_mm']:.1f}..{row['lps_z_max_mm']:.1f}"),
        ]
        label_fact = _label_map_fact(row)
        if label_fact is not None:
            facts_rows.append(label_fact)
        table = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in facts_rows)
        hidden = " hidden" if row.get("voxels_in_label_map") == 0 else ""
        parts.append(
            f"<div class='lesion{hidden}' id='lesion-{row['id']}'>"
            + _fig(fig.get("slice"), f"slice {row['key_slice']}")
            + _fig(fig.get("above"), "above") + _fig(fig.get("key"), "key slice") + _fig(fig.get("below"), "below")
            + f"<div><div class='score'>Lesion {row['id']} &middot; score {row['score']:.3f}</div>"
            f"<table class='facts'>{table}</table></div></div>")
    seg = ""
    if (out / "lesions_seg.dcm").is_file():
        seg = ", <a href='lesions_seg.dcm'>lesions_seg.dcm</a> (DICOM SEG, one segment per lesion" + (
            f": <span id='seg-form'>{e(seg_note)}</span>" if seg_note else "") + ")"
    parts.append("<p class='meta'>Files: <a href='lesions.csv'>lesions.csv</a>, <a href='lesions.json'>"
                 "lesions.json</a>, <a href='lesions.nii.gz'>lesions.nii.gz</a> (label volume: one id per voxel, "
                 f"a better score wins overlaps){seg}.</p></body></html>")
    path = out / "index.html"
    with atomic_write(path) as fh:
        fh.write("\n".join(parts))
    return path
