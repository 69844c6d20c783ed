"""``lesionprop detect``: geometry, lesion table maths, outputs on the real DICOM / NIfTI, the HTML page."""

from __future__ import annotations

import csv
import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lesionprop.cli import main
from lesionprop.data.volumes import LPS_TO_RAS, load_ct, spacing_affine, voxel_to_patient
from lesionprop.scan.lesions import box_voxels, label_coverage, label_volume, lesion_masks, lesion_table
from lesionprop.scan.outputs import stacked_seg_bytes


# ---------------------------------------------------------------- pure maths

def test_box_voxels_cover_the_centres_inside_the_box():
    boxes = np.array([[2.0, 3.0, 5.0, 6.0],        # centres 2.5, 3.5, 4.5 in x; 3.5..5.5 in y
                      [2.6, 3.6, 2.9, 3.9],        # smaller than a voxel: the voxel holding its centre
                      [-4.0, -1.0, 99.0, 7.2]])    # clipped to the 10 x 8 slice
    np.testing.assert_array_equal(box_voxels(boxes, (8, 10)), [[2, 3, 4, 5], [2, 3, 2, 3], [0, 0, 9, 6]])


def test_lesion_table_hand_computed():
    # lesion "7": slices 2 and 3, lesion "3": slice 5 alone; spacing 0.5 x 0.5 x 2 mm, display-only affine
    ids = np.array([7, 7, 3])
    z = np.array([2, 3, 5])
    boxes = np.array([[10.0, 20.0, 30.0, 30.0], [12.0, 18.0, 28.0, 34.0], [0.0, 0.0, 4.0, 2.0]])
    scores = np.array([0.6, 0.9, 0.95])
    aff = spacing_affine((0.5, 0.5, 2.0))
    t = lesion_table(ids, z, boxes, scores, aff, (0.5, 0.5, 2.0), (8, 64, 64))
    np.testing.assert_array_equal(t.id, [1, 2])
    np.testing.assert_allclose(t.score, [0.95, 0.9])
    np.testing.assert_array_equal(t.n_boxes, [1, 2])
    np.testing.assert_array_equal(t.key_z, [5, 3])                       # largest box: 16 x 16 on slice 3
    np.testing.assert_allclose(t.long_mm, [2.0, 8.0])
    np.testing.assert_allclose(t.short_mm, [1.0, 8.0])
    np.testing.assert_array_equal(t.voxel_box[1], [10, 18, 2, 29, 33, 3])
    # edges 9.5..29.5 px (x), 17.5..33.5 (y), slices 1.5..3.5 -> mm; z runs inferior (-2 mm per slice)
    np.testing.assert_allclose(t.patient_box[1], [4.75, 8.75, -7.0, 14.75, 16.75, -3.0])
    np.testing.assert_allclose(t.volume_ml, [np.pi / 4 * 2 * 1 * 2 / 1000,
                                             np.pi / 4 * (10 * 5 + 8 * 8) * 2 / 1000])
    np.testing.assert_array_equal(t.box_lesion, [1, 1, 0])
    top = lesion_table(ids, z, boxes, scores, aff, (0.5, 0.5, 2.0), (8, 64, 64), max_lesions=1)
    np.testing.assert_array_equal(top.box_lesion, [-1, -1, 0])
    empty = lesion_table(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0), aff, (1, 1, 1), (2, 4, 4))
    assert len(empty) == 0


def test_label_volume_best_score_wins_overlaps():
    ids, z = np.array([0, 1]), np.array([1, 1])
    boxes = np.array([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])
    scores = np.array([0.5, 0.8])
    t = lesion_table(ids, z, boxes, scores, np.eye(4), (1, 1, 1), (3, 8, 8))
    lab = label_volume(t, z, boxes, scores, (3, 8, 8))
    assert lab[0].max() == 0 and lab[2].max() == 0
    assert lab[1, 3, 3] == 1 and lab[1, 0, 0] == 2 and lab[1, 5, 5] == 1 and lab[1, 6, 6] == 0
    assert (lab == 2).sum() == 16 - 4 and (lab == 1).sum() == 16


def _covered_case(shape=(4, 16, 16)):
    """Three lesions: A (slices 1-2, best score), B inside A's slice-1 box (hidden in the label
    volume), C on slice 2 overlapping a corner of A's box there.  Ids by score: A 1, C 2, B 3."""
    ids = np.array([10, 10, 20, 30])
    z = np.array([1, 2, 1, 2])
    boxes = np.array([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0],      # A: voxels 0..7
                      [2.0, 2.0, 5.0, 5.0],                             # B: voxels 2..4, all under A
                      [6.0, 6.0, 12.0, 12.0]])                          # C: voxels 6..11, 6..7 under A
    scores = np.array([0.9, 0.8, 0.6, 0.7])
    t = lesion_table(ids, z, boxes, scores, np.eye(4), (1, 1, 1), shape)
    return t, z, boxes, scores, shape


def test_label_coverage_reports_the_fully_covered_lesion():
    t, z, boxes, scores, shape = _covered_case()
    np.testing.assert_allclose(t.score, [0.9, 0.7, 0.6])
    labels = label_volume(t, z, boxes, scores, shape)
    assert set(np.unique(labels)) == {0, 1, 2}                          # lesion 3 is not in the label volume
    masks = lesion_masks(t, z, boxes, shape)
    for m, n in zip(masks, [2 * 64, 36, 9]):                            # every lesion keeps its whole mask
        assert m.mask.sum() == n and m.mask.all()                       # boxes fill their voxel box here
    cov = label_coverage(t, masks, labels)
    np.testing.assert_array_equal(cov.voxels, [128, 36, 9])
    np.testing.assert_array_equal(cov.in_label_map, [128, 32, 0])
    assert cov.covered_by == [(), (1,), (1,)]
    assert cov.hidden(t.id) == {3: (1,)}
    from lesionprop.scan.lesions import table_rows

    rows = table_rows(t, np.arange(1, 5), cov)
    assert [(r["voxels"], r["voxels_in_label_map"], r["covered_by"]) for r in rows] == [
        (128, 128, []), (36, 32, [1]), (9, 0, [1])]


