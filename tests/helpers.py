"""Shared test helpers: small annotation / prediction worlds and the per-box reference loops.

Imported as ``from helpers import ...``: pytest puts this folder on the import path of
the test modules (rootdir ``tests/`` without ``__init__.py``), so no test touches sys.path.
The per-box loops of ``benchmarks/reference_loops.py`` are the tests' oracle and the
benchmark's baseline: one file, loaded here by its path.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from lesionprop.annotations import Annotations, Lesion, write_annotations
from lesionprop.data.layout import write_slice
from lesionprop.predictions import Predictions


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module, loaded by its path (for tests of a benchmark's own logic)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lesionprop_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


loops = load_benchmark("reference_loops")
make_lesion = loops.make_lesion


def as_rows(x: Annotations | list[Lesion]) -> list[tuple]:
    """What a pseudo-label row says, comparable between Annotations and Lesion lists."""
    rows = x.rows() if isinstance(x, Annotations) else list(x)
    return [(r.file_name, r.series, r.key_slice, tuple(float(v) for v in r.box), r.source, float(r.score),
             r.lesion_type, r.split, r.noisy, tuple(r.spacing)) for r in rows]


def rows_of(fn):
    """``fn`` (returning Annotations) with its result as a list of Lesion rows."""
    def call(*args, **kwargs) -> list[Lesion]:
        return fn(*args, **kwargs).rows()
    return call


S1, S2 = "000001_01_01", "000002_01_01"


def name(series, k):
    return f"{series}_{k:03d}.png"


def preds(*rows):
    """rows: (series, slice, box, score)."""
    if not rows:
        return Predictions.from_arrays([], np.zeros((0, 4)), [])
    return Predictions.from_arrays([name(s, k) for s, k, _, _ in rows], [r[2] for r in rows], [r[3] for r in rows])


@st.composite
def worlds(draw):
    """Small random annotation + prediction sets on an integer grid (ties, touching boxes, edges)."""
    coord = st.integers(0, 10).map(float)
    size = st.integers(0, 6).map(float)

    def box():
        x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
        return (x, y, x + w, y + h)

    lesions = []
    series_list = [S1, S2][: draw(st.integers(1, 2))]
    for series in series_list:
        for k in draw(st.lists(st.integers(0, 7), unique=True, max_size=4)):
            for _ in range(draw(st.integers(1, 3))):
                lesions.append(make_lesion(name(series, k), box(), split=draw(st.sampled_from([1, 1, 1, 3])),
                                           source=draw(st.sampled_from(["human", "human", "mined", "propagated"])),
                                           lesion_type=draw(st.integers(1, 8))))
    lesions = draw(st.permutations(lesions))
    # predictions near key slices, mostly perturbed copies of a few shared boxes (tracks across slices)
    pool = [les.box for les in lesions] + [box() for _ in range(3)]
    keys = [(les.series, les.key_slice) for les in lesions] or [(S1, 3)]
    jitter = st.sampled_from([-1.0, 0.0, 0.0, 1.0])
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        series, k = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            x1, y1, x2, y2 = draw(st.sampled_from(pool))
            x1, y1 = x1 + draw(jitter), y1 + draw(jitter)
            b = (x1, y1, max(x1, x2 + draw(jitter)), max(y1, y2 + draw(jitter)))
        else:
            b = box()
        rows.append((series, max(0, k + draw(st.sampled_from([-1, 0, 1, 2]))), b,
                     draw(st.sampled_from([0.2, 0.5, 0.9, 0.91, 0.95, 1.0]))))
    return lesions, preds(*rows)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write_blob_dataset(root: Path, *, series: int = 4, size: int = 128, slices: int = 7, seed: int = 0,
                       splits: tuple[int, ...] = (1, 1, 2, 3), empty_train_slice: bool = False) -> Path:
    """A tiny DeepLesion-layout dataset: a body disc with one bright blob per series; returns DL_info.csv.

    Every series has slices 0..slices-1 at 0.8 mm pixels and 2 mm intervals; the
    blob spans all slices, its key slice is the middle one.  ``empty_train_slice``
    adds a train row whose box is too small to keep (under ``MIN_BOX_SIZE`` in the sample: the
    slice trains with no box; a box outside the image is refused by the annotation reader).
    """
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for s in range(series):
        name = f"{s + 1:06d}_01_01"
        r = rng.uniform(9, 15)
        cx, cy = rng.uniform(size * 0.3, size * 0.7, size=2)
        for k in range(slices):
            hu = np.full((size, size), -1000.0)
            hu[(xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.45) ** 2] = 40.0
            hu[(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = 1500.0
            write_slice(root, name, k, hu)
        key = slices // 2
        box = (cx - r + 1, cy - r + 1, cx + r + 1, cy + r + 1)   # file frame = pixel + 1
        rows.append(_row(name, s + 1, key, box, splits[s % len(splits)], size))
    if empty_train_slice:
        rows.append(_row("000001_01_01", 1, 1, (1.0, 1.0, 1.001, 1.001), 1, size))
    path = root / "DL_info.csv"
    write_annotations(path, rows)
    return path


def _row(series: str, patient: int, key: int, box, split: int, size: int) -> Lesion:
    x1, y1, x2, y2 = box
    return Lesion(file_name=f"{series}_{key:03d}.png", patient=patient, study=1, series_id=1, key_slice=key,
                  measurement=(x1, y1, x2, y2, x1, y2, x2, y1), box=(x1, y1, x2, y2),
                  diameters=(x2 - x1, y2 - y1), location=(0.5, 0.5, 0.5), lesion_type=-1, noisy=0,
                  slice_range=(0, 6), spacing=(0.8, 0.8, 2.0), image_size=(size, size),
                  windows=(-1024.0, 3071.0), gender="F", age=50.0, split=split)


# ---------------------------------------------------------------- patients, for the bootstrap tests

def slice_name(patient, k):
    return f"{patient:06d}_01_01_{k:03d}.png"


def random_world(rng, n_patients, dets_per_image=4, hit_rate=0.5):
    """Test-split lesions and scored predictions: 1-3 key slices per patient, 1-2 lesions each;
    per image some detections near a lesion (hits or misses) and some far away (FPs).
    Returns (lesions, rows) with rows (patient, slice, box, score)."""
    lesions, rows = [], []
    for p in range(1, n_patients + 1):
        for k in range(10, 10 + int(rng.integers(1, 4))):
            boxes = []
            for _ in range(int(rng.integers(1, 3))):
                x, y, s = rng.integers(0, 200, 2).astype(float).tolist() + [float(rng.integers(4, 30))]
                boxes.append((x, y, x + s, y + s))
                lesions.append(make_lesion(slice_name(p, k), boxes[-1], split=3))
            for _ in range(int(rng.integers(0, dets_per_image + 1))):
                # the same draws whatever hit_rate: worlds of one seed share their lesions
                u, pick, j, far = rng.random(), int(rng.integers(len(boxes))), rng.normal(0, 0.25, 2), \
                    rng.integers(300, 480, 2).astype(float)
                if u < hit_rate:
                    x1, y1, x2, y2 = boxes[pick]
                    j = j * (x2 - x1)
                    box = (x1 + j[0], y1 + j[1], x2 + j[0], y2 + j[1])
                else:
                    box = (far[0], far[1], far[0] + 10, far[1] + 10)
                rows.append((p, k, box, float(rng.random())))
    return lesions, rows


def to_preds(rows):
    if not rows:
        return Predictions.from_arrays([], np.zeros((0, 4)), [])
    return Predictions.from_arrays([slice_name(p, k) for p, k, _, _ in rows], [r[2] for r in rows],
                                   [r[3] for r in rows])


def write_world(tmp_path, lesions, rows, name="preds.csv"):
    from lesionprop.annotations import write_annotations
    from lesionprop.predictions import write_predictions

    ann = tmp_path / "DL_info.csv"
    if not ann.exists():
        write_annotations(ann, lesions)
    pred = tmp_path / name
    p = to_preds(rows)
    write_predictions(pred, p.file_names, p.boxes, p.scores)
    return ann, pred


def fuzz(n: int):
    """Hypothesis settings of the fuzz tests: ``n`` cases (times ``LESIONPROP_FUZZ_SCALE``),
    deterministic, no shrinking (keeps the suite's time)."""
    scale = float(os.environ.get("LESIONPROP_FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, int(n * scale)), deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
