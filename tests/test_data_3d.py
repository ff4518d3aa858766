"""3D data: datalists, BTCV splits, BraTS regions, the paper's preprocessing, inversion, splits, loaders."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import RandRotate90d, RandScaleIntensityd, RandShiftIntensityd

from selfmedmae.config import load_config
from selfmedmae.data.brats import BratsRegionsd, brats_regions
from selfmedmae.data.btcv import PAPER_ORGANS, published_split, read_btcv
from selfmedmae.data.csv_folder import read_csv_folder
from selfmedmae.data.decathlon import read_msd
from selfmedmae.data import build
from selfmedmae.data.splits import seeded_split
from selfmedmae.data.synthetic import make_brats, make_btcv
from selfmedmae.data.transforms_3d import eval_transforms, invert_to_input, random_suffix, train_transforms
from selfmedmae.errors import UserError

ROI = [16, 16, 16]


def cfg_for(*overrides):
    return load_config(None, [f"data.roi_size={ROI}", "data.num_workers=0", *overrides])


@pytest.fixture(scope="module")
def btcv_root(tmp_path_factory):
    return make_btcv(tmp_path_factory.mktemp("btcv"), n=5, size=(40, 40, 12), seed=1)


@pytest.fixture(scope="module")
def brats_root(tmp_path_factory):
    return make_brats(tmp_path_factory.mktemp("brats"), n=4, size=(32, 32, 24), seed=2)


def save(array, affine, path):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


# --- the BTCV recipe pinned on a volume with a known affine ------------------------------------------

def test_ct_window_maps_hu_to_unit_range_and_clips(tmp_path):
    # Every z slice holds one HU value (z is not flipped by LAS -> RAS, so slices keep their index).
    hu = np.array([-1000, -175, 38, 250, 1000], np.int16)
    image = np.broadcast_to(hu, (6, 6, 5)).copy()
    item = {"image": save(image, np.diag([-1.0, 1.0, 1.0, 1.0]), tmp_path / "ct.nii.gz")}
    cfg = cfg_for("data.spacing=null", "data.crop_foreground=false").data
    out = eval_transforms(cfg, with_label=False)(item)["image"]
    got = out[0, 0, 0, :].numpy()
    np.testing.assert_allclose(got, [0.0, 0.0, (38 + 175) / 425, 1.0, 1.0], atol=1e-6)
    assert out.dtype == torch.float32 and float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_btcv_spacing_resamples_to_1p5_1p5_2_in_ras(tmp_path):
    affine = np.diag([-0.75, 0.75, 4.0, 1.0])  # LAS, anisotropic: 30 x 30 x 40 mm
    label = np.zeros((40, 40, 10), np.uint8)
    label[10:30, 10:30, 3:7] = 6
    label[12:16, 12:16, 3:7] = 11
    image = np.where(label > 0, 60, -1000).astype(np.int16)
    item = {"image": save(image, affine, tmp_path / "img0001.nii.gz"),
            "label": save(label, affine, tmp_path / "label0001.nii.gz")}
    cfg = cfg_for("data.crop_foreground=false").data  # defaults: RAS, 1.5 x 1.5 x 2.0, ct window
    out = eval_transforms(cfg)(item)
    img, lab = out["image"], out["label"]
    np.testing.assert_allclose(img.pixdim.numpy(), [1.5, 1.5, 2.0])
    assert nib.aff2axcodes(img.affine.numpy()) == ("R", "A", "S")
    assert abs(img.shape[1] - 20) <= 1 and abs(img.shape[2] - 20) <= 1 and abs(img.shape[3] - 20) <= 1
    assert lab.shape == img.shape and lab.dtype == torch.int64
    assert set(torch.unique(lab).tolist()) == {0, 6, 11}  # nearest: no interpolated label values
    assert float(img.min()) == 0.0 and float(img.max()) == pytest.approx((60 + 175) / 425, abs=1e-5)


def test_foreground_crop_and_padding_to_the_crop_size(tmp_path):
    image = np.full((20, 20, 10), -1000, np.int16)
    image[5:15, 5:15, 2:8] = 40
    label = np.zeros_like(image, np.uint8)
    label[8:12, 8:12, 4:6] = 1
    item = {"image": save(image, np.eye(4), tmp_path / "a.nii.gz"),
            "label": save(label, np.eye(4), tmp_path / "b.nii.gz")}
    cfg = cfg_for("data.spacing=null").data
    assert eval_transforms(cfg)(item)["image"].shape == (1, 10, 10, 6)  # cropped to the body
    crops = train_transforms(cfg, "finetune")(item)
    assert len(crops) == cfg.num_samples
    assert all(c["image"].shape == (1, *ROI) and c["label"].shape == (1, *ROI) for c in crops)  # padded


def test_pretrain_recipe_has_no_rot90_and_no_intensity_augmentation():
    cfg = cfg_for().data
    kinds = lambda ts: {type(t) for t in ts}  # noqa: E731
    finetune, pretrain = kinds(random_suffix(cfg, "finetune")), kinds(random_suffix(cfg, "pretrain"))
    for cls in (RandRotate90d, RandScaleIntensityd, RandShiftIntensityd):
        assert cls in finetune and cls not in pretrain
    with pytest.raises(ValueError, match="mode"):
        random_suffix(cfg, "linear-probe")


def train_dataset(cfg, mode: str, split: str = "train"):
    """The training dataset a stage builds: ``pretrain`` (every image pre-training sees) or ``finetune``."""
    return build(cfg.data).dataset("pretrain" if mode == "pretrain" else split, train=True)


def _first_batch(cfg, mode: str) -> dict:
    """The first batch of the training loader a stage would build (the engine's, one process)."""
    from monai.data import list_data_collate

    from selfmedmae.runtime.distributed import Dist
    from selfmedmae.train.engine import make_loader

    loader = make_loader(train_dataset(cfg, mode), cfg.train.batch_size, Dist(), 0, 0, list_data_collate)
    return next(iter(loader))


def test_btcv_train_batches(btcv_root):
    cfg = cfg_for("data.format=btcv", f"data.root={btcv_root}", "data.dataset_json=transunet.json",
                  "train.batch_size=2", "data.val_fraction=0")
    batch = _first_batch(cfg, "finetune")
    n = 2 * cfg.data.num_samples
    assert batch["image"].shape == (n, 1, *ROI) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (n, 1, *ROI) and batch["label"].dtype == torch.int64
    assert int(batch["label"].max()) <= 13 and int(batch["label"].min()) >= 0
    pre = _first_batch(cfg, "pretrain")
    assert set(pre) == {"id", "image"} and pre["image"].shape == (n, 1, *ROI)
    assert 0.0 <= float(pre["image"].min()) and float(pre["image"].max()) <= 1.0


def test_invert_to_input_restores_the_file_grid(btcv_root):
    cfg = cfg_for("data.format=btcv", f"data.root={btcv_root}").data
    item = build(cfg).items("all")[0]
    transforms = eval_transforms(cfg)
    data = transforms(item)
    one_hot = torch.nn.functional.one_hot(data["label"][0], 14).permute(3, 0, 1, 2).float()  # [14, *S]
    back = invert_to_input(one_hot[None], data, transforms)
    original = nib.load(item["label"])
    assert tuple(back.shape) == (14, *original.shape)
    np.testing.assert_allclose(back.affine.numpy(), original.affine, atol=1e-5)
    agree = (back.argmax(0).numpy() == np.asanyarray(original.dataobj)).mean()
    assert agree > 0.95, agree  # resampled there and back with nearest neighbour


# --- BraTS regions ------------------------------------------------------------------------------------

LABELS = np.array([0, 1, 2, 3, 3, 2, 1, 0], np.uint8).reshape(2, 2, 2)


@pytest.mark.parametrize("et_label, et", [(3, [0, 0, 0, 1, 1, 0, 0, 0]), (2, [0, 0, 1, 0, 0, 1, 0, 0])])
def test_brats_regions_against_hand_built_labels(et_label, et):
    tc = [0, 0, 1, 1, 1, 1, 0, 0]  # labels 2 and 3
    wt = [0, 1, 1, 1, 1, 1, 1, 0]  # labels 1, 2, 3
    for label in (LABELS, torch.as_tensor(LABELS)[None].float()):
        regions = np.asarray(brats_regions(label, et_label))
        assert regions.shape == (3, 2, 2, 2) and regions.dtype == np.float32
        np.testing.assert_array_equal(regions.reshape(3, -1), [tc, wt, et])
    out = BratsRegionsd("label", et_label=et_label)({"label": torch.as_tensor(LABELS)[None]})["label"]
    np.testing.assert_array_equal(out.reshape(3, -1).numpy(), [tc, wt, et])


def test_brats_rejects_other_et_labels():
    with pytest.raises(ValueError, match="brats_et_label"):
        BratsRegionsd("label", et_label=4)


def test_brats_pipeline(brats_root):
    cfg = cfg_for("data.format=brats", f"data.root={brats_root}", "data.in_chans=4", "data.intensity=nonzero",
                  "data.spacing=[1,1,1]", "train.batch_size=1")
    batch = _first_batch(cfg, "finetune")
    lab = batch["label"]
    assert batch["image"].shape == (4, 4, *ROI) and lab.shape == (4, 3, *ROI) and lab.dtype == torch.float32
    tc, wt, et = lab[:, 0] > 0, lab[:, 1] > 0, lab[:, 2] > 0
    assert bool((et <= tc).all()) and bool((tc <= wt).all()) and bool(wt.any())
    val = build(cfg.data).dataset("all")[0]
    img = val["image"]
    assert val["label"].shape[0] == 3
    for c in range(4):  # z-score over the non-zero voxels of each channel; zeros stay zero
        nz = img[c][img[c] != 0]
        assert abs(float(nz.mean())) < 1e-3 and abs(float(nz.std(unbiased=False)) - 1) < 1e-3
    assert build(cfg.data).labels.names == ["TC", "WT", "ET"]


def test_percentile_mode_on_real_mri():
    cfg = cfg_for("data.spacing=null", "data.intensity=percentile", "data.crop_foreground=false").data
    root = Path(__file__).resolve().parents[1] / "data" / "Task04_Hippocampus"
    item = read_msd(root).cases[0]
    raw = np.asanyarray(nib.load(item["image"]).dataobj).astype(np.float64)
    out = eval_transforms(cfg)(item)["image"].numpy()
    lo, hi = np.percentile(raw, [0.5, 99.5])
    assert out.min() == 0.0 and out.max() == 1.0
    assert out.mean() == pytest.approx(np.clip((raw - lo) / (hi - lo), 0, 1).mean(), abs=1e-4)


# --- datalists and splits -----------------------------------------------------------------------------

def test_msd_datalist_keeps_order_resolves_prefixes_and_ignores_junk(brats_root):
    dl = read_msd(brats_root)
    listed = json.loads((brats_root / "dataset.json").read_text())["training"]
    assert [c["id"] for c in dl.cases] == [Path(e["image"]).name[:-7] for e in listed]
    assert all(Path(c["image"]).is_file() and "./" not in c["image"] for c in dl.cases)
    assert len(dl.unlabelled) == 1 and "label" not in dl.unlabelled[0]
    assert not any(Path(c["image"]).name.startswith("._") for c in dl.cases + dl.unlabelled)
    assert dl.labels == ["background", "edema", "non-enhancing tumor", "enhancing tumour"] and dl.channels == 4


def test_btcv_published_splits_and_organs():
    tu, un = published_split("transunet"), published_split("unetr")
    every = {f"{i:04d}" for i in list(range(1, 11)) + list(range(21, 41))}
    assert (len(tu["train"]), len(tu["test"]), len(un["train"]), len(un["test"])) == (18, 12, 24, 6)
    for split in (tu, un):
        assert not set(split["train"]) & set(split["test"]) and set(split["train"]) | set(split["test"]) == every
    assert tu["test"][:3] == ["0008", "0022", "0038"] and un["test"] == [f"00{i}" for i in range(35, 41)]
    assert PAPER_ORGANS == (1, 2, 3, 4, 6, 7, 8, 11)


def test_btcv_split_test_is_published_and_val_comes_from_train(btcv_root):
    cfg = cfg_for("data.format=btcv", f"data.root={btcv_root}", "data.dataset_json=transunet.json",
                  "data.val_fraction=0.5").data
    data = build(cfg)
    ids = {k: [c["id"] for c in data.items(k)] for k in ("train", "val", "test")}
    tu = published_split("transunet")
    assert set(ids["test"]) <= set(tu["test"]) and ids["test"]
    assert set(ids["train"]) | set(ids["val"]) <= set(tu["train"]) and ids["val"] and ids["train"]


def test_btcv_without_json_builds_paths_from_ids(tmp_path, btcv_root):
    raw = tmp_path / "RawData"
    for sub, dst in (("imagesTr", "Training/img"), ("labelsTr", "Training/label")):
        (raw / dst).mkdir(parents=True)
        for f in (btcv_root / sub).iterdir():
            (raw / dst / f.name).write_bytes(f.read_bytes())
    dl = read_btcv(raw, "transunet.json")
    assert len(dl.cases) == 30 and dl.cases[0]["image"].endswith("Training/img/img0005.nii.gz")
    assert sum(Path(c["image"]).is_file() for c in dl.cases) == 5


def test_seeded_split_rule():
    ids = [f"c{i:02d}" for i in range(10)]
    a = seeded_split(ids, 0.2, 0.3, seed=0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    assert seeded_split(list(reversed(ids)), 0.2, 0.3, seed=0) == a  # independent of list order
    assert seeded_split(ids, 0.2, 0.3, seed=1) != a
    assert sorted(sum(a.values(), [])) == ids
    assert [len(seeded_split(ids[:3], 0.1, 0.1, 0)[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_split_file_all_and_splits_json(tmp_path, brats_root):
    (brats_root / "my_split.json").write_text(json.dumps(
        {"train": ["BRATS_001", "./imagesTr/BRATS_002.nii.gz"], "val": ["BRATS_003"], "test": ["BRATS_004"]}))
    cfg = cfg_for("data.format=brats", f"data.root={brats_root}", "data.split_file=my_split.json").data
    data = build(cfg, tmp_path / "run")
    assert [c["id"] for c in data.items("train")] == ["BRATS_001", "BRATS_002"]
    assert len(data.items("all")) == 4
    data.write_splits()
    record = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert record["val"] == ["BRATS_003"] and record["test"] == ["BRATS_004"] and "split file" in record["rule"]
    with pytest.raises(UserError, match="split"):
        data.items("holdout")


def test_csv_folder(tmp_path, brats_root):
    rows = ["image,label", "imagesTr/BRATS_001.nii.gz,labelsTr/BRATS_001.nii.gz", "imagesTs/BRATS_005.nii.gz,"]
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp_path / sub).symlink_to(brats_root / sub)
    dl = read_csv_folder(tmp_path, "cases.csv", labels=["bg", "a", "b", "c"])
    assert not dl.problems and [c["id"] for c in dl.cases] == ["BRATS_001"] and len(dl.unlabelled) == 1
    assert Path(dl.cases[0]["label"]).is_file()


@pytest.mark.parametrize("fmt", ["btcv", "brats"])
def test_training_never_writes_into_the_cache(fmt, btcv_root, brats_root):
    # The training cache is handed out without a copy; the random suffix must leave it untouched.
    extra = ["data.in_chans=4", "data.intensity=nonzero", "data.spacing=[1,1,1]"] if fmt == "brats" else []
    root = brats_root if fmt == "brats" else btcv_root
    cfg = cfg_for(f"data.format={fmt}", f"data.root={root}", "data.dataset_json=transunet.json" if fmt == "btcv"
                  else "data.dataset_json=dataset.json", "data.intensity_prob=1.0", *extra)
    dataset = train_dataset(cfg, "finetune", split="all")
    cached = dataset._cache[0]
    before = {k: v.clone() for k, v in cached.items() if isinstance(v, torch.Tensor)}
    n_ops = len(cached["image"].applied_operations)
    for _ in range(5):
        crops = dataset[0]
        assert "label_fg_indices" not in crops[0] and crops[0]["image"].shape == (cfg.data.in_chans, *ROI)
    for key, value in before.items():
        assert torch.equal(cached[key], value), key
    assert len(cached["image"].applied_operations) == n_ops


def test_extra_unlabelled_images_join_pretraining_only(brats_root):
    cfg = cfg_for("data.format=brats", f"data.root={brats_root}", "data.in_chans=4", "data.intensity=nonzero",
                  "data.spacing=[1,1,1]", "data.extra_unlabelled=dataset.json")
    pre = train_dataset(cfg, "pretrain")
    # the train cases + the MSD test image; the json lists all 4 labelled cases again, but the val and test
    # cases stay out of pre-training (data.pretrain_on=train) and an image listed twice counts once
    assert len(pre) == len(build(cfg.data).items("train")) + 1
    assert set(pre[len(pre) - 1][0]) == {"id", "image"} and pre[len(pre) - 1][0]["image"].shape == (4, *ROI)
    assert len(train_dataset(cfg, "finetune")) == len(build(cfg.data).items("train"))
