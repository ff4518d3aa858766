"""Bad files and small failures (issue 8, items 5-8): constant volumes, 16-bit and colour PNGs, checkpoint
messages in whole sentences, a file-size limit during a save, `report --split bogus`, `report | head`."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from selfmedmae.cli import main
from selfmedmae.data.check_2d import inspect_images
from selfmedmae.data.findings import DataReport
from selfmedmae.data.synthetic import make_msd
from selfmedmae.data.transforms_2d import preprocess
from selfmedmae.errors import UserError
from selfmedmae.models.checkpoint import read_checkpoint
from tiny_runs import REPO


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_check_data_refuses_a_constant_volume(tmp_path, capsys, value):
    root = make_msd(tmp_path / "task", n=4, size=(16, 16, 12), seed=1, n_test=0)
    victim = sorted((root / "imagesTr").iterdir())[1]
    img = nib.load(victim)
    nib.save(nib.Nifti1Image(np.full(img.shape, value, np.float32), img.affine, img.header), victim)
    cfg = REPO / "configs" / "_data" / "hippocampus.yaml"
    assert main(["check-data", str(cfg), f"data.root={root}"]) == 2
    err = capsys.readouterr().err
    assert f"{victim}: every voxel is {'0' if value == 0 else value}" in err


def _png16(path, levels: np.ndarray) -> None:
    Image.fromarray(levels.astype(np.uint16)).save(path)


def test_a_12_bit_radiograph_in_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    ramp = np.tile(np.arange(4096, dtype=np.uint16).reshape(64, 64), 1)  # 0..4095, every level once
    path = tmp_path / "xray12.png"
    _png16(path, ramp)
    for hist_eq in (False, True):
        out = preprocess(path, 64, hist_eq)
        # scaled as 0..65535 to 8 bits, 4096 levels became 17; at full depth they span all 256
        assert len(np.unique(out)) == 256, hist_eq
        assert out.min() == 0 and out.max() == 255
    report = DataReport()
    inspect_images([str(path)], report)
    assert any("16-bit grey levels" in w and str(path) in w for w in report.warnings)


def test_colour_images_are_said_to_turn_grey(tmp_path):
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(rgb)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(grey)
    report = DataReport()
    inspect_images([str(rgb), str(grey)], report)
    assert report.warnings == [w for w in report.warnings if "1 image(s) are in colour (RGB" in w] and report.warnings
    rgba_grey = tmp_path / "rgba_grey.png"  # R = G = B (ChestX-ray14 has such files): nothing to say
    Image.fromarray(np.dstack([np.full((8, 8), 90, np.uint8)] * 3 + [np.full((8, 8), 255, np.uint8)]), "RGBA").save(rgba_grey)
    quiet = DataReport()
    inspect_images([str(rgba_grey)], quiet)
    assert quiet.warnings == []


def _evil(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    return path


@pytest.mark.parametrize("kind,expect", [
    ("truncated", "the file is truncated or corrupt"),
    ("text", "not a PyTorch checkpoint"),
    ("empty", "the file is empty"),
    ("evil", "never loaded"),
])
def test_unreadable_checkpoints_get_a_whole_sentence(tmp_path, kind, expect, capsys):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(2000)}, good)
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:3000])
    elif kind == "text":
        path.write_text("epochs: 3\nthis is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path = _evil(tmp_path)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert expect in text and len(text.splitlines()) == 1
    assert "weights_only=False" not in text and "KeyError" not in text and not text.endswith("is)")
    assert "this must never run" not in capsys.readouterr().out


def test_a_file_size_limit_during_a_save_is_one_line_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    torch.save({"old": torch.ones(3)}, target)
    code = (
        "import resource, sys, torch\n"
        "from selfmedmae.models.checkpoint import atomic_save\n"
        "from selfmedmae.errors import UserError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        f"try:\n    atomic_save({{'w': torch.zeros(100000)}}, {str(target)!r})\n"
        "except UserError as e:\n    print('USERERROR', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith(f"USERERROR {target}: cannot be written") and "unchanged" in proc.stdout
    assert torch.equal(torch.load(target, weights_only=True)["old"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def _eval_run(folder, n_labels: int, auc: float):
    (folder / "eval_val").mkdir(parents=True)
    labels = {f"finding_{i}": {"auc": auc} for i in range(n_labels)}
    (folder / "eval_val" / "metrics.json").write_text(json.dumps(
        {"task": "classification", "split": "val", "labels": labels, "mean_auc": auc}))
    return folder


def test_report_refuses_a_split_that_was_never_evaluated(tmp_path, capsys):
    a, b = _eval_run(tmp_path / "a", 2, 0.6), _eval_run(tmp_path / "b", 2, 0.7)
    assert main(["report", str(a), str(b), "--split", "bogus", "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "no eval_bogus/metrics.json" in err and "evaluated splits here: val" in err
    assert not (tmp_path / "rep").exists()


def test_report_into_head_ends_quietly(tmp_path):
    a, b = _eval_run(tmp_path / "a", 3000, 0.6), _eval_run(tmp_path / "b", 3000, 0.7)  # > a pipe's 64 kB
    proc = subprocess.run(f"{sys.executable} -m selfmedmae report {a} {b} --out {tmp_path / 'rep'} | head -n 2",
                          shell=True, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.stdout.splitlines()[0].startswith("# Report over 2 runs")
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
