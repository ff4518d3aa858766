"""A label map written as a DICOM Segmentation (SEG) of the series it was predicted from (highdicom).

The SEG references the source series (its SOP instances, study, frame of reference), so a PACS or viewer
shows it over the scan: one frame per source slice and segment, on the source slices' own geometry (same
orientation, positions and pixel spacing; highdicom copies them from the source images). Segment ``i`` is
the label value ``i`` of the map, named after the class. The segmentation type is ``BINARY`` (one bit per
pixel and segment), which every SEG reader takes; empty frames are kept, so the frame count is always
slices x segments.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from selfmedmae.data.dicom_series import usable
from selfmedmae.errors import ConfigError
from selfmedmae.extras import need, version


def _descriptions(hd, codes, names: Sequence[str]) -> list:
    algorithm = hd.AlgorithmIdentificationSequence(name="selfmedmae", version=version(),
                                                   family=codes.cid7162.ArtificialIntelligence)
    return [hd.seg.SegmentDescription(segment_number=i, segment_label=str(name)[:64],
                                      segmented_property_category=codes.SCT.Tissue,
                                      segmented_property_type=codes.SCT.Tissue,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for i, name in enumerate(names, start=1)]


def write_dicom_seg(labels: np.ndarray, series_folder: str | os.PathLike, class_names: Sequence[str],
                    out: str | os.PathLike) -> Path:
    """Write ``labels`` (integer label map [columns, rows, slices], nibabel's order, on the series' own grid;
    values 0 = background, 1..K = ``class_names``) as a DICOM SEG file ``out`` referencing the series in
    ``series_folder``; returns ``out``."""
    hd, pydicom = need("highdicom", "dicom"), need("pydicom", "dicom")
    from pydicom.sr.codedict import codes

    series = usable(series_folder)
    if tuple(labels.shape) != tuple(series.shape):
        raise ValueError(f"{series_folder}: label map {list(labels.shape)} is not on the series' grid "
                         f"{list(series.shape)}")
    if labels.max(initial=0) > len(class_names):
        raise ValueError(f"label value {int(labels.max())} has no class name ({len(class_names)} given)")
    sources = [pydicom.dcmread(s.path) for s in series.slices]  # sorted along the normal, as the map's axis 2
    frames = np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0)).astype(np.uint8)  # [slices, rows, cols]
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(hd, codes, class_names), series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="selfmedmae", manufacturer_model_name="selfmedmae predict",
        software_versions=version(), device_serial_number="0", series_description="selfmedmae segmentation",
        omit_empty_frames=False)
    out = Path(out)
    if out.resolve().parent == Path(series_folder).resolve():  # a SEG inside the series would make it two series
        raise ConfigError(f"{out}: a SEG is never written into the series folder {series_folder}")
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out
