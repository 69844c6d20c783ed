"""Fuzzing the non-CSV readers (issue 11): slice PNGs, YAML configs, LENS / Harvester pickles,
COCO JSON, DICOM series and NIfTI volumes.

Generated inputs (hypothesis, seeded with ``derandomize``).  Every case ends in a one-line
``ValueError`` naming the file (exit code 2 from the CLI) or a correct result checked against
the generator's own numbers; never another exception type, a foreign object run, or a wrong
array.  Boxes in COCO files are ``[x, y, w, h]``; the reader returns file-frame xyxy.
``LESIONPROP_FUZZ_SCALE`` multiplies the number of examples; counts per reader are printed
at the end of the module (``-s``).
"""

from __future__ import annotations

import json
import pickle
from collections import Counter

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import fuzz

COUNTS: Counter = Counter()
RAN: list = []



@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print("\nfuzz cases per reader:", dict(COUNTS), "total", sum(COUNTS.values()))


def outcome(kind: str, fn, path):
    """``fn()``'s result, or None after checking its error is one line naming ``path``."""
    COUNTS[kind] += 1
    try:
        return fn()
    except Exception as exc:                    # noqa: BLE001 - the check is what kind it is
        msg = str(exc)
        assert isinstance(exc, ValueError), f"{type(exc).__name__} is not a user error: {msg}"
        assert "\n" not in msg.strip(), f"error is not one line: {msg!r}"
        assert str(path) in msg, f"error does not name {path}: {msg!r}"
        return None


# ---------------------------------------------------------------- 16-bit slice PNGs

image = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(0, 2**32 - 1)).map(
    lambda t: np.random.default_rng(t[2]).integers(0, 65536, size=t[:2], dtype=np.uint16))


@fuzz(1500)
@given(img=image, how=st.sampled_from(["ok", "cut", "8-bit", "rgb", "empty", "garbage", "flip-byte", "size"]),
       where=st.floats(0, 1))
def test_slice_png_is_read_exactly_or_refused(tmp_path, img, how, where):
    from lesionprop.data.layout import decode_png

    data = cv2.imencode(".png", img)[1].tobytes()
    path = tmp_path / "001.png"
    expected = (img.astype(np.int32) - 32768).astype(np.int16)
    shape = img.shape
    if how == "cut":
        data = data[: int(where * (len(data) - 1))]
    elif how == "8-bit":
        data = cv2.imencode(".png", (img >> 8).astype(np.uint8))[1].tobytes()
    elif how == "rgb":
        data = cv2.imencode(".png", np.dstack([img] * 3))[1].tobytes()
    elif how == "empty":
        data = b""
    elif how == "garbage":
        data = np.random.default_rng(len(data)).integers(0, 256, size=int(where * 200), dtype=np.uint8).tobytes()
    elif how == "flip-byte":      # damage inside the compressed data: the CRC check of libpng refuses it
        j = 41 + int(where * max(0, len(data) - 54))
        data = data[:j] + bytes([data[j] ^ 0x5A]) + data[j + 1:] if j < len(data) - 12 else data
    elif how == "size":           # the PNG disagrees with the Image_size the annotations give
        shape = (img.shape[0] + 1, img.shape[1])
    path.write_bytes(data)
    got = outcome(f"png:{how}", lambda: decode_png(path, shape=shape), path)
    if how in ("ok", "flip-byte") and got is not None:
        np.testing.assert_array_equal(got, expected)
    elif how == "ok":
        raise AssertionError("a good PNG was refused")
    elif how != "cut" or got is not None:
        assert got is None or np.array_equal(got, expected), f"{how}: wrong pixels accepted"


# ---------------------------------------------------------------- YAML configs

yaml_scalar = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(), st.none(),
                        st.text(max_size=8), st.lists(st.integers(0, 9), max_size=3))


@fuzz(800)
@given(section=st.sampled_from(["train", "model", "data", "predict", "labels", "pipeline", "nosuch", ""]),
       key=st.sampled_from(["base_lr", "iterations", "batch_size", "seed", "backbone", "typo_key", "num_slices"]),
       value=yaml_scalar, how=st.sampled_from(["mapping", "list-top", "bad-yaml", "python-tag", "not-utf8"]))
