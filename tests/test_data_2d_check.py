"""The 2D data check: real sample files made faulty in tmp_path (never in data/ or ../shared), each problem
one line that names the file; the summary on good data; the same through ``selfmedmae check-data``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfmedmae.data import build
from selfmedmae.data import chestxray14 as cxr
from selfmedmae.data import csv_2d
from selfmedmae.config.sections import DataConfig
from selfmedmae.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "cxr14-sample"
CSV_NAME = "Data_Entry_2017_v2020.csv"


def cfg_for(root, **kw):
    return OmegaConf.structured(DataConfig(format="cxr14", root=str(root), spatial_dims=2, **kw))


@pytest.fixture
def copy(tmp_path):
    """A writable copy of the real sample."""
    dst = tmp_path / "cxr14"
    shutil.copytree(SAMPLE, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def edit_csv(root: Path, name: str, new_line: str) -> None:
    path = root / CSV_NAME
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(name + ","))
    lines[i] = new_line
    path.write_text("\n".join(lines) + "\n")


def only_problem(report, *needles):
    assert not report.ok
    hits = [p for p in report.problems if all(n in p for n in needles)]
    assert hits, report.problems
    return hits[0]


def test_sample_passes_with_a_summary():
    rep = cxr.check(cfg_for(SAMPLE))
    assert rep.ok, rep.problems
    # 59 validation images: the seeded patient split leaves one rare finding without a positive
    assert rep.warnings == [f"{SAMPLE}: split 'val' has no positive 'Edema' image (its AUC is undefined)"]
    text = "\n".join(rep.summary)
    assert "407 images of 407 patients" in text
    assert "train 237 images / 237 patients, val 59 images / 59 patients, test 111 images / 111 patients" in text
    assert "L 1024x1024: 2" in text and "L 256x256: 401" in text and "RGBA 1024x1024: 4" in text
    assert "test labels: Atelectasis 15," in text and "Hernia 3, No Finding 16" in text  # README's test column


def test_missing_image(copy):
    (copy / "images_001" / "images" / "00000100_000.png").unlink()
    line = only_problem(cxr.check(cfg_for(copy)), "00000100_000.png")
    assert line.startswith("00000100_000.png: listed in ") and "train_val_list.txt" in line
    with pytest.raises(UserError, match="00000100_000.png"):
        build(cfg_for(copy)).dataset("train", train=True)


def test_unreadable_png(copy):
    png = copy / "images_001" / "images" / "00000075_000.png"
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])  # truncated
    line = only_problem(cxr.check(cfg_for(copy)), "unreadable")
    assert line.startswith(f"{png}: unreadable image")
    assert len(cxr.check(cfg_for(copy)).problems) == 1


def test_malformed_csv_row(copy):
    edit_csv(copy, "00000100_000.png", "00000100_000.png,Atelectasis")
    rep = cxr.check(cfg_for(copy))
    line = only_problem(rep, CSV_NAME, "2 fields")
    assert line.startswith(f"{copy / CSV_NAME}: line 3: ")
    # that image now has no usable row: reported against the list that names it
    only_problem(rep, "00000100_000.png: listed in", "has no row")


def test_unknown_label_name(copy):
    edit_csv(copy, "00000100_000.png",
             "00000100_000.png,Atelectasis|Efusion|Infiltration,0,100,60,M,PA,2500,2048,0.171,0.171")
    line = only_problem(cxr.check(cfg_for(copy)), "unknown label 'Efusion'")
    assert line.startswith(f"{copy / CSV_NAME}: line 3: 00000100_000.png: ")


def test_empty_split(copy):
    (copy / "test_list.txt").write_text("")
    line = only_problem(cxr.check(cfg_for(copy)), "'test' is empty")
    assert line.startswith(f"{copy / 'test_list.txt'}: ")
    line = only_problem(cxr.check(cfg_for(SAMPLE, val_fraction=0.0)), "'val' is empty")
    assert line.startswith(f"{SAMPLE / 'train_val_list.txt'}: ")


def test_duplicate_file_name_and_list_overlaps(copy):
    (copy / "images_002" / "images").mkdir(parents=True)
    shutil.copy(copy / "images_001" / "images" / "00000075_000.png", copy / "images_002" / "images")
    with open(copy / "test_list.txt", "a") as f:
        f.write("00000100_000.png\n")
    shutil.copy(copy / "images_001" / "images" / "00000075_000.png", copy / "images_002" / "images" / "extra.png")
    rep = cxr.check(cfg_for(copy))
    assert f"{copy}: 1 PNG file(s) are in neither train_val_list.txt nor test_list.txt (not used)" in rep.warnings
    only_problem(rep, "images_00", "00000075_000.png: duplicate file name")
    only_problem(rep, "00000100_000.png: in both")
    only_problem(rep, "test_list.txt: patient 00000100 also has images", "patient-disjoint")


def test_missing_folder_csv_and_lists(tmp_path, copy):
    only_problem(cxr.check(cfg_for(tmp_path / "nowhere")), "nowhere: dataset folder not found")
    (copy / CSV_NAME).unlink()
    (copy / "test_list.txt").unlink()
    rep = cxr.check(cfg_for(copy))
    only_problem(rep, str(copy), "no Data_Entry_2017*.csv")
    only_problem(rep, "test_list.txt: split list not found")
    only_problem(cxr.check(cfg_for(SAMPLE, labels=["Pleural Thickening"])), "data.labels: 'Pleural Thickening'")


def test_csv_variants_read_by_position(copy):
    """The Kaggle copy's trailing commas and another spelling of the header give the same labels."""
    path = copy / CSV_NAME
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("Patient Gender", "Patient Sex")
    path.unlink()
    (copy / "Data_Entry_2017.csv").write_text("".join(line + ",\n" for line in lines))
    ref = {r.id: r.label.tolist() for r in cxr.scan(cfg_for(SAMPLE)).splits["all"]}
    sc = cxr.scan(cfg_for(copy))
    assert not sc.report.problems
    assert {r.id: r.label.tolist() for r in sc.splits["all"]} == ref


