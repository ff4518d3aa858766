"""The demo's flow on tiny synthetic data: MAE and scratch fine-tuning side by side over two seeds, both
evaluated, the comparison printed and written to report.md; a second run reuses every finished run."""
from __future__ import annotations

import pytest

from selfmedmae.experiments import demo
from train_helpers import tiny_config, tiny_task

pytestmark = pytest.mark.slow


def test_demo_compares_mae_with_scratch_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    task = tiny_task(tmp_path / "data")
    runs = tmp_path / "runs" / "tiny"
    pre = tiny_config(tmp_path / "pre.yaml", task)
    pre.write_text(pre.read_text().replace("  epochs: 5\n", "  epochs: 1\n") + f"  dir: {runs}/pretrain\n")
    fine = tiny_config(tmp_path / "fine.yaml", task, stage="finetune")
    fine.write_text(fine.read_text().replace("  epochs: 5\n", "  epochs: 1\n").replace(
        "  test_fraction: 0.0", "  test_fraction: 0.2") + f"init: mae:{runs}/pretrain/checkpoints/last.pt\n")
    image = sorted((task / "imagesTr").glob("*.nii.gz"))[0]
    monkeypatch.setitem(demo.DEMOS, "tiny", dict(data=str(pre), pre=str(pre), fine=str(fine), runs=str(runs),
                                                 predict=str(image)))
    assert demo.main(["tiny", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("finetune", "finetune_scratch", "finetune_seed1", "finetune_scratch_seed1"):
        assert (runs / name / "eval_test" / "metrics.json").is_file(), name
    report = (runs / "report.md").read_text()
    assert "| **Dice mean** |" in report and "| Dice class1 |" in report and "over 2 seeds" in report
    verdict = report.split("**Verdict:** ", 1)[1]
    assert verdict.startswith(("MAE ahead of scratch", "MAE behind scratch", "No difference detectable"))
    assert "95 % CI" in verdict and "paired over the same 2 test cases" in verdict and "2 seeds" in verdict
    assert "MAE vs scratch on the test split" in out and list((runs / "predict").iterdir())
    assert "init=scratch" in out  # the scratch runs differ by init alone
    assert demo.main(["tiny", "--seeds", "2"]) == 0
    again = capsys.readouterr().out
    assert "selfmedmae finetune" not in again and "selfmedmae pretrain" not in again
    assert "selfmedmae evaluate" not in again and "selfmedmae predict" not in again
    assert (runs / "report.md").read_text() == report


def test_unknown_demo_and_bad_seeds_exit_2(capsys):
    assert demo.main(["nope"]) == 2 and "unknown demo 'nope'" in capsys.readouterr().err
    assert demo.main(["hippocampus", "--seeds", "0"]) == 2 and "--seeds" in capsys.readouterr().err
