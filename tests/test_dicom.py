"""DICOM series in: the reader gives nibabel's array and affine for the same volume, a folder of one series is
told from a folder of NIfTI files, faulty folders are named with their problem, a missing extra is one line."""
from __future__ import annotations

import re
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the dicom extra (pip install 'selfmedmae[dicom]') is not installed")

from dicom_helpers import hippocampus_series, write_series  # noqa: E402
from selfmedmae.data.dicom_series import find_problems, holds_dicom, read_volume  # noqa: E402
from selfmedmae.errors import ConfigError  # noqa: E402
from selfmedmae.cli import main  # noqa: E402
from tiny_runs import HIPPOCAMPUS, REPO, tiny_checkpoint  # noqa: E402

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


# ---------------------------------------------------------------------------------------------- the CLI
CFG = REPO / "configs" / "_data" / "hippocampus.yaml"
OWN = ["data.format=csv", "data.csv=cases.csv", "data.labels=[background,Anterior,Posterior]", "train.batch_size=2"]


def integer_cases(n: int = 5) -> list[str]:
    """Ids of hippocampus cases stored as integers (a DICOM series stores integers; most cases are float32)."""
    found = []
    for path in sorted((HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz")):
        if nib.load(path).get_data_dtype().kind in "ui":
            found.append(path.name[len("hippocampus_"):-len(".nii.gz")])
        if len(found) == n:
            break
    return found


IDS = integer_cases()


def own_dicom_layout(root, ids=IDS):
    """A CSV own-data layout whose images are DICOM series folders and whose labels are NIfTI label maps."""
    rows = ["image,label"]
    (root / "labels").mkdir(parents=True)
    for i in ids:
        hippocampus_series(root / "dicom" / f"case{i}", f"hippocampus_{i}")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"hippocampus_{i}.nii.gz", root / "labels" / f"case{i}.nii.gz")
        rows.append(f"dicom/case{i},labels/case{i}.nii.gz")
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    return root


def test_check_data_reads_dicom_series_and_names_a_faulty_one(tmp_path, capsys):
    root = own_dicom_layout(tmp_path / "own")
    assert main(["check-data", str(CFG), f"data.root={root}", *OWN]) == 0
    out = capsys.readouterr().out
    assert "check-data: OK" in out and "5 labelled" in out
    broken = root / "dicom" / f"case{IDS[1]}"
    middle = sorted(broken.iterdir(), key=lambda p: __import__("pydicom").dcmread(p).InstanceNumber)[10]
    middle.unlink()
    (root / "dicom" / f"case{IDS[2]}" / "scan.txt").write_text("not an image")
    assert main(["check-data", str(CFG), f"data.root={root}", *OWN]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: missing slice(s)" in err
    assert f"{root / 'dicom' / f'case{IDS[2]}'}: scan.txt is not a DICOM file" in err


@pytest.fixture(scope="module")
def unetr(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unetr")
    return tiny_checkpoint(tmp / "run", str(CFG), [f"data.root={HIPPOCAMPUS}", "data.roi_size=[16,16,16]"], seed=3)


def test_predict_on_a_series_gives_the_nifti_label_map_to_the_voxel(tmp_path, unetr, capsys):
    folder, nifti = hippocampus_series(tmp_path / "in" / "case001")
    assert main(["predict", str(unetr), str(folder), "--out", str(tmp_path / "a"), "eval.overlap=0"]) == 0
    assert main(["predict", str(unetr), str(nifti), "--out", str(tmp_path / "b"), "eval.overlap=0"]) == 0
    from_dicom = nib.load(tmp_path / "a" / "case001.nii.gz")
    from_nifti = nib.load(tmp_path / "b" / "hippocampus_001.nii.gz")
    labels = np.asanyarray(from_nifti.dataobj)
    assert len(np.unique(labels)) > 1  # a map with something in it
    assert np.array_equal(np.asanyarray(from_dicom.dataobj), labels)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in folder.iterdir()
                                                              if p.suffix == ".dcm")  # nothing written there


def test_predict_refuses_faulty_series_naming_the_folder(tmp_path, unetr, capsys):
    folder, _ = hippocampus_series(tmp_path / "two")
    other, _ = hippocampus_series(tmp_path / "other", f"hippocampus_{IDS[1]}")
    for p in other.iterdir():
        shutil.move(p, folder / f"B{p.name}")
    assert main(["predict", str(unetr), str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"selfmedmae: error: {folder}: 2 series in one folder") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_docs_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    from doc_examples import blocks, example_commands

    monkeypatch.chdir(tmp_path)
    root = own_dicom_layout(tmp_path / "my_dicom", ids=IDS[:1])
    (root / "cases.csv").write_text(blocks("dicom.md", "text")[1])  # the page's cases.csv
    shutil.move(root / "dicom" / f"case{IDS[0]}", root / "dicom" / "case001")
    shutil.move(root / "labels" / f"case{IDS[0]}.nii.gz", root / "labels" / "case001.nii.gz")
    (tmp_path / "my_dicom.yaml").write_text(blocks("dicom.md", "yaml")[0])
    tiny_checkpoint(tmp_path / "runs" / "hippo", str(CFG), [f"data.root={HIPPOCAMPUS}", "data.roi_size=[16,16,16]"])
    commands = example_commands("dicom.md")
    assert [c[0] for c in commands] == ["check-data", "predict", "predict"]
    for argv in commands:
        assert main(argv) == 0, argv
    assert (tmp_path / "predictions" / "case001.nii.gz").is_file() and (tmp_path / "seg" / "case001.dcm").is_file()


def test_msd_dataset_json_extra_unlabelled_and_a_folder_of_series(tmp_path, unetr, capsys):
    import json

    root = own_dicom_layout(tmp_path / "task", ids=IDS[:3])
    (root / "dataset.json").write_text(json.dumps({
        "name": "dicom task", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "training": [{"image": f"./dicom/case{i}", "label": f"./labels/case{i}.nii.gz"} for i in IDS[:3]],
        "test": []}))
    hippocampus_series(root / "extra" / "scan_a", f"hippocampus_{IDS[3]}")
    hippocampus_series(root / "extra" / "scan_b", f"hippocampus_{IDS[4]}")
    assert main(["check-data", str(CFG), f"data.root={root}", "data.extra_unlabelled=extra", "stage=pretrain",
                 "train.batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "3 labelled" in out and "2 extra unlabelled image(s)" in out
    # predict: a folder whose sub-folders are series predicts each of them
    assert main(["predict", str(unetr), str(root / "extra"), "--out", str(tmp_path / "p"), "eval.overlap=0"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").glob("*.nii.gz")) == ["scan_a.nii.gz", "scan_b.nii.gz"]


def test_training_refuses_a_faulty_series_before_it_starts(tmp_path):
    from selfmedmae.config import load_config
    from selfmedmae.data import build
    from selfmedmae.errors import UserError

    root = own_dicom_layout(tmp_path / "own", ids=IDS[:3])
    (root / "dicom" / f"case{IDS[0]}" / "Thumbs.db").write_bytes(b"\0" * 200)
    cfg = load_config(str(CFG), [f"data.root={root}", *OWN])
    folder = root / "dicom" / f"case{IDS[0]}"
    with pytest.raises(UserError, match=re.escape(f"{folder}: Thumbs.db is not a DICOM file")):
        build(cfg.data).check_or_raise("finetune")  # what the training stages run first thing


def test_predict_without_the_dicom_extra_says_what_to_install(tmp_path, unetr, capsys, monkeypatch):
    folder, _ = hippocampus_series(tmp_path / "case")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    assert main(["predict", str(unetr), str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'selfmedmae[dicom]'" in err and "Traceback" not in err
