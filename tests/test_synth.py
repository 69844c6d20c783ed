"""Synthetic DeepLesion-format datasets: determinism, truth/label consistency, policy, read-back, background."""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesionprop.cli import main
from lesionprop.synth import phantom as ph
from lesionprop.annotations import COLUMNS, read_annotations, series_geometry
from lesionprop.data.layout import parse_file_name, slice_path
from lesionprop.synth.dataset import generate_dataset
from lesionprop.synth.policy import PolicyLesion, choose_unlabeled
from lesionprop.synth.series import SeriesTask, make_series, mask_box, recist_axes

SMALL = dict(image_size=64, z_extent_mm=12.0, workers=1, progress=False)


def read_rows(path):
    return read_annotations(path).rows()


def _lesions_csv(root: Path) -> dict[int, dict[str, str]]:
    with open(root / "lesions.csv", newline="") as fh:
        return {int(r["Lesion_id"]): r for r in csv.DictReader(fh)}


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_files_with_or_without_pool(tmp_path):
    generate_dataset(tmp_path / "a", series=4, seed=3, **SMALL)
    generate_dataset(tmp_path / "b", series=4, seed=3, **{**SMALL, "workers": 2})
    generate_dataset(tmp_path / "c", series=4, seed=4, **SMALL)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and len(fa) > 10
    assert all(filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False) for f in fa)
    assert not filecmp.cmp(tmp_path / "a" / "truth.csv", tmp_path / "c" / "truth.csv", shallow=False)


