"""`selfmedmae curve` end to end on tiny synthetic data: one pre-training, MAE and scratch fine-tuning per
fraction and seed, test metrics, the table and the plot; a re-run redoes nothing, a missing result is
redone alone, and a run folder of other settings is refused."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfmedmae.cli import main
from train_helpers import tiny_config, tiny_task

pytestmark = pytest.mark.slow

FAST = ["train.epochs=1", "train.warmup_epochs=0", "data.test_fraction=0.2", "eval.sw_batch_size=8"]


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    task = tiny_task(root / "data")
    pre = tiny_config(root / "pre.yaml", task)
    fine = tiny_config(root / "fine.yaml", task, stage="finetune")
    out = root / "out"
    argv = ["curve", str(fine), *FAST, "train.eval_every=1", "--fractions", "0.5,1", "--seeds", "2",
            "--pretrain", str(pre), "--out", str(out)]
    for o in ("train.epochs=1", "train.warmup_epochs=0", f"run.dir={root / 'pretrain'}"):
        argv += ["--pretrain-set", o]
    return root, out, argv


def test_curve_runs_end_to_end_and_writes_table_and_plot(curve, capsys):
    root, out, argv = curve
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[curve 8/8] fraction 1 seed 1 scratch" in text and "MAE pre-training" in text
    assert (root / "pretrain" / "checkpoints" / "encoder.pt").is_file()
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert len(rows) == 8 and {(r["fraction"], r["init"]) for r in rows} == {
        (f, i) for f in ("0.5", "1") for i in ("mae", "scratch")}
    assert {r["n_labelled"] for r in rows if r["fraction"] == "0.5"} == {"3"}  # 6 train cases, half kept
    assert {r["n_labelled"] for r in rows if r["fraction"] == "1"} == {"6"}
    for r in rows:  # each value is the one its run's evaluation measured
        metrics = json.loads((Path(r["run_dir"]) / "eval_test" / "metrics.json").read_text())
        assert float(r["value"]) == pytest.approx(metrics["mean"]["dice"], abs=1e-6)
        assert metrics["n_cases"] == 2 and metrics["split"] == "test"
    for f in ("0.5", "1"):  # same seed: same labelled subset for MAE and scratch, only init differs
        for s in ("0", "1"):
            a = json.loads((out / "runs" / f"f{f}_s{s}_mae" / "splits.json").read_text())
            b = json.loads((out / "runs" / f"f{f}_s{s}_scratch" / "splits.json").read_text())
            assert a["train"] == b["train"] and a["test"] == b["test"]
    half = [json.loads((out / "runs" / f"f0.5_s{s}_mae" / "splits.json").read_text()) for s in (0, 1)]
    full = json.loads((out / "runs" / "f1_s0_mae" / "splits.json").read_text())
    assert all(set(h["train"]) < set(full["train"]) for h in half)
    summary = json.loads((out / "curve.json").read_text())["summary"]
    assert [(r["fraction"], r["init"], r["n_seeds"]) for r in summary] == [
        (0.5, "mae", 2), (0.5, "scratch", 2), (1.0, "mae", 2), (1.0, "scratch", 2)]
    md = (out / "curve.md").read_text()
    assert md.count("- fraction ") == 2 and "2 seeds" in md.split("- fraction 0.5:")[1]
    assert "| 0.5 | 3 | 1 |" in md and "| 1 | 6 | 1 |" in md and "±" in md and "selfmedmae curve" in md
    with Image.open(out / "curve.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200 and len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_a_rerun_redoes_nothing_and_a_missing_result_alone_is_redone(curve, capsys):
    root, out, argv = curve
    if not (out / "curve.csv").is_file():
        pytest.skip("needs the end-to-end run of the test above")
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/last.pt")}
    (out / "runs" / "f0.5_s1_mae" / "eval_test" / "metrics.json").unlink()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "selfmedmae finetune" not in text and "selfmedmae pretrain" not in text
    assert text.count("selfmedmae evaluate") == 1 and "f0.5_s1_mae" in text.split("selfmedmae evaluate")[1]
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/last.pt")}
    assert len(list(csv.DictReader(open(out / "curve.csv")))) == 8


def test_a_run_folder_of_other_settings_is_refused(curve, capsys):
    root, out, argv = curve
    if not (out / "curve.csv").is_file():
        pytest.skip("needs the end-to-end run of the first test")
    assert main(argv[:2] + ["train.lr=0.01"] + argv[2:]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (train.lr)" in err and "nothing was changed" in err


def test_bad_fractions_and_configs_are_refused_before_any_run(tmp_path, capsys):
    task = tiny_task(tmp_path / "data", n=4)
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    pre = tiny_config(tmp_path / "pre.yaml", task)
    assert main(["curve", str(fine), "--fractions", "0,0.5", "--pretrain", str(pre)]) == 2
    assert "--fractions: each fraction must be in (0, 1]" in capsys.readouterr().err
    assert main(["curve", str(pre), "--pretrain", str(pre)]) == 2
    assert "curve needs a fine-tuning config" in capsys.readouterr().err
    assert main(["curve", str(fine)]) == 2  # init: scratch and no --pretrain
    assert "curve needs `init: mae:PATH`" in capsys.readouterr().err
    assert not (tmp_path / "curve").exists() and not list(tmp_path.glob("**/last.pt"))


def test_a_steps_budget_scales_the_epochs_of_small_fractions():
    from selfmedmae.config import load_config
    from selfmedmae.experiments.curve import budget_overrides

    fine = load_config(None, ["stage=finetune", "train.epochs=8", "train.warmup_epochs=1", "train.eval_every=2"])
    assert budget_overrides(fine, 0.1, "epochs", 101) == []
    assert budget_overrides(fine, 1.0, "steps", 101) == []
    # 10 of 101 cases kept: about 10x the epochs, so about the optimiser steps of the full set
    assert budget_overrides(fine, 0.1, "steps", 101) == ["train.epochs=81", "train.warmup_epochs=10",
                                                         "train.eval_every=20"]
