"""`selfmedmae predict`: label maps in the input's own geometry (real hippocampus MRI, a BTCV-like LAS volume
with anisotropic voxels that is resampled and cropped inside), probabilities, the kinds of input, bad inputs
refused up front, and the CSV of 2D predictions."""
from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from selfmedmae.cli import main
from selfmedmae.data.brats import brats_regions, regions_to_labels
from selfmedmae.data.synthetic import make_brats, make_btcv, make_msd
from selfmedmae.inference.forward import load_run
from selfmedmae.tasks.volume_output import predict_volumes
from tiny_runs import CXR_SAMPLE, HIPPOCAMPUS, REPO, ConstantLogits, Threshold, tiny_checkpoint

CFG = REPO / "configs" / "_data"
ROI16 = "data.roi_size=[16,16,16]"


def _same_geometry(written: nib.Nifti1Image, given: nib.Nifti1Image) -> None:
    assert np.array_equal(written.shape[:3], given.shape[:3])
    np.testing.assert_allclose(written.affine, given.affine, rtol=0, atol=1e-6)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(given.affine)
    assert written.header.get_qform(coded=True)[1] == given.header.get_qform(coded=True)[1]
    assert written.header.get_sform(coded=True)[1] == given.header.get_sform(coded=True)[1]


@pytest.fixture(scope="module")
def msd_ckpt(tmp_path_factory):
    """A tiny UNETR on a synthetic 3-class MSD task (LPS files, 1 mm), with the hippocampus recipe."""
    tmp = tmp_path_factory.mktemp("msd")
    root = make_msd(tmp / "task", n=3, size=(16, 16, 12), n_test=2, seed=7)
    return tiny_checkpoint(tmp / "run", str(CFG / "hippocampus.yaml"), [f"data.root={root}", ROI16]), root


def test_real_hippocampus_prediction_has_the_input_geometry(tmp_path, capsys, precision):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"{HIPPOCAMPUS} is absent")
    given = tmp_path / "in" / "hippocampus_001.nii.gz"
    given.parent.mkdir()
    shutil.copy(HIPPOCAMPUS / "imagesTr" / given.name, given)
    ckpt = tiny_checkpoint(tmp_path / "run", str(CFG / "hippocampus.yaml"), [f"data.root={HIPPOCAMPUS}", ROI16])
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(given), "--out", str(out), "--probabilities", "--figures",
                 "eval.overlap=0", f"run.precision={precision}"]) == 0
    assert "hippocampus_001.nii.gz (shape [35, 51, 35]" in capsys.readouterr().out
    ref, pred = nib.load(given), nib.load(out / "hippocampus_001.nii.gz")
    _same_geometry(pred, ref)
    assert np.issubdtype(pred.get_data_dtype(), np.integer)
    labels = np.asanyarray(pred.dataobj)
    assert labels.shape == ref.shape and set(np.unique(labels)) <= {0, 1, 2}
    prob = nib.load(out / "hippocampus_001_probabilities.nii.gz")
    assert prob.shape == (*ref.shape, 3) and prob.get_data_dtype() == np.float32
    np.testing.assert_allclose(prob.affine, ref.affine, atol=1e-6)
    p = np.asanyarray(prob.dataobj)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(p.argmax(-1), labels)  # no resampling here: the argmax is the label map
    assert (out / "figures" / "hippocampus_001.png").stat().st_size > 10_000


def las_ct(shape=(48, 40, 12), spacing=(0.8, 0.8, 3.0)) -> tuple[np.ndarray, np.ndarray]:
    """int16 HU CT in LAS with anisotropic voxels: air, a soft-tissue body (foreground-cropped inside), and a
    bright (200 HU) ellipsoid away from the centre along every axis, so that any flip would miss it."""
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [20.0, -15.0, -18.0]
    image = np.full(shape, -1000, np.int16)
    image[6:42, 5:35, 1:11] = 40
    x, y, z = np.ogrid[:shape[0], :shape[1], :shape[2]]
    image[((x - 15) / 6.5) ** 2 + ((y - 12) / 5.5) ** 2 + ((z - 3) / 2.4) ** 2 <= 1] = 200
    return image, affine


def test_las_anisotropic_volume_resampled_and_cropped_comes_back_on_its_grid(tmp_path, precision):
    root = make_btcv(tmp_path / "btcv", n=2, size=(24, 24, 8), seed=0)  # only for the class names
    image, affine = las_ct()
    assert nib.aff2axcodes(affine) == ("L", "A", "S")
    given = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(given))
    ckpt = tiny_checkpoint(tmp_path / "run", str(CFG / "btcv.yaml"), [f"data.root={root}", ROI16])
    run = load_run(ckpt, [f"run.precision={precision}"])
    assert run.precision == precision and list(run.cfg.data.spacing) == [1.5, 1.5, 2.0] and run.cfg.data.crop_foreground
    out = tmp_path / "out"
    predict_volumes(run, [given], out, probs=True, figures=False)  # the tiny UNETR
    ref = nib.load(given)
    _same_geometry(nib.load(out / "ct.nii.gz"), ref)
    assert np.issubdtype(nib.load(out / "ct.nii.gz").get_data_dtype(), np.integer)
    prob = np.asanyarray(nib.load(out / "ct_probabilities.nii.gz").dataobj)
    assert prob.shape == (*ref.shape, 14)
    np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-4)
    assert (prob[..., 0][image == -1000] == 1.0).mean() > 0.5  # outside the cropped body: background

    # A model with a known answer: class 1 where brighter than 100 HU. Carried back onto the file's grid, its
    # mask must lie on the bright ellipsoid of the file; mirrored along any axis it would miss it.
    run.model = Threshold((100 + 175) / 425)  # 100 HU in the [-175, 250] window
    predict_volumes(run, [given], out, probs=False, figures=False)
    got = np.asanyarray(nib.load(out / "ct.nii.gz").dataobj)
    want = image > 100

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert set(np.unique(got)) == {0, 1} and want.sum() > 300
    assert dice(got == 1, want) > 0.8, dice(got == 1, want)
    for axis in range(3):
        assert dice(got == 1, np.flip(want, axis)) < 0.1, (axis, dice(got == 1, np.flip(want, axis)))


