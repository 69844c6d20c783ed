import json

import numpy as np
import pytest

from lesionprop.cli import main
from lesionprop.dataset_stats import summarize
from lesionprop.annotations import Lesion, write_annotations
from lesionprop.data.layout import write_slice


def lesion(series_id: int, key: int, split: int, z: float, diam_px: float, lesion_type: int = -1,
           noisy: int = 0) -> Lesion:
    return Lesion(
        file_name=f"000001_01_{series_id:02d}_{key:03d}.png", patient=1, study=1, series_id=series_id,
        key_slice=key, measurement=(0.0,) * 8, box=(1.0, 1.0, 6.0, 6.0), diameters=(diam_px, 3.0),
        location=(0.5, 0.5, 0.5), lesion_type=lesion_type, noisy=noisy, slice_range=(1, 5),
        spacing=(0.5, 0.5, z), image_size=(8, 8), windows=(-175.0, 275.0), gender="M", age=60.0,
        split=split,
    )


@pytest.fixture
def root(tmp_path):
    rows = [lesion(1, 2, 1, 1.0, 20), lesion(1, 2, 1, 1.0, 40), lesion(2, 3, 2, 5.0, 60, 4),
            lesion(3, 4, 3, 2.0, 100, 5, noisy=1)]
    write_annotations(tmp_path / "DL_info.csv", rows)
    for sid, n in ((1, 3), (2, 4)):                 # series 3 has no folder: its key slice is missing
        for i in range(1, n + 1):
            write_slice(tmp_path, f"000001_01_{sid:02d}", i, np.zeros((8, 8)))
    return tmp_path


def test_summary_counts(root):
    s = summarize(root)
    assert s["series"] == 2 and s["slices"] == 7 and s["lesions"] == 4 and s["key_slices"] == 3
    assert s["splits"]["train"] == {"lesions": 2, "key_slices": 1, "series": 1, "noisy": 0}
    assert s["splits"]["test"]["noisy"] == 1
    assert s["lesion_types"] == {"liver": 1, "lung": 1, "unknown": 2}
    assert s["slice_interval_mm"]["lesions"] == {"1": 2, "2": 1, "5": 1}
    assert s["slice_interval_mm"]["series"] == {"1": 1, "5": 1}
    d = s["long_diameter_mm"]
    assert (d["count"], d["min"], d["max"], d["median"]) == (4, 10, 50, 25)
    assert s["missing_key_slice_files"] == 1 and s["missing_examples"] == ["000001_01_03_004.png"]
    assert s["series_without_folder"] == ["000001_01_03"]


def test_summary_cli_text_and_json(root, capsys):
    assert main(["summary", str(root)]) == 0
    out = capsys.readouterr().out
    assert "lesions 4 on 3 key slices" in out and "missing key-slice files: 1" in out
    assert main(["summary", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lesions"] == 4
    (root / "empty").mkdir()
    assert main(["summary", str(root / "empty")]) == 2
    assert "neither Images_png/ nor DL_info.csv" in capsys.readouterr().err


def test_summary_of_a_missing_folder_or_a_file_is_an_error(root, capsys):
    """Not 'missing key-slice files: N' with exit 0: the dataset folder itself is wrong."""
    ann = root / "DL_info.csv"
    assert main(["summary", str(root / "nope"), "--annotations", str(ann)]) == 2
    out, err = capsys.readouterr()
    assert err == f"lesionprop summary: error: dataset folder not found: {root / 'nope'}\n" and out == ""
    assert main(["summary", str(ann)]) == 2
    out, err = capsys.readouterr()
    assert err == f"lesionprop summary: error: dataset folder {ann} is a file, expected a folder\n" and out == ""


def test_summary_of_real_rows(shared_data, tmp_path):
    s = summarize(tmp_path, shared_data / "deeplesion" / "DL_info_sample.csv")
    assert s["lesions"] == 34 and set(s["splits"]) == {"train", "val", "test"}
    assert set(s["slice_interval_mm"]["lesions"]) >= {"1", "2", "5"}
    assert s["missing_key_slice_files"] == s["key_slices"]


def test_summary_of_an_imported_scan_without_annotations(tmp_path, capsys):
    import nibabel as nib

    ct = np.full((4, 6, 5), -1000, np.int16)
    nib.save(nib.Nifti1Image(np.transpose(ct, (2, 1, 0)), np.diag([0.7, 0.7, 2.5, 1.0])), tmp_path / "ct.nii.gz")
    assert main(["import", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    assert main(["summary", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "series 1, slices 4, lesions 0 on 0 key slices\n  slice interval (mm): series 2.5: 1\n" \
           "  missing key-slice files: 0\n" in out                 # no empty "lesions" line between
