"""Per-lesion analysis of the pipeline's variants: what each one gains or loses, and why.

For finished run folders of ``lesionprop pipeline`` / ``demo`` (or ``bench_pipeline.py``'s),
all on their own synthetic data with complete truth:

1. **Test lesions** (official labels and truth): whether the baseline and each variant find a
   lesion at ``--fps`` FPs per image (it is found by a detection ranked before the curve passes
   that rate: :attr:`FrocResult.lesion_fp`).  Gains and losses against the baseline by long
   diameter and by contrast, and the *churn* (gains + losses) beside the net change: when
   the churn is many times the net, the variants mostly reshuffle which lesions clear the
   threshold.  ``mm`` adds a handful of boxes to the same training images as the
   baseline's fine-tune, so its churn is close to the noise floor of fine-tuning.
2. **Training pseudo-labels**: per label set, the truth lesions its pseudo-labels recovered
   (missing key-slice lesions; lesions on unlabeled K +/- 1 slices) by the same size groups,
   and its wrong boxes.
3. **Mining's score rule** (Algorithm 2's alpha): on the run's train predictions, how many
   boxes mining yields at alpha 0.5 ... 0.95 and how many are right, and the best score the
   baseline gave each missing training lesion on its key slice.

    python benchmarks/analyze_variants.py /work/bench/pipeline/phantom_seed0 ... --out analysis.md

Contrast: mean HU inside the box's inscribed ellipse minus a ring around the box, on the key
slice (``diagnose_detector.ellipse_ring_contrast``).  Boxes: file frame (DL_info numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from diagnose_detector import CONTRAST_EDGES_HU, CONTRAST_NAMES, ellipse_ring_contrast
from lesionprop.annotations import Annotations, Source, concat, read_annotations
from lesionprop.boxes import box_iou
from lesionprop.data.layout import decode_png, slice_path
from lesionprop.eval.froc import SIZE_GROUPS, evaluate, size_group
from lesionprop.labels.mine import mine
from lesionprop.pipeline.quality import label_quality, target_truth
from lesionprop.predictions import read_predictions

VARIANTS = ("lp", "mm", "mm_lp", "dd")
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def lesion_contrast(rows: Annotations, data_root: Path) -> np.ndarray:
    """Absolute contrast (HU) of each row's box on its own slice."""
    out = np.full(len(rows), np.nan)
    cache: dict[str, np.ndarray] = {}
    for i, (name, series, k) in enumerate(zip(rows.file_name, rows.series, rows.slice_index)):
        if name not in cache:
            cache[name] = decode_png(slice_path(data_root, str(series), int(k))).astype(np.float64)
        out[i] = abs(ellipse_ring_contrast(cache[name], rows.boxes[i] - 1.0))
    return out


def groups_of(rows: Annotations, data_root: Path) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    long_mm = np.nanmax(rows.diameters_px, axis=1) * rows.spacing[:, 0]
    contrast = np.digitize(lesion_contrast(rows, data_root), CONTRAST_EDGES_HU)
    return {"long diameter": (size_group(long_mm), SIZE_GROUPS), "abs. contrast": (contrast, CONTRAST_NAMES)}


def evaluations(run: Path, truth: Annotations) -> dict[str, dict]:
    """Each model's test evaluation, once per label set: ``{variant: {"official": r, "truth": r}}``."""
    ann = read_annotations(run / "data" / "DL_info.csv")
    out = {}
    for v in ("baseline", *VARIANTS):
        preds = read_predictions(run / "preds" / f"test_{v}.csv")
        out[v] = {"official": evaluate(ann, preds, split="test"),
                  "truth": evaluate(ann, preds, split="test", truth=truth)}
    return out


def found_at(results: dict[str, dict], kind: str, fps: float) -> tuple[Annotations, dict[str, np.ndarray]]:
    """Evaluated lesions and, per variant, whether each is found at ``fps`` FPs per image."""
    found = {v: r[kind].lesion_fp <= fps for v, r in results.items()}
    return results["baseline"][kind].lesion_rows, found


