"""`selfmedmae export`: safetensors + resolved config + model card (+ ONNX checked in onnxruntime); the folder
loads back to bit-identical outputs; refusals (non-empty folder, ONNX of an MAE, a disagreeing ONNX file, a
missing extra) are one-line errors that leave nothing behind."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors", reason="the export extra (pip install 'selfmedmae[export]') is not installed")

from selfmedmae.config import load_config, to_dict  # noqa: E402
from selfmedmae.errors import ConfigError  # noqa: E402
from selfmedmae.export import command, onnx_check  # noqa: E402
from selfmedmae.models.exported import read_exported  # noqa: E402
from selfmedmae.models.checkpoint import atomic_save, load_model, model_from, native, save_model  # noqa: E402
from selfmedmae.models.factory import build_model, model_args  # noqa: E402
from tiny_runs import CXR_SAMPLE, HIPPOCAMPUS, REPO, TINY, tiny_checkpoint  # noqa: E402

CFG = REPO / "configs" / "_data"
ROI16 = "data.roi_size=[16,16,16]"
if not HIPPOCAMPUS.is_dir():
    pytest.skip(f"{HIPPOCAMPUS} is absent", allow_module_level=True)


@pytest.fixture(scope="module")
def unetr_ckpt(tmp_path_factory):
    """A tiny UNETR run folder with the splits.json and test metrics that `finetune` / `evaluate` write."""
    run = tmp_path_factory.mktemp("unetr") / "run"
    ckpt = tiny_checkpoint(run, str(CFG / "hippocampus.yaml"), [f"data.root={HIPPOCAMPUS}", ROI16])
    (run / "splits.json").write_text(json.dumps({"schema": 1, "rule": "seeded", "train": ["a", "b"], "val": ["c"],
                                                 "test": ["d"]}))
    (run / "eval_test").mkdir()
    (run / "eval_test" / "metrics.json").write_text(json.dumps({"checkpoint": str(ckpt), "split": "test",
                                                                "mean": {"dice": 0.5}, "cases": [{"id": "d"}]}))
    return ckpt


def _mae_ckpt(path):
    cfg = load_config(str(CFG / "hippocampus.yaml"), ["stage=pretrain", *TINY, ROI16])
    args = model_args("mae", cfg.model, [16, 16, 16], 1)
    torch.manual_seed(0)
    return save_model(path, "mae", args, build_model("mae", args))


def test_unetr_export_writes_weights_config_and_card(unetr_ckpt, tmp_path, capsys):
    out = tmp_path / "shared_model"
    assert command.run(unetr_ckpt, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "model.safetensors",
                                                      "model_card.json"]
    assert f"wrote {out}: model.safetensors, config.yaml, model_card.json, README.md" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "segmentation" and card["classes"] == ["background", "Anterior", "Posterior"]
    assert card["input"]["orientation"] == "RAS" and "percentiles" in card["input"]["intensity"]
    assert card["input"]["size"] == [16, 16, 16] and card["input"]["channels"] == 1
    data = card["training_data"]
    assert data["format"] == "msd" and data["dataset"] == "Hippocampus"
    assert data["splits"]["cases"] == {"train": 2, "val": 1, "test": 1}
    run = unetr_ckpt.parent.parent
    assert data["splits"]["sha256"] == hashlib.sha256((run / "splits.json").read_bytes()).hexdigest()
    assert card["metrics_test"]["mean"] == {"dice": 0.5} and "cases" not in card["metrics_test"]
    assert card["metrics_test"]["command_rebuilt"] == f"selfmedmae evaluate {unetr_ckpt} eval.split=test"
    assert card["pretraining"] == "scratch" and card["license"] == "fill in"
    assert "| license | fill in |" in (out / "README.md").read_text()


def test_exported_folder_gives_bit_identical_outputs(unetr_ckpt, tmp_path):
    out = tmp_path / "m"
    command.run(unetr_ckpt, out)
    exported, original = model_from(read_exported(out), str(out)), load_model(unetr_ckpt)
    for (k, a), (k2, b) in zip(exported.state_dict().items(), original.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(exported(x), original(x))


def _onnx_agrees(folder, model, shape) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))  # another batch size: the axis is dynamic
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-4


def test_onnx_of_unetr_agrees_with_torch(unetr_ckpt, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    out = tmp_path / "m"
    assert command.run(unetr_ckpt, out, onnx=True) == 0
    _onnx_agrees(out, load_model(unetr_ckpt), (3, 1, 16, 16, 16))


def test_onnx_of_vit_classifier_agrees_with_torch(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    if not CXR_SAMPLE.is_dir():
        pytest.skip(f"{CXR_SAMPLE} is absent")
    cfg = load_config(str(CFG / "cxr14_sample.yaml"), ["stage=finetune", "task=classification", *TINY,
                                                        f"data.root={CXR_SAMPLE}", "data.image_size=40",
                                                        "data.crop_size=32"])
    args = model_args("classifier", cfg.model, [32, 32], 1, 14)
    torch.manual_seed(0)
    ckpt = atomic_save(native("classifier", args, build_model("classifier", args).state_dict(), config=to_dict(cfg)),
                       tmp_path / "run" / "checkpoints" / "best.pt")
    out = tmp_path / "m"
    assert command.run(ckpt, out, onnx=True) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "classification" and len(card["classes"]) == 14
    _onnx_agrees(out, load_model(ckpt), (3, 1, 32, 32))


def test_mae_exports_weights_and_card_only(tmp_path):
    ckpt = _mae_ckpt(tmp_path / "pre" / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match="--onnx: not applicable to a 'mae' checkpoint") as info:
        command.run(ckpt, tmp_path / "m", onnx=True)
    assert "\n" not in str(info.value) and not (tmp_path / "m").exists()
    assert command.run(ckpt, tmp_path / "m") == 0
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["task"] == "MAE pre-training" and card["classes"] is None
    x = torch.randn(1, 1, 16, 16, 16)
    a, b = model_from(read_exported(tmp_path / "m"), "m"), load_model(ckpt)
    torch.manual_seed(5)
    ya = a(x)
    torch.manual_seed(5)
    yb = b(x)  # the MAE masks at random: same seed, same mask
    assert all(torch.equal(p, q) for p, q in zip(ya, yb))


def test_nothing_is_overwritten_and_a_failed_check_leaves_nothing(unetr_ckpt, tmp_path, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="folder is not empty"):
        command.run(unetr_ckpt, full)
    assert [p.name for p in full.iterdir()] == ["mine.txt"]
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    monkeypatch.setattr(onnx_check, "onnx_difference", lambda *a: 0.5)
    with pytest.raises(ConfigError, match="differ by up to 0.5 .* the ONNX file was not kept"):
        command.run(unetr_ckpt, tmp_path / "m", onnx=True)
    assert not (tmp_path / "m").exists()


def test_missing_extra_is_one_line_naming_the_pip_install(unetr_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ConfigError) as info:
        command.run(unetr_ckpt, tmp_path / "m")
    assert "pip install 'selfmedmae[export]'" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m").exists()


def test_cli_export_then_load_model_predict_and_init_from_the_folder(unetr_ckpt, tmp_path, capsys):
    import nibabel as nib

    import selfmedmae
    from selfmedmae.cli import main
    from selfmedmae.models.initialise import check_init, initialise

    out = tmp_path / "shared"
    assert main(["export", str(unetr_ckpt), "--out", str(out)]) == 0
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(selfmedmae.load_model(out)(x), selfmedmae.load_model(unetr_ckpt)(x))
    nifti = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    for name, ckpt in (("a", unetr_ckpt), ("b", out)):
        assert main(["predict", str(ckpt), str(nifti), "--out", str(tmp_path / name), "eval.overlap=0"]) == 0
    a, b = (np.asanyarray(nib.load(tmp_path / n / "hippocampus_001.nii.gz").dataobj) for n in "ab")
    assert np.array_equal(a, b)
    mae = _mae_ckpt(tmp_path / "pre" / "checkpoints" / "last.pt")
    assert main(["export", str(mae), "--out", str(tmp_path / "mae")]) == 0
    check_init(f"mae:{tmp_path / 'mae'}", 3, "data.roi_size")
    unetr_a, unetr_b = load_model(unetr_ckpt), load_model(unetr_ckpt)
    initialise(unetr_a, f"mae:{mae}")
    initialise(unetr_b, f"mae:{tmp_path / 'mae'}")
    assert all(torch.equal(p, q) for p, q in zip(unetr_a.state_dict().values(), unetr_b.state_dict().values()))
    capsys.readouterr()
    assert main(["export", str(mae), "--out", str(tmp_path / "m2"), "--onnx"]) == 2
    assert "--onnx: not applicable to a 'mae' checkpoint" in capsys.readouterr().err


def test_cli_missing_extra_is_one_line(unetr_ckpt, tmp_path, capsys, monkeypatch):
    from selfmedmae.cli import main

    monkeypatch.setitem(sys.modules, "safetensors", None)
    assert main(["export", str(unetr_ckpt), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'selfmedmae[export]'" in err and "Traceback" not in err


def test_docs_worked_example_runs_as_written(tmp_path, monkeypatch):
    import shutil

    from doc_examples import blocks, example_commands
    from selfmedmae.cli import main

    monkeypatch.chdir(tmp_path)
    tiny_checkpoint(tmp_path / "runs" / "hippo", str(CFG / "hippocampus.yaml"), [f"data.root={HIPPOCAMPUS}", ROI16])
    (tmp_path / "scans").mkdir()
    shutil.copy(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz", tmp_path / "scans")
    for argv in example_commands("export.md"):
        if "--onnx" in argv:
            pytest.importorskip("onnxruntime", reason="the export extra is not installed")
        assert main(argv) == 0, argv
    exec(blocks("export.md", "python")[-1], {})  # load_model("hippo_model")
    assert (tmp_path / "hippo_model" / "model.onnx").is_file()
    assert (tmp_path / "predictions" / "hippocampus_001.nii.gz").is_file()
