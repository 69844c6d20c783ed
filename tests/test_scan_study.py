"""``detect`` on a folder of several series: one result folder per series, OUT/series.csv, reruns skip
finished series, --shard splits the work, one progress bar, a failed series does not stop the others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dicom_cases import by_position, second_series, write_series
from lesionprop.cli import main

DETECT = ["--checkpoint", "synthetic-cpu-detector", "--score", "0.3", "--max-lesions", "2", "--device", "cpu"]


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "series.csv", newline="") as fh:
        return {r["series"]: r for r in csv.DictReader(fh)}


@pytest.fixture
def study(shared_data, tmp_path) -> Path:
    """CT_abdomen (3 anonymised slices), CT_lung (3 slices, a UID), a PET and a sagittal series, a note."""
    files = by_position(shared_data)
    root = tmp_path / "study"
    write_series(files[:3], root / "CT_abdomen")
    write_series(files[3:6], root / "CT_lung", second_series(uid="1.2.826.0.1.3680043.10.1234.77"))

    def pet(i, ds):
        second_series(5, "PET AC", uid="1.2.826.0.1.3680043.10.1234.88")(i, ds)
        ds.Modality = "PT"
    write_series(files[6:8], root / "PET", pet)

    def sagittal(i, ds):
        second_series(6, "Sag MPR", uid="1.2.826.0.1.3680043.10.1234.99")(i, ds)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    write_series(files[8:10], root / "sagittal", sagittal)
    (root / "notes.txt").write_text("scanned on Monday\n")
    return root


def test_a_study_folder_gives_one_result_per_series(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(study), "--out", str(out), *DETECT]) == 0
    printed = capsys.readouterr()
    rows = _rows(out)
    assert {k: (r["status"], r["message"]) for k, r in rows.items()} == {
        "CT_abdomen": ("done", rows["CT_abdomen"]["message"]), "CT_lung": ("done", rows["CT_lung"]["message"]),
        "PET": ("skipped", "not CT (Modality PT)"),
        "sagittal": ("skipped", "not axial (sagittal, ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0])")}
    assert "no StudyInstanceUID, SeriesInstanceUID (anonymised?)" in rows["CT_abdomen"]["message"]
    assert "no StudyInstanceUID (anonymised?)" in rows["CT_lung"]["message"]              # it has a series UID
    study_uids = {json.loads((out / n / "lesions.json").read_text())["generated_uids"]["StudyInstanceUID"]
                  for n in ("CT_abdomen", "CT_lung")}
    assert len(study_uids) == 1                                        # one generated study for both
    assert rows["CT_lung"]["description"] == "CT Lung 1.0" and rows["CT_lung"]["slices"] == "3"
    for name in ("CT_abdomen", "CT_lung"):
        meta = json.loads((out / name / "lesions.json").read_text())
        assert int(rows[name]["lesions"]) == len(meta["lesions"]) >= 1
        assert (out / name / "lesions_seg.dcm").is_file() and (out / name / "lesions_sr.dcm").is_file()
        assert (out / name / "index.html").is_file() and (out / name / "run.json").is_file()
    assert not (out / "PET").exists() and not (out / "sagittal").exists()
    assert json.loads((out / "CT_lung" / "lesions.json").read_text())["dicom_series"]["SeriesInstanceUID"] == (
        "1.2.826.0.1.3680043.10.1234.77")
    assert "skipped 1 file that is not a DICOM image (notes.txt: not DICOM)" in printed.err
    assert "detect:" in printed.err and "predict (" not in printed.err                   # one progress bar
    assert printed.out.splitlines()[4].startswith(f"4 series in {study}: 2 done (")
    assert "2 skipped, 0 failed" in printed.out


def test_a_rerun_skips_finished_series(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(study), "--out", str(out), *DETECT]) == 0
    stamp = (out / "CT_lung" / "lesions_sr.dcm").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["detect", str(study), "--out", str(out), *DETECT]) == 0
    assert "CT_lung: done earlier: " in capsys.readouterr().out
    assert (out / "CT_lung" / "lesions_sr.dcm").stat().st_mtime_ns == stamp
    assert {r["message"] for k, r in _rows(out).items() if k.startswith("CT")} == {"done earlier"}
    assert main(["detect", str(study), "--out", str(out), *DETECT[:-4], "--max-lesions", "1", "--device", "cpu"]) == 0
    assert (out / "CT_lung" / "lesions_sr.dcm").stat().st_mtime_ns != stamp            # other settings: run again
    assert len(json.loads((out / "CT_lung" / "lesions.json").read_text())["lesions"]) == 1


def test_shards_cover_the_study_once(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(study), "--out", str(out), "--shard", "1/2", *DETECT]) == 0
    first = _rows(out)
    done = {k for k, r in first.items() if r["status"] == "done"}
    assert len(done) == 1 and {r["status"] for r in first.values()} <= {"done", "skipped", "pending"}
    assert main(["detect", str(study), "--out", str(out), "--shard", "2/2", *DETECT]) == 0
    assert {k: r["status"] for k, r in _rows(out).items()} == {"CT_abdomen": "done", "CT_lung": "done",
                                                                "PET": "skipped", "sagittal": "skipped"}
    assert main(["detect", str(study), "--out", str(out), "--shard", "3/2", *DETECT]) == 2
    assert "--shard must be K/N with 1 <= K <= N, got '3/2'" in capsys.readouterr().err
    single = study / "CT_lung"
    assert main(["detect", str(single), "--out", str(tmp_path / "one"), "--shard", "1/2", *DETECT]) == 2
    assert "holds one series" in capsys.readouterr().err


def test_a_failed_series_is_reported_and_the_others_are_done(study, shared_data, tmp_path, capsys):
    files = by_position(shared_data)
    write_series(files[10:12] + files[13:15], study / "CT_broken",           # slice 13 missing
                 second_series(8, "CT broken", uid="1.2.826.0.1.3680043.10.1234.55"))
    out = tmp_path / "out"
    assert main(["detect", str(study), "--out", str(out), *DETECT]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lesionprop detect: error: 1 of 5 series failed (first: CT_broken: ")
    assert "missing slices between" in err and "the others are done" in err
    rows = _rows(out)
    assert rows["CT_broken"]["status"] == "failed" and "missing slices between" in rows["CT_broken"]["message"]
    assert rows["CT_abdomen"]["status"] == rows["CT_lung"]["status"] == "done"