def hidden_lesions_among_fps(results: dict[str, dict], fps: float) -> dict[str, tuple[int, int]]:
    """Per variant: of the false positives the official labels count up to ``fps`` per image,
    how many hit (IoU >= 0.5) a real lesion the annotators left unlabeled, and how many FPs
    that is.  Both evaluations rank the same detections on the same key slices in the same
    order, so their per-detection outcomes line up."""
    out = {}
    for v, r in results.items():
        fp_off, fp_truth = r["official"].outcomes.det_fp, r["truth"].outcomes.det_fp
        counted = fp_off & (np.cumsum(fp_off) <= int(np.floor(fps * r["official"].images)))
        out[v] = (int((counted & ~fp_truth).sum()), int(counted.sum()))
    return out


def gain_loss_rows(found: dict[str, np.ndarray], groups: dict) -> list[tuple]:
    """(variant, grouping, group, lesions, baseline found, gained, lost) for every group and in all."""
    base = found["baseline"]
    out = []
    for v in VARIANTS:
        gained, lost = found[v] & ~base, base & ~found[v]
        out.append((v, "all", "all", base.size, int(base.sum()), int(gained.sum()), int(lost.sum())))
        for gname, (idx, names) in groups.items():
            for k, label in enumerate(names):
                m = idx == k
                if m.any():
                    out.append((v, gname, label, int(m.sum()), int(base[m].sum()), int(gained[m].sum()),
                                int(lost[m].sum())))
    return out


