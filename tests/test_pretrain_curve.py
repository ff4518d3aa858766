"""`selfmedmae pretrain-curve` end to end on tiny synthetic data: one pre-training per length (the config's own
length in its own run folder), one fine-tuning from each and from scratch, judged on validation only; the
table, the plot, a re-run that redoes nothing, and settings refused before anything starts."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from selfmedmae.cli import main
from selfmedmae.experiments.tune import best_score
from train_helpers import tiny_config, tiny_task

pytestmark = pytest.mark.slow

FINE = ["train.epochs=1", "train.warmup_epochs=0", "train.eval_every=1", "eval.sw_batch_size=8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcurve")
    task = tiny_task(root / "data")
    pre = tiny_config(root / "pre.yaml", task)  # train.epochs 5, warm-up 1
    fine = tiny_config(root / "fine.yaml", task, stage="finetune")
    out = root / "out"
    argv = ["pretrain-curve", str(fine), *FINE, "--pretrain", str(pre), "--epochs", "5,1",
            "--pretrain-set", f"run.dir={root / 'pretrain'}", "--out", str(out)]
    return root, out, argv


def test_pretrain_curve_runs_each_length_and_judges_on_validation(setup, capsys):
    root, out, argv = setup
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[pretrain-curve 5/5]" in text
    own = yaml.safe_load((root / "pretrain" / "config.yaml").read_text())  # the config's own length, its own folder
    assert own["train"]["epochs"] == 5 and own["train"]["warmup_epochs"] == 1
    short = yaml.safe_load((out / "pretrain" / "e1" / "config.yaml").read_text())
    assert short["train"]["epochs"] == 1 and short["train"]["warmup_epochs"] == 0  # warm-up cut below the length
    assert (out / "pretrain" / "e1" / "checkpoints" / "last.pt").is_file()
    rows = list(csv.DictReader(open(out / "pretrain_curve.csv")))
    assert [r["pretrain_epochs"] for r in rows] == ["0", "1", "5"]
    for r in rows:
        run_dir = Path(r["run_dir"])
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        want = "scratch" if r["pretrain_epochs"] == "0" else f"mae:{Path(r['pretrain_dir']) / 'checkpoints' / 'last.pt'}"
        assert cfg["init"] == want and cfg["train"]["epochs"] == 1
        assert float(r["value"]) == pytest.approx(best_score(run_dir)[1], abs=1e-6) and r["metric"] == "val_dice"
        assert not (run_dir / "eval_test").exists()  # the test split is never read
    assert Path(rows[2]["pretrain_dir"]) == root / "pretrain"
    record = json.loads((out / "pretrain_curve.json").read_text())
    assert [p["epochs"] for p in record["pretrain"]] == [1, 5] and all(p["final_loss"] > 0 for p in record["pretrain"])
    md = (out / "pretrain_curve.md").read_text()
    assert "| 0 (scratch) |" in md and "| 5 |" in md and "selfmedmae pretrain-curve" in md
    with Image.open(out / "pretrain_curve.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_a_rerun_redoes_nothing(setup, capsys):
    root, out, argv = setup
    if not (out / "pretrain_curve.csv").is_file():
        pytest.skip("needs the end-to-end run of the test above")
    before = {p: p.stat().st_mtime_ns for p in (root / "pretrain").glob("checkpoints/*.pt")}
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "selfmedmae finetune " not in text and "selfmedmae pretrain " not in text and "already done" in text
    assert before == {p: p.stat().st_mtime_ns for p in (root / "pretrain").glob("checkpoints/*.pt")}
    md = (out / "pretrain_curve.md").read_text()  # the wall times measured by the first run are kept
    assert "reused" not in md and md.count(" min |") == 2


@pytest.mark.parametrize("overrides, options, needle", [
    ([], ["--epochs", "0,3"], "--epochs"),
    (["init=scratch"], ["--epochs", "3"], "init=scratch: set by the curve itself"),
    ([], ["--epochs", "3", "--pretrain-set", "train.epochs=7"], "train.epochs=7: set by the curve itself"),
    ([], ["--epochs", "3", "--seeds", "0"], "--seeds"),
])
def test_bad_settings_are_one_line_errors_before_anything_runs(tmp_path, capsys, overrides, options, needle):
    task = tiny_task(tmp_path / "data", n=4)
    pre = tiny_config(tmp_path / "pre.yaml", task)
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    argv = ["pretrain-curve", str(fine), *overrides, "--pretrain", str(pre), "--out", str(tmp_path / "out"), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out").exists()


def test_a_fine_tuning_config_as_pretrain_is_refused(tmp_path, capsys):
    task = tiny_task(tmp_path / "data", n=4)
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    assert main(["pretrain-curve", str(fine), "--pretrain", str(fine), "--epochs", "2"]) == 2
    assert "--pretrain needs a pre-training config" in capsys.readouterr().err
