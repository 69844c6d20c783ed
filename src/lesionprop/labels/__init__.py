"""Pseudo-label tools over any detector's boxes, each returning the NEW rows:

* :func:`lesionprop.labels.propagate.propagate` (Algorithm 1, slice-level label propagation)
* :func:`lesionprop.labels.mine.mine` (Algorithm 2, missing ground-truth mining)
* :func:`lesionprop.labels.distill.distill` (the data-distillation baseline)

The functions are not re-exported here: their names are those of their modules.
"""
