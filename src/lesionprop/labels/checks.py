"""Checks of the label tools' arguments (thresholds, IoU, slice offsets): a bad value is the
user's to fix, so each raises :class:`~lesionprop.errors.InputError` naming it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lesionprop.errors import InputError


def check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return value


def check_iou(value: float) -> float:
    """An IoU threshold in [0, 1) (a test ``IoU > tau`` with tau < 0 would pass every pair)."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise InputError(f"iou must be in [0, 1), got {value!r}")
    return value


def check_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(o) for o in offsets)
    if not out or any(o == 0 for o in out) or len(set(out)) != len(out):
        raise InputError(f"offsets must be distinct non-zero integers, got {list(offsets)}")
    return out