# ---------------------------------------------------------------- the DICOM SEG

def _synthetic_series(folder: Path, iop=(1.0, 0, 0, 0, 1.0, 0), n: int = 4, rows: int = 24,
                      columns: int = 32) -> Path:
    """A tiny CT series written with pydicom (no ../shared needed): ``n`` slices of rows x columns,
    2 mm apart, slice normal = row x column cosines."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "p1", "Test^Phantom", "", "O"
        ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "", "1", "20260101", "120000"
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, i + 1
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = (np.array([-10.0, -20.0, 30.0]) - 2.0 * i * normal).tolist()
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.0
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.arange(rows * columns, dtype=np.int16) % 300 + 900 + 10 * i).tobytes()
        ds.save_as(folder / f"s{i:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(params=["synthetic", "real"])
def four_slices(request, tmp_path) -> Path:
    """4 slices of a DICOM CT series: written here, or copied from ../shared (skipped when absent)."""
    if request.param == "synthetic":
        return _synthetic_series(tmp_path / "four")
    folder = tmp_path / "four"
    folder.mkdir()
    for f in _dicoms(request.getfixturevalue("shared_data"))[:4]:
        shutil.copy(f, folder / f.name)
    return folder


def _seg_in_display(path: Path, vol) -> tuple[np.ndarray, object]:
    """The SEG read back frame by frame and placed BY GEOMETRY alone: each frame's Image Position
    (Patient) is matched to a source slice (along the normal) and to its first row / column there
    (orientation and spacing must be the source's).  Returns ((Z, Y, X, S) bool in the display
    orientation, S = segments, the SEG dataset)."""
    import pydicom

    seg = pydicom.dcmread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in vol.files]
    iop = np.asarray(sources[0].ImageOrientationPatient, dtype=float)
    across, down = iop[:3], iop[3:]
    normal = np.cross(across, down)
    d_row, d_col = (float(v) for v in sources[0].PixelSpacing)
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, iop, atol=1e-6)
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, [d_row, d_col], rtol=1e-6)
    ipp = np.array([s.ImagePositionPatient for s in sources], dtype=float)
    out = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns), len(seg.SegmentSequence)), bool)
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns)).astype(bool)
    for k, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        offset = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float) - ipp
        z = int(np.argmin(np.abs(offset @ normal)))
        assert abs(offset[z] @ normal) < 1e-3
        r0, c0 = offset[z] @ down / d_row, offset[z] @ across / d_col
        assert abs(r0 - round(r0)) < 1e-3 and abs(c0 - round(c0)) < 1e-3
        r0, c0 = int(round(r0)), int(round(c0))
        out[z, r0:r0 + frames.shape[1], c0:c0 + frames.shape[2], number - 1] |= frames[k]
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]     # and it references that slice
        assert src.ReferencedSOPInstanceUID == sources[z].SOPInstanceUID or src.ReferencedSOPInstanceUID == str(
            sources[z].file_meta.MediaStorageSOPInstanceUID)
    if vol.meta.get("transpose"):                                   # stored -> display
        out = out.swapaxes(1, 2)
    if vol.meta.get("flip_rows"):
        out = out[:, ::-1]
    if vol.meta.get("flip_cols"):
        out = out[:, :, ::-1]
    return out, seg


def test_stacked_seg_bytes_is_hand_computed():
    from lesionprop.scan.outputs import stacked_seg_bytes

    # 20 x 512 x 512 positions x (100 lesions + 9), one slice x 100 lesions, 363 frames of 512 x 512 bits twice
    assert stacked_seg_bytes(20, 512, 512, 100, 363) == 20 * 512 * 512 * 109 + 512 * 512 * 100 + 2 * 363 * 32768
    assert stacked_seg_bytes(2, 3, 5, 1, 3) == 30 * 10 + 15 + 2 * 3 * 2                 # 15 px -> 2 bytes
    assert stacked_seg_bytes(0, 512, 512, 0, 0) == 0


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("flip_rows", [False, True])
@pytest.mark.parametrize("flip_cols", [False, True])
def test_seg_crop_box_and_display_region_agree(transpose, flip_rows, flip_cols):
    """The stored crop box holds every lesion voxel, and the display region it maps back to is
    the same pixels (both forms crop the same frames)."""
    from lesionprop.scan.outputs import _display_region, _stored_orientation, plan_seg, segment_stack

    meta = {"transpose": transpose, "flip_rows": flip_rows, "flip_cols": flip_cols}
    t, z, boxes, scores, shape = _covered_case((5, 20, 28))
    masks = lesion_masks(t, z, boxes, shape)
    plan = plan_seg(masks, shape, meta, crop=True)
    full = np.zeros((*shape, len(masks)), dtype=np.uint8)
    for k, m in enumerate(masks):
        full[(*m.region(), k)] = m.mask
    stored_full = _stored_orientation(full[plan.frames], meta)
    r1, r2, c1, c2 = plan.box
    np.testing.assert_array_equal(plan.frames, [1, 2])
    assert plan.stored_shape == stored_full.shape[1:3] and (c2 - c1) % 8 == 0
    np.testing.assert_array_equal(segment_stack(masks, shape, meta, plan), stored_full[:, r1:r2, c1:c2])
    assert stored_full.sum() == stored_full[:, r1:r2, c1:c2].sum()          # nothing outside the box
    ys, xs = _display_region(plan.box, shape[1:], meta)
    np.testing.assert_array_equal(_stored_orientation(full[plan.frames][:, ys, xs], meta),
                                  stored_full[:, r1:r2, c1:c2])


def test_plan_seg_switches_form_at_the_budget(monkeypatch):
    import lesionprop.scan.outputs as outputs

    t, z, boxes, scores, shape = _covered_case((4, 64, 64))
    masks = lesion_masks(t, z, boxes, shape)
    whole = outputs.plan_seg(masks, shape, {})                                    # default: whole slices
    assert whole.box == (0, 64, 0, 64) and whole.stacked_bytes == outputs.stacked_seg_bytes(2, 64, 64, 3, 2 + 1 + 1)
    plan = outputs.plan_seg(masks, shape, {}, crop=True)
    assert plan.form == outputs.STACKED and plan.budget_bytes == 2 ** 30
    assert plan.box == (0, 12, 0, 16) and plan.frame_shape == (12, 16)           # 12 columns widened to 16
    assert plan.stacked_bytes == outputs.stacked_seg_bytes(2, 12, 16, 3, 2 + 1 + 1)
    assert outputs.plan_seg(masks, shape, {}, plan.stacked_bytes, crop=True).form == outputs.STACKED
    assert outputs.plan_seg(masks, shape, {}, plan.stacked_bytes - 1, crop=True).form == outputs.LABEL_MAP
    monkeypatch.setattr(outputs, "SEG_MEMORY_GIB", plan.stacked_bytes / 2 ** 30 / 2)   # read at call time
    assert outputs.plan_seg(masks, shape, {}, crop=True).form == outputs.LABEL_MAP


_ORIENTATIONS = {"axial": (1.0, 0, 0, 0, 1.0, 0), "mirrored": (-1.0, 0, 0, 0, 1.0, 0),
                 "transposed": (0, 1.0, 0, 1.0, 0, 0)}


@pytest.mark.parametrize("orientation", list(_ORIENTATIONS))
def test_dicom_seg_cropped_frames_land_on_the_lesion_voxels(tmp_path, orientation):
    """No ../shared: a written series in three stored orientations; the SEG's cropped frames,
    placed by their Image Position (Patient) alone, give back every lesion's whole mask."""
    import highdicom as hd

    from lesionprop.scan.outputs import plan_seg, write_dicom_seg

    vol = load_ct(_synthetic_series(tmp_path / "s", _ORIENTATIONS[orientation]))
    assert vol.meta["transpose"] == (orientation == "transposed")
    t, z, boxes, scores, shape = _covered_case(vol.hu.shape)
    masks = lesion_masks(t, z, boxes, shape)
    plan = plan_seg(masks, shape, vol.meta, crop=True)                         # detect --seg-crop
    assert write_dicom_seg(tmp_path / "seg.dcm", vol, masks, t.id, t.score, plan=plan) == 3
    got, seg = _seg_in_display(tmp_path / "seg.dcm", vol)
    assert int(seg.Rows) * int(seg.Columns) < 24 * 32                              # cropped frames
    assert {fg.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved
            for fg in seg.PerFrameFunctionalGroupsSequence} == {"NO"}                # so highdicom says
    for k, m in enumerate(masks):
        full = np.zeros(shape, dtype=bool)
        full[m.region()] = m.mask
        np.testing.assert_array_equal(got[..., k], full)
    vol_hd = hd.seg.segread(tmp_path / "seg.dcm").get_volume(segment_numbers=[1, 2, 3])   # highdicom agrees
    assert [int(vol_hd.array[..., k].sum()) for k in range(3)] == [int(m.mask.sum()) for m in masks]


