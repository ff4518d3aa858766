"""``selfmedmae reproduce`` end to end on synthetic data in the real formats (BTCV, MSD BraTS, ChestX-ray14)
with tiny models: every stage runs, a crash mid-way (SIGKILL, or an injected failure) is followed by a
re-run that skips the finished stages (their markers and checkpoints untouched) and resumes the interrupted
one; ``--ablation`` writes its grid; bad settings are refused before any stage starts."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from selfmedmae.cli import main
from selfmedmae.data.synthetic import make_brats, make_btcv
from selfmedmae.data.synthetic_2d import make_cxr14_like
from train_helpers import cli

pytestmark = pytest.mark.slow

TINY = ["model.preset=vit_nano", "model.patch_size=8", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "model.decoder_num_heads=4", "data.num_workers=0", "train.warmup_epochs=1", "run.precision=fp32",
        "run.device=cpu"]
TINY_3D = TINY + ["model.feature_size=4", "data.roi_size=[16,16,16]", "data.num_samples=1", "data.cache=none",
                  "data.val_fraction=0.34", "train.batch_size=2", "eval.sw_batch_size=8",
                  "pretrain:train.epochs=1", "finetune:train.epochs=3"]
TINY_2D = TINY + ["data.image_size=40", "data.crop_size=32", "train.batch_size=4", "pretrain:train.epochs=1",
                  "finetune:train.epochs=2"]


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "reproduce.log").read_text().splitlines()]


def mtimes(out: Path, names: list[str]) -> dict[str, int]:
    return {n: (out / n).stat().st_mtime_ns for n in names}


def actions(out: Path, since: int) -> dict[str, str]:
    """stage -> first action of each stage in the log lines from ``since`` on (the re-run)."""
    seen: dict[str, str] = {}
    for rec in log(out)[since:]:
        seen.setdefault(rec["stage"], rec["action"])
    return seen


def finished_train_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r.get("kind") == "train"]


def test_btcv_killed_mid_finetune_resumes_without_redoing_pretraining(tmp_path):
    root = make_btcv(tmp_path / "btcv", n=6, size=(40, 40, 12), seed=1)
    out = tmp_path / "out"
    args = ["reproduce", "btcv", f"data.root={root}", *TINY_3D, "--out", str(out), "--figures", "0"]
    proc = cli(*args)
    last = out / "finetune_mae" / "seed0" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # a pre-emption: no clean-up code runs
    proc.wait()
    assert not (out / "done" / "finetune_mae__seed0.json").exists(), "the stage finished before the kill"
    assert torch.load(last, weights_only=True)["epoch"] < 3
    kept = ["done/pretrain.json", "pretrain/checkpoints/last.pt", "pretrain/checkpoints/encoder.pt"]
    before, n_lines = mtimes(out, kept), len(log(out))

    assert main(args[:]) == 0
    assert mtimes(out, kept) == before  # pre-training was not redone
    acts = actions(out, n_lines)
    assert acts["pretrain"] == "skip (finished earlier)"
    assert acts["finetune_mae/seed0"] == "resume" and acts["finetune_scratch/seed0"] == "run"
    steps = finished_train_steps(out / "finetune_mae" / "seed0")
    assert steps == sorted(set(steps)) and torch.load(last, weights_only=True)["epoch"] == 3
    for stage in ("pretrain", "finetune_mae__seed0", "finetune_scratch__seed0", "finetune_mae__seed0__eval_test",
                  "finetune_scratch__seed0__eval_test"):
        assert (out / "done" / f"{stage}.json").is_file(), stage
    table = (out / "reproduce.md").read_text()
    assert "| Random init (scratch) | DSC, 8 organs (%) |" in table and "| 78.8 |" in table and "| 83.5 |" in table
    assert "not run (give --imagenet PATH)" in table and (out / "report" / "report.md").is_file()
    rows = json.loads((out / "reproduce.json").read_text())["rows"]
    mae = next(r for r in rows if r["init"] == "mae" and r["metric"] == "Dice 8 organs")
    measured = json.loads((out / "finetune_mae" / "seed0" / "eval_test" / "metrics.json").read_text())
    assert mae["values"] == [pytest.approx(100 * measured["subsets"]["8 organs"]["dice"])]

    n_lines = len(log(out))  # a third run has nothing left to do
    assert main(args[:]) == 0
    assert set(actions(out, n_lines).values()) == {"skip (finished earlier)"}


def _fail_once(monkeypatch, module, name: str, when) -> list:
    """Make ``module.name`` raise the first time ``when(*args)`` holds; the list records that it did."""
    real, fired = getattr(module, name), []

    def wrapper(*args, **kwargs):
        if not fired and when(*args):
            fired.append(True)
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return fired


def test_brats_crash_in_a_later_stage_then_rerun(tmp_path, monkeypatch, capsys):
    import selfmedmae.train.finetune as finetune
    import selfmedmae.train.trainer as trainer

    root = make_brats(tmp_path / "brats", n=6, size=(24, 24, 16), seed=2)
    out = tmp_path / "out"
    args = ["reproduce", "brats", f"data.root={root}", *TINY_3D, "data.test_fraction=0.2", "--out", str(out),
            "--figures", "0"]
    # the scratch fine-tuning dies in its second epoch, after last.pt of the first
    current = {}
    real_run = finetune.run

    def spy(cfg):
        current["dir"] = str(cfg.run.dir)
        return real_run(cfg)

    monkeypatch.setattr(finetune, "run", spy)
    fired = _fail_once(monkeypatch, trainer, "train_one_epoch",
                       lambda *a: a[4] == 1 and "finetune_scratch" in current["dir"])  # a[4]: the epoch
    with pytest.raises(RuntimeError, match="injected failure"):
        main(args[:])
    assert fired
    kept = ["done/pretrain.json", "done/finetune_mae__seed0.json", "pretrain/checkpoints/last.pt",
            "finetune_mae/seed0/checkpoints/best.pt"]
    before, n_lines = mtimes(out, kept), len(log(out))
    assert main(args[:]) == 0
    assert mtimes(out, kept) == before
    acts = actions(out, n_lines)
    assert acts["pretrain"] == acts["finetune_mae/seed0"] == "skip (finished earlier)"
    assert acts["finetune_scratch/seed0"] == "resume"
    resumed = next(r for r in log(out)[n_lines:] if r["action"] == "resume")
    assert resumed["from_epoch"] == 1
    table = (out / "reproduce.md").read_text()
    assert "DSC, mean of TC / WT / ET (%)" in table and "| 77.4 |" in table and "| 78.9 |" in table
    assert "Dice TC" in (out / "report" / "report.md").read_text()
    capsys.readouterr()


def test_cxr14_two_seeds_crash_in_evaluation_then_ablation_grid(tmp_path, monkeypatch):
    from selfmedmae.tasks.classification import Classification

    root = tmp_path / "cxr"
    make_cxr14_like(root, n_images=40, size=48, seed=1)
    out = tmp_path / "out"
    args = ["reproduce", "cxr14", f"data.root={root}", *TINY_2D, "--out", str(out), "--seeds", "2"]
    fired = _fail_once(monkeypatch, Classification, "evaluate", lambda *a: True)
    with pytest.raises(RuntimeError, match="injected failure"):
        main(args[:])
    assert fired
    trained = ["pretrain", "finetune_mae/seed0", "finetune_mae/seed1", "finetune_scratch/seed0",
               "finetune_scratch/seed1"]
    kept = [f"{s}/checkpoints/last.pt" for s in trained]
    before, n_lines = mtimes(out, kept), len(log(out))
    assert main(args[:]) == 0
    assert mtimes(out, kept) == before
    acts = actions(out, n_lines)
    assert all(acts[s] == "skip (finished earlier)" for s in trained)
    assert acts["finetune_mae/seed0/eval_test"] == "run"  # the evaluation that crashed is redone
    rows = json.loads((out / "reproduce.json").read_text())["rows"]
    mae = next(r for r in rows if r["init"] == "mae")
    assert len(mae["values"]) == 2 and mae["paper"] == 81.5
    assert "mAUC over 14 findings (%)" in (out / "reproduce.md").read_text()

    ab = args + ["--ablation", "--mask-ratios", "0.5,0.75", "--pretrain-epochs", "1,2"]
    ab[ab.index("--seeds") + 1] = "1"
    assert main(ab) == 0
    text = (out / "ablation.md").read_text()
    assert "| mask ratio \\ pre-training epochs | 1 | 2 |" in text
    cells = json.loads((out / "ablation.json").read_text())["cells"]
    assert {(c["mask_ratio"], c["epochs"]) for c in cells} == {(0.5, 1), (0.5, 2), (0.75, 1), (0.75, 2)}
    assert all(len(c["values"]) == 1 for c in cells)
    for r in ("0.5", "0.75"):
        assert (out / "ablation" / f"mr{r}_ep2" / "pretrain" / "checkpoints" / "encoder.pt").is_file()
        pre = torch.load(out / "ablation" / f"mr{r}_ep2" / "pretrain" / "checkpoints" / "last.pt", weights_only=True)
        assert pre["config"]["model"]["mask_ratio"] == float(r) and pre["epoch"] == 2


def test_bad_settings_are_refused_before_any_stage(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "btcv", "train.nope=1", "--out", str(out)]) == 2
    assert "train.nope: unknown config key" in capsys.readouterr().err and not out.exists()
    assert main(["reproduce", "btcv", "run.dir=x", "--out", str(out)]) == 2
    assert "run.dir: set by reproduce itself" in capsys.readouterr().err
    assert main(["reproduce", "btcv", "imagenet=/no/such.pt", "--out", str(out)]) == 2
    assert "/no/such.pt: ImageNet checkpoint not found" in capsys.readouterr().err
    assert main(["reproduce", "btcv", "pretrain:train.warmup_epochs=50", "pretrain:train.epochs=10",
                 "--out", str(out)]) == 2
    assert "train.warmup_epochs 50 exceeds train.epochs 10" in capsys.readouterr().err
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"dataset": "btcv", "overrides": ["train.epochs=5"]}))
    assert main(["reproduce", "btcv", "train.batch_size=3", "--out", str(out)]) == 2
    assert "choose another --out" in capsys.readouterr().err
