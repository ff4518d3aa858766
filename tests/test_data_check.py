"""``selfmedmae check-data``: one test per kind of bad input, on real hippocampus files made faulty.

The real files are the MSD Task04 sample shipped in ``data/Task04_Hippocampus``; each test copies a few
cases to ``tmp_path`` before breaking them, and drives the CLI (``selfmedmae.cli.main``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.data import build
from selfmedmae.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "Task04_Hippocampus"
CONFIG = REPO / "configs" / "_data" / "hippocampus.yaml"
CASES = ("hippocampus_001", "hippocampus_004", "hippocampus_006", "hippocampus_017")


@pytest.fixture
def task(tmp_path):
    """A four-case MSD task copied from the real sample, with its own dataset.json."""
    root = tmp_path / "Task04_Hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for case in CASES:
            shutil.copy(SAMPLE / sub / f"{case}.nii.gz", root / sub)
    meta = json.loads((SAMPLE / "dataset.json").read_text())
    meta["training"] = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES]
    meta["numTraining"] = len(CASES)
    (root / "dataset.json").write_text(json.dumps(meta, indent=4))
    return root


def check(root, capsys, *overrides):
    # a batch of one: these copies hold 3 cases, fewer than the config's batch (which check-data refuses)
    rc = main(["check-data", str(CONFIG), f"data.root={root}", "train.batch_size=1", *overrides])
    out = capsys.readouterr()
    return rc, out.out + out.err


def rewrite(path: Path, fn, affine_fn=None):
    """Load a NIfTI, change its array (and affine), save it back under the same name."""
    img = nib.load(str(path))
    array = fn(np.asanyarray(img.dataobj).copy())
    affine = affine_fn(img.affine.copy()) if affine_fn else img.affine
    nib.save(nib.Nifti1Image(array, affine), str(path))


def test_good_copy_passes_with_a_summary(task, capsys):
    rc, text = check(task, capsys)
    assert rc == 0, text
    assert "4 labelled" in text and "splits: train 2, val 1, test 1" in text
    assert "label voxels: 0 (background)" in text and "1 (Anterior)" in text and "check-data: OK" in text


def test_missing_file(task, capsys):
    victim = task / "imagesTr" / "hippocampus_004.nii.gz"
    victim.unlink()
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: file not found" in text


def test_unreadable_file(task, capsys):
    victim = task / "labelsTr" / "hippocampus_006.nii.gz"
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated download
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: unreadable" in text


def test_shape_mismatch(task, capsys):
    victim = task / "labelsTr" / "hippocampus_001.nii.gz"
    rewrite(victim, lambda a: a[:-2])
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: shape" in text and "differs from its image" in text


def test_affine_mismatch(task, capsys):
    victim = task / "labelsTr" / "hippocampus_017.nii.gz"

    def shift(affine):
        affine[0, 3] += 5.0  # 5 mm off
        return affine

    rewrite(victim, lambda a: a, shift)
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: affine differs from its image" in text


def test_channel_count(task, capsys):
    victim = task / "imagesTr" / "hippocampus_006.nii.gz"
    rewrite(victim, lambda a: np.stack([a, a], axis=-1))  # a 4D file with 2 channels
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: 2 channel(s), data.in_chans is 1" in text


def test_label_values_outside_the_declared_labels(task, capsys):
    victim = task / "labelsTr" / "hippocampus_004.nii.gz"

    def add_seven(a):
        a[0, 0, 0] = 7
        return a

    rewrite(victim, add_seven)
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: label value(s) 7 outside the declared labels 0..2" in text


def test_nan_and_inf_voxels(task, capsys):
    victim = task / "imagesTr" / "hippocampus_001.nii.gz"

    def spoil(a):
        a = a.astype(np.float32)
        a[1, 1, 1], a[2, 2, 2] = np.nan, np.inf
        return a

    rewrite(victim, spoil)
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: 2 NaN or Inf voxel(s)" in text


def test_empty_split(task, capsys):
    split = task / "split.json"
    split.write_text(json.dumps({"train": list(CASES), "val": []}))
    rc, text = check(task, capsys, "data.split_file=split.json", "stage=finetune")
    assert rc == 2 and f"{split}: split 'val' is empty" in text
    rc, text = check(task, capsys, "data.split_file=split.json", "stage=pretrain")  # needs no val split
    assert rc == 0 and f"{split}: split 'val' is empty (fine-tuning needs it" in text


def test_too_few_cases_leave_train_empty(task, capsys):
    rc, text = check(task, capsys, "data.val_fraction=0.5", "data.test_fraction=0.5", "stage=finetune")
    # refused by the up-front config check, before any file is read
    assert rc == 2 and "data.test_fraction: val_fraction 0.5 + test_fraction 0.5 leave no training cases" in text
    rc, text = check(task, capsys, "data.val_fraction=0.45", "data.test_fraction=0.45", "stage=finetune")
    assert rc == 2 and f"{task / 'dataset.json'} (4 labelled cases" in text and "split 'train' is empty" in text


def test_malformed_dataset_json(task, capsys):
    victim = task / "dataset.json"
    victim.write_text(victim.read_text()[:-30])
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: not valid JSON" in text


def test_dataset_json_entry_without_label(task, capsys):
    victim = task / "dataset.json"
    meta = json.loads(victim.read_text())
    del meta["training"][1]["label"]
    victim.write_text(json.dumps(meta))
    rc, text = check(task, capsys)
    assert rc == 2 and f"{victim}: training[1]: missing or non-string 'label'" in text


def test_malformed_csv(task, capsys):
    victim = task / "cases.csv"
    victim.write_text("image,label\nimagesTr/hippocampus_001.nii.gz,labelsTr/hippocampus_001.nii.gz\n"
                      "imagesTr/hippocampus_004.nii.gz,labelsTr/hippocampus_004.nii.gz,extra,cells\n")
    rc, text = check(task, capsys, "data.format=csv", "data.csv=cases.csv",
                     "data.labels=[background,anterior,posterior]")
    assert rc == 2 and f"{victim}: line 3: 4 fields, the header has 2" in text


def test_volume_smaller_than_the_crop_is_a_warning(task, capsys):
    rc, text = check(task, capsys, "data.roi_size=[64,64,64]")
    assert rc == 0, text
    image = task / "imagesTr" / "hippocampus_001.nii.gz"
    assert f"warning: {image}: about" in text and "smaller than the crop (64, 64, 64); it is padded" in text


def test_every_problem_is_listed_at_once(task, capsys):
    missing = task / "labelsTr" / "hippocampus_001.nii.gz"
    missing.unlink()
    spoiled = task / "imagesTr" / "hippocampus_017.nii.gz"
    rewrite(spoiled, lambda a: np.full(a.shape, np.nan, np.float32))
    rc, text = check(task, capsys)
    assert rc == 2 and f"{missing}: file not found" in text and f"{spoiled}:" in text
    assert "check-data: 2 problem(s) found" in text


def test_check_or_raise_for_training_runs(task):
    (task / "imagesTr" / "hippocampus_004.nii.gz").unlink()
    cfg = load_config(CONFIG, [f"data.root={task}"])
    with pytest.raises(UserError, match="hippocampus_004.nii.gz: file not found"):
        build(cfg.data).check_or_raise("finetune")
    shutil.copy(SAMPLE / "imagesTr" / "hippocampus_004.nii.gz", task / "imagesTr")
    assert build(cfg.data).check_or_raise("finetune").ok


def test_the_shipped_hippocampus_sample_passes(monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the shipped config's root is relative to the repository
    rc, text = check("data/Task04_Hippocampus", capsys)
    assert rc == 0, text
    assert "169 labelled" in text and "splits: train 101, val 34, test 34" in text
    assert "0 (background): 10,033,994; 1 (Anterior): 294,127; 2 (Posterior): 268,241" in text
