"""DICOM SEG out: a label map on a series' grid written as a SEG that references the series, read back with
highdicom / pydicom: frames, segment labels, the referenced series, the geometry and the pixels."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

hd = pytest.importorskip("highdicom", reason="the dicom extra (pip install 'selfmedmae[dicom]') is not installed")
pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pip install 'selfmedmae[dicom]') is not installed")

from dicom_helpers import hippocampus_series  # noqa: E402
from selfmedmae.data.dicom_series import scan_series  # noqa: E402
from selfmedmae.errors import ConfigError  # noqa: E402
from selfmedmae.tasks.dicom_seg import write_dicom_seg  # noqa: E402
from tiny_runs import HIPPOCAMPUS  # noqa: E402

if not HIPPOCAMPUS.is_dir():
    pytest.skip(f"{HIPPOCAMPUS} is absent", allow_module_level=True)


def check_seg(path, folder, labels: np.ndarray, names) -> None:
    """The SEG at ``path`` is ``labels`` (nibabel order) on the series in ``folder``, one segment per name."""
    seg = hd.seg.segread(path)
    series = scan_series(folder)
    sources = [pydicom.dcmread(s.path, stop_before_pixels=True) for s in series.slices]
    assert seg.SegmentationType == "BINARY"
    assert int(seg.NumberOfFrames) == len(sources) * len(names)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(names)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert (seg.Rows, seg.Columns) == (sources[0].Rows, sources[0].Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in sources[0].PixelSpacing])
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in sources[0].ImageOrientationPatient])
    positions = {tuple(round(float(v), 4) for v in f.PlanePositionSequence[0].ImagePositionPatient)
                 for f in seg.PerFrameFunctionalGroupsSequence}
    assert positions == {tuple(round(float(v), 4) for v in s.ImagePositionPatient) for s in sources}
    uids = [s.SOPInstanceUID for s in sources]
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)  # [n, rows, cols]
    assert np.array_equal(back.transpose(2, 1, 0), labels)


def test_label_map_written_as_seg_of_its_series(tmp_path):
    folder, nifti = hippocampus_series(tmp_path / "series")
    labels = np.asanyarray(nib.load(str(nifti).replace("imagesTr", "labelsTr")).dataobj).astype(np.uint8)
    out = write_dicom_seg(labels, folder, ["Anterior", "Posterior"], tmp_path / "out" / "seg.dcm")
    assert out == tmp_path / "out" / "seg.dcm"
    check_seg(out, folder, labels, ["Anterior", "Posterior"])
    with pytest.raises(ConfigError, match="never written into the series folder"):
        write_dicom_seg(labels, folder, ["Anterior", "Posterior"], folder / "seg.dcm")
    with pytest.raises(ValueError, match="not on the series' grid"):
        write_dicom_seg(labels[:, :, :-1], folder, ["Anterior", "Posterior"], tmp_path / "o2.dcm")


def test_predict_writes_a_seg_of_each_series_and_refuses_it_for_nifti(tmp_path, capsys):
    from selfmedmae.cli import main
    from tiny_runs import REPO, tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "run", str(REPO / "configs" / "_data" / "hippocampus.yaml"),
                           [f"data.root={HIPPOCAMPUS}", "data.roi_size=[16,16,16]"], seed=3)
    folder, nifti = hippocampus_series(tmp_path / "in" / "case001")
    assert main(["predict", str(ckpt), str(nifti), "--out", str(tmp_path / "nii"), "eval.overlap=0"]) == 0
    labels = np.asanyarray(nib.load(tmp_path / "nii" / "hippocampus_001.nii.gz").dataobj)
    assert main(["predict", str(ckpt), str(folder), "--out", str(tmp_path / "seg"), "--format", "dicom-seg",
                 "--probabilities", "--figures", "eval.overlap=0"]) == 0
    check_seg(tmp_path / "seg" / "case001.dcm", folder, labels, ["Anterior", "Posterior"])
    prob = nib.load(tmp_path / "seg" / "case001_probabilities.nii.gz")
    assert prob.shape == (*labels.shape, 3) and np.array_equal(np.asanyarray(prob.dataobj).argmax(-1), labels)
    assert (tmp_path / "seg" / "figures" / "case001.png").is_file()
    assert all(p.suffix == ".dcm" and p.name.startswith("IM") for p in folder.iterdir())  # the series untouched
    capsys.readouterr()
    assert main(["predict", str(ckpt), str(nifti), "--out", str(tmp_path / "o"), "--format", "dicom-seg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"selfmedmae: error: {nifti}: --format dicom-seg needs DICOM series inputs (a folder holding one "
                   f"series) and a segmentation model; use --format nifti for it")
    assert not (tmp_path / "o").exists()
