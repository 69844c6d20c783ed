"""The pipeline report: Tables 1 and 2 with our numbers, FROC plot, pseudo-label
quality and figures like the paper's Figures 2-4.

Sensitivities are fractions in JSON/CSV and percentages in the markdown table.  Each
variant's sensitivity comes with a 95% CI from a bootstrap over test patients, and each
variant's difference to the baseline with a PAIRED bootstrap (the same resampled
patients for every variant; :mod:`lesionprop.eval.compare`), its CI and P(diff > 0).
Boxes drawn in figures are file-frame boxes converted to the pixel frame.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesionprop.annotations import read_annotations
from lesionprop.engine.metrics_log import read_metrics
from lesionprop.eval.compare import compare
from lesionprop.eval.froc import FrocResult, evaluate
from lesionprop.fileio import atomic_write, save_figure
from lesionprop.pipeline.quality import label_quality
from lesionprop.predictions import read_predictions
from lesionprop.variants import VARIANTS
from lesionprop.variants import title as variant_title

#: the report's bootstrap: resamples, seed, confidence level
BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL = 1000, 0, 0.95

#: the paper's Tables 1 and 2 (DeepLesion test set, sensitivity % at 0.5/1/2/4/8 FPs), per variant
PAPER = {v.name: list(v.paper) for v in VARIANTS if v.paper}


def _ci_cell(x: float, lo: float, hi: float, sign: str = "") -> str:
    return f"{100 * x:{sign}.1f} ({100 * lo:{sign}.1f}, {100 * hi:{sign}.1f})"


def markdown_table(comparison: Any, title: str) -> str:
    """Sensitivity % (95% CI) per variant and rate, then the paired differences to the baseline."""
    c = comparison
    fps = c.fps
    head = "| variant | " + " | ".join(f"{f:g}" for f in fps) + " | mean 0.5-8 | paper @4 |"
    lines = [f"**{title}** (sensitivity % at FPs per image, {100 * c.level:g}% CI)", "", head,
             "|" + " --- |" * (len(fps) + 3)]
    for i, v in enumerate(c.names):
        paper = PAPER.get(v)
        p4 = f"{paper[3]:.2f}" if paper else ""
        cells = [_ci_cell(*x) for x in zip(c.sensitivity[i], c.ci_low[i], c.ci_high[i])]
        lines.append(f"| {variant_title(v)} | " + " | ".join(cells)
                     + f" | {_ci_cell(c.mean[i], *c.mean_ci[i])} | {p4} |")
    if len(c.names) > 1:
        lines += ["", f"Paired difference to {variant_title(c.names[0])} (points, "
                      f"{100 * c.level:g}% CI; P = share of resamples with a difference > 0)", "",
                  "| variant | " + " | ".join(f"{f:g}" for f in fps) + " | mean 0.5-8 |",
                  "|" + " --- |" * (len(fps) + 2)]
        for i in range(1, len(c.names)):
            cells = [_ci_cell(d, lo, hi, "+") + f" P={p:.2f}"
                     for d, lo, hi, p in zip(c.diff[i], c.diff_low[i], c.diff_high[i], c.p_gt_0[i])]
            cells.append(_ci_cell(c.mean_diff[i], *c.mean_diff_ci[i], "+") + f" P={c.mean_p_gt_0[i]:.2f}")
            lines.append(f"| {variant_title(c.names[i])} | " + " | ".join(cells) + " |")
    lines += ["", f"{c.images} test images, {c.lesions} lesions, {c.units} patient(s); CIs from {c.n_boot} "
                  "paired bootstrap resamples of the test patients."
              + (" With so few patients the bootstrap understates the uncertainty." if c.units < 20 else "")]
    return "\n".join(lines)


def comparisons(rows: Any, truth: Any | None, pred_files: dict[str, Path], fps: Sequence[float],
                *, n_boot: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL
                ) -> tuple[Any, Any | None]:
    """Paired comparisons of the variants' test predictions (baseline first) on the annotation
    rows ``rows``: official labels, and complete labels ``truth`` (annotation rows) when given."""

    names = sorted(pred_files, key=lambda v: (v != "baseline", list(pred_files).index(v)))
    preds = [read_predictions(pred_files[v]) for v in names]
    kw = {"split": "test", "fps": fps, "n_boot": n_boot, "seed": seed, "level": level}
    official = compare(rows, preds, names, **kw)
    with_truth = compare(rows, preds, names, truth=truth, **kw) if truth is not None else None
    return official, with_truth


def variant_entries(c: Any) -> dict[str, dict[str, Any]]:
    """table.json's per-variant entries: sensitivity, ci_low, ci_high (lists per FP rate), mean, mean_ci."""
    return {v: {"sensitivity": [float(x) for x in c.sensitivity[i]], "ci_low": [float(x) for x in c.ci_low[i]],
                "ci_high": [float(x) for x in c.ci_high[i]], "mean": float(c.mean[i]),
                "mean_ci": [float(x) for x in c.mean_ci[i]]} for i, v in enumerate(c.names)}


