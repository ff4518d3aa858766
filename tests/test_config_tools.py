"""`selfmedmae config` (values with their source), `selfmedmae init-config` (a scan of a user's folder),
the one path rule for data files, and 2D class columns taken from the CSV."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.config.sections import DataConfig
from selfmedmae.errors import UserError
from tests.user_folders import nifti_folder, png_folder

REPO = Path(__file__).resolve().parents[1]


def _sources(out: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in out.splitlines():
        text, source = line.rsplit("  # ", 1)
        key, value = text.split(": ", 1)
        rows[key] = (value.strip(), source)
    return rows


def test_config_prints_every_value_with_its_source(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["config", "configs/hippocampus/finetune.yaml", "train.epochs=3", "data.labels=[bg,a,p]"]) == 0
    rows = _sources(capsys.readouterr().out)
    assert rows["train.epochs"] == ("3", "override")
    assert rows["data.labels"] == ('["bg", "a", "p"]', "override")
    assert rows["model.preset"] == ('"vit_micro"', "file configs/hippocampus/finetune.yaml")
    assert rows["data.root"] == ('"data/Task04_Hippocampus"', "file configs/_data/hippocampus.yaml")
    assert rows["data.num_samples"] == ("1", "file configs/hippocampus/finetune.yaml")  # child beats base
    assert rows["eval.overlap"] == ("0.5", "default")
    assert set(rows) == {k for k, _, _ in __import__("selfmedmae.config.reference").config.reference.schema_keys()}


def test_config_only_set_and_bad_key(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["config", "configs/hippocampus/pretrain.yaml", "--only-set"]) == 0
    rows = _sources(capsys.readouterr().out)
    assert "eval.overlap" not in rows and rows["train.epochs"][1].startswith("file ")
    assert main(["config", "configs/hippocampus/pretrain.yaml", "train.epochz=3"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_init_config_3d_folder_writes_loadable_configs_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    nifti_folder(tmp_path, cases=4, shape=(20, 22, 18))
    assert main(["init-config", "3d", "--data", "my_scans", "--out", "cfg/my3d.yaml"]) == 0
    names = sorted(p.name for p in (tmp_path / "cfg").iterdir())
    assert names == ["my3d.yaml", "my3d_cases.csv", "my3d_finetune.yaml", "my3d_pretrain.yaml"]
    cfg = load_config("cfg/my3d_finetune.yaml")
    assert cfg.data.format == "csv" and cfg.data.root == "cfg" and cfg.data.csv == "my3d_cases.csv"
    assert list(cfg.data.labels) == ["background", "label_1", "label_2"] and cfg.data.in_chans == 1
    assert cfg.model.patch_size == 8 and all(s % 8 == 0 and s <= 18 for s in cfg.data.roi_size)
    assert cfg.data.spacing is None  # every file has the same grid
    assert cfg.init == "mae:runs/my3d/pretrain/checkpoints/last.pt" and cfg.run.dir == "runs/my3d/finetune"
    assert load_config("cfg/my3d_pretrain.yaml").stage == "pretrain"
    rows = (tmp_path / "cfg/my3d_cases.csv").read_text().splitlines()
    assert rows[0] == "image,label" and rows[1] == "../my_scans/images/case01.nii.gz,../my_scans/labels/case01.nii.gz"
    # the CSV's paths resolve from its own folder: the data reader finds every file
    from selfmedmae.data import build

    datalist = build(cfg.data).scan.datalist
    assert not datalist.problems and len(datalist.cases) == 4
    assert all(Path(c["image"]).is_file() and Path(c["label"]).is_file() for c in datalist.cases)
    before = {p: p.read_bytes() for p in (tmp_path / "cfg").iterdir()}
    capsys.readouterr()
    assert main(["init-config", "3d", "--data", "my_scans", "--out", "cfg/my3d.yaml"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "cfg").iterdir()} == before


def test_init_config_3d_on_an_msd_task_and_resampling(tmp_path, monkeypatch):
    from tests.tiny_runs import hippocampus_subset

    monkeypatch.chdir(tmp_path)
    hippocampus_subset(tmp_path / "Task04")
    assert main(["init-config", "3d", "--data", "Task04", "--out", "h.yaml"]) == 0
    cfg = load_config("h_finetune.yaml")
    assert cfg.data.format == "msd" and cfg.data.root == "Task04" and cfg.data.labels is None
    assert cfg.data.intensity == "percentile" and cfg.data.spatial_dims == 3
    # grids that differ: resampled to the median spacing
    import nibabel as nib
    import numpy as np

    nifti_folder(tmp_path / "mixed", cases=2, shape=(16, 16, 16))
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
             tmp_path / "mixed/my_scans/images/case03.nii.gz")
    assert main(["init-config", "3d", "--data", "mixed/my_scans", "--out", "m.yaml"]) == 0
    cfg = load_config("m_pretrain.yaml")
    assert cfg.data.spacing == [1.0, 1.0, 1.5]
    assert "case03" in (tmp_path / "m_cases.csv").read_text()  # an image without label: unlabelled row


def test_init_config_2d_csv_and_image_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png_folder(tmp_path, images=12, extra_columns={"note": lambda i: "text", "site": lambda i: i % 3})
    assert main(["init-config", "2d", "--data", "my_xrays", "--out", "my2d.yaml"]) == 0
    cfg = load_config("my2d_finetune.yaml")
    assert cfg.task == "classification" and cfg.data.format == "csv" and cfg.data.csv == "labels.csv"
    assert list(cfg.data.class_columns) == ["effusion", "nodule"] and cfg.data.group_column == "patient"
    assert cfg.data.crop_size <= cfg.data.image_size <= 72 and cfg.data.crop_size % 16 == 0
    os.remove(tmp_path / "my_xrays/labels.csv")
    assert main(["init-config", "2d", "--data", "my_xrays", "--out", "plain.yaml"]) == 0
    listed = (tmp_path / "plain_images.csv").read_text().splitlines()
    assert listed[0] == "image" and len(listed) == 13 and listed[1] == "my_xrays/images/img_000.png"


def test_init_config_refuses_what_it_cannot_read(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["init-config", "3d", "--data", "empty"]) == 2
    assert "no NIfTI images" in capsys.readouterr().err
    assert main(["init-config", "2d", "--data", "nowhere"]) == 2
    assert "nowhere: not found" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.yaml"))


def test_dataset_json_paths_resolve_from_its_own_folder(tmp_path):
    from selfmedmae.data.decathlon import read_msd
    from tests.tiny_runs import hippocampus_subset

    hippocampus_subset(tmp_path / "root" / "lists")  # dataset.json and the files one level below data.root
    datalist = read_msd(tmp_path / "root", "lists/dataset.json")
    assert not datalist.problems and all(Path(c["image"]).is_file() for c in datalist.cases)
    assert Path(datalist.cases[0]["image"]).parent == tmp_path / "root" / "lists" / "imagesTr"


def _cfg(folder: Path, **kw):
    base = dict(format="csv", root=str(folder), csv="labels.csv", spatial_dims=2, image_size=64, crop_size=48)
    return OmegaConf.structured(DataConfig(**{**base, **kw}))


def test_2d_csv_classes_come_from_its_01_columns_not_inherited_labels(tmp_path):
    from selfmedmae.data import csv_2d

    folder = png_folder(tmp_path, images=8, extra_columns={"note": lambda i: "seen", "age": lambda i: 40 + i})
    cxr14_labels = load_config(REPO / "configs/_data/cxr14.yaml").data.labels
    sc = csv_2d.scan(_cfg(folder, labels=list(cxr14_labels), group_column="patient"))
    assert sc.classes == ["effusion", "nodule"] and not sc.report.problems
    assert any("data.labels (14 names" in w and "effusion" in w for w in sc.report.warnings)
    assert csv_2d.scan(_cfg(folder, labels=["nodule"])).classes == ["nodule"]  # names that are columns
    assert csv_2d.scan(_cfg(folder, class_columns=["effusion"])).classes == ["effusion"]
    (folder / "plain.csv").write_text("image,patient\n" + "".join(f"images/img_{i:03d}.png,p{i}\n" for i in range(8)))
    assert csv_2d.scan(_cfg(folder, csv="plain.csv")).classes == []  # unlabelled: pre-training works
    with pytest.raises(UserError, match=r"plain.csv: no class column.*data.class_columns"):
        csv_2d.class_names(_cfg(folder, csv="plain.csv"))


def test_help_lists_config_keys_and_convert_has_a_description(capsys):
    for command in ("pretrain", "finetune", "check-data"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "docs/config-reference.md" in out and "data.root=PATH" in out
        assert ("train.epochs=N" in out) == (command != "check-data")  # check-data lists the keys it reads
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert "official SelfMedMAE" in out and "num_heads" in out and "docs/checkpoints.md" in out
