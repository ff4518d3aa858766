"""What commands read (issue 24): evaluate scores the run's recorded split, predict's inputs are checked in
full before any inference, 2D splits keep a patient in one split, one suffix list, batch sizes that fit,
init checkpoints checked before the run folder is claimed, and names beyond the operating system's limits."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.data import build
from tiny_runs import HIPPOCAMPUS, REPO, tiny_checkpoint
from user_folders import png_folder

CSV_2D = ["data.format=csv", "data.spatial_dims=2", "data.csv=labels.csv", "data.group_column=patient",
          "data.image_size=32", "data.crop_size=32", "data.val_fraction=0.25", "data.test_fraction=0.25"]


def _trained_2d(tmp_path):
    """A tiny 2D CSV run as fine-tuning leaves it: best.pt and splits.json."""
    folder = png_folder(tmp_path, images=24, size=(40, 40))
    run_dir = tmp_path / "run"
    ckpt = tiny_checkpoint(run_dir, None, [f"data.root={folder}", *CSV_2D])
    cfg = load_config(None, ["stage=finetune", "task=classification", f"data.root={folder}", *CSV_2D])
    build(cfg.data, run_dir).write_splits("finetune")
    return folder, run_dir, ckpt


def _add_rows(folder, n: int) -> None:
    """More images of new patients, appended to the CSV (what a user does after training)."""
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i in range(n):
        src = folder / rows[i % len(rows)]["image"]
        shutil.copy(src, folder / "images" / f"new_{i:03d}.png")
        rows.append({**rows[i % len(rows)], "image": f"images/new_{i:03d}.png", "patient": f"n{i // 2:02d}"})
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_evaluate_scores_the_recorded_test_ids_after_cases_were_added(tmp_path, capsys):
    folder, run_dir, ckpt = _trained_2d(tmp_path)
    recorded = json.loads((run_dir / "splits.json").read_text())
    _add_rows(folder, 24)
    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "eval.split=test", "data.num_workers=0", "--out", str(out)]) == 0
    scored = json.loads((out / "metrics.json").read_text())["images"]["ids"]
    assert scored == recorded["test"]
    # another copy of the data (data.root): matched by id
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    out2 = tmp_path / "eval2"
    assert main(["evaluate", str(ckpt), "eval.split=val", f"data.root={copy}", "data.num_workers=0",
                 "--out", str(out2)]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["images"]["ids"] == recorded["val"]


def test_evaluate_refuses_recorded_ids_the_data_no_longer_hold_and_warns_without_a_record(tmp_path, capsys):
    folder, run_dir, ckpt = _trained_2d(tmp_path)
    gone = json.loads((run_dir / "splits.json").read_text())["test"][0]
    with open(folder / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image"] != gone]
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "eval.split=test", "data.num_workers=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "splits.json" in err and gone in err and "not in" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    (run_dir / "splits.json").unlink()
    assert main(["evaluate", str(ckpt), "eval.split=test", "data.num_workers=0", "--out", str(out)]) == 0
    assert "splits.json not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def hippo_ckpt(tmp_path_factory):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"{HIPPOCAMPUS} is absent")
    tmp = tmp_path_factory.mktemp("hippo")
    return tiny_checkpoint(tmp / "run", str(REPO / "configs" / "_data" / "hippocampus.yaml"),
                           [f"data.root={HIPPOCAMPUS}", "data.roi_size=[16,16,16]"])


def _predict_refused(capsys, ckpt, out, *inputs) -> str:
    assert main(["predict", str(ckpt), *map(str, inputs), "--out", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())  # nothing predicted, not even the good input's map
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_predict_refuses_a_scan_with_one_nan_voxel_before_any_inference(tmp_path, hippo_ckpt, capsys):
    import nibabel as nib

    good = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    ref = nib.load(good)
    data = np.asarray(ref.dataobj, dtype=np.float32).copy()
    data[10, 20, 15] = np.nan
    nan = tmp_path / "nan_case.nii.gz"
    header = ref.header.copy()
    header.set_data_dtype(np.float32)  # the shipped file is integer; a float export can hold a NaN
    nib.save(nib.Nifti1Image(data, ref.affine, header), str(nan))
    assert np.isnan(np.asarray(nib.load(nan).dataobj)).sum() == 1
    err = _predict_refused(capsys, hippo_ckpt, tmp_path / "out", good, nan)
    assert f"{nan}: 1 non-finite voxel(s)" in err


def test_predict_refuses_a_truncated_volume_up_front_in_one_line(tmp_path, hippo_ckpt, capsys):
    good = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    cut = tmp_path / "cut.nii.gz"
    raw = (HIPPOCAMPUS / "imagesTr" / "hippocampus_004.nii.gz").read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    err = _predict_refused(capsys, hippo_ckpt, tmp_path / "out", good, cut)
    assert f"{cut}: cannot be read in full" in err and "object at 0x" not in err and "<" not in err


def test_a_float_image_with_nan_is_refused_by_predict_and_check_data(tmp_path):
    from PIL import Image

    from selfmedmae.data.check_2d import inspect_image
    from selfmedmae.data.inputs import check_image
    from selfmedmae.errors import UserError

    pixels = np.ones((16, 16), np.float32)
    pixels[3, 4] = np.inf
    path = tmp_path / "float.tif"
    Image.fromarray(pixels, mode="F").save(path)
    with pytest.raises(UserError, match="1 non-finite pixel"):
        check_image(path)
    assert "1 non-finite pixel" in inspect_image(str(path))[1]


def test_a_split_column_putting_one_patient_in_two_splits_is_a_problem(tmp_path, capsys):
    folder = png_folder(tmp_path, images=12, size=(40, 40))
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):  # patients p00..p05, two images each; p01's second image goes to test
        row["split"] = "test" if i == 3 or i >= 10 else "val" if i in (8, 9) else "train"
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = tmp_path / "c.yaml"
    config.write_text("stage: finetune\n")
    args = ["check-data", str(config), "task=classification", f"data.root={folder}", *CSV_2D]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "patient 'p01' is in the splits train and test" in err
    assert main([a for a in args if a != "data.group_column=patient"]) == 0  # nothing tells the rows apart


def _finetune_2d(folder, run_dir, *more):
    return ["finetune", str(folder / "c.yaml"), "task=classification", f"data.root={folder}", *CSV_2D,
            "model.preset=vit_nano", "model.patch_size=8", "data.num_workers=0", "train.epochs=1",
            "train.lr=0.001", "run.precision=fp32", f"run.dir={run_dir}", *more]


def test_a_batch_larger_than_the_train_split_is_refused_by_check_data_and_training(tmp_path, capsys):
    folder = png_folder(tmp_path, images=24, size=(40, 40))  # 12 patients: 6 train (12 images)
    (folder / "c.yaml").write_text("stage: finetune\n")
    args = _finetune_2d(folder, tmp_path / "run", "train.batch_size=64")
    assert main(["check-data", *args[1:]]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: 64 is larger than the 12 images of the train split" in err
    assert main(args) == 2
    assert "train.batch_size: 64 is larger than the 12 images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder was kept
    assert main(["check-data", *_finetune_2d(folder, tmp_path / "run", "train.batch_size=12")[1:]]) == 0


def test_init_config_picks_a_batch_size_that_fits_the_train_split(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    png_folder(tmp_path, images=30, size=(40, 40))
    assert main(["init-config", "2d", "--data", "my_xrays", "--out", "my2d.yaml"]) == 0
    for stage in ("pretrain", "finetune"):
        cfg = load_config(f"my2d_{stage}.yaml")
        n = len(build(cfg.data).items("pretrain" if stage == "pretrain" else "train", stage))
        assert 1 <= cfg.train.batch_size <= n < 64, (stage, cfg.train.batch_size, n)
    assert os.path.isfile("my2d_finetune.yaml")


@pytest.mark.parametrize("change, word", [("model.preset=vit_micro", "width (embed_dim) is 48"),
                                          ("model.patch_size=16", "patch size is 8")])
def test_an_init_checkpoint_of_another_shape_is_refused_before_the_run_folder_is_claimed(tmp_path, capsys,
                                                                                          change, word):
    folder = png_folder(tmp_path, images=24, size=(40, 40))
    (folder / "c.yaml").write_text("stage: finetune\n")
    source = tiny_checkpoint(tmp_path / "src", None, [f"data.root={folder}", *CSV_2D])  # vit_nano, patch 8
    run_dir = tmp_path / "run"
    assert main(_finetune_2d(folder, run_dir, "train.batch_size=4", f"init=mae:{source}", change)) == 2
    err = capsys.readouterr().err
    assert "error: init: " in err and word in err, err
    assert not run_dir.exists()


def test_names_beyond_the_os_limits_are_one_line_errors(tmp_path, hippo_ckpt, capsys):
    long_name = "x" * 300
    folder = png_folder(tmp_path, images=24, size=(40, 40))
    (folder / "c.yaml").write_text("stage: finetune\n")
    for run_dir in (tmp_path / long_name, tmp_path / "a\x00b"):  # the NUL: refused as an override
        assert main(_finetune_2d(folder, run_dir, "train.batch_size=4")) == 2
        err = capsys.readouterr().err
        assert "run.dir:" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    good = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    for given in (tmp_path / f"{long_name}.nii.gz", tmp_path / "a\x00b.nii.gz"):
        err = _predict_refused(capsys, hippo_ckpt, tmp_path / "out", good, given)
        assert "input " in err and ("307 bytes" in err or "NUL" in err), err
    assert main(["predict", str(hippo_ckpt), str(good), "--out", str(tmp_path / long_name)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "307 bytes" not in err and "300 bytes" in err and len(err.strip().splitlines()) == 1


def test_predict_takes_every_image_suffix_training_takes(tmp_path):
    from PIL import Image

    from selfmedmae.data.inputs import check_image, collect
    from selfmedmae.data.suffixes import IMAGE_SUFFIXES
    from selfmedmae.data.transforms_2d import preprocess

    folder = tmp_path / "scans"
    folder.mkdir()
    pixels = (np.arange(40 * 40).reshape(40, 40) % 251).astype(np.uint8)
    for suffix in IMAGE_SUFFIXES:
        Image.fromarray(pixels).save(folder / f"img{suffix}")
    found = collect([str(folder)], volumes=False)
    assert sorted(p.name for p in found) == sorted(f"img{s}" for s in IMAGE_SUFFIXES)
    assert collect([str(folder / "img.tif")], volumes=False) == [folder / "img.tif"]  # named directly
    for path in found:
        check_image(path)  # predict's up-front check
        assert preprocess(str(path), 32, True).shape == (32, 32)  # what training reads