def test_labels_equal_truth_on_key_slices(tiny_synth):
    labels = read_rows(tiny_synth / "DL_info.csv")
    truth = read_rows(tiny_synth / "truth.csv")
    info = _lesions_csv(tiny_synth)
    assert len(labels) > 0 and len(truth) > len(labels)
    by_id: dict[int, list] = {}
    for t in truth:
        by_id.setdefault(int(t.extras["Lesion_id"]), []).append(t)
    assert set(by_id) == set(info)
    truth_key = {(int(t.extras["Lesion_id"]), t.file_name): t for t in truth}
    label_ids = set()
    for lab in labels:
        # the label row equals (all 18 fields) exactly one truth row: the key slice of its lesion
        matches = [lid for (lid, f), t in truth_key.items() if f == lab.file_name and t.fields() == lab.fields()]
        assert len(matches) == 1
        lid = matches[0]
        label_ids.add(lid)
        assert int(info[lid]["Key_slice_index"]) == lab.key_slice and info[lid]["Labeled"] == "1"
        assert len(lab.measurement) == 8 and lab.diameters[0] >= lab.diameters[1] > 0
    assert label_ids == {lid for lid, r in info.items() if r["Labeled"] == "1"}
    for lid, rows in by_id.items():
        slices = sorted(r.key_slice for r in rows)
        assert slices == list(range(slices[0], slices[-1] + 1))      # contiguous in z
        assert int(info[lid]["Key_slice_index"]) in slices
    for t in truth:                                                   # every truth slice exists, box inside
        series, idx = parse_file_name(t.file_name)
        assert idx == t.key_slice and slice_path(tiny_synth, series, idx).is_file()
        h, w = t.image_size
        assert 0.5 <= t.box[0] < t.box[2] <= w + 0.5 and 0.5 <= t.box[1] < t.box[3] <= h + 0.5
    # DeepLesion conventions: types only on val/test, header and column order
    assert all((r.lesion_type == -1) == (r.split == 1) for r in labels)
    header = (tiny_synth / "truth.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS + ("Lesion_id",)
    assert tuple((tiny_synth / "DL_info.csv").read_text().splitlines()[0].split(",")) == COLUMNS


def test_truth_boxes_cover_the_inserted_lesion(tmp_path):
    """Independent check: the lesion is the difference between the series with and without it."""
    common = dict(index=0, name="000001_01_01", patient=1, seed=(5 << 32) | 77, image_size=96, interval=2.0,
                  fov_mm=360.0, n_slices=14, near_share=0.0, box_pad=5.0, noise_hu=12.0,
                  diameter_mu=np.log(30.0), diameter_sigma=0.01)
    bank = ph.noise_bank(5)
    res = make_series(SeriesTask(out=str(tmp_path / "with"), n_lesions=1, **common), bank)
    make_series(SeriesTask(out=str(tmp_path / "without"), n_lesions=0, **common), bank)
    assert len(res.lesions) == 1
    les = res.lesions[0]
    read = lambda d, z: cv2.imread(str(slice_path(tmp_path / d, "000001_01_01", z)), -1).astype(np.int32)  # noqa
    diffs = {z: np.abs(read("with", z) - read("without", z)) for z in range(1, 15)}
    peak = max(d.max() for d in diffs.values())
    assert peak >= 15
    strong = {z: d >= 0.6 * peak for z, d in diffs.items()}
    pad = 5.0 * 96 / 512
    for z, m in strong.items():
        if not m.any():
            continue
        assert z in les.boxes
        ys, xs = np.nonzero(m)
        x1, y1, x2, y2 = (v - 1 for v in les.boxes[z])                # pixel frame
        assert x1 <= xs.min() - 0.5 - pad + 1e-6 and xs.max() + 0.5 + pad - 1e-6 <= x2
        assert y1 <= ys.min() - 0.5 - pad + 1e-6 and ys.max() + 0.5 + pad - 1e-6 <= y2
    counts = {z: int(m.sum()) for z, m in strong.items()}
    assert counts[les.key_slice] >= 0.8 * max(counts.values())        # key slice = largest cross-section
    assert les.areas[les.key_slice] == max(les.areas.values())


def test_reads_back_through_the_deeplesion_layer(tiny_synth):
    labels = read_rows(tiny_synth / "DL_info.csv")
    truth = read_rows(tiny_synth / "truth.csv")
    geo = series_geometry(tiny_synth, labels)
    folders = sorted(p.name for p in (tiny_synth / "Images_png").iterdir())
    assert sorted(geo) == folders and len(folders) == 8
    for name, g in geo.items():
        assert g.source == "synth" and g.image_size == (128, 128)
        assert g.spacing[2] in (1.0, 2.0, 5.0) and 0.6 * 4 <= g.spacing[0] <= 0.98 * 4 + 1e-6
        files = sorted((tiny_synth / "Images_png" / name).glob("*.png"))
        assert [int(f.stem) for f in files] == list(range(g.slice_range[0], g.slice_range[1] + 1))
        img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == g.image_size
        hu = img.astype(np.int32) - 32768
        assert hu.min() < -800 and -150 < np.median(hu[hu > -500]) < 200    # air, fat and soft tissue
    for r in labels + truth:
        assert geo[r.series].spacing == r.spacing and geo[r.series].slice_range == r.slice_range
    assert {r.split for r in labels} == {1, 2, 3}


def test_policy_on_the_dataset(tiny_synth):
    info = _lesions_csv(tiny_synth)
    labels = read_rows(tiny_synth / "DL_info.csv")
    truth = read_rows(tiny_synth / "truth.csv")
    labeled_keys = {r.file_name for r in labels}
    on_key = [lid for lid, r in info.items() if r["On_other_key_slice"] == "1"]
    assert on_key
    for lid in on_key:
        assert info[lid]["Labeled"] == "0"
        files = {t.file_name for t in truth if t.extras["Lesion_id"] == str(lid)}
        assert files & labeled_keys                       # visible on a labeled lesion's key slice
    share = sum(r["Labeled"] == "0" for r in info.values()) / len(info)
    assert 0.2 <= share <= 0.35                           # default unlabeled share 0.3
    series_with_label = {r.series for r in labels}
    assert series_with_label == {r["Series"] for r in info.values()}


def test_choose_unlabeled_policy():
    rng = np.random.default_rng(0)
    lesions, gid = [], 0
    for s in range(60):
        for k in range(int(rng.integers(1, 5))):
            gid += 1
            key = 10 + 3 * k
            slices = frozenset(range(key - 4, key + 5)) if k < 2 else frozenset(range(key - 1, key + 2))
            lesions.append(PolicyLesion(gid, f"{s:06d}_01_01", 1 + s % 3, key, slices))
    unl, on_key = choose_unlabeled(lesions, 0.3, 0.5, np.random.default_rng(1))
    for split in (1, 2, 3):
        pool = [x for x in lesions if x.split == split]
        share = sum(x.gid in unl for x in pool) / len(pool)
        assert 0.22 <= share <= 0.31
    assert on_key <= unl and len(on_key) >= 0.35 * len(unl)
    by_gid = {x.gid: x for x in lesions}
    for g in on_key:
        x = by_gid[g]
        assert any(o.series == x.series and o.gid not in unl and o.key_slice in x.slices for o in lesions
                   if o.gid != g)
    for s in {x.series for x in lesions}:
        assert any(x.gid not in unl for x in lesions if x.series == s)
    assert choose_unlabeled(lesions, 0.0, 0.5, rng) == (set(), set())
    with pytest.raises(ValueError):
        choose_unlabeled(lesions, 1.0, 0.5, rng)


def test_recist_and_box_rule_on_an_ellipse():
    yy, xx = np.mgrid[0:60, 0:80]
    mask = ((xx - 40) / 20.0) ** 2 + ((yy - 30) / 10.0) ** 2 <= 1
    long_ax, short_ax, long_len, short_len = recist_axes(mask)
    assert long_len == pytest.approx(41, abs=1.5) and short_len == pytest.approx(21, abs=1.5)
    assert abs(long_ax[0, 1] - long_ax[1, 1]) < 3                      # horizontal long axis
    box, ext = mask_box(mask, 100, 200, 5.0, (512, 512))
    assert ext == (200 + 20 - 0.5 + 1, 100 + 20 - 0.5 + 1, 200 + 60 + 0.5 + 1, 100 + 40 + 0.5 + 1)
    assert box == (ext[0] - 5, ext[1] - 5, ext[2] + 5, ext[3] + 5)
    box, _ = mask_box(mask, 0, 0, 5.0, (60, 80))                       # clipped to the image
    assert box[1] >= 0.5 and box[3] <= 60.5


def test_long_diameters_follow_the_lognormal_fit():
    d = ph.sample_long_diameters(np.random.default_rng(0), 20000)
    assert np.median(d) == pytest.approx(17.0, rel=0.05)
    assert 0.8 <= np.mean((d >= 5) & (d <= 60)) <= 0.95 and np.mean(d > 60) > 0.03
    assert d.min() >= 3.0 and d.max() <= 150.0


def test_background_insertion_inside_the_liver(shared_data, tmp_path):
    ct = shared_data / "realct" / "ct_small_3mm.nii.gz"
    organs = shared_data / "realct" / "ct_small_3mm_organs.nii.gz"
    s = generate_dataset(tmp_path / "bg", series=3, seed=2, background=str(ct), organ_mask=str(organs),
                         image_size=128, z_extent_mm=30.0, workers=1, progress=False)
    assert s.lesions >= 3
    info = _lesions_csv(tmp_path / "bg")
    assert {r["Tissue"] for r in info.values()} == {"liver"} and {r["Lesion_type"] for r in info.values()} == {"4"}
    a = cv2.imread(str(slice_path(tmp_path / "bg", "000001_01_01", 1)), -1)
    b = cv2.imread(str(slice_path(tmp_path / "bg", sorted(p.name for p in (tmp_path / "bg" / "Images_png")
                                                          .iterdir())[-1], 1)), -1)
    assert not np.array_equal(a, b)                                    # series differ
    with pytest.raises(ValueError, match="does not match"):
        generate_dataset(tmp_path / "bad", series=1, background=str(shared_data / "realct" / "ct_3mm.nii.gz"),
                         organ_mask=str(organs), **SMALL)


def test_bad_options_and_existing_output(tmp_path):
    with pytest.raises(ValueError, match="unknown synth option"):
        generate_dataset(tmp_path / "x", series=1, colour="red")
    with pytest.raises(ValueError, match="unlabeled_share"):
        generate_dataset(tmp_path / "x", series=1, unlabeled_share=1.5)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(tmp_path / "full", series=1, **SMALL)
    generate_dataset(tmp_path / "full", series=1, overwrite=True, **SMALL)     # no Images_png yet: fine
    generate_dataset(tmp_path / "full", series=2, overwrite=True, **SMALL)     # a synth dataset: replaced
    assert len(list((tmp_path / "full" / "Images_png").iterdir())) == 2 and (tmp_path / "full" / "keep.txt").exists()
    (tmp_path / "real" / "Images_png" / "000001_01_01").mkdir(parents=True)   # not ours: refused
    with pytest.raises(ValueError, match="refusing to replace"):
        generate_dataset(tmp_path / "real", series=1, overwrite=True, **SMALL)
    assert (tmp_path / "real" / "Images_png" / "000001_01_01").is_dir()


def test_cli_preview_and_comparison(shared_data, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--series", "3", "--image-size", "64", "--z-extent", "10",
               "--preview", "--quiet", "--workers", "1", "--intervals", "2:1",
               "--compare", str(shared_data / "deeplesion" / "DL_info_sample.csv")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "long diameter mm" in text and "DL_info_sample.csv" in text
    assert (out / "preview.png").stat().st_size > 1000
    geo = series_geometry(out)
    assert {g.spacing[2] for g in geo.values()} == {2.0} and {g.slice_range for g in geo.values()} == {(1, 5)}
    assert main(["synth", "--out", str(out), "--series", "1", "--quiet"]) == 2      # not empty


def test_worker_processes_from_a_script_without_main_guard_raise_instead_of_hanging(tmp_path):
    """Each worker imports the calling script; without ``if __name__ == "__main__":`` the workers die
    at start.  multiprocessing.Pool started them again for ever (the script hung); now it is an error
    that says what to do."""
    import os
    import subprocess
    import sys

    import lesionprop

    env = {**os.environ, "PYTHONPATH": str(Path(lesionprop.__file__).resolve().parents[1])}   # this checkout's package
    call = (f"generate_dataset({str(tmp_path / 'out')!r}, series=2, image_size=64, z_extent_mm=6.0, workers=2, "
            "progress=False, overwrite=True)")
    head = "from lesionprop.synth.dataset import generate_dataset\n"
    for body, guarded in ((call, False), ("if __name__ == '__main__':\n    " + call, True)):
        script = tmp_path / "make_data.py"
        script.write_text(head + body + "\n")
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=env)
        if guarded:
            assert run.returncode == 0, run.stderr[-2000:]
            assert len(read_annotations(tmp_path / "out" / "truth.csv")) > 0
        else:
            assert run.returncode != 0
            assert 'if __name__ == "__main__":' in run.stderr and "workers=1" in run.stderr