def lens_table(lens: dict[str, dict[str, Any]]) -> str:
    """The 3D complete-label evaluation (``lens`` against truth.csv, :mod:`lesionprop.eval.lens`)."""
    any_r = next(iter(lens.values()))
    fps = any_r["fps"]
    lines = ["**In 3D against complete labels** (LENS protocol on truth.csv: sensitivity % at FPs per "
             "sub-volume, 3D IoBB >= 0.3)", "",
             "| variant | " + " | ".join(f"{f:g}" for f in fps) + f" | mean {min(fps):g}-{max(fps):g} |",
             "|" + " --- |" * (len(fps) + 2)]
    with_ci = all("ci_low" in r for r in lens.values())
    if with_ci:
        lines[0] = lines[0].replace("sub-volume, 3D IoBB >= 0.3)", "sub-volume, 3D IoBB >= 0.3; 95% CI from 1,000 "
                                    "bootstrap resamples of the test patients)")
    for v, r in lens.items():
        if with_ci:
            cells = [_ci_cell(s, lo, hi) for s, lo, hi in zip(r["sensitivity"], r["ci_low"], r["ci_high"])]
            mean = _ci_cell(r["mean"], *r["mean_ci"])
        else:
            cells, mean = [f"{100 * s:.1f}" for s in r["sensitivity"]], f"{100 * r['mean']:.1f}"
        lines.append(f"| {variant_title(v)} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", f"{any_r['units']} sub-volumes (test key slices K +/- {any_r['window']}, overlapping ones "
                  f"merged), {any_r['lesions']} lesions; each model's predictions on those slices linked into "
                  "3D lesions (`lesionprop link`)."]
    return "\n".join(lines)


def paper_table(fps: Sequence[float]) -> str:
    lines = ["**The paper's numbers** (DeepLesion test set, for reference)", "",
             "| variant | " + " | ".join(f"{f:g}" for f in fps) + " |", "|" + " --- |" * (len(fps) + 1)]
    for v, row in PAPER.items():
        lines.append(f"| {variant_title(v)} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def _csv_text(official: Any, truth: Any | None, fps: Sequence[float]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["labels", "variant"] + [f"sens@{f:g}" for f in fps] + ["mean", "images", "lesions"]
               + [f"ci_low@{f:g}" for f in fps] + [f"ci_high@{f:g}" for f in fps]
               + [f"diff@{f:g}" for f in fps] + ["mean_diff"])
    for kind, c in (("official", official), ("truth", truth)):
        if c is None:
            continue
        for i, v in enumerate(c.names):
            w.writerow([kind, v] + [f"{s:.6f}" for s in c.sensitivity[i]] + [f"{c.mean[i]:.6f}", c.images, c.lesions]
                       + [f"{s:.6f}" for s in c.ci_low[i]] + [f"{s:.6f}" for s in c.ci_high[i]]
                       + [f"{s:.6f}" for s in c.diff[i]] + [f"{c.mean_diff[i]:.6f}"])
    for v, row in PAPER.items():
        w.writerow(["paper", v] + [f"{x / 100:.4f}" for x in row] + [f"{np.mean(row) / 100:.4f}", "", ""])
    return buf.getvalue()


