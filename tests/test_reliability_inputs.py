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
