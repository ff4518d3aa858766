"""`selfmedmae report`: runs gathered into one table, mean ± sample std per metric checked against numpy; the
fallback to the best validation line of metrics.jsonl; learning curves; errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfmedmae.cli import main
from selfmedmae.metrics.auc import multilabel_auc
from selfmedmae.metrics.dice import CaseScores, summarize_segmentation, write_metrics
from selfmedmae.eval.report import best_validation, flatten, unique_names

CLASSES = ("Anterior", "Posterior")


def seg_run(run_dir, dice_cases, hd_cases, jsonl=True, split="test"):
    """A finished run: eval_<split>/metrics.json from per-case scores [cases][classes], and its training log."""
    cases = [CaseScores(dice=dict(zip(CLASSES, d)), hd95=dict(zip(CLASSES, h)), gt_empty=dict.fromkeys(CLASSES, False),
                        pred_empty=dict.fromkeys(CLASSES, False), case_id=f"c{i}")
             for i, (d, h) in enumerate(zip(dice_cases, hd_cases))]
    write_metrics({"split": split, **summarize_segmentation(cases, CLASSES)}, run_dir / f"eval_{split}")
    if jsonl:
        lines = [{"kind": "train", "step": s, "epoch": s // 2, "loss": 1.0 / (s + 1), "lr": 1e-3} for s in range(6)]
        lines += [{"kind": "val", "step": 5, "epoch": 2, "val_dice": float(np.mean(dice_cases))}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


def test_two_seeds_mean_and_sample_std_match_numpy(tmp_path, capsys):
    a = seg_run(tmp_path / "seed0" / "finetune", [[0.8, 0.7], [0.6, 0.5]], [[2.0, 3.0], [4.0, 5.0]])
    b = seg_run(tmp_path / "seed1" / "finetune", [[0.9, 0.75], [0.7, 0.65]], [[1.0, 2.5], [3.0, 4.5]])
    out = tmp_path / "rep"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in rep["runs"]] == ["seed0/finetune", "seed1/finetune"]
    # per run: the class mean over cases; then over the two runs: mean and std with n - 1
    per_run = {"Dice Anterior": [np.mean([0.8, 0.6]), np.mean([0.9, 0.7])],
               "Dice Posterior": [np.mean([0.7, 0.5]), np.mean([0.75, 0.65])],
               "HD95 Anterior": [3.0, 2.0], "HD95 Posterior": [4.0, 3.5]}
    per_run["Dice mean"] = [np.mean([per_run["Dice Anterior"][i], per_run["Dice Posterior"][i]]) for i in (0, 1)]
    per_run["HD95 mean"] = [np.mean([per_run["HD95 Anterior"][i], per_run["HD95 Posterior"][i]]) for i in (0, 1)]
    for key, values in per_run.items():
        got = rep["metrics"][key]
        np.testing.assert_allclose(got["values"], values)
        assert got["mean"] == pytest.approx(np.mean(values)) and got["n"] == 2
        assert got["std"] == pytest.approx(np.std(values, ddof=1))
        digits = 2 if key.startswith("HD") else 4
        assert f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}" in printed
    assert "| Dice mean | 0.6500 | 0.7500 | 0.7000 ± 0.0707 | 2 |" in printed
    assert (out / "report.md").read_text() in printed
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_default_out_split_choice_and_jsonl_fallback(tmp_path, capsys):
    a = seg_run(tmp_path / "a", [[0.8, 0.6]], [[2.0, 3.0]], split="val")
    seg_run(a, [[0.5, 0.5]], [[9.0, 9.0]], jsonl=False, split="test")
    b = tmp_path / "b"  # no evaluation yet: the best validation line
    b.mkdir()
    lines = [{"kind": "val", "epoch": e, "step": 10 * e, "val_dice": d} for e, d in ((1, 0.4), (2, 0.7), (3, 0.6))]
    (b / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["report", str(a), "--split", "val"]) == 0
    rep = json.loads((a / "report" / "report.json").read_text())  # default: <common parent>/report
    assert rep["runs"][0]["source"] == "eval_val/metrics.json"
    assert rep["metrics"]["Dice Anterior"]["values"] == [0.8] and rep["metrics"]["Dice Anterior"]["std"] is None
    capsys.readouterr()
    assert main(["report", str(b), str(a), "--out", str(tmp_path / "r2")]) == 0
    printed = capsys.readouterr().out
    assert "best validation in metrics.jsonl (epoch 2, step 20)" in printed and "different splits" in printed
    rep = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert rep["metrics"]["val_dice"]["values"] == [0.7, None] and rep["metrics"]["val_dice"]["n"] == 1


def test_flatten_and_best_validation_rules():
    auc = multilabel_auc([[1, 0], [0, 0], [1, 0], [0, 0]], [[0.9, 0.1], [0.2, 0.3], [0.7, 0.5], [0.4, 0.2]], ["A", "B"])
    assert flatten(auc) == {"AUC A": 1.0, "AUC mean": 1.0}  # B has no positives: no AUC, left out
    best, rec = best_validation([{"val_loss": 0.5, "epoch": 1}, {"val_loss": 0.3, "epoch": 2}, {"val_loss": 0.4}])
    assert rec["epoch"] == 2 and best == {"val_loss": 0.3}  # a loss: lower is better
    best, rec = best_validation([{"val_dice": 0.5, "val_dice_subset": 0.2, "epoch": 1},
                                 {"val_dice": 0.4, "val_dice_subset": 0.3, "epoch": 2}])
    assert rec["epoch"] == 2  # the metric fine-tuning selects by: the subset mean first
    assert best_validation([{"loss": 1.0}]) == ({}, None)
    assert unique_names([Path("/runs/x/s0/finetune"), Path("/runs/x/s1/finetune")]) == ["s0/finetune", "s1/finetune"]
    assert unique_names([Path("/runs/a"), Path("/runs/b")]) == ["a", "b"]


def test_runs_without_results_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    assert f"{missing}: no such run folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert f"{empty}: no eval_*/metrics.json and no validation lines" in capsys.readouterr().err
    bad = tmp_path / "bad" / "eval_test"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text("{not json")
    assert main(["report", str(bad.parent)]) == 2
    assert f"{bad / 'metrics.json'}: not valid JSON" in capsys.readouterr().err


def test_report_shows_each_runs_interval_beside_its_value(tmp_path, capsys):
    """A metrics.json with evaluate's intervals: report prints each run's value with its 95 % interval."""
    import json as _json

    from selfmedmae.cli import main as cli_main

    run = tmp_path / "a"
    (run / "eval_test").mkdir(parents=True)
    m = {"task": "segmentation", "split": "test", "n_cases": 3, "hd_percentile": 95.0,
         "classes": {"L": {"dice": 0.8, "dice_ci": [0.7, 0.9], "hd95": 2.0, "hd95_ci": [1.5, 2.5]}},
         "mean": {"dice": 0.8, "dice_ci": [0.7, 0.9], "hd95": 2.0, "hd95_ci": [1.5, 2.5]}, "subsets": {}}
    (run / "eval_test" / "metrics.json").write_text(_json.dumps(m))
    assert cli_main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| Dice L | 0.8000 (0.7000 to 0.9000) |" in text and "HD95 L | 2.00 (1.50 to 2.50)" in text
    assert "95 % interval" in text
    record = _json.loads((tmp_path / "r" / "report.json").read_text())
    assert record["runs"][0]["intervals"]["Dice mean"] == [0.7, 0.9]
