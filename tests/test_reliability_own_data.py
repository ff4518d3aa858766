"""A new user's own data and first runs (issue 24, items 14, 16, 17a): what check-data, predict, init-config
and the model defaults say and do. Every test builds its data in tmp_path."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.data import build
from tiny_runs import REPO, tiny_checkpoint
from user_folders import nifti_folder, png_folder

CSV_2D = ["data.format=csv", "data.spatial_dims=2", "data.csv=labels.csv", "data.group_column=patient",
          "data.image_size=32", "data.crop_size=32", "data.val_fraction=0.25", "data.test_fraction=0.25"]


def _data_2d(folder, *more):
    cfg = load_config(None, ["stage=finetune", "task=classification", f"data.root={folder}", *CSV_2D, *more])
    return build(cfg.data)


def _rows(folder):
    with open(folder / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(folder, rows, header=None):
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header or list(rows[0]))
        writer.writerows([list(r.values()) for r in rows])


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


# --- 16a ----------------------------------------------------------------------------------------------

def test_a_blank_or_tiny_2d_image_is_a_problem_naming_the_file(tmp_path):
    folder = png_folder(tmp_path, images=12, size=(40, 40))
    blank, tiny = folder / "images" / "img_003.png", folder / "images" / "img_007.png"
    _png(blank, np.zeros((40, 40), np.uint8))
    _png(tiny, np.arange(16, dtype=np.uint8).reshape(4, 4) * 10)
    report = _data_2d(folder).check()
    assert any(p.startswith(f"{blank}: every pixel is 0") for p in report.problems), report.problems
    assert any(p.startswith(f"{tiny}: 4x4 pixels") for p in report.problems), report.problems
    assert len(report.problems) == 2
    _png(blank, np.full((40, 40), 7, np.uint8))
    assert any(p.startswith(f"{blank}: every pixel is 7") for p in _data_2d(folder).check().problems)


# --- 16b ----------------------------------------------------------------------------------------------

def test_a_duplicated_header_column_is_named_as_duplicated(tmp_path, capsys):
    folder = png_folder(tmp_path, images=12, size=(40, 40))
    rows = _rows(folder)
    _write_rows(folder, [{**r, "again": r["nodule"]} for r in rows], ["image", "patient", "effusion", "nodule", "nodule"])
    report = _data_2d(folder).check()
    line = f"{folder / 'labels.csv'}: column 'nodule' appears twice in the header (columns 4 and 5)"
    assert any(p.startswith(line) for p in report.problems), report.problems
    assert not any("no column" in p for p in report.problems)
    scans = nifti_folder(tmp_path / "3d", cases=4)
    (scans / "cases.csv").write_text("image,label,label\n" + "".join(
        f"images/case{i:02d}.nii.gz,labels/case{i:02d}.nii.gz,labels/case{i:02d}.nii.gz\n" for i in range(1, 5)))
    config = tmp_path / "c.yaml"
    config.write_text("stage: finetune\n")
    assert main(["check-data", str(config), "data.format=csv", f"data.root={scans}", "data.csv=cases.csv",
                 "data.labels=[background,a,b]"]) == 2
    assert f"{scans / 'cases.csv'}: column 'label' appears twice in the header" in capsys.readouterr().err


# --- 16c ----------------------------------------------------------------------------------------------

def test_rows_with_blank_class_cells_are_unlabelled_and_used_by_pretraining_only(tmp_path):
    folder = png_folder(tmp_path, images=24, size=(40, 40))
    rows = _rows(folder)
    extra = folder / "images" / "more"
    extra.mkdir()
    for i in range(5):
        _png(extra / f"u{i}.png", (np.arange(1600).reshape(40, 40) * (i + 1) % 251).astype(np.uint8))
    blank = [{"image": f"images/more/u{i}.png", "patient": "", "effusion": "", "nodule": ""} for i in range(5)]
    _write_rows(folder, rows + blank)
    data = _data_2d(folder)
    report = data.check()
    assert report.ok, report.problems
    text = "\n".join(report.summary)
    assert "5 unlabelled row(s)" in text, text
    labelled = {r.id for r in data.items("all")}
    assert labelled == {r["image"] for r in rows}  # no split, no evaluation holds them
    assert data.labels.names == ["effusion", "nodule"]
    pretrain = {r.id for r in _data_2d(folder, "stage=pretrain").items("pretrain", "pretrain")}
    assert {r["image"] for r in blank} <= pretrain
    assert "pre-training sees" in text and "+ 5 unlabelled" in text


def test_a_row_with_some_class_cells_blank_is_one_line_naming_file_row_and_column(tmp_path):
    folder = png_folder(tmp_path, images=12, size=(40, 40))
    rows = _rows(folder)
    rows[4]["nodule"] = ""
    _write_rows(folder, rows)
    problems = _data_2d(folder).check().problems
    assert problems == [f"{folder / 'labels.csv'}: line 6: column 'nodule' is blank but other class cells of "
                        "the row are filled; give every class a 0 or 1, or leave them all blank for an "
                        "unlabelled image"], problems


# --- 16d ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--probabilities", "--figures"])
def test_2d_predict_refuses_segmentation_only_flags_before_any_work(tmp_path, capsys, flag):
    folder = png_folder(tmp_path, images=24, size=(40, 40))
    ckpt = tiny_checkpoint(tmp_path / "run", None, [f"data.root={folder}", *CSV_2D])
    out = tmp_path / "preds"
    assert main(["predict", str(ckpt), str(folder / "images"), "--out", str(out), flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"selfmedmae: error: {flag}: ") and "predictions.csv" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


# --- 17a ----------------------------------------------------------------------------------------------

def _decoder(*overrides, config=None):
    from selfmedmae.models.factory import model_args

    cfg = load_config(config, ["stage=pretrain", *overrides])
    args = model_args("mae", cfg.model, [16, 16, 16], 1)
    return args["decoder_embed_dim"], args["decoder_depth"], args["decoder_num_heads"]


def test_small_presets_get_a_decoder_of_their_size_and_explicit_values_win():
    from selfmedmae.models.factory import build_model, model_args

    assert _decoder("model.preset=vit_base") == (384, 8, 12)  # the paper's
    assert _decoder("model.preset=vit_large") == (384, 8, 12)
    assert _decoder("model.preset=vit_nano") == (48, 2, 4)
    assert _decoder("model.preset=vit_micro") == (96, 2, 4)
    assert _decoder("model.preset=vit_tiny") == (192, 4, 3)
    assert _decoder("model.preset=vit_tiny", "model.decoder_embed_dim=384", "model.decoder_num_heads=12") == \
        (384, 4, 12)
    cfg = load_config(None, ["stage=pretrain", "model.preset=vit_micro", "model.patch_size=8",
                             "data.roi_size=[32,32,32]"])
    assert cfg.model.decoder_embed_dim == 96  # config.yaml names the decoder the run trains
    mae = build_model("mae", model_args("mae", cfg.model, [32, 32, 32], 1))
    assert sum(p.numel() for p in mae.parameters()) < 1_000_000  # 14.9 M with the paper's decoder
    for config, want in [("configs/hippocampus/pretrain.yaml", (96, 2, 4)),
                         ("configs/cxr14_sample/pretrain.yaml", (96, 2, 4)),
                         ("configs/cxr14/pretrain.yaml", (256, 8, 8)),
                         ("configs/btcv/pretrain.yaml", (384, 8, 12)),
                         ("configs/brats/pretrain.yaml", (384, 8, 12))]:
        assert _decoder(config=REPO / config) == want, config


# --- 14 -----------------------------------------------------------------------------------------------

def test_a_csv_cell_naming_a_folder_says_it_is_a_folder(tmp_path, capsys):
    folder = png_folder(tmp_path, images=12, size=(40, 40))
    rows = _rows(folder)
    (folder / "images" / "sub").mkdir()
    rows[2]["image"] = "images/sub"
    _write_rows(folder, rows)
    problems = _data_2d(folder).check().problems
    assert any(p.startswith(f"{folder / 'images' / 'sub'}: is a folder, not an image file (listed in ")
               for p in problems), problems
    scans = nifti_folder(tmp_path / "3d", cases=4)
    (scans / "cases.csv").write_text("image,label\nimages,labels/case01.nii.gz\n" + "".join(
        f"images/case{i:02d}.nii.gz,labels/case{i:02d}.nii.gz\n" for i in range(2, 5)))
    config = tmp_path / "c.yaml"
    config.write_text("stage: finetune\n")
    assert main(["check-data", str(config), "data.format=csv", f"data.root={scans}", "data.csv=cases.csv",
                 "data.labels=[background,a,b]", "data.val_fraction=0.25", "data.test_fraction=0.25"]) == 2
    assert f"{scans / 'images'}: is a folder, not a volume file" in capsys.readouterr().err


def test_a_relative_data_path_is_shown_resolved_with_the_root_it_was_resolved_against(tmp_path, monkeypatch,
                                                                                        capsys):
    png_folder(tmp_path, images=12, size=(40, 40))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = tmp_path / "c.yaml"
    config.write_text("stage: finetune\n")
    args = ["check-data", str(config), "task=classification", *CSV_2D]
    assert main([*args, "data.root=my_xrays"]) == 2
    err = capsys.readouterr().err
    want = (f"{elsewhere / 'my_xrays' / 'labels.csv'}: file not found (data.csv; data.root 'my_xrays' is "
            f"relative to the current folder {elsewhere})")
    assert want in err, err
    nifti_folder(tmp_path, cases=4)
    assert main(["check-data", str(config), "data.format=csv", "data.root=.", "data.csv=my3d_cases.csv",
                 "data.labels=[background,a,b]"]) == 2
    err = capsys.readouterr().err
    assert (f"{elsewhere / 'my3d_cases.csv'}: file not found (data.csv; data.root '.' is relative to the current "
            f"folder {elsewhere})") in err, err


def test_init_config_comment_names_the_patch_it_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nifti_folder(tmp_path, cases=4)
    assert main(["init-config", "3d", "--data", "my_scans", "--out", "my3d.yaml"]) == 0
    text = Path("my3d.yaml").read_text()
    patch = load_config("my3d.yaml").model.patch_size
    assert patch != 16 and "ViT-B/16" not in text.split("preset:")[1].splitlines()[0], text
    assert f"ViT-B/{patch}" in text


def test_check_data_help_lists_only_the_keys_it_uses(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check-data", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "data.root=PATH" in out and "data.csv" in out
    for key in ("train.", "run.", "init=", "model.mask_ratio"):
        assert key not in out, key
