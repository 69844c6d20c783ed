"""The report's harvesting-in-rounds part (``pipeline.rounds`` > 1).

Per round: the pseudo-label quality of each label set against truth (precision, missing
key-slice lesions recovered, unlabeled K +/- 1 lesion slices covered) and the test tables
with CIs (each round's label-set models against the same baseline, paired bootstrap over the
test patients).  Written into ``report/table.json`` (``"rounds"``: one entry per round, round 1
included) and appended to ``report/table.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from lesionprop.annotations import read_annotations
from lesionprop.fileio import atomic_write
from lesionprop.pipeline.quality import label_quality
from lesionprop.pipeline.report import _clean, _pct, comparisons, variant_entries
from lesionprop.variants import BY_NAME, LABEL_SETS
from lesionprop.variants import title as variant_title


def round_dir(r: int) -> str:
    """Where round ``r``'s files live in the run folder: round 1 at the top, round r in ``round<r>/``."""
    return "" if r == 1 else f"round{r}/"


def round_entries(run_dir: Path, rounds: int, names: Sequence[str], annotations: Path, truth: Path | None,
                  fps: Sequence[float]) -> list[dict[str, Any]]:
    """One dict per round: ``round``, ``variants`` / ``truth`` (table entries with CIs),
    ``differences`` to the baseline, ``label_quality`` (when truth is known)."""
    rows = read_annotations(annotations)
    truth_rows = read_annotations(truth) if truth is not None and truth.is_file() else None
    sets = [v for v in names if v in BY_NAME and BY_NAME[v].label_file]
    out = []
    for r in range(1, rounds + 1):
        d = run_dir / round_dir(r)
        preds = {"baseline": run_dir / "preds" / "test_baseline.csv", **{v: d / "preds" / f"test_{v}.csv" for v in sets}}
        official, with_truth = comparisons(rows, truth_rows, preds, fps)
        entry: dict[str, Any] = {"round": r, "teacher": "baseline" if r == 1 else f"round {r - 1} MM + LP",
                                 "variants": variant_entries(official),
                                 "differences": official.to_dict()["differences"]}
        if with_truth is not None:
            entry["truth"] = {"variants": variant_entries(with_truth),
                              "differences": with_truth.to_dict()["differences"]}
            entry["label_quality"] = {v.name: label_quality(read_annotations(d / "labels" / str(v.label_file)),
                                                            truth_rows).as_dict() for v in LABEL_SETS}
        out.append(entry)
    return out


def rounds_markdown(entries: list[dict[str, Any]], fps: Sequence[float]) -> list[str]:
    """Two tables: label quality per round and set; mean sensitivity 0.5-8 FPs (CI) per round."""
    i4 = list(fps).index(4) if 4 in fps else len(fps) - 1
    md = ["## Harvesting in rounds", "",
          "Round r's label sets come from round r - 1's MM + LP model (round 1: the baseline); every "
          "round's models are compared with the same baseline.", ""]
    if all("label_quality" in e for e in entries):
        md += ["**Pseudo-label quality per round** (training split, against truth; IoU >= 0.5)", "",
               "| round | labels | boxes | precision | missing key-slice lesions recovered | "
               "unlabeled K+/-1 lesion slices covered |", "| --- | --- | --- | --- | --- | --- |"]
        for e in entries:
            for name, q in e["label_quality"].items():
                md.append(f"| {e['round']} | {name} | {q['boxes']} | {_pct(q['precision'])} | "
                          f"{q['missing_recovered']}/{q['missing_targets']} ({_pct(q['missing_recall'])}) | "
                          f"{q['neighbour_recovered']}/{q['neighbour_targets']} ({_pct(q['neighbour_recall'])}) |")
        md.append("")
    for kind in ("variants", "truth"):
        if not all(kind in e for e in entries):
            continue
        label = "official key-slice labels" if kind == "variants" else "complete labels (truth.csv)"
        md += [f"**Test sensitivity per round, {label}** (%, 95% CI; mean over {min(fps):g}-{max(fps):g} FPs "
               f"and at {fps[i4]:g} FPs per image)", "", "| round | variant | mean | at " + f"{fps[i4]:g} FPs |",
               "| --- | --- | --- | --- |"]
        for e in entries:
            table = e[kind] if kind == "variants" else e["truth"]["variants"]
            for v, t in table.items():
                if v == "baseline" and e["round"] > 1:
                    continue
                md.append(f"| {e['round']} | {variant_title(v)} | {100 * t['mean']:.1f} ({100 * t['mean_ci'][0]:.1f}, "
                          f"{100 * t['mean_ci'][1]:.1f}) | {100 * t['sensitivity'][i4]:.1f} "
                          f"({100 * t['ci_low'][i4]:.1f}, {100 * t['ci_high'][i4]:.1f}) |")
        md.append("")
    return md


def write_rounds(run_dir: Path, report_dir: Path, rounds: int, names: Sequence[str], annotations: Path,
                 truth: Path | None, fps: Sequence[float]) -> None:
    """Add ``"rounds"`` to ``table.json`` and the rounds section to ``table.md`` (both rewritten atomically)."""
    entries = round_entries(run_dir, rounds, names, annotations, truth, fps)
    table = json.loads((report_dir / "table.json").read_text())
    table["rounds"] = entries
    with atomic_write(report_dir / "table.json") as fh:
        json.dump(_clean(table), fh, indent=2)
    text = (report_dir / "table.md").read_text().rstrip("\n")
    with atomic_write(report_dir / "table.md") as fh:
        fh.write(text + "\n\n" + "\n".join(rounds_markdown(entries, fps)) + "\n")