# --- the user's 2D CSV ---------------------------------------------------------------------------------

def csv_copy(tmp_path, rows):
    folder = tmp_path / "mine"
    (folder / "imgs").mkdir(parents=True)
    for name in ("00000075_000.png", "00000129_000.png", "00000211_000.png"):
        shutil.copy(SAMPLE / "images_001" / "images" / name, folder / "imgs" / name)
    (folder / "labels.csv").write_text("image,effusion,mass,split\n" + "".join(r + "\n" for r in rows))
    return folder, OmegaConf.structured(DataConfig(format="csv", root=str(folder), csv="labels.csv",
                                                   spatial_dims=2, class_columns=["effusion", "mass"]))


GOOD = ["imgs/00000075_000.png,1,0,train", "imgs/00000129_000.png,0,1,val", "imgs/00000211_000.png,0,0,test"]


def test_user_csv_problems_name_the_file(tmp_path):
    folder, cfg = csv_copy(tmp_path, GOOD + ["imgs/gone.png,1,0,train", "imgs/00000075_000.png,2,0,train",
                                             "imgs/00000129_000.png,0,1,later", "imgs/00000211_000.png,1"])
    png = folder / "imgs" / "00000211_000.png"
    png.write_bytes(png.read_bytes()[:500])
    rep = csv_2d.check(cfg)
    csv_path = folder / "labels.csv"
    assert only_problem(rep, "gone.png").startswith(f"{folder / 'imgs' / 'gone.png'}: listed in {csv_path} line 5")
    assert only_problem(rep, "'2' is not 0 or 1").startswith(f"{csv_path}: line 6: column 'effusion'")
    assert only_problem(rep, "'later'").startswith(f"{csv_path}: line 7: ")
    assert only_problem(rep, "2 fields").startswith(f"{csv_path}: line 8: ")
    assert only_problem(rep, "unreadable image").startswith(f"{png}: ")
    folder, cfg = csv_copy(tmp_path / "dup", GOOD + ["imgs/00000129_000.png,0,1,train"])
    assert only_problem(csv_2d.check(cfg), "is also on line 3").startswith(f"{folder / 'labels.csv'}: line 5: ")


def test_user_csv_empty_split_and_missing_column(tmp_path):
    folder, cfg = csv_copy(tmp_path, GOOD[:2])
    assert only_problem(csv_2d.check(cfg), "'test' is empty").startswith(f"{folder / 'labels.csv'}: ")
    cfg.class_columns = ["effusion", "nodule"]
    assert only_problem(csv_2d.check(cfg), "no column 'nodule'").startswith(f"{folder / 'labels.csv'}: ")
    folder2, cfg2 = csv_copy(tmp_path / "b", GOOD)
    rep = csv_2d.check(cfg2)
    assert rep.ok and "splits: train 1, val 1, test 1 (from the 'split' column)" in rep.summary


# --- through the command line ----------------------------------------------------------------------------

def _cli():
    from selfmedmae.cli import main

    return main


def test_check_data_command(copy, monkeypatch, capsys):
    main = _cli()
    monkeypatch.chdir(REPO)  # the shipped config's root is relative to the repository
    assert main(["check-data", "configs/_data/cxr14_sample.yaml"]) == 0
    out = capsys.readouterr().out
    assert "train 237 images" in out and "test 111 images" in out
    (copy / "images_001" / "images" / "00000100_000.png").unlink()
    assert main(["check-data", "configs/_data/cxr14_sample.yaml", f"data.root={copy}"]) == 2
    err = capsys.readouterr().err
    assert "00000100_000.png: listed in" in err
