"""Training runs end to end on tiny synthetic data: the loss falls, a run killed with SIGKILL resumes to
exactly the weights of an uninterrupted one, two torchrun processes match one process."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_helpers import cli, records, state, tiny_config, tiny_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return tiny_task(tmp_path_factory.mktemp("data"))


def run_ok(*args: str) -> str:
    proc = cli(*args)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def kill_after_first_checkpoint(proc: subprocess.Popen, last: Path, epochs: int) -> int:
    """SIGKILL the run once last.pt exists, i.e. mid-way; return the epoch it had reached."""
    deadline = time.time() + 300
    while not last.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reached = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= reached < epochs, "the run finished before it could be killed"
    return reached


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_sigkill_then_resume_gives_the_uninterrupted_weights(stage, task, tmp_path):
    cfg = tiny_config(tmp_path / f"{stage}.yaml", task, stage=stage)
    extra = ["train.epochs=6"] + (["model.drop_path_rate=0.1", "train.layer_decay=0.75"] if stage == "finetune" else [])
    full, broken = tmp_path / "full", tmp_path / "broken"
    run_ok(stage, str(cfg), f"run.dir={full}", *extra)

    proc = cli(stage, str(cfg), f"run.dir={broken}", *extra)
    kill_after_first_checkpoint(proc, broken / "checkpoints" / "last.pt", 6)
    # without resume=true the finished epochs are protected
    refused = cli(stage, str(cfg), f"run.dir={broken}", *extra)
    out, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "run.resume=true" in out and "already holds a run" in out
    run_ok(stage, str(cfg), f"run.dir={broken}", "run.resume=true", *extra)

    a, b = state(full), state(broken)
    assert a["epoch"] == b["epoch"] == 6 and a["step"] == b["step"]
    assert_same_weights(a, b)
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    steps = [r["step"] for r in records(broken, "train")]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resume"


def test_pretraining_lowers_the_loss_and_writes_its_outputs(task, tmp_path):
    cfg = tiny_config(tmp_path / "p.yaml", task)
    run_dir = tmp_path / "run"
    out = run_ok("pretrain", str(cfg), f"run.dir={run_dir}", "train.epochs=8", "train.vis_every=4")
    epochs = records(run_dir, "epoch")
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    for name in ("config.yaml", "splits.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/encoder.pt",
                 "figures/recon_epoch_0001.png", "figures/recon_epoch_0008.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    assert "pretrain done" in out and str(run_dir) in out


def test_torchrun_two_processes_match_one_process(task, tmp_path):
    cfg = tiny_config(tmp_path / "p.yaml", task)
    one, two = tmp_path / "one", tmp_path / "two"
    run_ok("pretrain", str(cfg), f"run.dir={one}", "train.epochs=3", "train.batch_size=4")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "selfmedmae", "pretrain", str(cfg), f"run.dir={two}", "train.epochs=3", "train.batch_size=4"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    end = records(two, "end")[0]
    assert len(end["weights_sha256"]) == 2 and len(set(end["weights_sha256"])) == 1  # ranks bit-identical
    a, b = state(one)["state_dict"], state(two)["state_dict"]
    for key in a:  # same global batch, same masks: equal up to the order of float sums
        x, y = a[key], b[key]
        if key.endswith("attn.qkv.bias"):
            # the key bias has an exactly-zero gradient (softmax ignores a constant per query), so Adam
            # turns float noise into steps of up to lr: compare it against that bound, the rest closely
            third = x.shape[0] // 3
            assert (x[third:2 * third] - y[third:2 * third]).abs().max() <= 1e-3 * 12
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=key)
    assert len(records(one, "train")) == len(records(two, "train"))


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_checkpoint(task, tmp_path):
    cfg = tiny_config(tmp_path / "p.yaml", task)
    run_dir = tmp_path / "run"
    proc = cli("pretrain", str(cfg), f"run.dir={run_dir}", "train.epochs=30", "train.warmup_epochs=0",
               "train.lr=1e12")  # an lr no model survives
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3, out
    line = [x for x in out.splitlines() if x.startswith("selfmedmae: error:")]
    assert len(line) == 1 and "the loss became" in line[0]
    assert "Traceback" not in out
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():  # what was written before the divergence is intact and finite, and the message names it
        assert f"the last good checkpoint {last}" in line[0]
        ckpt = torch.load(last, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    else:  # the message never promises a checkpoint that does not exist
        assert "no checkpoint had been written yet" in line[0] and "is kept" not in line[0]
