"""The static report of ``lesionprop detect``: ``index.html`` + ``figures/`` (no server).

Top: the series and study (what a PACS shows to find them), the run's settings, warnings,
then a summary table of every lesion (sortable by a click on its header: a few lines of
script; ``index.html#sort=hu_max`` or ``#sort=-score`` opens it sorted, ``#window=lung`` in a
window), then one block per
lesion, best score first: its key slice with the box, close-ups of the key slice and of the
slices above and below, each with a scale bar, in the window chosen at the top (soft tissue,
lung, bone: CSS only).  Slices are numbered as in lesions.csv (``key_slice``: 1 = most
superior for an imported scan), with the key slice's InstanceNumber and SliceLocation for
DICOM input.
"""

from __future__ import annotations

import html
from pathlib import Path

from lesionprop.fileio import atomic_write
from lesionprop.scan.figures import WINDOWS

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 20px 0 6px; }
.meta { color: #555; font-size: 13px; margin-bottom: 10px; }
table.ident { border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }
table.ident td { padding: 1px 14px 1px 0; vertical-align: top; } table.ident td:first-child { color: #666; }
.gen { color: #a05a00; }
.lesion { display: flex; gap: 14px; align-items: flex-start; background: #fff; border: 1px solid #ddd;
          border-radius: 6px; padding: 12px; margin-bottom: 12px; }
.lesion img { display: block; border: 1px solid #333; background: #000; }
.cap { font-size: 11px; color: #666; text-align: center; margin-top: 2px; }
table.facts { border-collapse: collapse; font-size: 13px; } table.facts td { padding: 2px 8px 2px 0; }
.score { font-size: 20px; font-weight: 600; } .none { padding: 24px; background: #fff; border: 1px solid #ddd; }
.warn { background: #fff4e0; border: 1px solid #e0a040; border-radius: 6px; padding: 8px 12px; font-size: 14px; }
.hidden { border-color: #e0a040; } .flag { color: #a05a00; font-weight: 600; }
table.summary { border-collapse: collapse; font-size: 13px; background: #fff; margin-bottom: 16px; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.summary th { background: #eef; cursor: pointer; user-select: none; white-space: nowrap; }
table.summary th[aria-sort=ascending]::after { content: " \\25B2"; }
table.summary th[aria-sort=descending]::after { content: " \\25BC"; }
.windows { font-size: 14px; margin: 8px 0 14px; } .windows label { margin-right: 14px; cursor: pointer; }
.windows label::before { content: "\\25CB  "; }
"""

_SORT_JS = """
(function () {
  var w = /window=([a-z]+)/.exec(location.hash), radio = w && document.getElementById('win-' + w[1]);
  if (radio) radio.checked = true;
  var table = document.getElementById('summary');
  if (!table) return;
  var heads = table.tHead.rows[0].cells;
  function value(row, col) {
    var text = row.cells[col].getAttribute('data-v');
    if (text === null) text = row.cells[col].textContent;
    var n = parseFloat(text);
    return isNaN(n) ? -Infinity : n;
  }
  function sortBy(col, descending) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var d = value(a, col) - value(b, col); return descending ? -d : d; });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute('aria-sort');
    heads[col].setAttribute('aria-sort', descending ? 'descending' : 'ascending');
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () { sortBy(col, th.getAttribute('aria-sort') === 'ascending'); });
  });
  var m = /sort=(-?)([a-z_]+)/.exec(location.hash);
  if (m) {
    for (var i = 0; i < heads.length; i++) if (heads[i].getAttribute('data-key') === m[2]) sortBy(i, m[1] === '-');
  }
})();
"""

#: summary columns: (lesions.csv key, header)
SUMMARY = (("id", "lesion"), ("score", "score"), ("key_slice", "key slice"),
           ("key_instance_number", "InstanceNumber"), ("key_slice_location", "SliceLocation"),
           ("long_axis_mm", "long mm"), ("short_axis_mm", "short mm"), ("volume_ml", "volume mL"),
           ("hu_mean", "mean HU"), ("hu_max", "max HU"), ("n_boxes", "boxes"))


def _window_css() -> str:
    """One radio button per window: each hides the figures of the others."""
    rules = []
    for name in WINDOWS:
        others = ", ".join(f"#win-{name}:checked ~ main .w-{o}" for o in WINDOWS if o != name)
        rules.append(f"{others} {{ display: none; }}")
        rules.append(f"#win-{name}:checked ~ main label[for=win-{name}] {{ font-weight: 600; color: #1a4fa0; }}")
        rules.append(f"#win-{name}:checked ~ main label[for=win-{name}]::before {{ content: \"\\25C9  \"; }}")
    return "\n".join(rules)


def _fig(paths: dict[str, str] | None, caption: str) -> str:
    if not paths:
        return ""
    e = html.escape
    imgs = "".join(f'<a class="w-{name}" href="{e(p)}"><img src="{e(p)}" alt="{e(caption)}, {e(WINDOWS[name][0])}">'
                   "</a>" for name, p in paths.items())
    return f'<figure style="margin:0">{imgs}<div class="cap">{e(caption)}</div></figure>'


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


def _fmt(value, digits: int | None = None) -> str:
    if value is None:
        return "&ndash;"
    if digits is not None:
        return f"{float(value):.{digits}f}"
    return html.escape(f"{value:g}" if isinstance(value, float) else str(value))


def _where(row: dict, slices: int) -> str:
    """``slice 7 of 20`` + InstanceNumber / frame / SliceLocation of the key slice when known."""
    text = f"slice {row['key_slice']} of {slices}"
    extra = []
    if row.get("key_instance_number") is not None:
        extra.append(f"InstanceNumber {row['key_instance_number']}")
    if row.get("key_frame") is not None:
        extra.append(f"frame {row['key_frame']}")
    if row.get("key_slice_location") is not None:
        extra.append(f"SliceLocation {row['key_slice_location']:g}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _summary(rows: list[dict]) -> str:
    e = html.escape
    head = "".join(f"<th data-key='{k}' title='click to sort'>{e(h)}</th>" for k, h in SUMMARY)
    body = []
    for row in rows:
        cells = []
        for key, _ in SUMMARY:
            v = row.get(key)
            shown = f"<a href='#lesion-{row['id']}'>{row['id']}</a>" if key == "id" else _fmt(
                v, 3 if key == "score" else 1 if key in ("long_axis_mm", "short_axis_mm", "hu_mean")
                else 2 if key == "volume_ml" else None)
            cells.append(f"<td data-v='{'' if v is None else e(str(v))}'>{shown}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class='summary' id='summary'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            "</tbody></table>")


def _lesion_block(row: dict, fig: dict, slices: int) -> str:
    facts = [
        ("key slice", _where(row, slices)),
        ("slices", f"{row['slice_first']}&ndash;{row['slice_last']}"),
        ("size", f"{row['long_axis_mm']:.1f} &times; {row['short_axis_mm']:.1f} mm (long &times; short axis of "
                 "the box's ellipse, key slice)"),
        ("volume", f"{row['volume_ml']:.2f} mL (ellipses &times; slice interval)"),
        ("HU", f"mean {_fmt(row.get('hu_mean'), 1)}, max {_fmt(row.get('hu_max'))} (over its voxels)"),
        ("boxes", str(row["n_boxes"])),
        ("voxels", f"i {row['voxel_i1']}&ndash;{row['voxel_i2']}, j {row['voxel_j1']}&ndash;{row['voxel_j2']}, "
                   f"k {row['voxel_k1']}&ndash;{row['voxel_k2']} (lesions.nii.gz)"),
        ("LPS mm", f"x {row['lps_x_min_mm']:.1f}..{row['lps_x_max_mm']:.1f}, "
                   f"y {row['lps_y_min_mm']:.1f}..{row['lps_y_max_mm']:.1f}, "
                   f"z {row['lps_z_min_mm']:.1f}..{row['lps_z_max_mm']:.1f}"),
    ]
    label_fact = _label_map_fact(row)
    if label_fact is not None:
        facts.append(label_fact)
    table = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in facts)
    hidden = " hidden" if row.get("voxels_in_label_map") == 0 else ""
    key = row["key_slice"]
    return (f"<div class='lesion{hidden}' id='lesion-{row['id']}'>"
            + _fig(fig.get("slice"), f"slice {key}") + _fig(fig.get("above"), f"above: slice {key - 1}")
            + _fig(fig.get("key"), f"key slice {key}") + _fig(fig.get("below"), f"below: slice {key + 1}")
            + f"<div><div class='score'>Lesion {row['id']} &middot; score {row['score']:.3f}</div>"
            f"<table class='facts'>{table}</table></div></div>")


def write_page(out: Path, title: str, identification: list[tuple[str, str, bool]], rows: list[dict],
               figures: list[dict], notes: list[str], warnings: list[str] = (), seg_note: str | None = None,
               slices: int = 0) -> Path:
    """``out/index.html``.  ``identification``: (name, value, generated?) rows of the header table;
    ``rows``: lesions.json's lesions, best score first, with their ``figures``
    (:func:`lesionprop.scan.figures.lesion_figures`); ``seg_note`` goes next to the SEG's link;
    ``slices``: how many slices the series has."""
    e = html.escape
    ident = "".join(f"<tr><td>{e(k)}</td><td{' class=gen' if gen else ''}>{e(v)}"
                    f"{' (generated: not in the source)' if gen else ''}</td></tr>" for k, v, gen in identification)
    radios = "".join(f"<input type='radio' name='window' id='win-{name}'{' checked' if i == 0 else ''} hidden>"
                     for i, name in enumerate(WINDOWS))
    labels = "".join(f"<label for='win-{name}'>{e(label)}</label>" for name, (label, _, _) in WINDOWS.items())
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}\n{_window_css()}</style></head><body>{radios}<main>",
             f"<h1>{e(title)}</h1><table class='ident'>{ident}</table>"]
    parts += [f"<p class='warn'>{e(w)}</p>" for w in warnings]
    parts += [f"<p class='meta'>{e(n)}</p>" for n in notes]
    if rows:
        parts.append(f"<h2>{len(rows)} lesion{'s' if len(rows) != 1 else ''}</h2>" + _summary(rows))
        parts.append(f"<div class='windows'>Window: {labels}</div>")
    else:
        parts.append("<div class='none'>No lesion found above the score threshold.</div>")
    parts += [_lesion_block(row, fig, slices) for row, fig in zip(rows, figures)]
    files = ["<a href='lesions.csv'>lesions.csv</a>", "<a href='lesions.json'>lesions.json</a>",
             "<a href='lesions.nii.gz'>lesions.nii.gz</a> (label volume: one id per voxel, a better score wins "
             "overlaps)"]
    if (out / "lesions_seg.dcm").is_file():
        files.append("<a href='lesions_seg.dcm'>lesions_seg.dcm</a> (DICOM SEG, one segment per lesion" + (
            f": <span id='seg-form'>{e(seg_note)}</span>" if seg_note else "") + ")")
    if (out / "lesions_sr.dcm").is_file():
        files.append("<a href='lesions_sr.dcm'>lesions_sr.dcm</a> (DICOM SR measurement report, TID 1500)")
    parts.append("<p class='meta'>Files: " + ", ".join(files) + ".</p></main>"
                 f"<script>{_SORT_JS}</script></body></html>")
    path = out / "index.html"
    with atomic_write(path) as fh:
        fh.write("\n".join(parts))
    return path
