"""argparse helpers shared by the commands: value types that refuse out-of-range input at
parse time (exit code 2, naming the option) and negative-number lists."""

from __future__ import annotations

import argparse
import re
from typing import Callable

import numpy as np


def allow_negative_lists(parser: argparse.ArgumentParser) -> None:
    """Let ``--offsets -1,1`` parse (argparse would take ``-1,1`` for an option)."""
    parser._negative_number_matcher = re.compile(r"^-\d[\d,.\s-]*$")  # noqa: SLF001


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def unit_interval(text: str) -> float:
    """argparse type of an IoU / IoBB threshold: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"an overlap threshold is in [0, 1], got {text}")
    return value


def finite_float(text: str) -> float:
    """argparse type of a score threshold: any finite number (detectors' score scales differ)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def count(minimum: int) -> Callable[[str], int]:
    """argparse type of an integer >= ``minimum`` (iterations, batch sizes, slice windows)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def prediction_output(text: str) -> str:
    """argparse type of an output prediction file: its suffix must name CSV, Arrow IPC or Parquet."""
    from lesionprop.predictions import PredictionError, output_format

    try:
        output_format(text, "")
    except PredictionError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return text


PRETRAINED_HELP = ("the backbone's starting weights: imagenet (torchvision's ImageNet weights, read from the "
                   "torch hub cache and downloaded there when online; imagenet-v2 for IMAGENET1K_V2), a "
                   "state-dict file, or none (random initialisation, every layer trained)")


def pretrained_value(text: str) -> str:
    """``--pretrained``: ``none`` -> the YAML null of ``model.pretrained``; anything else as given."""
    return "null" if text.strip().lower() in ("none", "null", "") else text
