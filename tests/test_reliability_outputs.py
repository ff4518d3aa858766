"""`predict` and `evaluate` never write where an input lives, never mix new results with old ones unasked,
and find an unusable output folder before any inference (issue 8, items 1, 2 and 5)."""
from __future__ import annotations

import hashlib
import json

import pytest

from selfmedmae.cli import main
from selfmedmae.data.synthetic import make_msd
from selfmedmae.outputs import MANIFEST
from tiny_runs import REPO, tiny_checkpoint

CFG = REPO / "configs" / "_data" / "hippocampus.yaml"
ROI16 = "data.roi_size=[16,16,16]"


def _digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("msd")
    root = make_msd(tmp / "task", n=3, size=(16, 16, 12), n_test=2, seed=7)
    ckpt = tiny_checkpoint(tmp / "run", str(CFG), [f"data.root={root}", ROI16, "data.val_fraction=0.34",
                                                   "data.test_fraction=0.0"])
    return ckpt, root


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_into_the_input_folder_is_refused_and_the_scans_survive(msd, tmp_path, capsys, overwrite):
    ckpt, root = msd
    scans = root / "imagesTs"
    before = _digest(scans)
    assert main(["predict", str(ckpt), str(scans), "--out", str(scans), *overwrite]) == 2
    err = capsys.readouterr().err
    assert "is where the input" in err and "nothing was written" in err
    assert _digest(scans) == before  # not one byte of the user's scans changed
    # one file given by name, --out its folder: refused too
    one = sorted(scans.iterdir())[0]
    assert main(["predict", str(ckpt), str(one), "--out", str(scans), *overwrite]) == 2
    assert _digest(scans) == before


def test_predict_refuses_a_folder_with_earlier_results_unless_overwrite(msd, tmp_path, capsys):
    ckpt, root = msd
    out = tmp_path / "pred"
    scans = sorted((root / "imagesTs").iterdir())
    assert main(["predict", str(ckpt), str(scans[0]), "--out", str(out)]) == 0
    first = {p.name for p in out.iterdir()}
    assert MANIFEST in first
    (out / "my_notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["predict", str(ckpt), str(scans[1]), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and {p.name for p in out.iterdir()} == first | {"my_notes.txt"}
    # --overwrite: the earlier model's file goes, the new one comes, the user's own file stays
    assert main(["predict", str(ckpt), str(scans[1]), "--out", str(out), "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    old = scans[0].name
    assert old not in names and scans[1].name in names and "my_notes.txt" in names
    assert (out / "my_notes.txt").read_text() == "mine"


def test_evaluate_twice_needs_overwrite_and_leaves_no_stale_figures(msd, tmp_path, capsys):
    ckpt, root = msd
    out = tmp_path / "ev"
    assert main(["evaluate", str(ckpt), "eval.split=val", "--out", str(out), "--figures", "1"]) == 0
    stale = out / "figures" / "from_another_dataset.png"
    stale.write_bytes((out / "figures" / next((out / "figures").iterdir()).name).read_bytes())
    with (out / MANIFEST).open("a") as fh:  # as if an earlier evaluate on other data had drawn it
        fh.write("figures/from_another_dataset.png\n")
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "eval.split=val", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "metrics.json").read_text() == before
    assert main(["evaluate", str(ckpt), "eval.split=val", "--out", str(out), "--overwrite", "--figures", "1"]) == 0
    assert not stale.exists() and json.loads((out / "metrics.json").read_text())["split"] == "val"


def test_evaluate_refuses_the_data_root_as_output(msd, capsys):
    ckpt, root = msd
    assert main(["evaluate", str(ckpt), "--out", str(root), "--overwrite"]) == 2
    assert "of the data or checkpoint" in capsys.readouterr().err


def test_an_unwritable_output_folder_is_refused_before_any_case_is_computed(msd, tmp_path, capsys, monkeypatch):
    ckpt, root = msd
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["evaluate", str(ckpt), "--out", str(blocker / "sub")]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    # a folder that exists but refuses writes (simulated: tests run as root, where chmod does not bind)
    import selfmedmae.outputs as outputs
    from selfmedmae.tasks.segmentation import Segmentation

    computed = []
    monkeypatch.setattr(Segmentation, "evaluate", lambda *a, **k: computed.append(1) or {})

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", denied)
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert "cannot write there (Permission denied)" in err and "Traceback" not in err and not computed