def test_folders_and_msd_test_lists(tmp_path, msd_ckpt, capsys):
    ckpt, root = msd_ckpt
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("case_001.nii.gz", "case_002.nii.gz"):
        shutil.copy(root / "imagesTr" / name, folder / name)
    (folder / "._case_003.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")  # macOS junk: skipped
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(folder), str(root / "dataset.json"), "--out", str(out)]) == 0
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == ["case_001.nii.gz", "case_002.nii.gz", "case_004.nii.gz", "case_005.nii.gz"]
    for name in written:
        given = folder / name if (folder / name).exists() else root / "imagesTs" / name
        _same_geometry(nib.load(out / name), nib.load(given))  # LPS files, reoriented to RAS inside
    assert "case_004.nii.gz" in capsys.readouterr().out


def test_bad_inputs_are_refused_before_any_inference(tmp_path, msd_ckpt, capsys):
    ckpt, root = msd_ckpt
    good = root / "imagesTr" / "case_001.nii.gz"
    out = tmp_path / "out"

    def refused(*inputs) -> str:
        assert main(["predict", str(ckpt), *map(str, inputs), "--out", str(out)]) == 2
        assert not out.exists() or not any(out.iterdir())  # nothing was predicted
        return capsys.readouterr().err

    missing = tmp_path / "missing.nii.gz"
    assert f"{missing}: no such file or folder" in refused(good, missing)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    assert f"{broken}: cannot be read as NIfTI" in refused(good, broken)
    two = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), str(two))
    assert f"{two}: 2 channel(s), the model takes 1" in refused(good, two)
    text = tmp_path / "scan.txt"
    text.write_text("x")
    assert f"{text}: not a NIfTI file" in refused(text)
    (tmp_path / "other").mkdir()
    shutil.copy(good, tmp_path / "other" / good.name)
    assert "has the same name as" in refused(good, tmp_path / "other" / good.name)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: folder holds no" in refused(empty)


def test_brats_regions_are_written_back_as_msd_labels():
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]).reshape(2, 2, 2)
    for et in (3, 2):
        regions = brats_regions(labels, et_label=et) > 0.5  # [3, 2, 2, 2] TC, WT, ET
        back = regions_to_labels(regions, et)[0]
        assert back.dtype == torch.uint8 and torch.equal(back.long(), labels)


def test_brats_4d_input_gives_a_3d_msd_label_map_on_its_grid(tmp_path):
    root = make_brats(tmp_path / "brats", n=4, size=(20, 22, 16), seed=6)
    ckpt = tiny_checkpoint(tmp_path / "run", str(CFG / "brats.yaml"), [f"data.root={root}", ROI16])
    run = load_run(ckpt)
    run.model = ConstantLogits([5.0, 5.0, -5.0])  # TC and WT everywhere, ET nowhere
    given = root / "imagesTr" / "BRATS_001.nii.gz"
    predict_volumes(run, [given], tmp_path / "out", probs=True, figures=True)
    ref = nib.load(given)
    assert ref.shape == (20, 22, 16, 4)
    pred = nib.load(tmp_path / "out" / "BRATS_001.nii.gz")
    _same_geometry(pred, ref)
    labels = np.asanyarray(pred.dataobj)
    assert labels.shape == ref.shape[:3] and set(np.unique(labels)) == {0, 2}  # 2: tumour core, not enhancing
    brain = np.asanyarray(ref.dataobj)[..., 0] > 0
    assert (labels[brain] == 2).all()  # the foreground crop covers the brain; outside it, background
    prob = np.asanyarray(nib.load(tmp_path / "out" / "BRATS_001_probabilities.nii.gz").dataobj)
    assert prob.shape == (*ref.shape[:3], 3)
    np.testing.assert_allclose(prob[brain], np.broadcast_to(torch.sigmoid(torch.tensor([5.0, 5.0, -5.0])).numpy(),
                                                            prob[brain].shape), atol=1e-5)
    assert (tmp_path / "out" / "figures" / "BRATS_001.png").is_file()


def test_classification_writes_one_row_per_image(tmp_path, capsys):
    if not CXR_SAMPLE.is_dir():
        pytest.skip(f"{CXR_SAMPLE} is absent")
    ckpt = tiny_checkpoint(tmp_path / "run", str(CFG / "cxr14_sample.yaml"),
                           [f"data.root={CXR_SAMPLE}", "data.image_size=40", "data.crop_size=32"])
    pngs = sorted((CXR_SAMPLE / "images_001" / "images").glob("*.png"))[:3]
    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(pngs[0], folder / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), *map(str, pngs), str(folder), "--out", str(out)]) == 0
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "image" and len(rows[0]) == 15 and "Effusion" in rows[0]
    assert [r[0] for r in rows[1:]] == [*map(str, pngs), str(folder / "a.png")]
    p = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    assert p.shape == (4, 14) and ((p > 0) & (p < 1)).all()
    np.testing.assert_allclose(p[3], p[0], atol=1e-6)  # the same picture twice
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(pngs[0].read_bytes()[:2000])
    assert main(["predict", str(ckpt), str(pngs[0]), str(truncated), "--out", str(tmp_path / "o2")]) == 2
    assert f"{truncated}: unreadable image" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