def test_config_file_is_loaded_exactly_or_refused(tmp_path, section, key, value, how):
    import yaml

    from lesionprop.config import load_config

    path = tmp_path / "my.yaml"
    doc = {section: {key: value}} if section else {key: value}
    text = {"mapping": yaml.safe_dump(doc), "list-top": yaml.safe_dump([doc]), "bad-yaml": "train: {base_lr: [1,\n",
            "python-tag": "train: !!python/object/apply:os.system ['echo ran > ran.txt']\n"}.get(how, "")
    path.write_bytes(text.encode() if how != "not-utf8" else b"train:\n  base_lr: 0.1\xff\n")
    cfg = outcome(f"yaml:{how}", lambda: load_config(path), path)
    assert not (tmp_path / "ran.txt").exists()
    if cfg is not None:
        assert how == "mapping" and section in ("train", "model", "data", "predict", "labels", "pipeline")
        got = getattr(getattr(cfg, section), key)
        assert value is not None and not (isinstance(value, float) and not np.isfinite(value))
        assert got == value or got == str(value) or (isinstance(value, list) and list(got) == value), (got, value)


# ---------------------------------------------------------------- LENS / Harvester pickles

class Evil:
    def __reduce__(self):
        return (RAN.append, ("ran",))


leaf = st.one_of(st.integers(-5, 600), st.floats(allow_nan=True, allow_infinity=True, width=32), st.none(),
                 st.text(max_size=5),
                 st.tuples(st.integers(0, 4), st.integers(0, 7)).map(lambda s: np.arange(s[0] * s[1], dtype=float)
                                                                    .reshape(s) * 7.0))
pickled = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(
    st.one_of(st.sampled_from(["test", "train", "000001_01_01_003-009", "000002_01_01_001-010", "x_1-2"]),
              st.integers(0, 9)), kids, max_size=3)), max_leaves=12)


@fuzz(800)
@given(obj=pickled, fmt=st.sampled_from(["auto", "lens", "harvester-3d", "harvester-2d"]), evil=st.booleans())
def test_label_pickles_never_run_code_and_refuse_or_read(tmp_path, obj, fmt, evil):
    from lesionprop.eval.complete_labels import read_complete_labels

    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps({"test": {"000001_01_01_001-005": [Evil()]}} if evil else obj, protocol=2))
    got = outcome(f"pickle:{'foreign' if evil else 'generated'}", lambda: read_complete_labels(path, fmt), path)
    assert RAN == [] and (got is None or not evil)
    if got is not None:
        assert np.isfinite(got.boxes3d).all() and (got.boxes3d[:, 3:] >= got.boxes3d[:, :3]).all()


@fuzz(200)
@given(n=st.integers(1, 5), cols=st.integers(1, 8), cut=st.floats(0, 1))
def test_lens_pickle_wrong_box_shapes_or_truncated(tmp_path, n, cols, cut):
    from lesionprop.eval.complete_labels import read_complete_labels

    path = tmp_path / "lens.pkl"
    boxes = np.arange(n * cols, dtype=float).reshape(n, cols) + 1
    data = pickle.dumps({"test": {"000001_01_01_001-009": boxes}}, protocol=2)
    path.write_bytes(data[: int(cut * len(data))] if cut < 0.5 else data)
    got = outcome("pickle:shapes", lambda: read_complete_labels(path, "lens"), path)
    if got is not None:
        assert cols == 6 and cut >= 0.5 and len(got.boxes3d) == n


# ---------------------------------------------------------------- COCO JSON

json_value = st.recursive(st.one_of(st.integers(-3, 5), st.floats(-5, 50), st.none(), st.booleans(),
                                    st.sampled_from(["000001_01_01/003.png", "000001_01_01_004.png", "x.png"])),
                          lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                 st.dictionaries(st.sampled_from(["id", "file_name", "images", "bbox",
                                                                                  "score", "image_id", "series",
                                                                                  "slice_index", "annotations"]),
                                                                 kids, max_size=4)), max_leaves=10)


