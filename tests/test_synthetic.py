"""Synthetic 3D data: written in the real formats (the layouts of docs/own-data-3d.md), seeded, readable by MONAI."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from selfmedmae.data.btcv import published_split, read_btcv
from selfmedmae.data.decathlon import read_msd
from selfmedmae.data.synthetic import main, make_brats, make_btcv, make_msd

SIZE = (24, 24, 8)


def arrays(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img


def test_btcv_like_volumes(tmp_path):
    root = make_btcv(tmp_path, n=4, size=SIZE, seed=3)
    dl = read_btcv(root, "transunet.json")
    assert [c["id"] for c in dl.cases] == ["0005", "0006", "0002", "0001"] and not dl.problems  # JSON order
    for case in dl.cases:
        image, img = arrays(case["image"])
        label, lab = arrays(case["label"])
        assert image.shape == SIZE and image.dtype == np.int16 and label.dtype == np.uint8
        assert nib.aff2axcodes(img.affine) == ("L", "A", "S") and img.affine[0, 0] < 0
        zooms = img.header.get_zooms()
        assert 0.6 <= zooms[0] == zooms[1] <= 0.98 and zooms[2] in (2.5, 3.0, 5.0)
        np.testing.assert_array_equal(lab.affine, img.affine)
        assert image.min() == -1024 and image.max() > 100  # air and contrast-enhanced organs, in HU
        assert set(np.unique(label)) <= set(range(14)) and len(np.unique(label)) >= 8
    tu = json.loads((root / "transunet.json").read_text())
    assert [e["image"] for e in tu["validation"]] == ["imagesTr/img0002.nii.gz", "imagesTr/img0001.nii.gz"]
    assert set(published_split()["test"]) >= {"0001", "0002"}
    unetr = load_decathlon_datalist(str(root / "dataset_0.json"), True, "training")
    assert len(unetr) == 4 and all(json.dumps(e).count("img00") == 1 for e in unetr)


def test_brats_like_task(tmp_path):
    root = make_brats(tmp_path, n=4, size=SIZE, seed=4)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert meta["labels"]["2"] == "non-enhancing tumor" and meta["tensorImageSize"] == "4D"
    names = [e["image"] for e in meta["training"]]
    assert names != sorted(names) and all(n.startswith("./imagesTr/BRATS_") for n in names)
    assert meta["test"] == ["./imagesTs/BRATS_005.nii.gz"]
    assert (root / "imagesTr" / "._BRATS_001.nii.gz").is_file()  # the macOS junk, never listed
    dl = read_msd(root)
    assert len(dl.cases) == 4 and len(dl.unlabelled) == 1 and not dl.problems
    for case in dl.cases:
        image, _ = arrays(case["image"])
        label, _ = arrays(case["label"])
        assert image.shape == SIZE + (4,) and image.dtype == np.float32
        assert set(np.unique(label)) == {0, 1, 2, 3}
        assert (image[label > 0] > 0).all() and (image == 0).any()  # tumour inside a brain on zeros
        # nested: label 3 is surrounded by 2, which is surrounded by 1 (bounding boxes nest)
        boxes = [np.argwhere(label >= v) for v in (1, 2, 3)]
        for outer, inner in zip(boxes, boxes[1:]):
            assert (outer.min(0) <= inner.min(0)).all() and (outer.max(0) >= inner.max(0)).all()
    assert len(load_decathlon_datalist(str(root / "dataset.json"), True, "training")) == 4


def test_seed_decides_the_data(tmp_path):
    a = arrays(make_msd(tmp_path / "a", n=1, size=SIZE, seed=5, n_test=0) / "imagesTr" / "case_001.nii.gz")[0]
    b = arrays(make_msd(tmp_path / "b", n=1, size=SIZE, seed=5, n_test=0) / "imagesTr" / "case_001.nii.gz")[0]
    c = arrays(make_msd(tmp_path / "c", n=1, size=SIZE, seed=6, n_test=0) / "imagesTr" / "case_001.nii.gz")[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_command_line(tmp_path, capsys):
    assert main(["msd", str(tmp_path / "t"), "--n", "2", "--size", "12", "12", "6", "--seed", "1"]) == 0
    assert "2 labelled cases" in capsys.readouterr().out
    dl = read_msd(tmp_path / "t")
    assert len(dl.cases) == 2 and arrays(dl.cases[0]["image"])[0].shape == (12, 12, 6)