def froc_plot(results: dict[str, FrocResult], truth: dict[str, FrocResult], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's) stays as it is

    panels = [("official key-slice labels", results)] + ([("complete truth labels", truth)] if truth else [])
    fig = Figure(figsize=(6 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, res) in zip(axes[0], panels):
        for v, r in res.items():
            fp = np.asarray(r.fp_curve)
            se = np.asarray(r.sens_curve)
            ax.plot(np.r_[0, fp], np.r_[0, se], label=variant_title(v))
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlim(0, 16)
        ax.set_xticks([0.5, 1, 2, 4, 8, 16])
        ax.set_xticklabels(["0.5", "1", "2", "4", "8", "16"])
        ax.set_ylim(0, 1)
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("sensitivity")
        ax.set_title(f"FROC, test split, {title}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def initialisation(model: Any) -> str:
    """Where the baseline's weights start (``cfg.model``), in words."""
    if model.init_detector:
        return f"whole detector (ResNet + FPN, RPN, box head) from `{model.init_detector}` (model.init_detector)"
    if model.init_backbone:
        return f"ResNet + FPN from `{model.init_backbone}` (model.init_backbone); RPN and box head random"
    if model.pretrained:
        return f"ImageNet ResNet from `{model.pretrained}` (model.pretrained); FPN, RPN and box head random"
    return "from scratch (every weight random)"


def describe_setup(cfg: Any) -> dict[str, Any]:
    """What the report's numbers came from: detector, initialisation, training lengths."""
    m, t, p = cfg.model, cfg.train, cfg.pipeline
    n = p.retrain_iterations or t.iterations
    retrain = (f"every row, the baseline's too, is the baseline fine-tuned on its labels for {n} iterations"
               if p.retrain_from == "baseline" else
               f"each variant trains like the baseline, from the same start, for {n} iterations")
    return {"backbone": f"{m.backbone} (width {m.base_width}, FPN {m.fpn_channels}, norm {m.norm})",
            "slices": cfg.data.num_slices, "pixel_mm": cfg.data.target_spacing_mm,
            "initialisation": initialisation(m), "baseline_iterations": t.iterations, "retrains": retrain,
            "label_tta": p.label_tta}


def training_fit(rows: Any, truth: Any | None, train_preds: Path, fps: Sequence[float]) -> dict[str, Any]:
    """The baseline's sensitivity on its own training key slices (annotation rows ``rows``, and
    complete labels ``truth`` when given), from the predictions the label tools used
    (``RUN/preds/train_tta.csv``): does the detector fit what it was trained on?"""

    preds = read_predictions(train_preds)
    labels = {"official": None} if truth is None else {"official": None, "truth": truth}
    out: dict[str, Any] = {}
    for kind, t in labels.items():
        r = evaluate(rows, preds, split="train", fps=fps, truth=t)
        out[kind] = {"sensitivity": [float(x) for x in r.sensitivity], "images": int(r.images),
                     "lesions": int(r.lesions)}
    return out


def _fit_lines(fit: dict[str, Any], fps: Sequence[float], tta: str) -> list[str]:
    lines = [f"**The baseline on its own training key slices** (sensitivity % at FPs per image; the "
             f"predictions the label tools used, TTA `{tta}`; the test tables above are without TTA)", "",
             "| labels | images | lesions | " + " | ".join(f"{f:g}" for f in fps) + " |",
             "|" + " --- |" * (len(fps) + 3)]
    for kind, r in fit.items():
        lines.append(f"| {kind} | {r['images']} | {r['lesions']} | "
                     + " | ".join(f"{100 * x:.1f}" for x in r["sensitivity"]) + " |")
    return lines


def model_validation(models_dir: Path, variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Validation sensitivity at 4 FPs of each model's ``best.pt`` (the last ``best`` in its
    ``metrics.jsonl``): the baseline, the baseline fine-tuned on its own labels (when the
    variants are fine-tunes) and each variant, with the model's difference to the baseline.
    A fine-tune far below the baseline on val moved away from what the baseline had learnt:
    its test numbers then say more about the fine-tune than about its labels."""

    names = ["baseline"] + (["baseline_finetuned"] if (models_dir / "baseline_finetuned").is_dir() else [])
    names += [v for v in variants if v != "baseline"]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        bests = [float(r["best"]) for r in read_metrics(models_dir / name / "metrics.jsonl")
                 if r.get("best") is not None]
        out[name] = {"val_sensitivity_4fp": bests[-1] if bests else None}
    base = out["baseline"]["val_sensitivity_4fp"]
    for r in out.values():
        v = r["val_sensitivity_4fp"]
        r["vs_baseline"] = None if v is None or base is None else v - base
    return out


def _validation_lines(val: dict[str, dict[str, Any]]) -> list[str]:
    finetunes = "baseline_finetuned" in val
    lines = ["**Each model on the validation split** (sensitivity % at 4 FPs per image of the checkpoint "
             "used" + ("; a fine-tune far below the baseline it started from was knocked off what that "
                       "baseline had learnt, whatever its labels" if finetunes else "") + ")", "",
             "| model | val @4 FPs | vs " + ("the baseline as trained" if finetunes else "the baseline")
             + " (points) |", "| --- | --- | --- |"]
    names = {"baseline": "baseline as trained, before the fine-tunes" if finetunes else variant_title("baseline"),
             "baseline_finetuned": "FPN-3DCE (baseline): fine-tuned on its own labels, the tables' baseline row"}
    for name, r in val.items():
        v, d = r["val_sensitivity_4fp"], r["vs_baseline"]
        lines.append(f"| {names.get(name, variant_title(name))} | {'n/a' if v is None else f'{100 * v:.1f}'}"
                     f" | {'' if d is None or name == 'baseline' else f'{100 * d:+.1f}'} |")
    return lines


def write_report(result: Any, out_dir: Path, *, root: Path, annotations: Path, truth: Path | None,
                 label_files: dict[str, Path], fps: Sequence[float], pred_files: dict[str, Path] | None = None,
                 setup: dict[str, Any] | None = None, train_preds: Path | None = None) -> dict[str, Any]:
    """Write every report artefact under ``out_dir``; return a summary dict.

    ``pred_files``: each variant's test predictions (default ``RUN/preds/test_<variant>.csv``);
    ``setup``: :func:`describe_setup` of the run's config, shown under the title;
    ``train_preds``: the baseline's predictions on the training slices (:func:`training_fit`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = list(fps)
    if pred_files is None:
        pred_files = {v: Path(result.run_dir) / "preds" / f"test_{v}.csv" for v in result.official}
    rows = read_annotations(annotations)              # each file read once for the whole report
    truth_rows = read_annotations(truth) if truth is not None and truth.is_file() else None
    official, with_truth = comparisons(rows, truth_rows, pred_files, fps)
    table: dict[str, Any] = {"fps": fps, "units": "fraction of lesions", "ci_level": official.level,
                             "bootstrap": official.n_boot, "variants": variant_entries(official),
                             "differences": official.to_dict()["differences"],
                             "paper": {v: [x / 100 for x in row] for v, row in PAPER.items()}}
    if with_truth is not None:
        table["truth"] = {"fps": fps, "variants": variant_entries(with_truth),
                          "differences": with_truth.to_dict()["differences"],
                          "images": with_truth.images, "lesions": with_truth.lesions}
    table["images"], table["lesions"], table["patients"] = official.images, official.lesions, official.units

    md = ["# lesionprop pipeline report", ""]
    if setup:
        table["setup"] = setup
        md += [f"Detector: FPN-3DCE, {setup['backbone']}, {setup['slices']} slices, "
               f"{setup['pixel_mm']} mm pixels. Initialisation: {setup['initialisation']}. Baseline: "
               f"{setup['baseline_iterations']} iterations; {setup['retrains']}.", ""]
    md += [markdown_table(official, "Table 1 / 2 with our numbers: official key-slice test labels")]
    if with_truth is not None:
        md += ["", markdown_table(with_truth, "Against complete labels (truth.csv)")]
    if getattr(result, "lens", None):
        table["lens"] = {v: {k: r[k] for k in ("fps", "sensitivity", "mean", "units", "lesions", "window",
                                                "predicted_lesions", "ci_low", "ci_high", "mean_ci") if k in r}
                         for v, r in result.lens.items()}
        md += ["", lens_table(result.lens)]
    md += ["", paper_table(fps)]

    models_dir = Path(result.run_dir) / "models"
    if (models_dir / "baseline").is_dir():
        table["validation"] = model_validation(models_dir, list(pred_files))
        md += [""] + _validation_lines(table["validation"])

    quality: dict[str, Any] = {}
    if truth_rows is not None:
        for name, f in label_files.items():
            quality[name] = label_quality(read_annotations(f), truth_rows).as_dict()
        md += ["", "**Pseudo-label quality on the training split** (against truth; IoU >= 0.5)", "",
               "| labels | boxes | correct | precision | missing key-slice lesions recovered "
               "| unlabeled K+/-1 lesion slices recovered |", "| --- | --- | --- | --- | --- | --- |"]
        for name, q in quality.items():
            md.append(f"| labels_{name} | {q['boxes']} | {q['correct']} | {_pct(q['precision'])} | "
                      f"{q['missing_recovered']}/{q['missing_targets']} ({_pct(q['missing_recall'])}) | "
                      f"{q['neighbour_recovered']}/{q['neighbour_targets']} ({_pct(q['neighbour_recall'])}) |")
        table["label_quality"] = quality

    if train_preds is not None and train_preds.is_file():
        fit, tta = training_fit(rows, truth_rows, train_preds, fps), (setup or {}).get("label_tta")
        table["baseline_train"] = {"predictions": train_preds.name, "tta": tta, **fit}
        md += [""] + _fit_lines(fit, fps, tta or "as configured")

    froc_plot(result.official, result.truth, out_dir / "froc.png")
    md += ["", "![FROC](froc.png)"]
    try:
        from lesionprop.pipeline.figures import draw_label_figures

        figs = draw_label_figures(root, annotations, truth, label_files, out_dir / "figures")
        md += ["", "Figures (human labels red, pseudo-labels yellow, truth green dashed):", ""]
        md += [f"- [{p.name}](figures/{p.name})" for p in figs]
    except ImportError:
        figs = []
    with atomic_write(out_dir / "table.json") as fh:
        json.dump(_clean(table), fh, indent=2, default=_json_default)
    _write_text(out_dir / "table.csv", _csv_text(official, with_truth, fps))
    _write_text(out_dir / "table.md", "\n".join(md) + "\n")
    return {"figures": [str(p) for p in figs]}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _clean(x: Any) -> Any:
    """NaN -> None recursively, so table.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