def test_dicom_seg_uncropped_when_the_lesions_span_the_slice(tmp_path):
    """A union box as large as the slice: full frames, the source's own positions (locations preserved)."""
    from lesionprop.scan.outputs import write_dicom_seg

    vol = load_ct(_synthetic_series(tmp_path / "s"))
    z, boxes, scores = np.array([1, 2]), np.array([[0.0, 0.0, 32.0, 4.0], [28.0, 20.0, 32.0, 24.0]]), np.array([.9, .8])
    t = lesion_table(np.array([1, 2]), z, boxes, scores, vol.affine, vol.spacing, vol.hu.shape)
    masks = lesion_masks(t, z, boxes, vol.hu.shape)
    assert write_dicom_seg(tmp_path / "seg.dcm", vol, masks, t.id, t.score) == 2
    got, seg = _seg_in_display(tmp_path / "seg.dcm", vol)
    assert (int(seg.Rows), int(seg.Columns)) == (24, 32)
    assert {fg.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved
            for fg in seg.PerFrameFunctionalGroupsSequence} == {"YES"}
    for k, m in enumerate(masks):
        full = np.zeros(vol.hu.shape, dtype=bool)
        full[m.region()] = m.mask
        np.testing.assert_array_equal(got[..., k], full)


def test_dicom_seg_holds_every_lesion_with_its_whole_mask(four_slices, tmp_path):
    """Segment number = lesion id for every lesion, the hidden one included; segments overlap."""
    import pydicom

    from lesionprop.scan.outputs import write_dicom_seg

    vol = load_ct(four_slices)
    t, z, boxes, scores, shape = _covered_case(vol.hu.shape)
    masks = lesion_masks(t, z, boxes, shape)
    assert write_dicom_seg(tmp_path / "seg.dcm", vol, masks, t.id, t.score) == 3
    got, seg = _seg_in_display(tmp_path / "seg.dcm", vol)
    assert seg.SegmentationType == "BINARY" and seg.SegmentsOverlap == "YES"
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert [s.TrackingID for s in seg.SegmentSequence] == ["lesion 1", "lesion 2", "lesion 3"]
    assert int(seg.NumberOfFrames) == 2 + 1 + 1                        # (segment, slice) pairs with voxels
    assert (int(seg.Rows), int(seg.Columns)) == vol.hu.shape[1:]       # whole slices (no --seg-crop)
    assert {fg.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved
            for fg in seg.PerFrameFunctionalGroupsSequence} == {"YES"}
    uids = [ref.sop_instance_uid for ref in vol.dicom.slices]
    assert uids == [str(pydicom.dcmread(f).file_meta.MediaStorageSOPInstanceUID) for f in vol.files]
    ref = seg.ReferencedSeriesSequence[0]                               # every slice referenced, not only framed ones
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(uids)
    for k, m in enumerate(masks):
        full = np.zeros(shape, dtype=bool)
        full[m.region()] = m.mask
        np.testing.assert_array_equal(got[..., k], full)
    with pytest.raises(ValueError, match="lesion ids must be 1..3"):
        write_dicom_seg(tmp_path / "bad.dcm", vol, masks, t.id + 1, t.score)


