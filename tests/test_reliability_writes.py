"""What commands write (issue 24): a failed start removes only what it made; ``--overwrite`` removes only what
an earlier command recorded; output names are planned before any inference; a full disk is one line with no
partial file; an interruption removes this command's partial outputs; a run folder is never a data folder."""
from __future__ import annotations

import errno
import hashlib
import os
import signal
from pathlib import Path

import nibabel as nib
import pytest
from matplotlib.figure import Figure

import selfmedmae.tasks.volume_output as volume_output
from selfmedmae.cli import main
from selfmedmae.data.synthetic import make_msd
from selfmedmae.outputs import MANIFEST
from tiny_runs import REPO, tiny_checkpoint
from train_helpers import tiny_config, tiny_task

CFG = REPO / "configs" / "_data" / "hippocampus.yaml"
ROI16 = "data.roi_size=[16,16,16]"
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def tree(folder: Path) -> dict:
    """Every file under folder (hidden ones too) -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def said(err: str) -> list[str]:
    """The tool's own lines on stderr (progress lines left out); never a traceback."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("selfmedmae:")]


def outputs(folder: Path) -> set:
    return {n for n in tree(folder)} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("msd")
    root = make_msd(tmp / "task", n=3, size=(16, 16, 12), n_test=2, seed=7)
    ckpt = tiny_checkpoint(tmp / "run", str(CFG), [f"data.root={root}", ROI16, "data.val_fraction=0.34",
                                                   "data.test_fraction=0.0"])
    return ckpt, root


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return tiny_task(tmp_path_factory.mktemp("data"), n=5)


@pytest.fixture(scope="module")
def cfgs(task, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cfg")
    return {"pretrain": str(tiny_config(tmp / "p.yaml", task)),
            "finetune": str(tiny_config(tmp / "f.yaml", task, stage="finetune"))}


def _scans(root: Path) -> list[Path]:
    return sorted((root / "imagesTs").iterdir())


# ------------------------------------------------------------------------------ 1: a failed start
def test_a_failed_finetune_start_keeps_the_cache_and_files_already_in_run_dir(cfgs, tmp_path, capsys):
    from selfmedmae.config import load_config
    from selfmedmae.data.facade import build
    from selfmedmae.models.checkpoint import save_model
    from selfmedmae.models.factory import build_model, model_args

    cfg = load_config(cfgs["pretrain"], ["model.preset=vit_micro"])  # another width than vit_nano
    data = build(cfg.data)
    args = model_args("mae", cfg.model, data.input_size, data.in_chans)
    wide = save_model(tmp_path / "wide_mae.pt", "mae", args, build_model("mae", args))
    run_dir = tmp_path / "run"
    (run_dir / "cache" / "ab12").mkdir(parents=True)
    (run_dir / "cache" / "ab12" / "case_001.pt").write_bytes(b"a cached volume")
    (run_dir / "notes.txt").write_text("my notes")
    before = tree(run_dir)
    assert main(["finetune", cfgs["finetune"], f"run.dir={run_dir}", f"init=mae:{wide}"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert tree(run_dir) == before  # the user's cache and notes byte-identical, nothing of the start left


# -------------------------------------------------------------- 2: --overwrite removes only its own
def test_overwrite_never_removes_files_it_did_not_write(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    out = tmp_path / "pred"
    scan = _scans(root)[0]
    original = volume_output.write_like

    def while_running(*args, **kw):  # the user (or another run) writes into --out during the predict
        (out / "notes.txt").write_text("my notes")
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / "last.pt").write_bytes(b"another run's checkpoint")
        return original(*args, **kw)

    monkeypatch.setattr(volume_output, "write_like", while_running)
    assert main(["predict", str(ckpt), str(scan), "--out", str(out)]) == 0
    monkeypatch.setattr(volume_output, "write_like", original)
    theirs = {k: v for k, v in tree(out).items() if k in ("notes.txt", "checkpoints/last.pt")}
    assert len(theirs) == 2
    assert (out / MANIFEST).read_text().split() == [scan.name]  # exactly what predict wrote
    for _ in range(2):
        assert main(["predict", str(ckpt), str(scan), "--out", str(out), "--overwrite"]) == 0
        now = tree(out)
        assert {k: now.get(k) for k in theirs} == theirs
    assert "never removes those" in capsys.readouterr().out


# ------------------------------------------------------------------ 3: output names planned up front
def test_predict_refuses_outputs_that_would_write_over_each_other(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    scans = tmp_path / "scans"
    scans.mkdir()
    first = _scans(root)[0].read_bytes()
    (scans / "a.nii.gz").write_bytes(first)
    (scans / "a_probabilities.nii.gz").write_bytes(_scans(root)[1].read_bytes())
    computed = []
    monkeypatch.setattr(volume_output, "predict_volume", lambda *a, **k: computed.append(a) or 1 / 0)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(scans), "--out", str(out), "--probabilities"]) == 2
    err = capsys.readouterr().err
    assert "a_probabilities.nii.gz would be written twice" in err
    assert str(scans / "a.nii.gz") in err and str(scans / "a_probabilities.nii.gz") in err
    assert not computed and outputs(out) == set()


# ---------------------------------------------------------------------------------- 8: a full disk
def _partial_then_enospc(self, filename, *a, **k):
    Path(filename).write_bytes(b"\x1f\x8b half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_predict_is_one_line_and_leaves_no_partial_file(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    out = tmp_path / "pred"
    monkeypatch.setattr(nib.Nifti1Image, "to_filename", _partial_then_enospc)
    assert main(["predict", str(ckpt), str(_scans(root)[0]), "--out", str(out)]) == 3
    err = "\n".join(said(capsys.readouterr().err))
    assert len(err.splitlines()) == 1 and "No space left on device" in err and _scans(root)[0].name in err
    assert outputs(out) <= {MANIFEST}  # no truncated NIfTI, no temporary file
    monkeypatch.undo()
    assert main(["predict", str(ckpt), str(_scans(root)[0]), "--out", str(out), "--overwrite"]) == 0
    assert outputs(out) == {MANIFEST, _scans(root)[0].name}


def test_a_full_disk_during_evaluate_is_one_line_and_leaves_no_partial_figure(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    out = tmp_path / "ev"
    monkeypatch.setattr(Figure, "savefig", _partial_then_enospc)
    assert main(["evaluate", str(ckpt), "eval.split=val", "--out", str(out), "--figures", "1"]) == 3
    err = "\n".join(said(capsys.readouterr().err))
    assert len(err.splitlines()) == 1 and "No space left on device" in err and ".png" in err
    assert not [n for n in outputs(out) if n.endswith(".png")]


def test_a_full_disk_for_a_pretraining_figure_is_a_warning_and_the_checkpoint_is_written(cfgs, tmp_path, capsys,
                                                                                         monkeypatch):
    import torch

    run_dir = tmp_path / "run"
    monkeypatch.setattr(Figure, "savefig", _partial_then_enospc)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={run_dir}", "train.epochs=1"]) == 0
    err = capsys.readouterr().err
    assert "warning: the reconstruction figure was not saved" in err and "Traceback" not in err
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(run_dir.glob("figures/*"))  # no partial PNG, no temporary file


def test_a_full_disk_after_training_started_exits_3_not_2(cfgs, tmp_path, capsys, monkeypatch):
    import selfmedmae.models.checkpoint as checkpoint

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", enospc)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={tmp_path / 'run'}", "train.epochs=1"]) == 3
    err = "\n".join(said(capsys.readouterr().err))
    assert len(err.splitlines()) == 1 and "last.pt" in err and "training had started" in err


# ---------------------------------------------------------------------------------- 9: interruption
@pytest.mark.parametrize("stop,code,words", [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "stopped by SIGTERM")])
def test_an_interrupted_predict_removes_its_partial_outputs(msd, tmp_path, capsys, monkeypatch, stop, code, words):
    ckpt, root = msd
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    original, calls, before = volume_output.write_like, [], signal.getsignal(signal.SIGTERM)

    def then_stop(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second scan: the first one's label map is written
            if stop == "ctrl-c":
                raise KeyboardInterrupt
            handler = signal.getsignal(signal.SIGTERM)
            assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None)  # else the kill would end pytest
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kw)

    monkeypatch.setattr(volume_output, "write_like", then_stop)
    assert main(["predict", str(ckpt), str(root / "imagesTs"), "--out", str(out), "--overwrite"]) == code
    err = said(capsys.readouterr().err)
    assert len(err) == 1 and words in err[0] and "removed the 1 output file(s)" in err[0]
    assert outputs(out) == {"notes.txt"}  # no partial outputs, no manifest; the user's file stays
    assert signal.getsignal(signal.SIGTERM) is before  # the command gave the handler back


