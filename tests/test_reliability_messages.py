"""Round 2 of issue 24 (items 14, 15, 17): messages a new user met. Each test names its catalogue entry in
docs/reliability.md."""
from __future__ import annotations

import gzip
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from selfmedmae import __version__
from selfmedmae.cli import main
from selfmedmae.config import load_config
from selfmedmae.errors import ConfigError
from tests.train_helpers import records, tiny_config, tiny_task
from tests.user_folders import nifti_folder


def _nifti_gz(path: Path) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(path))
    return path


def _png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kind", ["nifti-gz", "nifti", "png"])
def test_a_scan_or_image_given_as_the_checkpoint_says_what_it_looks_like(kind, tmp_path, capsys):
    # entry 99: arguments swapped (`evaluate CKPT` given a scan) were described as pickled code
    if kind == "png":
        path, looks = _png(tmp_path / "x.png"), "a PNG image"
    else:
        path, looks = _nifti_gz(tmp_path / ("scan.nii.gz" if kind == "nifti-gz" else "scan.nii")), "a NIfTI image"
    from selfmedmae.errors import UserError
    from selfmedmae.models.checkpoint import read_native

    with pytest.raises(UserError) as info:
        read_native(path)
    text = str(info.value)
    assert text == (f"{path}: not a checkpoint (it looks like {looks}); "
                    f"expected a .pt from `selfmedmae finetune`")
    assert "run code" not in text


def test_a_gzip_that_is_no_nifti_is_named_a_gzip_file(tmp_path):
    from selfmedmae.errors import UserError
    from selfmedmae.models.checkpoint import read_native

    path = tmp_path / "notes.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"hello" * 100)
    with pytest.raises(UserError, match="it looks like a gzip file"):
        read_native(path)


def test_a_folder_given_as_the_config_says_it_is_a_folder(tmp_path, capsys):
    # entry 100
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path.resolve()}: is a folder, not a config file"
    assert main(["config", str(tmp_path)]) == 2
    assert "is a folder, not a config file" in capsys.readouterr().err


def test_a_missing_base_names_the_config_that_cites_it(tmp_path):
    # entry 101
    child = tmp_path / "child.yaml"
    child.write_text("_base_: nowhere/base.yaml\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    assert str(info.value) == (f"{child.resolve()}: _base_ {(tmp_path / 'nowhere/base.yaml').resolve()}: "
                               f"file not found")


def test_resuming_a_finished_run_keeps_one_end_record_and_no_new_event_file(tmp_path, capsys):
    # entry 102
    cfg = tiny_config(tmp_path / "p.yaml", tiny_task(tmp_path))
    run_dir = tmp_path / "run"
    args = ["pretrain", str(cfg), f"run.dir={run_dir}", "train.epochs=1"]
    assert main(args) == 0
    events = sorted(p.name for p in (run_dir / "tensorboard").iterdir())
    lines = (run_dir / "metrics.jsonl").read_text()
    for _ in range(2):
        assert main(args + ["run.resume=true"]) == 0
    assert len(records(run_dir, "end")) == 1
    assert (run_dir / "metrics.jsonl").read_text() == lines
    assert sorted(p.name for p in (run_dir / "tensorboard").iterdir()) == events
    assert "already complete" in capsys.readouterr().out


def test_the_progress_bar_counts_epochs_from_one_like_the_log_lines(monkeypatch):
    # entry 103
    from selfmedmae.runtime import log

    monkeypatch.setattr(log, "to_terminal", lambda: True)
    progress = log.Progress(total_steps=4, start_step=0, enabled=True, steps_per_epoch=2)
    shown = []
    monkeypatch.setattr(progress.bar, "set_postfix_str", lambda text, refresh=False: shown.append(text))
    progress.update(0, 1.0, 1e-3, 2)
    progress.close()
    assert shown[0].startswith("epoch 1/2 ")
    assert progress._epochs(0) == "epoch 1/2"


def test_version_prints_the_package_version(capsys):
    # entry 104
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"selfmedmae {__version__}"


def test_init_config_next_hint_is_shell_quoted(tmp_path, monkeypatch, capsys):
    # entry 105
    monkeypatch.chdir(tmp_path)
    nifti_folder(tmp_path, cases=4, shape=(20, 22, 18))
    assert main(["init-config", "3d", "--data", "my_scans", "--out", "my cfg/a b.yaml"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("next: ")][-1]
    assert hint == "next: selfmedmae check-data " + shlex.quote("my cfg/a b_finetune.yaml")
    assert shlex.split(hint[len("next: "):]) == ["selfmedmae", "check-data", "my cfg/a b_finetune.yaml"]