def test_dicom_seg_label_map_form_keeps_every_segment_number(four_slices, tmp_path, monkeypatch):
    """Over the budget: the SEG is the label volume; lesion 3 (hidden) is described with no frame."""
    import highdicom as hd

    import lesionprop.scan.outputs as outputs

    vol = load_ct(four_slices)
    t, z, boxes, scores, shape = _covered_case(vol.hu.shape)
    masks = lesion_masks(t, z, boxes, shape)
    labels = label_volume(t, z, boxes, scores, shape)
    coverage = label_coverage(t, masks, labels)
    monkeypatch.setattr(outputs, "SEG_MEMORY_GIB", 1e-9)
    assert outputs.plan_seg(masks, shape, vol.meta).form == outputs.LABEL_MAP
    with pytest.raises(ValueError, match="needs labels_zyx"):
        outputs.write_dicom_seg(tmp_path / "x.dcm", vol, masks, t.id, t.score)
    assert outputs.write_dicom_seg(tmp_path / "seg.dcm", vol, masks, t.id, t.score, labels_zyx=labels,
                                   coverage=coverage) == 3
    got, seg = _seg_in_display(tmp_path / "seg.dcm", vol)
    assert seg.SegmentationType == "BINARY" and seg.SegmentsOverlap == "NO"
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert [s.TrackingID for s in seg.SegmentSequence] == ["lesion 1", "lesion 2", "lesion 3"]
    numbers = [int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for fg in seg.PerFrameFunctionalGroupsSequence]
    assert sorted(numbers) == [1, 1, 2]                                  # lesion 3: described, no frame
    for k in range(3):
        np.testing.assert_array_equal(got[..., k], labels == k + 1)
    desc = [s.get("SegmentDescription") for s in seg.SegmentSequence]
    assert desc == [None, "32 of 36 voxels in this label-map SEG, the rest under lesion 1",
                    "no voxel in this label-map SEG: all 9 under lesion 1"]
    empty = hd.seg.segread(tmp_path / "seg.dcm").get_volume(segment_numbers=[3])   # readable, all zeros
    assert not empty.array.any()


def _stub_covered_case(monkeypatch, tmp_path) -> Path:
    """A stub detector returning :func:`_covered_case`'s boxes; returns a checkpoint path for the CLI."""
    import lesionprop.engine.predict as engine_predict
    from lesionprop.boxes import pixel_to_file
    from lesionprop.predictions import Predictions

    t, z, boxes, scores, _ = _covered_case()
    names = [f"000001_01_01_{k + 1:03d}.png" for k in z]
    monkeypatch.setattr(engine_predict, "predict",
                        lambda *a, **k: Predictions.from_arrays(names, pixel_to_file(boxes), scores))
    (tmp_path / "stub.pt").write_bytes(b"")
    return tmp_path / "stub.pt"


