"""DICOM series in: the reader gives nibabel's array and affine for the same volume, a folder of one series is
told from a folder of NIfTI files, faulty folders are named with their problem, a missing extra is one line."""
from __future__ import annotations

import shutil
import sys

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the dicom extra (pip install 'selfmedmae[dicom]') is not installed")

from dicom_helpers import hippocampus_series, write_series  # noqa: E402
from selfmedmae.data.dicom_series import find_problems, holds_dicom, read_volume  # noqa: E402
from selfmedmae.errors import ConfigError  # noqa: E402
from tiny_runs import HIPPOCAMPUS  # noqa: E402

if not HIPPOCAMPUS.is_dir():
    pytest.skip(f"{HIPPOCAMPUS} is absent", allow_module_level=True)


def _oblique_affine() -> np.ndarray:
    rot = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])  # 37 degrees about z
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def test_hippocampus_series_reads_as_its_nifti(tmp_path):
    folder, nifti = hippocampus_series(tmp_path / "series")
    img = nib.load(nifti)
    array, affine = read_volume(folder)
    assert np.array_equal(array, np.asanyarray(img.dataobj))  # rescaled: slope 0.5, intercept -20 undone
    np.testing.assert_allclose(affine, img.affine, atol=1e-6)
    assert find_problems(folder) == []


def test_monai_loader_gives_the_same_tensor_and_affine(tmp_path):
    from monai.transforms import LoadImage

    from selfmedmae.data.dicom import DicomSeriesReader
    from selfmedmae.data.nifti_reader import TorchCopyNibabelReader

    folder, nifti = hippocampus_series(tmp_path / "series")
    load = LoadImage(reader=[TorchCopyNibabelReader(), DicomSeriesReader()], image_only=True,
                     ensure_channel_first=True)
    from_dicom, from_nifti = load(str(folder)), load(str(nifti))
    assert from_dicom.shape == from_nifti.shape == (1, 35, 51, 35)
    assert from_dicom.dtype == from_nifti.dtype
    assert bool((from_dicom == from_nifti).all())
    np.testing.assert_allclose(from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-6)
    assert from_dicom.meta["filename_or_obj"] == str(folder)


def test_oblique_anisotropic_ct_sorted_by_position_not_by_name(tmp_path):
    values = np.random.RandomState(0).randint(-1000, 1500, (20, 24, 7)).astype(float)
    write_series(values, _oblique_affine(), tmp_path / "ct", modality="CT", slope=1.0, intercept=-1024.0)
    array, affine = read_volume(tmp_path / "ct")
    assert np.array_equal(array, values)
    np.testing.assert_allclose(affine, _oblique_affine(), atol=1e-5)
    # nibabel's reading of the same geometry: RAS axis codes and zooms agree
    assert nib.aff2axcodes(affine) == nib.aff2axcodes(_oblique_affine())


def test_a_series_folder_is_told_from_a_nifti_folder(tmp_path):
    folder, nifti = hippocampus_series(tmp_path / "series")
    other = tmp_path / "nifti"
    other.mkdir()
    shutil.copy(nifti, other)
    assert holds_dicom(folder) and not holds_dicom(other) and not holds_dicom(nifti)


@pytest.fixture()
def series(tmp_path):
    values = np.arange(8 * 6 * 6, dtype=float).reshape(8, 6, 6)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    paths = write_series(values, affine, tmp_path / "s", shuffle=False)
    return tmp_path / "s", paths, values, affine


def test_missing_slice(series):
    folder, paths, _, _ = series
    paths[3].unlink()
    (problem,) = find_problems(folder)
    assert problem.startswith(f"{folder}: missing slice(s)") and "median slice spacing 2 mm" in problem


def test_two_series_in_one_folder(series, tmp_path):
    folder, _, values, affine = series
    write_series(values, affine, tmp_path / "other", first_number=100)
    for p in (tmp_path / "other").iterdir():
        shutil.move(p, folder / f"B{p.name}")
    (problem,) = find_problems(folder)
    assert problem.startswith(f"{folder}: 2 series in one folder")


def test_non_dicom_file_and_uneven_spacing(series):
    folder, paths, _, _ = series
    (folder / "notes.txt").write_text("scanned on Tuesday")
    import pydicom

    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], 10.6]  # 10.0 expected
    ds.save_as(paths[-1])
    problems = find_problems(folder)
    assert problems == [f"{folder}: notes.txt is not a DICOM file; a series folder holds its series' files alone"]
    (folder / "notes.txt").unlink()
    (problem,) = find_problems(folder)
    assert problem.startswith(f"{folder}: uneven slice spacing")


def test_mixed_sizes_and_unusable_folder_is_a_config_error(series, tmp_path):
    folder, _, _, affine = series
    write_series(np.zeros((4, 4, 2)), affine, tmp_path / "small")
    shutil.move(next((tmp_path / "small").iterdir()), folder / "small.dcm")
    problems = find_problems(folder)
    assert any(p.startswith(f"{folder}: 2 series") for p in problems)
    with pytest.raises(ConfigError, match="2 series in one folder"):
        read_volume(folder)


def test_missing_extra_is_one_line_naming_the_pip_install(series, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` now raises ImportError
    with pytest.raises(ConfigError) as info:
        find_problems(series[0])
    assert "pip install 'selfmedmae[dicom]'" in str(info.value) and "\n" not in str(info.value)
