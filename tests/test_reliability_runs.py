"""A run folder belongs to one run (issue 8, items 2, 3 and 8): the lock, refusal of any folder holding a run,
resume refused without writing when a result-changing setting differs, ``run.resume=auto``, a failed start
that leaves nothing behind, mid-epoch checkpoints resumed bit-exactly, the stop messages, file modes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfmedmae.cli import main
from selfmedmae.train.run_dir import LOCK, STALE_S, RunLock
from train_helpers import cli, records, state, tiny_config, tiny_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return tiny_task(tmp_path_factory.mktemp("data"), n=6)  # 4 training cases: 2 steps an epoch


@pytest.fixture(scope="module")
def cfgs(task, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cfg")
    return {"pretrain": str(tiny_config(tmp / "p.yaml", task)),
            "finetune": str(tiny_config(tmp / "f.yaml", task, stage="finetune"))}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(run_dir: Path) -> dict:
    return state(run_dir)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished(cfgs, tmp_path_factory) -> Path:
    """A finished 2-epoch pre-training, started over a stale lock left by a killed process."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK).write_text(f"{dead.pid} {socket.gethostname()}\n")
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={run_dir}", "train.epochs=2"]) == 0
    assert not (run_dir / LOCK).exists()  # taken over, and released at the end
    return run_dir


@pytest.mark.parametrize("change", [["model.mask_ratio=0.5"], ["model.preset=vit_micro"], ["train.epochs=3"],
                                    ["run.seed=1"]], ids=["mask_ratio", "preset", "epochs", "seed"])
def test_resume_with_a_setting_that_changes_the_result_is_refused_and_writes_nothing(finished, cfgs, capsys,
                                                                                     change):
    before = snapshot(finished)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={finished}", "train.epochs=2", "run.resume=true",
                 *change]) == 2
    err = capsys.readouterr().err
    key = change[0].split("=")[0]
    assert err.startswith("selfmedmae: error: run.resume:") and key in err and "nothing was changed" in err
    assert snapshot(finished) == before  # config.yaml still describes the run's own model


def test_without_resume_any_folder_holding_a_run_is_refused(finished, cfgs, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "checkpoints" / "last.pt").unlink()  # the old guard looked for last.pt only
    before = snapshot(copy)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={copy}", "train.epochs=2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # auto will not start over on top of checkpoints it cannot resume from
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={copy}", "train.epochs=2", "run.resume=auto"]) == 2
    assert "no checkpoints/last.pt" in capsys.readouterr().err
    assert snapshot(copy) == before


def test_a_second_process_is_refused_while_the_lock_is_live(cfgs, tmp_path, capsys):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    (run_dir / LOCK).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this very process: alive
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert f"in use by process {os.getpid()}" in err and (run_dir / LOCK).is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]


def test_lock_staleness(tmp_path):
    from selfmedmae.errors import UserError

    lock = tmp_path / LOCK
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")  # this host, a process that has ended
    mine = RunLock(tmp_path)
    assert "that process has ended" in mine.acquire()
    mine.release()
    lock.write_text("4242 some-other-node\n")

    with pytest.raises(UserError, match="in use by process 4242 on some-other-node"):
        RunLock(tmp_path).acquire()  # fresh heartbeat: live
    old = time.time() - STALE_S - 60
    os.utime(lock, (old, old))
    mine = RunLock(tmp_path)
    assert "not touched for" in mine.acquire()  # a node killed long ago: taken over
    assert lock.read_text() == mine.text
    mine.release()
    assert not lock.exists()


def test_resume_auto(finished, cfgs, tmp_path, capsys):
    # a finished run: resumed, nothing left to do, the weights untouched
    before = weights(finished)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={finished}", "train.epochs=2", "run.resume=auto",
                 "train.log_every=3"]) == 0  # how often to log is no part of the result
    assert "already complete" in capsys.readouterr().out and same(weights(finished), before)
    # nothing there: a fresh start, bit-identical to the plain run
    fresh = tmp_path / "fresh"
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={fresh}", "train.epochs=2", "run.resume=auto"]) == 0
    assert same(weights(fresh), before)
    # the same run killed before its first checkpoint (config, splits, metrics, no checkpoint): started over
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.yaml", "splits.json", "metrics.jsonl"):
        (partial / name).write_bytes((finished / name).read_bytes())
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={partial}", "train.epochs=2", "run.resume=auto"]) == 0
    assert "starting it from the beginning" in capsys.readouterr().out and same(weights(partial), before)
    steps = [r["step"] for r in records(partial, "train")]
    assert steps == sorted(set(steps))  # the old partial metrics are not mixed in


@pytest.mark.parametrize("why,overrides", [("data", ["data.root=/nonexistent/task"]),
                                            ("batch", ["train.batch_size=64"])])
def test_a_failed_start_leaves_nothing_behind(cfgs, tmp_path, capsys, why, overrides):
    new = tmp_path / "new" / "run"
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={new}", *overrides]) == 2
    assert not (tmp_path / "new").exists()  # the folders it made are gone too
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={empty}", *overrides]) == 2
    assert list(empty.iterdir()) == []  # no config.yaml, splits.json, events, lock


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_stopped_mid_epoch_resumes_bit_exactly(stage, cfgs, tmp_path, capsys, monkeypatch):
    import importlib

    extra = ["train.epochs=2", "train.save_every_steps=1", "train.batch_size=1"]  # 5 steps an epoch
    if stage == "finetune":
        extra += ["model.drop_path_rate=0.2"]  # draws from the global generator every step
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert main([stage, cfgs[stage], f"run.dir={full}", *extra]) == 0
    module = importlib.import_module("selfmedmae.train.trainer")  # both stages save through their Trainer
    original = module.save_training_state

    def save_then_stop(*args, **kw):
        original(*args, **kw)
        if kw.get("step_in_epoch") == 2 and args[6] == 1:  # mid-way through the second epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_training_state", save_then_stop)
    assert main([stage, cfgs[stage], f"run.dir={broken}", *extra]) == 130
    err = capsys.readouterr().err
    assert "interrupted; the last checkpoint is" in err and "(epoch 1, step " in err and "run.resume=true" in err
    assert torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["step_in_epoch"] == 2
    monkeypatch.setattr(module, "save_training_state", original)
    assert main([stage, cfgs[stage], f"run.dir={broken}", *extra, "run.resume=true"]) == 0
    a, b = state(full), state(broken)
    assert a["step"] == b["step"] and same(a["state_dict"], b["state_dict"])
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    assert records(full, "epoch") == records(broken, "epoch")  # the epoch means too, from the saved partial sums


def test_sigterm_says_how_to_continue_and_checkpoints_are_group_readable(cfgs, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("pretrain", cfgs["pretrain"], f"run.dir={run_dir}", "train.epochs=200", env={"OMP_NUM_THREADS": "1"})
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    line = out.strip().splitlines()[-1]
    assert line.startswith("selfmedmae: stopped by SIGTERM; the last checkpoint is") and "run.resume=true" in line
    assert "Traceback" not in out and not (run_dir / LOCK).exists()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "checkpoints/last.pt"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # 0644 under umask 022
