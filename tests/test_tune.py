"""`selfmedmae tune` end to end on tiny synthetic data: one grid for two inits, judged on validation only,
the winners recorded; a re-run trains nothing; a bad grid is refused before any run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfmedmae.cli import main
from selfmedmae.experiments.tune import best_score, parse_grid, slug
from train_helpers import tiny_config, tiny_task

pytestmark = pytest.mark.slow

FAST = ["train.epochs=1", "train.warmup_epochs=0", "train.eval_every=1", "eval.sw_batch_size=8"]


def test_tune_runs_the_grid_for_each_init_and_records_the_winners(tmp_path, capsys):
    task = tiny_task(tmp_path / "data")
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    out = tmp_path / "tune"
    argv = ["tune", str(fine), *FAST, "--grid", "train.lr=1e-3,3e-3", "--grid", "train.layer_decay=0.75,1.0",
            "--init", "a=scratch", "--init", "b=scratch", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "tune.json").read_text())
    assert record["grid"] == {"train.lr": ["1e-3", "3e-3"], "train.layer_decay": ["0.75", "1.0"]}
    assert len(record["runs"]) == 8 and record["metric"] == "val_dice"
    for r in record["runs"]:  # each score is the best validation of its own run, and the test split is unread
        run_dir = Path(r["run_dir"])
        assert r["score"] == best_score(run_dir)[1] and 0.0 <= r["score"] <= 1.0
        assert not list(run_dir.glob("eval_*"))
        from omegaconf import OmegaConf

        saved = OmegaConf.load(run_dir / "config.yaml")  # the run ran with its combination
        assert saved.train.lr == float(r["sets"][0].split("=")[1])
        assert saved.train.layer_decay == float(r["sets"][1].split("=")[1]) and saved.init == "scratch"
    for name in ("a", "b"):
        w = record["winners"][name]
        mine = [r["score"] for r in record["runs"] if r["init"] == name]
        assert w["mean"] == pytest.approx(max(mine)) and len(w["sets"]) == 2
    md = (out / "tune.md").read_text()
    assert md.count("**(best)**") >= 1 and "Winners" in md and "selfmedmae tune" in md
    capsys.readouterr()
    assert main(argv) == 0  # a re-run: every run already done
    assert capsys.readouterr().out.count("already done") == 8


def test_a_bad_grid_is_refused_before_any_run(tmp_path, capsys):
    task = tiny_task(tmp_path / "data")
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    for grid, needle in (("train.lr", "expected KEY=V1,V2"), ("init=scratch,mae:x", "set by the search"),
                         ("train.no_such_key=1,2", "no_such_key")):
        assert main(["tune", str(fine), "--grid", grid, "--out", str(tmp_path / "t")]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "t" / "runs").exists()


def test_grid_parsing_keeps_list_values_whole():
    g = parse_grid(["data.roi_size=[32,32,32],[40,56,40]", "train.lr=1e-3"])
    assert g.combinations()[1] == ("data.roi_size=[40,56,40]", "train.lr=1e-3")
    assert slug(("train.lr=1e-3", "train.layer_decay=1.0")) == "lr1e-3_layer_decay1.0"