def test_an_interrupted_evaluate_leaves_no_partial_results(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    out = tmp_path / "ev"
    import selfmedmae.eval.evaluate as evaluate

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "write_metrics", stop)  # figures drawn, metrics not yet written
    assert main(["evaluate", str(ckpt), "eval.split=val", "--out", str(out), "--figures", "1"]) == 130
    err = capsys.readouterr().err.strip()
    assert "interrupted; removed the 1 output file(s)" in err
    assert not out.exists()  # it made the folder, and removed it with its partial figure


# ------------------------------------------------------------------------- 12: run.dir in the data
@pytest.mark.parametrize("where", ["labelsTr", "imagesTr/run"])
def test_a_run_dir_in_a_data_folder_is_refused(task, cfgs, capsys, where):
    before = tree(task)
    assert main(["pretrain", cfgs["pretrain"], f"run.dir={task / where}", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "run.dir" in err and "a folder of the dataset's files" in err
    assert tree(task) == before


def test_a_full_disk_while_writing_a_report_is_one_line(tmp_path, capsys, monkeypatch):
    from test_reliability_files import _eval_run

    a, b = _eval_run(tmp_path / "a", 2, 0.6), _eval_run(tmp_path / "b", 2, 0.7)
    import io

    real_open = io.open

    def full(file, mode="r", *args, **kw):
        if "w" in mode and str(file).endswith("report.md"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr("builtins.open", full)
    monkeypatch.setattr("io.open", full)  # what Path.write_text calls
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 3
    err = said(capsys.readouterr().err)
    assert len(err) == 1 and "report.md: cannot be written (No space left on device)" in err[0]
    assert not list((tmp_path / "rep").glob("*report.md"))
