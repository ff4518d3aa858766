"""The own-data walkthroughs run as written: the ```bash block after `<!-- walkthrough: 3d -->` in
docs/own-data-3d.md (and `2d` in own-data-2d.md) is run, unchanged, with bash in a folder holding the data
the page describes (made here, small). Its quick-try values (QUICK=...) are the page's own. Output goes
to a pipe, as in a batch job, so the plain progress lines are checked too, and TensorBoard gets images."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.user_folders import nifti_folder, png_folder

REPO = Path(__file__).resolve().parents[1]


def walkthrough(page: str, name: str) -> str:
    text = (REPO / "docs" / page).read_text()
    match = re.search(rf"<!-- walkthrough: {name} -->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"docs/{page}: no ```bash block after <!-- walkthrough: {name} -->"
    return match.group(1)


def run_block(block: str, cwd: Path) -> subprocess.CompletedProcess:
    """bash -e over the block, with `selfmedmae` meaning this checkout's package (as `pip install -e .`)."""
    bin_dir = cwd / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "selfmedmae"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m selfmedmae "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)


def tensorboard_images(run_dir: Path) -> set:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["images"])


def _check_log(err: str) -> None:
    assert "epoch 2/2 done: mean loss" in err and "ETA" in err and "samples/s" in err
    assert re.search(r"validation: \d+/\d+ \w+, ", err)
    assert "evaluate test:" in err or "classify:" in err


@pytest.mark.slow
def test_own_data_3d_walkthrough_runs_as_written(tmp_path):
    block = walkthrough("own-data-3d.md", "3d")
    assert "QUICK=" in block and "selfmedmae predict" in block
    nifti_folder(tmp_path, cases=10)
    done = run_block(block, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "predictions" / "patient_x.nii.gz").is_file()
    assert (tmp_path / "runs/my3d/finetune/eval_test/metrics.json").is_file()
    _check_log(done.stderr)
    assert "pretrain/reconstruction" in tensorboard_images(tmp_path / "runs/my3d/pretrain")
    assert "val/overlay" in tensorboard_images(tmp_path / "runs/my3d/finetune")


@pytest.mark.slow
def test_own_data_2d_walkthrough_runs_as_written(tmp_path):
    block = walkthrough("own-data-2d.md", "2d")
    assert "QUICK=" in block and "selfmedmae predict" in block
    png_folder(tmp_path)
    done = run_block(block, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = (tmp_path / "predictions" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "image,effusion,nodule" and len(rows) == 3
    assert (tmp_path / "runs/my2d/finetune/eval_test/metrics.json").is_file()
    _check_log(done.stderr)
    assert "pretrain/reconstruction" in tensorboard_images(tmp_path / "runs/my2d/pretrain")