def test_detect_reports_the_lesion_hidden_in_the_label_volume(four_slices, tmp_path, monkeypatch, capsys):
    """The command on 4 DICOM slices with the boxes of :func:`_covered_case` (stub detector):
    3 lesions, 3 segments; lesion 3 hidden under lesion 1 in the printout, lesions.csv and the page."""
    import nibabel as nib

    stub = _stub_covered_case(monkeypatch, tmp_path)
    out = tmp_path / "out"
    assert main(["detect", str(four_slices), "--checkpoint", str(stub), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 lesions from 4 boxes" in printed and "DICOM SEG with 3 segments" in printed
    assert "DICOM SEG: every lesion whole, segments may overlap (stacked form: " in printed
    assert "1 lesion has no voxel in lesions.nii.gz" in printed and "3 (under 1)" in printed
    assert "listed in lesions.csv, the page and the SEG" in printed
    rows = _csv(out / "lesions.csv")
    assert [(r["id"], r["voxels"], r["voxels_in_label_map"], r["covered_by"]) for r in rows] == [
        ("1", "128", "128", ""), ("2", "36", "32", "1"), ("3", "9", "0", "1")]
    meta = json.loads((out / "lesions.json").read_text())
    assert meta["lesions"][2]["covered_by"] == [1]
    assert meta["dicom_seg"]["form"] == "stacked" and meta["dicom_seg"]["lesions_absent"] == []
    assert meta["dicom_seg"]["memory_budget_bytes"] == 2 ** 30
    rows_, cols_ = load_ct(four_slices).hu.shape[1:]                     # whole-slice frames (no --seg-crop)
    assert meta["dicom_seg"]["stacked_bytes_needed"] == stacked_seg_bytes(2, rows_, cols_, 3, 2 + 1 + 1)
    lab = np.asarray(nib.load(str(out / "lesions.nii.gz")).dataobj)
    assert set(np.unique(lab)) == {0, 1, 2}
    page = (out / "index.html").read_text()
    assert "3 (under 1), a better-scoring lesion covers all of their voxels" in page
    assert "<div class='lesion hidden' id='lesion-3'>" in page and "hidden: 0 of 9 voxels" in page
    assert "<span id='seg-form'>every lesion whole, segments may overlap (stacked form: " in page
    got, seg = _seg_in_display(out / "lesions_seg.dcm", load_ct(four_slices))
    assert seg.SegmentsOverlap == "YES" and [int(got[..., k].sum()) for k in range(3)] == [128, 36, 9]


@pytest.mark.parametrize("how", ["option", "constant"])
def test_detect_over_the_seg_budget_writes_the_label_map_form(four_slices, tmp_path, monkeypatch, capsys, how):
    """--seg-memory-gb (or the module's default) below the stacked form's need: the label-map SEG,
    said on the output, in lesions.json and on the page; lesions.csv unchanged."""
    import lesionprop.scan.outputs as outputs

    stub = _stub_covered_case(monkeypatch, tmp_path)
    out = tmp_path / "out"
    extra = ["--seg-memory-gb", "1e-9"] if how == "option" else []
    if how == "constant":
        monkeypatch.setattr(outputs, "SEG_MEMORY_GIB", 1e-9)
    assert main(["detect", str(four_slices), "--checkpoint", str(stub), "--out", str(out)] + extra) == 0
    printed = capsys.readouterr().out
    rows_, cols_ = load_ct(four_slices).hu.shape[1:]                     # whole-slice frames (no --seg-crop)
    from lesionprop.scan.record import _size

    need = outputs.stacked_seg_bytes(2, rows_, cols_, 3, 2 + 1 + 1)
    note = ("label-map form, one lesion per voxel as in lesions.nii.gz (the stacked form needs "
            f"{_size(need)} > budget 1 bytes, --seg-memory-gb); no voxel in the SEG: 3; partial: 2")
    assert f"DICOM SEG: {note}" in printed.splitlines()
    assert "listed in lesions.csv and the page (the SEG describes them, without voxels)" in printed
    meta = json.loads((out / "lesions.json").read_text())
    assert meta["dicom_seg"] == {
        "form": "label_map", "segments": 3, "stacked_bytes_needed": need, "memory_budget_bytes": 1,
        "frames_slices": 2, "frame_rows": rows_, "frame_columns": cols_, "frame_first_row": 0, "frame_first_column": 0,
        "lesions_absent": [3], "lesions_partial": [2]}
    assert [r["voxels_in_label_map"] for r in _csv(out / "lesions.csv")] == ["128", "32", "0"]
    page = (out / "index.html").read_text()
    assert f"<span id='seg-form'>{html.escape(note)}</span>" in page
    assert "listed here and in lesions.csv (the DICOM SEG describes them, without voxels)." in page
    got, seg = _seg_in_display(out / "lesions_seg.dcm", load_ct(four_slices))
    assert seg.SegmentsOverlap == "NO" and [int(got[..., k].sum()) for k in range(3)] == [128, 32, 0]


# ---------------------------------------------------------------- geometry of the loaders

def _edit(files, folder: Path, edit) -> Path:
    import pydicom

    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        edit(i, ds)
        ds.save_as(folder / f.name)
    return folder


def _dicoms(shared_data) -> list[Path]:
    return sorted((shared_data / "realct" / "dicom_series").glob("*.dcm"))


@pytest.mark.parametrize("iop, corner", [([1, 0, 0, 0, 1, 0], "first"), ([-1, 0, 0, 0, 1, 0], "last_col"),
                                         ([0, 1, 0, 1, 0, 0], "first")])
def test_dicom_affine_places_the_stored_first_pixel(shared_data, tmp_path, iop, corner):
    import pydicom

    files = _dicoms(shared_data)[:3]
    vol = load_ct(_edit(files, tmp_path / "s", lambda i, ds: setattr(ds, "ImageOrientationPatient", iop)))
    a = vol.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] < 0              # +x left, +y posterior, slices inferior
    np.testing.assert_allclose(np.abs(np.diag(a)[:3]), [0.9765625, 0.9765625, 2.0])
    np.testing.assert_allclose(a[:3, :3] - np.diag(np.diag(a)[:3]), 0, atol=1e-12)
    x = 0 if corner == "first" else vol.hu.shape[2] - 1
    for z, f in enumerate(vol.files):          # stored pixel (0, 0) lies at ImagePositionPatient
        ipp = np.asarray(pydicom.dcmread(f).ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(voxel_to_patient(a, [x, 0, z])[0], ipp, atol=1e-6)


def test_nifti_affine_is_the_file_affine_in_lps(shared_data):
    import nibabel as nib

    path = shared_data / "realct" / "ct_small_3mm.nii.gz"
    vol = load_ct(path)
    img = nib.load(str(path))
    zs, ys, xs = vol.hu.shape
    for x, y, z in [(0, 0, 0), (xs - 1, 5, 3), (7, ys - 1, zs - 1)]:
        # the voxel's HU and its RAS position in the file match the display voxel's
        ijk = np.linalg.solve(img.affine, np.r_[LPS_TO_RAS[:3, :3] @ voxel_to_patient(vol.affine, [x, y, z])[0], 1])
        i, j, k = np.rint(ijk[:3]).astype(int)
        assert np.allclose(ijk[:3], (i, j, k), atol=1e-6)
        assert vol.hu[z, y, x] == int(np.rint(img.get_fdata()[i, j, k]))


# ---------------------------------------------------------------- the command on real scans

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_synth) -> Path:
    """A tiny detector trained for 8 iterations (about 2 s): enough to produce boxes, not lesions."""
    from lesionprop.config import load_config
    from lesionprop.engine.train import train

    run = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(preset="tiny", overrides=["train.iterations=8", "train.batch_size=2"])
    train(cfg, tiny_synth, tiny_synth / "DL_info.csv", run, progress=False, device="cpu")
    return run


@pytest.fixture(scope="module")
def dicom_run(shared_data, checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detect_dicom") / "out"
    assert main(["detect", str(shared_data / "realct" / "dicom_series"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--score", "0", "--max-lesions", "4", "--device", "cpu"]) == 0
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_detect_dicom_tables_and_label_volume(dicom_run, shared_data):
    import nibabel as nib

    rows = _csv(dicom_run / "lesions.csv")
    meta = json.loads((dicom_run / "lesions.json").read_text())
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4] == [les["id"] for les in meta["lesions"]]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    vol = load_ct(shared_data / "realct" / "dicom_series")
    img = nib.load(str(dicom_run / "lesions.nii.gz"))
    assert img.shape == (512, 512, 20) and img.get_data_dtype() == np.uint16
    np.testing.assert_allclose(img.affine, LPS_TO_RAS @ vol.affine)
    np.testing.assert_allclose(meta["affine_voxel_to_lps_mm"], vol.affine, atol=1e-6)
    lab = np.asarray(img.dataobj)                                           # (i, j, k): column, row, slice
    best = meta["lesions"][0]                                              # never overwritten
    ii, jj, kk = np.nonzero(lab == 1)
    assert (ii.min(), jj.min(), kk.min(), ii.max(), jj.max(), kk.max()) == tuple(
        best[k] for k in ("voxel_i1", "voxel_j1", "voxel_k1", "voxel_i2", "voxel_j2", "voxel_k2"))
    assert best["slice_first"] == best["voxel_k1"] + 1 and best["slice_last"] == best["voxel_k2"] + 1
    # this series is stored in display orientation: (i, j, k) = (x, y, z); the patient box holds the
    # centres of its corner voxels
    lo = voxel_to_patient(vol.affine, [best["voxel_i1"], best["voxel_j1"], best["voxel_k2"]])[0]
    assert best["lps_x_min_mm"] <= lo[0] and best["lps_y_min_mm"] <= lo[1] and best["lps_z_min_mm"] <= lo[2]
    preds = _csv(dicom_run / "predictions.csv")                      # every kept box, file frame
    assert sum(les["n_boxes"] for les in meta["lesions"]) <= len(preds)
    assert {p["File_name"][:12] for p in preds} == {"000001_01_01"}


def test_detect_dicom_seg_references_the_series(dicom_run, shared_data):
    import nibabel as nib
    import pydicom

    seg = pydicom.dcmread(dicom_run / "lesions_seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    sources = [pydicom.dcmread(f) for f in _dicoms(shared_data)]
    ref = seg.ReferencedSeriesSequence[0]
    generated = json.loads((dicom_run / "lesions.json").read_text())["generated_uids"]
    assert sources[0].SeriesInstanceUID == "" and sources[0].StudyInstanceUID == ""      # anonymised source
    assert ref.SeriesInstanceUID == generated["SeriesInstanceUID"] and seg.StudyInstanceUID == generated[
        "StudyInstanceUID"]
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {
        str(s.file_meta.MediaStorageSOPInstanceUID) for s in sources}
    rows = json.loads((dicom_run / "lesions.json").read_text())["lesions"]
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [r["id"] for r in rows] == [1, 2, 3, 4]
    assert [s.TrackingID for s in seg.SegmentSequence] == [f"lesion {r['id']}" for r in rows]
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    # segment k holds lesion k's whole mask: its label-volume voxels and the ones other lesions took
    vol = load_ct(shared_data / "realct" / "dicom_series")
    px, _ = _seg_in_display(dicom_run / "lesions_seg.dcm", vol)
    header = json.loads((dicom_run / "lesions.json").read_text())["dicom_seg"]
    assert header["form"] == "stacked" and header["segments"] == 4
    assert (int(seg.Rows), int(seg.Columns)) == (header["frame_rows"], header["frame_columns"])
    display = np.asarray(nib.load(str(dicom_run / "lesions.nii.gz")).dataobj).transpose(2, 1, 0)  # (z, y, x)
    assert int(seg.NumberOfFrames) == sum(int(px[..., k].any(axis=(1, 2)).sum()) for k in range(4))
    for k, r in enumerate(rows):
        mine = px[..., k]
        assert mine.sum() == r["voxels"] and (mine & (display == r["id"])).sum() == r["voxels_in_label_map"]
        assert not ((display == r["id"]) & ~mine).any()
        zz, yy, xx = np.nonzero(mine)
        assert (xx.min(), yy.min(), zz.min(), xx.max(), yy.max(), zz.max()) == tuple(
            r[c] for c in ("voxel_i1", "voxel_j1", "voxel_k1", "voxel_i2", "voxel_j2", "voxel_k2"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if (tag, k) in (("img", "src"), ("a", "href"))]


def _chromium(tmp_path: Path, *args: str, timeout: int = 120) -> str:
    """Headless Chromium with a fresh profile (skips the test where it is not installed); returns stdout."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): page not rendered")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args],
                          check=True, capture_output=True, text=True, timeout=timeout)
    return done.stdout


def test_detect_page_links_and_headless_chromium(dicom_run, tmp_path):
    parser = _Links()
    parser.feed((dicom_run / "index.html").read_text())
    images = [link for link in parser.links if link.endswith(".png")]
    assert len(images) >= 3 * (4 * 4 - 2)                    # 3 windows x 4 lesions x (slice, above, key, below)
    page = (dicom_run / "index.html").read_text()
    for link in parser.links:
        if link.startswith("#"):                             # another lesion's block on the page
            assert f"id='{link[1:]}'" in page, link
        else:
            assert (dicom_run / link).is_file(), link
    for window in ("soft tissue (W 400, L 40)", "lung (W 1500, L -600)", "bone (W 1800, L 400)"):
        assert window in page
    assert "<td>SeriesInstanceUID</td><td class=gen>" in page and "CT Body 3.0" in page
    assert "InstanceNumber" in page and "SliceLocation" in page
    assert not [c for c in page if ord(c) < 32 and c not in "\n\t"]          # no stray control characters
    shot = tmp_path / "page.png"
    _chromium(tmp_path, "--hide-scrollbars", "--window-size=1100,900", f"--screenshot={shot}",
              (dicom_run / "index.html").as_uri())
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (900, 1100)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert grey.std() > 20                                    # not blank: text and the table
    # the window presets, as a reader switches them: the same figures at the same place, other greys
    shots = {}
    for window in ("soft", "lung", "bone"):
        shots[window] = tmp_path / f"{window}.png"
        _chromium(tmp_path, "--hide-scrollbars", "--window-size=1100,1600", f"--screenshot={shots[window]}",
                  (dicom_run / "index.html").as_uri() + f"#window={window}")
    first = cv2.imread(str(dicom_run / "figures" / "lesion_001_slice_soft.png"))
    soft, lung, bone = (cv2.cvtColor(cv2.imread(str(shots[w])), cv2.COLOR_BGR2GRAY).astype(float)
                        for w in ("soft", "lung", "bone"))
    found = cv2.minMaxLoc(cv2.matchTemplate(soft.astype(np.uint8), cv2.cvtColor(first, cv2.COLOR_BGR2GRAY),
                                            cv2.TM_CCOEFF_NORMED))
    assert found[1] > 0.95                                    # the soft-tissue figure is on the page as drawn
    x, y = found[3]
    h, w = first.shape[:2]
    region = (slice(y, y + h), slice(x, x + w))
    assert lung[region].mean() > soft[region].mean() + 20     # lung window: soft tissue turns white
    assert bone[region].mean() < soft[region].mean() - 10     # bone window: soft tissue turns dark grey


def test_detect_page_sorts_its_summary_in_chromium(dicom_run, tmp_path):
    """The summary's script, run by Chromium: ``#sort=-hu_max`` orders the rows by max HU, descending."""
    rows = json.loads((dicom_run / "lesions.json").read_text())["lesions"]
    dom = _chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", (dicom_run / "index.html").as_uri() +
                    "#sort=-hu_max")
    body = dom[dom.index("<table class=\"summary\""):]
    body = body[:body.index("</table>")]
    order = [int(m) for m in __import__("re").findall(r"href=\"#lesion-(\d+)\"", body)]
    expected = [r["id"] for r in sorted(rows, key=lambda r: -r["hu_max"])]
    assert sorted(order) == sorted(expected) and [rows[i - 1]["hu_max"] for i in order] == [
        rows[i - 1]["hu_max"] for i in expected]
    assert 'aria-sort="descending"' in body


def test_detect_nifti_keeps_the_input_grid(shared_data, checkpoint, tmp_path):
    import nibabel as nib

    src = shared_data / "realct" / "ct_small_3mm.nii.gz"
    out = tmp_path / "out"
    assert main(["detect", str(src), "--checkpoint", str(checkpoint), "--out", str(out), "--score", "0",
                 "--max-lesions", "3", "--device", "cpu"]) == 0
    img, lab = nib.load(str(src)), nib.load(str(out / "lesions.nii.gz"))
    assert lab.shape == img.shape[:3]
    np.testing.assert_allclose(lab.affine, img.affine)
    assert not (out / "lesions_seg.dcm").exists()
    rows = _csv(out / "lesions.csv")
    assert len(rows) == 3
    data = np.asarray(lab.dataobj)
    assert set(np.unique(data)) <= {0, 1, 2, 3} and (data == 1).any()
    best = json.loads((out / "lesions.json").read_text())["lesions"][0]      # never overwritten in the labels
    ii, jj, kk = np.nonzero(data == 1)                                        # the file's own index order
    assert (ii.min(), jj.min(), kk.min(), ii.max(), jj.max(), kk.max()) == tuple(
        best[k] for k in ("voxel_i1", "voxel_j1", "voxel_k1", "voxel_i2", "voxel_j2", "voxel_k2"))
    assert best["key_instance_number"] is None and best["hu_mean"] is not None


def test_detect_on_a_deeplesion_layout_series(tiny_synth, checkpoint, tmp_path):
    series = sorted((tiny_synth / "Images_png").iterdir())[0]
    out = tmp_path / "out"
    assert main(["detect", str(series), "--checkpoint", str(checkpoint), "--out", str(out), "--score", "0",
                 "--max-lesions", "2", "--device", "cpu"]) == 0
    meta = json.loads((out / "lesions.json").read_text())
    numbers = sorted(int(p.stem) for p in series.glob("*.png"))
    assert meta["input_kind"] == "deeplesion" and meta["shape_zyx"][0] == len(numbers)
    for les in meta["lesions"]:
        assert numbers[0] <= les["slice_first"] <= les["key_slice"] <= les["slice_last"] <= numbers[-1]
    # a rerun into the same folder replaces the page's figures
    assert main(["detect", str(series), "--checkpoint", str(checkpoint), "--out", str(out), "--score", "0",
                 "--max-lesions", "1", "--device", "cpu"]) == 0
    assert {p.name[:10] for p in (out / "figures").iterdir()} == {"lesion_001"}


def test_detect_with_the_shipped_detector_name(tmp_path, capsys):
    """`--checkpoint synthetic-cpu-detector` on a tiny DeepLesion-layout series: no training run needed."""
    from lesionprop.data.volumes import write_series

    hu = np.full((5, 64, 64), -1000, dtype=np.int16)
    hu[:, 16:48, 16:48] = 40
    hu[1:4, 28:36, 28:36] = 90
    write_series(tmp_path / "data", "000007_01_01", hu, (0.8, 0.8, 2.0))
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "data" / "Images_png" / "000007_01_01"), "--checkpoint",
                 "synthetic-cpu-detector", "--out", str(out), "--score", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "detector: the shipped synthetic-cpu-detector, trained on synthetic phantom data only" in printed
    meta = json.loads((out / "lesions.json").read_text())
    assert meta["shipped_detector"] == "synthetic-cpu-detector" and meta["checkpoint"].endswith("cpu_synth_detector.pt")
    page = (out / "index.html").read_text()
    assert "<td>detector</td><td>synthetic-cpu-detector, TTA none, score &gt;= 0</td>" in page
    assert "not a clinical detector" in page


@pytest.mark.parametrize("what, edit, message", [
    ("modality", lambda i, ds: setattr(ds, "Modality", "MR") if i == 1 else None, "not a CT image (Modality = 'MR')"),
    ("localizer", lambda i, ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]) if i == 0 else None,
     "a localizer (scout) image"),
])
def test_detect_bad_dicom_is_one_line(shared_data, checkpoint, tmp_path, capsys, what, edit, message):
    folder = _edit(_dicoms(shared_data)[:5], tmp_path / what, edit)
    assert main(["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_detect_missing_slices(shared_data, checkpoint, tmp_path, capsys):
    files = _dicoms(shared_data)[:6]
    folder = tmp_path / "gap"
    folder.mkdir()
    import pydicom

    order = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for f in order[:2] + order[3:]:
        shutil.copy(f, folder / f.name)
    assert main(["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    assert "missing slices between" in capsys.readouterr().err


def test_detect_seg_frames_follow_a_mirrored_series(shared_data, checkpoint, tmp_path):
    """Columns stored toward the patient's right: the SEG frames are mirrored back to the stored order."""
    import nibabel as nib

    folder = _edit(_dicoms(shared_data)[:5], tmp_path / "mirror",
                   lambda i, ds: setattr(ds, "ImageOrientationPatient", [-1, 0, 0, 0, 1, 0]))
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--score", "0",
                 "--max-lesions", "2", "--device", "cpu"]) == 0
    vol = load_ct(folder)
    assert vol.meta["flip_cols"]
    stored = np.asarray(nib.load(str(out / "lesions.nii.gz")).dataobj).transpose(2, 1, 0)    # stored (k, j, i)
    display = stored[:, :, ::-1]                                      # columns toward the patient's left
    best = json.loads((out / "lesions.json").read_text())["lesions"][0]
    px, _ = _seg_in_display(out / "lesions_seg.dcm", vol)             # stored columns -> display
    mine = px[..., 0]
    assert mine.sum() == best["voxels"] and not ((display == 1) & ~mine).any()
    zz, yy, xx = np.nonzero(mine)
    width = display.shape[2]
    assert (width - 1 - xx.max(), width - 1 - xx.min()) == (best["voxel_i1"], best["voxel_i2"])   # stored columns


@pytest.mark.parametrize("args, message", [
    (["--score", "1.5"], "--score must be in [0, 1]"), (["--link-iou", "1"], "--link-iou must be in [0, 1)"),
    (["--max-gap", "0"], "--max-gap must be at least 1"), (["--max-lesions", "0"], "--max-lesions must be"),
    (["--seg-memory-gb", "0"], "--seg-memory-gb must be > 0"),
])
def test_detect_bad_options(tmp_path, capsys, args, message):
    assert main(["detect", str(tmp_path), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")] + args) == 2
    assert message in capsys.readouterr().err


def test_detect_missing_checkpoint_and_file_out(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "src").mkdir()
    assert main(["detect", str(tmp_path / "src"), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "file")]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "src"), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "src"), "--checkpoint", "synthetic-cpu", "--out", str(tmp_path / "o")]) == 2
    assert "shipped detector: synthetic-cpu-detector" in capsys.readouterr().err    # a backbone name is not one
    assert main(["detect", str(tmp_path / "src"), "--checkpoint", str(tmp_path / "none.pt"), "--out",
                 str(tmp_path / "src" / "o")]) == 2
    assert "must not be inside the input" in capsys.readouterr().err


def test_detect_takes_inference_settings_and_refuses_the_models_own(tmp_path, capsys):
    """--set predict.* reaches the inference; --set data.window (the model's) is one line, before any work."""
    from lesionprop.cli import main
    from lesionprop.data.volumes import write_series

    hu = np.full((4, 64, 64), -1000, dtype=np.int16)
    hu[:, 16:48, 16:48] = 40
    write_series(tmp_path / "ds", "000007_01_01", hu, (0.8, 0.8, 2.0))
    src = tmp_path / "ds" / "Images_png" / "000007_01_01"
    assert main(["detect", str(src), "--checkpoint", "synthetic-cpu-detector", "--out", str(tmp_path / "bad"),
                 "--set", "data.window=[0, 100]"]) == 2
    assert "--set data.window: at inference only" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["detect", str(src), "--checkpoint", "synthetic-cpu-detector", "--out", str(tmp_path / "ok"),
                 "--set", "predict.batch_size=1", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "ok" / "lesions.json").read_text())["inference"] == ["predict.batch_size=1"]
