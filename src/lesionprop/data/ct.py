"""The CT volume every reader returns, and what a DICOM series adds to it.

Orientation, units and the affine are described in :mod:`lesionprop.data.volumes`.
:class:`DicomSeries` keeps what the derived DICOM objects (SEG, SR) and the report need
from the source series: its identification, one :class:`SliceRef` per display slice, the
stored-frame geometry of the volume's grid, and the UIDs that were generated because the
source had none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lesionprop.errors import InputError


class VolumeError(InputError):
    """Bad CT input: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class SliceRef:
    """The stored source frame behind one display slice."""

    file: str
    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None             # 1-based frame number of a multi-frame image, else None
    instance_number: int | None = None
    slice_location: float | None = None  # (0020,1041) as stored, if present


@dataclass(frozen=True)
class DicomSeries:
    """Identification and geometry of the DICOM series a volume came from.

    ``ids``: StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID as used by the
    derived objects (generated where the source has none: those are also in ``generated``);
    ``study`` / ``series``: descriptive attributes for the page (empty strings when absent);
    ``slices``: one :class:`SliceRef` per display slice (slice 0 = most superior);
    ``positions`` (Z, 3): Image Position (Patient) of the stored pixel (0, 0) of each slice of
    the volume's grid (the source's own positions unless the grid was resampled);
    ``orientation`` (6,): Image Orientation (Patient) of the stored frames;
    ``pixel_spacing`` (2,): (between rows, between columns) mm; ``stored_shape``: (rows,
    columns) of the volume's grid in the stored orientation; ``source_shift`` (Z, 2): (rows,
    columns) to add to a grid pixel coordinate to get the source frame's (zero unless
    resampled); ``tilt_deg``: the corrected gantry tilt (0: none).
    """

    ids: dict[str, str]
    study: dict[str, str]
    series: dict[str, str]
    slices: tuple[SliceRef, ...]
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    stored_shape: tuple[int, int]
    source_shift: np.ndarray
    generated: dict[str, str] = field(default_factory=dict)
    tilt_deg: float = 0.0

    @property
    def multiframe(self) -> bool:
        return any(s.frame is not None for s in self.slices)


@dataclass(frozen=True)
class CTVolume:
    """An HU volume in display orientation (see :mod:`lesionprop.data.volumes`)."""

    hu: np.ndarray                                  # (Z, Y, X) int16
    spacing: tuple[float, float, float]             # (x, y, z) mm
    files: tuple[str, ...]                          # source file(s), slice order for DICOM
    z_positions: tuple[float, ...] = ()             # mm along the superior axis, one per slice
    source: str = ""                                # "dicom" | "nifti" | "deeplesion"
    meta: dict = field(default_factory=dict, compare=False)
    affine: np.ndarray | None = field(default=None, compare=False)   # display voxel (x, y, z) -> LPS mm
    dicom: DicomSeries | None = field(default=None, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)       # what the reader changed or assumed
