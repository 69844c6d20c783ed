"""Complete-label evaluation from files: the ``lens`` and ``harvester`` protocols of
``lesionprop evaluate`` (and of the pipeline's report).

Boxes and frames as in :mod:`lesionprop.eval.complete_labels` (file frame x, y; series slice
z).  Predictions: a per-box CSV with ``Lesion_id`` (``lesionprop link``) or a LENS-style
pickle (n x 7 per sub-volume, ``lens`` only).  Ground truth: truth.csv, the LENS
pickle or the Lesion Harvester pickles.  With truth.csv the sub-volumes are each
series' ``Slice_range`` in the split, or, given annotations, the sub-volumes of the
split's key slices (``Slice_range``, or K - window ... K + window), overlapping ones
of a series merged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lesionprop.eval.complete_labels import (
    CompleteLabels, Detections3D, read_complete_labels, read_linked_predictions, read_prediction_pickle,
    units_from_key_slices,
)
from lesionprop.errors import InputError
from lesionprop.eval.harvester import HARVESTER_FPS, HARVESTER_IOU, evaluate_harvester
from lesionprop.eval.lens import LENS_FPS, LENS_IOBB, ProtocolResult, evaluate_lens

PROTOCOLS = ("key-slice", "lens", "harvester")
DEFAULT_RATES = {"lens": LENS_FPS, "harvester": HARVESTER_FPS}


def load_truth(truth: str | Path, fmt: str = "auto", *, split: str = "test", annotations=None,
               window: int | None = None) -> CompleteLabels:
    """Ground truth for a complete-label protocol (``annotations``: Annotations)."""
    units = units_from_key_slices(annotations, split, window) if annotations is not None else None
    if units is not None and not units:
        raise InputError(f"no key slices of split {split!r} in the annotations: no sub-volumes to evaluate")
    return read_complete_labels(truth, fmt, split=split, units=units)


def load_detections(predictions: str | Path, labels: CompleteLabels, *, split: str = "test") -> Detections3D:
    """Linked prediction CSV (``.csv``) or LENS-style prediction pickle (anything else)."""
    if Path(predictions).suffix.lower() == ".csv":
        return read_linked_predictions(predictions, labels)
    return read_prediction_pickle(predictions, labels, split)


def evaluate_complete(protocol: str, labels: CompleteLabels, dets: Detections3D, *,
                      fps: Sequence[float] | None = None, iou: float = HARVESTER_IOU,
                      iobb: float = LENS_IOBB) -> ProtocolResult:
    """Run ``lens`` or ``harvester`` (their own FP rates when ``fps`` is None)."""
    if protocol not in ("lens", "harvester"):
        raise InputError(f"complete-label protocol must be lens or harvester, got {protocol!r}")
    fps = DEFAULT_RATES[protocol] if fps is None else tuple(float(f) for f in fps)
    if not fps or any(not np.isfinite(f) or f < 0 for f in fps):
        raise InputError(f"fps must be non-negative numbers, got {list(fps)}")
    if protocol == "lens":
        return evaluate_lens(labels, dets, iobb=iobb, fps=fps)
    return evaluate_harvester(labels, dets, iou=iou, fps=fps)


def table(result: ProtocolResult, labels: CompleteLabels, dets: Detections3D, threshold: str, ci=None) -> str:
    """The text report of ``lesionprop evaluate --protocol lens|harvester``."""
    lines = [f"protocol {result.protocol} ({labels.source} truth): {result.units} sub-volumes, "
             f"{result.lesions} {'lesions' if result.protocol == 'lens' else 'boxes'}, {threshold}; "
             f"{len(dets.scores)} predicted lesions"
             + (f" ({dets.outside} boxes outside every sub-volume ignored)" if dets.outside else ""),
             "FPs/volume   " + "  ".join(f"{f:>6g}" for f in result.fps),
             "sensitivity  " + "  ".join(f"{100 * s:6.2f}" for s in result.sensitivity)]
    if ci is not None:
        lines += [f"{100 * ci.level:g}% CI low".ljust(13) + "  ".join(f"{100 * s:6.2f}" for s in ci.ci_low),
                  f"{100 * ci.level:g}% CI high".ljust(13) + "  ".join(f"{100 * s:6.2f}" for s in ci.ci_high)]

    def with_ci(pair) -> str:
        return f" ({100 * ci.level:g}% CI {100 * pair[0]:.2f}-{100 * pair[1]:.2f})" if ci is not None else ""

    if result.mean is not None:
        lines.append(f"mean over {min(result.fps):g}-{max(result.fps):g} FPs: {100 * result.mean:.2f}"
                     + with_ci(ci.mean_ci if ci is not None else None))
    if result.ap is not None:
        lines.append(f"AP: {100 * result.ap:.2f}" + with_ci(ci.ap_ci if ci is not None else None))
    if ci is not None:
        lines.append(f"CIs: bootstrap of {ci.n_boot} resamples over {result.outcomes.units.size} patients")
    for title, groups in (("slice interval", result.by_interval), ("lesion size", result.by_size)):
        if groups:
            lines.append(f"by {title} (sub-volumes / {'lesions' if result.protocol == 'lens' else 'boxes'}):")
            for name, sub in groups.items():
                lines.append(f"  {name:<14s} {sub.images:>6d} / {sub.lesions:<6d} "
                             + "  ".join(f"{100 * s:6.2f}" for s in sub.sensitivity))
    return "\n".join(lines)
