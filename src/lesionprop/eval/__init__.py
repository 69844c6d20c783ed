"""Evaluation: sensitivity at FPs per image (FROC) on DeepLesion-schema annotations."""

from lesionprop.eval.froc import FrocResult, evaluate, froc_curve, sensitivity_at

__all__ = ["FrocResult", "evaluate", "froc_curve", "sensitivity_at"]
