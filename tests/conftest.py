"""Shared fixtures.  Data that is not ours is read from ../shared and skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real DL_info rows, real CT); skips the test when absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return path


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny synthetic DeepLesion-format dataset (read-only for tests; see docs/synthetic.md).

    8 series (>= 3 patients: train, val and test all present), 128 x 128 px slices, slice
    intervals from DeepLesion's 1/2/5 mm mix, 24 mm of slices per series, ~3 lesions per
    series.  Files: Images_png/, DL_info.csv, truth.csv (+ Lesion_id), series_info.csv,
    lesions.csv.  Built once per session (~1-2 s).
    """
    from lesionprop.synth.dataset import generate_dataset

    root = tmp_path_factory.mktemp("tiny_synth")
    generate_dataset(root, series=8, seed=0, image_size=128, z_extent_mm=24.0, workers=1, progress=False)
    return root
