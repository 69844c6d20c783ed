"""benchmarks/bench_gpu.py runs end to end in its tiny CPU mode (the GPU run is the same code)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.slow


def test_bench_gpu_tiny_mode_writes_every_section(tmp_path):
    import bench_gpu

    out = tmp_path / "gpu.md"
    assert bench_gpu.main(["--tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out),
                           "--seconds", "0.5"]) == 0
    text = out.read_text()
    for heading in ("## Loader", "## Training", "## Inference", "## Projection"):
        assert heading in text
    assert re.search(r"\| 1 \| [0-9.]+ \| [0-9.]+ \|", text)                 # one loader worker measured
    assert len(re.findall(r"\| 2 \| (on|off) \| (on|off) \| [0-9.]+ \|", text)) == 5
    assert re.search(r"\| total \| [0-9.]+ \| [0-9.]+ \|", text)
    assert "largest score difference of matched boxes" in text


def test_projection_arithmetic():
    import bench_gpu

    rows = dict((n, (a, b)) for n, a, b in bench_gpu.projection(train_1=160.0, train_8=40.0, infer_views=600.0,
                                                                 infer_key=200.0, label_s=0.0, report_s=0.0))
    images = 36000 * 16
    assert rows["baseline training"][0] == pytest.approx(images / 160 / 3600)
    assert rows["baseline training"][1] == pytest.approx(images / (8 * 40 * bench_gpu.DDP_EFFICIENCY) / 3600)
    assert rows["four retrains"][0] == pytest.approx(4 * rows["baseline training"][0])
    assert rows["TTA predictions, K and K +/- 1"][0] == pytest.approx(68757 * 6 / 600 / 3600)
    assert rows["total"][0] == pytest.approx(sum(v[0] for k, v in rows.items() if k != "total"))
