"""Unusable settings are refused by every command before any data is read or anything is written: one line
naming the key, exit 2, no traceback (issue 8, item 4 and the up-front validation)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_encoder
from selfmedmae.cli import main
from selfmedmae.models.checkpoint import atomic_save, native
from selfmedmae.models.factory import build_model
from train_helpers import tiny_config, tiny_task


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    task = tiny_task(tmp, n=4)
    pre = tiny_config(tmp / "pretrain.yaml", task)
    fine = tiny_config(tmp / "finetune.yaml", task, stage="finetune")
    ckpts = {}
    for dims in (2, 3):
        enc = tiny_encoder(dims=dims, size=16)
        args = {"encoder": enc, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 4}
        ckpts[dims] = atomic_save(native("mae", args, build_model("mae", args).state_dict()), tmp / f"mae{dims}d.pt")
    sd = build_model("mae", {"encoder": tiny_encoder(dims=3, size=16), "decoder_embed_dim": 32,
                             "decoder_depth": 1, "decoder_num_heads": 4}).state_dict()
    torch.save({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}, tmp / "vit3d_timm.pt")
    return dict(tmp=tmp, task=task, pre=str(pre), fine=str(fine), mae2d=ckpts[2], mae3d=ckpts[3],
                timm3d=tmp / "vit3d_timm.pt")


CPU_ONLY = not torch.cuda.is_available()
CASES = [  # (command, config, overrides, the key the one line must name)
    ("pretrain", "pre", ["model.mask_ratio=1.0"], "model.mask_ratio"),
    ("pretrain", "pre", ["model.mask_ratio=-0.1"], "model.mask_ratio"),
    ("pretrain", "pre", ["model.mask_ratio=0.0"], "model.mask_ratio"),  # nothing masked: no loss
    ("pretrain", "pre", ["train.lr=-0.001"], "train.lr"),
    ("pretrain", "pre", ["train.lr=null", "train.base_lr=-1e-4"], "train.base_lr"),
    ("pretrain", "pre", ["train.base_lr=0.01"], "train.lr"),  # lr would silently win over base_lr
    ("pretrain", "pre", ["model.patch_size=7"], "model.patch_size"),  # 16^3 crop
    ("pretrain", "pre", ["model.preset=vit_gigantic"], "model.preset"),
    ("pretrain", "pre", ["data.roi_size=[16,16]"], "data.roi_size"),  # was an abort (134)
    ("pretrain", "pre", ["train.epochs=0"], "train.epochs"),
    ("pretrain", "pre", ["train.batch_size=0"], "train.batch_size"),
    ("pretrain", "pre", ["train.accum_iter=3"], "train.accum_iter"),
    ("pretrain", "pre", ["model.num_heads=5"], "model.num_heads"),  # 48 wide
    ("pretrain", "pre", ["model.decoder_num_heads=5"], "model.decoder_num_heads"),
    ("pretrain", "pre", ["data.val_fraction=0.6", "data.test_fraction=0.5"], "data.test_fraction"),
    ("pretrain", "pre", ["data.format=dicom"], "data.format"),
    ("pretrain", "pre", ["train.warmup_epochs=-1"], "train.warmup_epochs"),
    ("pretrain", "pre", ["train.betas=[0.9,1.5]"], "train.betas"),
    ("pretrain", "pre", ["run.resume=maybe"], "run.resume"),
    ("pretrain", "pre", ["run.device=tpu"], "run.device"),
    ("pretrain", "pre", ["run.device=cuda" if CPU_ONLY else "run.device=cuda:99"], "run.device"),
    ("pretrain", "pre", ["run.precision=fp16"] if CPU_ONLY else ["run.device=cpu", "run.precision=fp16"],
     "run.precision"),
    ("pretrain", "fine", [], "stage"),  # a fine-tuning config given to pretrain used to pre-train silently
    ("finetune", "pre", [], "stage"),  # and the reverse trained from scratch silently
    ("pretrain", "pre", ["init=mae:x.pt"], "init"),
    ("finetune", "fine", ["init=mae:no_such_file.pt"], "init"),
    ("finetune", "fine", ["init=mae:{mae2d}"], "init"),  # a 2D MAE into a 3D UNETR
    ("finetune", "fine", ["init=imagenet:{timm3d}"], "init"),  # imagenet: takes a 2D ViT
    ("finetune", "fine", ["init=official:{mae3d}"], "init"),  # not an official MAE3D
    ("finetune", "fine", ["init=pretrained"], "init"),
    ("finetune", "fine", ["model.patch_size=6", "data.roi_size=[18,18,18]"], "model.patch_size"),  # UNETR: 2^k
    ("finetune", "fine", ["model.skip_blocks=[0,7]"], "model.skip_blocks"),
    ("finetune", "fine", ["train.layer_decay=0"], "train.layer_decay"),
    ("finetune", "fine", ["eval.overlap=1.0"], "eval.overlap"),
    ("finetune", "fine", ["task=classification"], "task"),  # classification takes 2D images
    ("check-data", "pre", ["model.mask_ratio=1.0"], "model.mask_ratio"),  # check-data no longer says OK
    ("check-data", "fine", ["init=official:{mae3d}"], "init"),  # an existing checkpoint of the wrong kind
    ("check-data", "pre", ["data.percentiles=[99,1]"], "data.percentiles"),
]


@pytest.mark.parametrize("command,config,overrides,key", CASES, ids=[f"{c[0]}:{' '.join(c[2]) or c[1]}" for c in CASES])
def test_bad_settings_are_refused_up_front(setup, tmp_path, capsys, command, config, overrides, key):
    run_dir = tmp_path / "run"
    overrides = [o.format(**{k: v for k, v in setup.items() if isinstance(v, Path)}) for o in overrides]
    assert main([command, setup[config], f"run.dir={run_dir}", *overrides]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"selfmedmae: error: {key}:"), err
    assert not run_dir.exists()  # nothing written, not even the folder


def test_2d_run_refuses_a_3d_mae(setup, tmp_path, capsys):
    from tiny_runs import REPO

    cfg = REPO / "configs" / "cxr14_sample" / "finetune.yaml"
    assert main(["finetune", str(cfg), f"run.dir={tmp_path / 'r'}", f"init=mae:{setup['mae3d']}",
                 "model.preset=vit_nano", "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfmedmae: error: init:") and "3D mae checkpoint cannot start a 2D run" in err


def test_evaluate_checks_overrides_before_any_work(setup, tmp_path, capsys):
    from tiny_runs import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "run", setup["fine"], ["data.roi_size=[16,16,16]"])
    for bad, key in (("eval.overlap=1.0", "eval.overlap"), ("data.roi_size=[16,16]", "data.roi_size"),
                     ("eval.split=bogus", "eval.split")):
        assert main(["evaluate", str(ckpt), bad, "--out", str(tmp_path / "ev")]) == 2
        assert capsys.readouterr().err.startswith(f"selfmedmae: error: {key}:")
        assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("extra,key", [(["num_heads=5", "decoder_num_heads=4"], "num_heads"),
                                       (["num_heads=4", "decoder_num_heads=5"], "decoder_num_heads"),
                                       (["num_heads=four", "decoder_num_heads=4"], "num_heads")])
def test_convert_refuses_heads_that_do_not_divide_the_width(setup, tmp_path, capsys, extra, key):
    args = {"encoder": tiny_encoder(dims=2, size=16), "decoder_embed_dim": 32, "decoder_depth": 1,
            "decoder_num_heads": 4}
    sd = build_model("mae", args).state_dict()
    flat = {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in sd.items()}
    torch.save({"model": flat}, tmp_path / "mae2d.pth")
    out = tmp_path / "out.pt"
    assert main(["convert", str(tmp_path / "mae2d.pth"), str(out), "--from", "mae2d", *extra]) == 2
    assert capsys.readouterr().err.startswith(f"selfmedmae: error: {key}:") and not out.exists()
    assert main(["convert", str(tmp_path / "mae2d.pth"), str(out), "--from", "mae2d", "num_heads=4",
                 "decoder_num_heads=4"]) == 0 and out.is_file()


def test_a_yaml_syntax_error_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  lr: [1, 2\nmodel:\n  preset: vit_nano\n")
    assert main(["pretrain", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not valid YAML (line 4, column" in err and len(err.strip().splitlines()) == 1


SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(p.parents[1])) for p in SHIPPED])
def test_every_shipped_config_passes_the_up_front_check(path, monkeypatch):
    """The checks must never refuse the paper's own recipes (init files are made by earlier runs: not checked)."""
    import selfmedmae.preflight as config_check
    from selfmedmae.config import load_config

    monkeypatch.setattr(config_check, "device_for", lambda *a, **k: torch.device("cpu"))  # a GPU config on this CPU
    monkeypatch.setattr(config_check, "check_init", lambda *a, **kwargs: None)
    cfg = load_config(path)
    command = "check-data" if path.parent.name == "_data" else str(cfg.stage)
    config_check.validate(cfg, command)


def test_check_data_accepts_an_init_checkpoint_not_written_yet(setup, tmp_path, capsys):
    """The docs' walkthroughs check the data with the fine-tuning config before the pre-training that
    writes its ``init`` checkpoint; fine-tuning itself still refuses the missing file."""
    missing = tmp_path / "later" / "last.pt"
    assert main(["check-data", setup["fine"], f"init=mae:{missing}"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["finetune", setup["fine"], f"init=mae:{missing}", f"run.dir={tmp_path / 'run'}"]) == 2
    assert f"init: {missing}: checkpoint file not found" in capsys.readouterr().err
