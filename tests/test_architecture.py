"""The shape of the code: the 2D / 3D fork stays in the data and model packages, a command scans its
datalist once, validation during training and `evaluate` score through one path."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from selfmedmae.config import load_config
from train_helpers import tiny_config, tiny_task
from user_folders import png_folder

SRC = Path(__file__).resolve().parents[1] / "src" / "selfmedmae"
ALLOWED = ("data", "models")  # the packages whose job is the fork


def _branches_on_spatial_dims(tree: ast.AST) -> list[int]:
    """Line numbers of if / elif / conditional expressions / while / match / comprehension filters whose
    condition reads a name or attribute called ``spatial_dims``."""
    lines = []
    for node in ast.walk(tree):
        tests = []
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            tests = [node.test]
        elif isinstance(node, ast.comprehension):
            tests = list(node.ifs)
        elif isinstance(node, ast.Match):
            tests = [node.subject]
        for test in tests:
            for sub in ast.walk(test):
                if (isinstance(sub, ast.Attribute) and sub.attr == "spatial_dims") or \
                        (isinstance(sub, ast.Name) and sub.id == "spatial_dims"):
                    lines.append(sub.lineno)
    return lines


def test_the_branch_detector_sees_a_branch():
    assert _branches_on_spatial_dims(ast.parse("if cfg.data.spatial_dims == 2:\n    pass\n")) == [1]
    assert _branches_on_spatial_dims(ast.parse("x = 1 if spatial_dims == 3 else 2\n")) == [1]
    assert _branches_on_spatial_dims(ast.parse("size = cfg.data.spatial_dims\n")) == []


def test_no_code_outside_data_and_models_branches_on_spatial_dims():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ALLOWED:
            continue
        found += [f"{rel}:{line}" for line in _branches_on_spatial_dims(ast.parse(path.read_text()))]
    assert found == [], f"2D / 3D branches outside data/ and models/: {found}"


def test_no_module_name_twice():
    names = [p.name for p in SRC.rglob("*.py") if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.fixture()
def count_scans(monkeypatch):
    """Counts the datalist scans of every format: MSD / BraTS JSON, BTCV, CSV of volumes, the 2D scans."""
    from selfmedmae.data import chestxray14, csv_2d, formats

    counts = {"scans": 0}

    def counted(fn):
        def wrapper(*args, **kwargs):
            counts["scans"] += 1
            return fn(*args, **kwargs)
        return wrapper

    for key, fmt in formats.FORMATS.items():
        if hasattr(fmt, "reader"):
            monkeypatch.setattr(fmt, "reader", counted(fmt.reader))
    monkeypatch.setattr(csv_2d, "scan", counted(csv_2d.scan))
    monkeypatch.setattr(chestxray14, "scan", counted(chestxray14.scan))
    return counts


def test_a_3d_finetuning_start_and_its_evaluation_scan_the_datalist_once_each(count_scans, tmp_path):
    from selfmedmae.eval import evaluate
    from selfmedmae.train import finetune

    task = tiny_task(tmp_path)
    cfg = load_config(str(tiny_config(tmp_path / "f.yaml", task, "finetune")),
                      ["train.epochs=1", f"run.dir={tmp_path / 'run'}"])
    assert finetune.run(cfg) == 0
    assert count_scans["scans"] == 1  # check, splits.json, labels, train and validation data: one scan
    count_scans["scans"] = 0
    assert evaluate.run(tmp_path / "run" / "checkpoints" / "best.pt", ["data.num_workers=0"], figures=0) == 0
    assert count_scans["scans"] == 1


def test_a_2d_finetuning_start_scans_its_csv_once(count_scans, tmp_path):
    from selfmedmae.train import finetune

    folder = png_folder(tmp_path, images=24, size=(40, 40))
    cfg = load_config(None, [
        "stage=finetune", "task=classification", "data.format=csv", "data.spatial_dims=2", f"data.root={folder}",
        "data.csv=labels.csv", "data.group_column=patient", "data.image_size=32", "data.crop_size=32",
        "data.num_workers=0", "data.val_fraction=0.25", "data.test_fraction=0.25", "model.preset=vit_nano",
        "model.patch_size=8", "train.epochs=1", "train.batch_size=4", "train.lr=0.001", "run.precision=fp32",
        f"run.dir={tmp_path / 'run2d'}"])
    assert finetune.run(cfg) == 0
    assert count_scans["scans"] == 1


def test_validation_and_evaluate_give_the_same_dice_on_the_same_checkpoint(tmp_path, precision):
    """best.pt records the validation scores it was chosen by; `evaluate` on the val split must report the
    same mean Dice, to the last bit: one sliding window, one Dice, one average, one precision policy."""
    from selfmedmae.eval import evaluate
    from selfmedmae.train import finetune

    task = tiny_task(tmp_path)
    cfg = load_config(str(tiny_config(tmp_path / "f.yaml", task, "finetune")),
                      ["train.epochs=3", "train.eval_every=1", f"run.precision={precision}",
                       f"run.dir={tmp_path / 'run'}"])
    assert finetune.run(cfg) == 0
    import torch

    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    val_dice = best["metric"]["val_dice"]
    assert 0.0 < val_dice < 1.0  # a real score, not the empty-mask convention
    out = tmp_path / "eval"
    assert evaluate.run(tmp_path / "run" / "checkpoints" / "best.pt", ["eval.split=val", "data.num_workers=0"],
                        out=out, figures=0) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["mean"]["dice"] == val_dice
