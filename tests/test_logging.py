"""Output fit for batch jobs: plain progress lines when stderr is not a terminal, and images in TensorBoard."""
from __future__ import annotations

import re

import numpy as np
import pytest

from selfmedmae.runtime import log as log_mod
from selfmedmae.runtime.log import MetricsLog, Progress, progress_iter
from selfmedmae.figures.tb_images import overlay_panel, slice_of


@pytest.fixture
def to_file(monkeypatch):
    monkeypatch.setattr(log_mod, "to_terminal", lambda: False)


def test_training_progress_lines_per_n_steps_and_per_epoch(to_file, capsys):
    progress = Progress(total_steps=6, start_step=0, enabled=True, steps_per_epoch=3, log_every=2)
    for epoch in range(2):
        for _ in range(3):
            progress.update(epoch, loss=0.5, lr=1e-3, samples=4)
        progress.epoch_done(epoch, 0.25, 1e-3)
    progress.note("validation after epoch 2: val_dice 0.5000")
    progress.close()
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""
    assert lines[0] == "training: 6 steps (3 per epoch), from step 0"
    steps = [line for line in lines if line.startswith("epoch") and "done" not in line]
    assert [re.search(r"step (\d+)/6", s).group(1) for s in steps] == ["2", "4", "6"]
    assert steps[0].startswith("epoch 1/2 step 2/6 loss 0.5000 lr 1.00e-03 ")
    for line in steps:
        assert re.search(r"[\d.]+ samples/s, \d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d$", line)
    done = [line for line in lines if " done: " in line]
    assert len(done) == 2 and done[1].startswith("epoch 2/2 done: mean loss 0.2500 lr 1.00e-03")
    assert lines[-1] == "validation after epoch 2: val_dice 0.5000"
    assert "\r" not in captured.err  # no bar redraws in a log file


def test_no_lines_on_other_ranks(to_file, capsys):
    progress = Progress(total_steps=2, start_step=0, enabled=False, steps_per_epoch=1, log_every=1)
    progress.update(0, 1.0, 1e-3, 2)
    progress.epoch_done(0, 1.0)
    progress.note("x")
    assert capsys.readouterr().err == ""


def test_progress_iter_lines_for_validation_evaluate_and_predict(to_file, capsys):
    assert list(progress_iter(range(3), 3, "validation", "volume")) == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "validation: 3 volumes"
    assert re.fullmatch(r"validation: 3/3 volumes, \d+:\d\d:\d\d elapsed, ETA 0:00:00", err[-1])
    assert list(progress_iter(["a"], 1, "classify", "batch", every_s=0.0)) == ["a"]
    assert capsys.readouterr().err.splitlines()[0] == "classify: 1 batch"
    assert list(progress_iter(range(2), 2, "x", "case", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


def test_images_reach_tensorboard(tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import torch

    log = MetricsLog(tmp_path, enabled=True)
    log.write({"kind": "train", "step": 1, "loss": 0.5})
    label = torch.zeros(3, 20, 24, 10)
    label[0] = 1
    label[0, 5:9, 5:9, 4:6], label[2, 5:9, 5:9, 4:6] = 0, 1  # class 2 only on slices 4, 5
    pred = torch.zeros_like(label)
    pred[0] = 1
    snap = slice_of(np.random.rand(1, 20, 24, 10), label, pred, multilabel=False)
    assert snap["label"].shape == (20, 24) and snap["label"].max() == 2  # the slice with most label
    panel = overlay_panel(**snap)
    # each 20 x 24 slice turned to 24 x 20, three side by side, enlarged 7x (to at least 128 pixels)
    assert panel.dtype == np.uint8 and panel.shape == (24 * 7, 3 * 20 * 7, 3)
    image, with_label, with_pred = np.split(panel.astype(int), 3, axis=1)
    grey = lambda a: (a[..., 0] == a[..., 1]) & (a[..., 1] == a[..., 2])  # noqa: E731
    assert grey(image).all() and grey(with_pred).all()  # the prediction is all background
    assert (~grey(with_label)).sum() == 4 * 4 * 49  # the 4 x 4 labelled voxels, tinted
    log.add_image("val/overlay", panel, 7)
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(tmp_path / "recon.png")
    log.add_png("pretrain/reconstruction", tmp_path / "recon.png", 3)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"val/overlay", "pretrain/reconstruction"}
    recon = acc.Images("pretrain/reconstruction")[0]
    assert (recon.step, recon.width, recon.height) == (3, 40, 30)
    overlay = acc.Images("val/overlay")[0]
    assert (overlay.step, overlay.width, overlay.height) == (7, panel.shape[1], panel.shape[0])
    assert acc.Scalars("train/loss")[0].value == 0.5
