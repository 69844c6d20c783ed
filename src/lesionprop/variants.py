"""The detectors the paper compares, one row each: read by the label tools, the config default,
the pipeline's stages and its report.

A variant is a detector trained on one label set: the human labels alone (``baseline``) or the
human labels plus the pseudo-labels of one label tool.  ``label_file`` is the set's file name in
the pipeline's ``labels/`` folder and ``lesionprop label-sets --out-dir`` (None: the human
labels).  ``paper`` is the paper's sensitivity (%) at 0.5, 1, 2, 4, 8 FPs per image on the
DeepLesion test set (its Tables 1 and 2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    label_file: str | None
    title: str
    paper: tuple[float, ...] | None = None


#: in the report's order (the paper's rows)
VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", None, "FPN-3DCE (baseline)", (64.56, 75.29, 82.49, 86.87, 89.92)),
    Variant("dd", "labels_dd.csv", "Data distillation", (61.05, 72.54, 81.58, 87.58, 91.65)),
    Variant("lp", "labels_lp.csv", "FPN-3DCE + LP", (65.49, 75.71, 83.27, 87.83, 90.82)),
    Variant("mm", "labels_mm.csv", "FPN-3DCE + MM", (65.70, 76.23, 84.14, 88.70, 91.75)),
    Variant("mm_lp", "labels_mm_lp.csv", "FPN-3DCE + MM + LP (ours)", (66.02, 76.87, 84.61, 89.15, 92.00)),
)

BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}
#: the variants trained on pseudo-labels (every one with a label file)
LABEL_SETS: tuple[Variant, ...] = tuple(v for v in VARIANTS if v.label_file)
VARIANT_NAMES: tuple[str, ...] = tuple(BY_NAME)


def title(name: str) -> str:
    """The report's name of variant ``name`` (a user's own label set keeps its own name)."""
    v = BY_NAME.get(name)
    return v.title if v else name