@fuzz(800)
@given(images=json_value, results=json_value, how=st.sampled_from(["json", "truncated", "not-utf8"]))
def test_coco_files_read_exactly_or_refused(tmp_path, images, results, how):
    from lesionprop.coco import read_coco_images, read_coco_results

    good_images = {"images": [{"id": 1, "file_name": "000001_01_01/003.png"}, {"id": 2, "series": "000001_01_01",
                                                                                "slice_index": 4}]}
    ipath, rpath = tmp_path / "images.json", tmp_path / "results.json"
    for p, obj in ((ipath, images), (rpath, results)):
        text = json.dumps(obj).encode()
        p.write_bytes({"json": text, "truncated": text[: len(text) // 2], "not-utf8": b"\xff" + text}[how])
    got = outcome(f"coco:images:{how}", lambda: read_coco_images(ipath), ipath)
    if got is not None:
        assert all(isinstance(v, str) and v.endswith(".png") for v in got.values())
    ipath.write_text(json.dumps(good_images))
    res = outcome(f"coco:results:{how}", lambda: read_coco_results(rpath, read_coco_images(ipath)), rpath)
    if res is not None:
        names, boxes, scores = res
        dets = results["annotations"] if isinstance(results, dict) else results
        assert len(names) == len(boxes) == len(scores) == len(dets)
        for d, b in zip(dets, boxes):
            x, y, w, h = d["bbox"]
            np.testing.assert_allclose(b[2:] - b[:2], [w, h])


# ---------------------------------------------------------------- DICOM series, NIfTI volumes

def _ct_slice(folder, i, z, *, modality="CT", uid="1.2.3.4", drop=(), localizer=False, rows=4):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.Modality, ds.SeriesInstanceUID, ds.SOPInstanceUID = modality, uid, meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if localizer else "AXIAL"]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(z)], [1.0, 0, 0, 0, 1.0, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
    ds.Rows, ds.Columns = rows, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (np.arange(rows * 4, dtype=np.int16) + 100 * i).tobytes()
    for tag in drop:
        delattr(ds, tag)
    ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)


@pytest.mark.parametrize("how", ["ok", "MR", "no-PixelSpacing", "no-ImagePositionPatient", "mixed-series", "localizer",
                                 "cut", "duplicate-position", "size"])
@fuzz(8)
@given(n=st.integers(2, 4), cut=st.floats(0.05, 0.95))
def test_dicom_series_is_read_exactly_or_refused(tmp_path, how, n, cut):
    from lesionprop.data.volumes import load_dicom_series

    folder = tmp_path / "series"
    folder.mkdir(exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    bad = n - 1
    for i in range(n):
        kw = {}
        if i == bad:
            kw = {"MR": {"modality": "MR"}, "mixed-series": {"uid": "9.9"}, "localizer": {"localizer": True},
                  "no-PixelSpacing": {"drop": ("PixelSpacing",)}, "size": {"rows": 5},
                  "no-ImagePositionPatient": {"drop": ("ImagePositionPatient",)}}.get(how, {})
        _ct_slice(folder, i, -2.0 * (i if not (how == "duplicate-position" and i == bad) else i - 1), **kw)
    if how == "cut":
        f = folder / f"{bad:03d}.dcm"
        f.write_bytes(f.read_bytes()[: int(cut * f.stat().st_size)])
    COUNTS["dicom"] += 1
    try:
        vol = load_dicom_series(folder)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(folder) in str(exc) and how != "ok"
        return
    assert how == "ok", f"{how} accepted"
    np.testing.assert_array_equal(vol.hu[:, 0, :2], [[100 * i - 1024, 100 * i - 1023] for i in range(n)])


@pytest.mark.parametrize("how", ["ok", "4d", "2d", "cut",
                                 "nan-affine", "singular"])
@fuzz(12)
@given(cut=st.floats(0.05, 0.95))
def test_nifti_is_read_exactly_or_refused(tmp_path, how, cut):
    import nibabel as nib

    from lesionprop.data.volumes import load_nifti

    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    if how == "4d":
        data = np.stack([data, data], -1)
    elif how == "2d":
        data = data[:, :, 0]
    elif how == "singular":
        affine[2, 2] = 0.0
    elif how == "nan-affine":
        affine[0, 0] = np.nan
    path = tmp_path / "ct.nii"
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0]))
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=1)
    nib.save(img, str(path))
    # a singular or NaN sform can only be written into the header bytes: nibabel's save
    # rewrites srow_x/y/z (NIfTI-1 offsets 280, 296, 312) from the image's own affine
    raw = bytearray(path.read_bytes())
    raw[280:328] = np.asarray(affine[:3], dtype="<f4").tobytes()
    path.write_bytes(bytes(raw))
    if how == "cut":
        path.write_bytes(path.read_bytes()[: int(cut * path.stat().st_size)])
    vol = outcome(f"nifti:{how}", lambda: load_nifti(path), path)
    assert (vol is not None) == (how == "ok"), f"{how}: {'refused' if vol is None else 'accepted'}"
    if vol is not None:
        assert vol.hu.shape == (4, 3, 2) and sorted(vol.hu.ravel().tolist()) == list(range(24))
