"""``lesions_sr.dcm``: the lesions as a DICOM Measurement Report (TID 1500, Comprehensive 3D SR).

Per lesion, two measurement groups sharing its tracking identifier (``lesion <id>``) and
tracking UID (the SEG segment's own, so a viewer can tie the report to the segment):

* **Planar ROI (TID 1410)** on the key slice: the region is the key-slice box as a closed
  POLYLINE in the source image's pixel coordinates (SCOORD: (0, 0) = the top left corner of the
  top left pixel, (column, row)); measurements Long axis and Short axis (SCT 103339001 /
  103340004, mm) with the key slice as their source image, and Certainty of Finding (DCM
  111012, the detector's box score, 0..1, unit "1").  The axes are those of the lesion's
  model on its key slice, the ellipse inscribed in the box: its longer and shorter side.
* **Volumetric ROI (TID 1411)**: the SEG segment it measures (segment number = lesion id,
  source series = the CT series); measurements Volume (SCT 118565006, mL: the ellipses times
  the slice interval), and Attenuation Coefficient (DCM 112031, HU) with derivation Mean and
  Maximum over the segment's voxels.

Boxes arrive in the display pixel frame (:mod:`lesionprop.scan.lesions`) and are mapped back
to the stored frame (:func:`lesionprop.data.dicom_geometry.display_to_stored`), then by the
grid's ``source_shift`` to the source image when a gantry tilt was resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lesionprop import __version__
from lesionprop.data.ct import CTVolume
from lesionprop.data.dicom_geometry import display_to_stored
from lesionprop.fileio import atomic_write

SR_SERIES_NUMBER = 9902


def key_box_polyline(vol: CTVolume, z: int, box: np.ndarray) -> np.ndarray:
    """``(5, 2)`` closed polyline (column, row) of a display pixel-frame box on the source image of slice ``z``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    meta = vol.meta
    cr = display_to_stored(corners, vol.dicom.stored_shape, (bool(meta.get("transpose")),
                                                             bool(meta.get("flip_rows")), bool(meta.get("flip_cols"))))
    shift_r, shift_c = vol.dicom.source_shift[int(z)]
    cr = cr + np.array([shift_c, shift_r])
    return np.vstack([cr, cr[:1]])


def _image_ref(cls, ref):
    frames = [int(ref.frame)] if ref.frame is not None else None
    return cls(ref.sop_class_uid, ref.sop_instance_uid, frames)


def build_measurement_report(vol: CTVolume, rows: list[dict], key_z: np.ndarray, key_box: np.ndarray, seg,
                             sources: list):
    """The Comprehensive 3D SR (highdicom) of ``rows`` (lesions.json's, best first), referencing the
    key slices, the ``seg`` Segmentation's segments and, as evidence, ``sources`` and ``seg``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    info = vol.dicom
    algorithm = hd.sr.AlgorithmIdentification(name="lesionprop", version=__version__)
    mm, ml = codes.UCUM.Millimeter, hd.sr.CodedConcept("ml", "UCUM", "milliliter")
    hu_unit, no_units = codes.UCUM.HounsfieldUnit, codes.UCUM.NoUnits
    tracking = {int(s.SegmentNumber): str(s.TrackingUID) for s in seg.SegmentSequence}
    groups = []
    for row, z, box in zip(rows, key_z, key_box):
        lid = int(row["id"])
        ref = info.slices[int(z)]
        key_image = [_image_ref(hd.sr.SourceImageForMeasurement, ref)]

        def track():
            return hd.sr.TrackingIdentifier(uid=tracking[lid], identifier=f"lesion {lid}")
        planar = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=track(),
            referenced_region=hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                                graphic_data=key_box_polyline(vol, int(z), box),
                                                source_image=_image_ref(hd.sr.SourceImageForRegion, ref)),
            finding_type=codes.SCT.Lesion, finding_category=codes.SCT.MorphologicallyAbnormalStructure,
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(row["long_axis_mm"]), unit=mm,
                                  referenced_images=key_image, algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.SCT.ShortAxis, value=float(row["short_axis_mm"]), unit=mm,
                                  referenced_images=key_image, algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=float(row["score"]), unit=no_units,
                                  algorithm_id=algorithm),
            ])
        volume_measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=float(row["volume_ml"]), unit=ml,
                                                 algorithm_id=algorithm)]
        for key, derivation in (("hu_mean", codes.SCT.Mean), ("hu_max", codes.SCT.Maximum)):
            if row.get(key) is not None:
                volume_measurements.append(hd.sr.Measurement(
                    name=codes.DCM.AttenuationCoefficient, value=float(row[key]), unit=hu_unit,
                    derivation=derivation, algorithm_id=algorithm))
        volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=track(),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=lid,
                source_series=hd.sr.SourceSeriesForSegmentation(info.ids["SeriesInstanceUID"])),
            finding_type=codes.SCT.Lesion, finding_category=codes.SCT.MorphologicallyAbnormalStructure,
            algorithm_id=algorithm, measurements=volume_measurements)
        groups += [planar, volumetric]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="lesionprop", manufacturer_name="lesionprop", model_name="lesionprop detect"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=report[0], series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lesionprop",
        series_description="lesionprop measurements", is_complete=True)


def write_measurement_report(path: Path, sr) -> None:
    with atomic_write(path, "wb") as fh:
        sr.save_as(fh)