def best_iou_on_slice(boxes: Annotations, truth_by: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's best IoU with a truth box on its slice (0 when the slice has none);
    ``truth_by``: slice name -> truth boxes (``Annotations.groups``)."""
    best = np.zeros(len(boxes))
    for name, rows in boxes.groups().items():
        t = truth_by.get(name)
        if t is not None and len(t):
            best[rows] = box_iou(boxes.boxes[rows], t).max(axis=1)
    return best


def boxes_by_slice(ann: Annotations) -> dict[str, np.ndarray]:
    return {name: ann.boxes[rows] for name, rows in ann.groups().items()}


def pseudo_label_rows(run: Path, truth: Annotations) -> list[tuple]:
    """(labels, size group, missing recovered/targets, neighbour recovered/targets, correct boxes)."""
    long_mm = np.nanmax(truth.diameters_px, axis=1) * truth.spacing[:, 0]
    sizes = size_group(long_mm)
    truth_by = boxes_by_slice(truth.select("train", sources=None, drop_noisy=False))
    out = []
    for v in VARIANTS:
        path = run / "labels" / f"labels_{v}.csv"
        if not path.is_file():
            continue
        rows = read_annotations(path)
        q_all = label_quality(rows, truth)
        fit = best_iou_on_slice(rows.take(rows.source != Source.HUMAN.value), truth_by)
        fit_text = (f"{q_all.correct}/{q_all.boxes}; IoU to truth median {np.median(fit):.2f}, "
                    f">= 0.7 for {100 * (fit >= 0.7).mean():.0f}%" if fit.size else "0/0")
        out.append((v, "all", q_all.missing_recovered, q_all.missing_targets, q_all.neighbour_recovered,
                    q_all.neighbour_targets, fit_text, None))
        for k, label in enumerate(SIZE_GROUPS):
            q = label_quality(rows, truth.take(sizes == k))
            out.append((v, label, q.missing_recovered, q.missing_targets, q.neighbour_recovered,
                        q.neighbour_targets, q.correct, None))
    return out


def training_image_rows(run: Path, truth: Annotations) -> list[tuple]:
    """Per label set (``human`` = the official rows): its training slices, the truth lesions on
    them, and how many of those no label of the set covers (IoU >= 0.5): they are trained as
    background.  Pseudo-labels on a slice no human row is on make that slice a new training
    image, with every lesion the labeller did not find on it as a negative."""
    truth_by = boxes_by_slice(truth.select("train", sources=None, drop_noisy=False))
    sets = {"human": read_annotations(run / "data" / "DL_info.csv")}
    sets.update({v: read_annotations(run / "labels" / f"labels_{v}.csv") for v in VARIANTS
                 if (run / "labels" / f"labels_{v}.csv").is_file()})
    human_slices = set(sets["human"].select("train", sources=(Source.HUMAN,), drop_noisy=False).groups())
    none = np.zeros((0, 4))
    out = []
    for name, rows in sets.items():
        labels_by = boxes_by_slice(rows.select("train", sources=None, drop_noisy=False))
        for part, slices in (("key slices", sorted(human_slices)),
                             ("added slices", sorted(set(labels_by) - human_slices))):
            if name == "human" and part == "added slices":
                continue
            lesions = unlabeled = 0
            for sl in slices:
                t, lab = truth_by.get(sl, none), labels_by.get(sl, none)
                lesions += len(t)
                if len(t):
                    unlabeled += int(len(t) - ((box_iou(t, lab) >= 0.5).any(axis=1).sum() if len(lab) else 0))
            out.append((name, part, len(slices), lesions, unlabeled))
    return out


def train_predictions(run: Path) -> Path:
    hits = sorted((run / "preds").glob("train_tta.*"))
    if not hits:
        raise FileNotFoundError(f"no train predictions under {run / 'preds'}")
    return hits[0]


def mining_rows(run: Path, truth: Annotations) -> tuple[list[tuple], np.ndarray]:
    """Mining at each alpha (boxes, right, missing lesions recovered) and the baseline's best
    score (IoU >= 0.5) on each missing training lesion's key slice."""
    ann = read_annotations(run / "data" / "DL_info.csv")
    preds = read_predictions(train_predictions(run))
    human = ann.select("train", sources=(Source.HUMAN,), drop_noisy=False)
    rows = []
    for alpha in ALPHAS:
        mined = mine(ann, preds, score=alpha, split="train")
        q = label_quality(concat([human, mined]), truth)
        rows.append((alpha, q.boxes, q.correct, q.missing_recovered, q.missing_targets))
    missing, _ = target_truth(ann, truth)
    names = preds.file_names.astype(str)
    on = np.flatnonzero(np.isin(names, list(missing)))
    order = on[np.argsort(names[on], kind="stable")]
    uniq, start = np.unique(names[order], return_index=True)
    end = np.append(start[1:], order.size)
    pos = {n: order[a:b] for n, a, b in zip(uniq.tolist(), start.tolist(), end.tolist())}
    best = []
    for name, boxes in missing.items():
        idx = pos.get(name, np.zeros(0, np.int64))
        sc = np.where(box_iou(boxes, preds.boxes[idx]) >= 0.5, preds.scores[idx][None, :], 0.0)
        best += list(sc.max(axis=1) if idx.size else np.zeros(len(boxes)))
    return rows, np.asarray(best)


def analyze(run: Path, fps: float) -> dict:
    """Every table of one finished run (see the module docstring)."""
    truth_path = run / "data" / "truth.csv"
    if not truth_path.is_file():
        raise SystemExit(f"{run}: no data/truth.csv (the analysis needs complete truth)")
    truth = read_annotations(truth_path)
    out: dict = {"name": run.name, "fps": fps, "tests": {}}
    results = evaluations(run, truth)
    for kind, key in (("official labels", "official"), ("truth", "truth")):
        rows, found = found_at(results, key, fps)
        out["tests"][kind] = (len(rows), gain_loss_rows(found, groups_of(rows, run / "data")))
    out["hidden"] = hidden_lesions_among_fps(results, fps)
    out["pseudo"] = pseudo_label_rows(run, truth)
    out["images"] = training_image_rows(run, truth)
    out["mining"], out["best"] = mining_rows(run, truth)
    return out


def markdown(res: dict) -> str:
    fps = res["fps"]
    lines = [f"## {res['name']}", ""]
    for kind, (n_lesions, rows) in res["tests"].items():
        lines += [f"**Test lesions found at {fps:g} FPs per image, {kind}** ({n_lesions} lesions; "
                  "gained / lost against the baseline; churn = gained + lost)", "",
                  "| variant | group | lesions | baseline found | gained | lost | net | churn |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for v, gname, label, n, b, g, lo in rows:
            group = "all" if gname == "all" else f"{gname} {label}"
            lines.append(f"| {v} | {group} | {n} | {b} | {g} | {lo} | {g - lo:+d} | {g + lo} |")
        lines.append("")
    lines += [f"Official false positives up to {fps:g} per image that are real, unlabeled lesions (IoU >= 0.5 "
              "with a truth box): " + ", ".join(f"{v} {h}/{n}" for v, (h, n) in res["hidden"].items()) + ".", ""]
    lines += ["**Training pseudo-labels against truth by long diameter** (recovered / targets; "
              "IoU >= 0.5)", "",
              "| labels | long diameter | missing key-slice lesions | lesions on unlabeled K+/-1 | right boxes (IoU >= 0.5) |",
              "| --- | --- | --- | --- | --- |"]
    for v, label, mr, mt, nr, nt, c, _ in res["pseudo"]:
        lines.append(f"| {v} | {label} | {mr}/{mt} | {nr}/{nt} | {c} |")
    lines += ["", "**Training images and their unlabeled lesions** (truth lesions on the training slices of "
              "each label set that no label of the set covers: trained as background)", "",
              "| labels | slices | count | truth lesions on them | unlabeled | share |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, part, n, les, unl in res["images"]:
        lines.append(f"| {name} | {part} | {n} | {les} | {unl} | {100 * unl / les if les else 0:.0f}% |")
    lines += ["", "**Mining (Algorithm 2) at other score thresholds alpha** (tau = 0.5; train predictions "
              "of the baseline with TTA)", "",
              "| alpha | mined boxes | right | missing lesions recovered |", "| --- | --- | --- | --- |"]
    for a, boxes, c, mr, mt in res["mining"]:
        lines.append(f"| {a:g} | {boxes} | {c} | {mr}/{mt} |")
    best = res["best"]
    if best.size:
        q = [(f"> {t:g}", int((best > t).sum())) for t in (0.05, 0.5, 0.7, 0.9)]
        lines += ["", f"Best baseline score (IoU >= 0.5) on the key slice of each of the {best.size} missing "
                  "training lesions: " + ", ".join(f"{lab}: {n}" for lab, n in q)
                  + f"; median {np.median(best):.2f}."]
    return "\n".join(lines) + "\n"


def summary_markdown(results: list[dict]) -> str:
    """One line per run and variant: the test lesions it gains and loses, the real lesions among
    its official FPs, and what its pseudo-labels were; then mining per run."""
    fps = results[0]["fps"]
    lines = [f"**Per-lesion summary at {fps:g} FPs per image** (gained / lost test lesions against the "
             "baseline, net in brackets; hidden = official FPs that are real unlabeled lesions, variant vs "
             "baseline; pseudo-labels right / all with their median IoU to the truth box)", "",
             "| run | variant | official: gained / lost (net) | truth: gained / lost (net) | hidden | pseudo-labels |",
             "| --- | --- | --- | --- | --- | --- |"]
    for res in results:
        alls = {kind: {r[0]: r for r in rows if r[1] == "all"} for kind, (_, rows) in res["tests"].items()}
        pseudo = {r[0]: r[6] for r in res["pseudo"] if r[1] == "all"}
        hb = res["hidden"]["baseline"][0]
        for v in VARIANTS:
            cells = []
            for kind in ("official labels", "truth"):
                _, _, _, _, _, g, lo = alls[kind][v]
                cells.append(f"{g} / {lo} ({g - lo:+d})")
            lines.append(f"| {res['name']} | {v} | {cells[0]} | {cells[1]} | {res['hidden'][v][0]} vs {hb} | "
                         f"{pseudo.get(v, '-')} |")
    lines += ["", "Mining per run (boxes mined / right at alpha 0.9, the paper's, and at 0.5; best baseline "
              "score on the missing training lesions):", ""]
    for res in results:
        m = {a: (b, c) for a, b, c, _, _ in res["mining"]}
        best = res["best"]
        lines.append(f"- {res['name']}: alpha 0.9 {m[0.9][0]} / {m[0.9][1]}, alpha 0.5 {m[0.5][0]} / {m[0.5][1]}; "
                     f"{int((best > 0.9).sum())} of {best.size} missing lesions scored > 0.9 "
                     f"(median {np.median(best) if best.size else float('nan'):.2f})")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished pipeline run folders")
    ap.add_argument("--fps", type=float, default=4.0, help="FPs per image at which a lesion counts as found")
    ap.add_argument("--out", type=Path, help="write the markdown here (default: print)")
    args = ap.parse_args()
    results = [analyze(r, args.fps) for r in args.runs]
    text = summary_markdown(results) + "\n" + "\n".join(markdown(r) for r in results)
    if args.out:
        from lesionprop.fileio import atomic_write

        with atomic_write(args.out) as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
