"""Pre-training's plain-torch crops (selfmedmae.data.fast_crops) against the MONAI chain they stand in for:
the same crops, flips and random streams, item by item, through the seeded dataset training uses."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose

from selfmedmae.config import load_config
from selfmedmae.data import build
from selfmedmae.data.fast_crops import LabelGuidedCropsFlips, seed_transform
from selfmedmae.data.transforms_3d import PlainTensorSteps, deterministic_prefix, random_suffix, train_transforms
from selfmedmae.train.rng import SeededDataset

HIPPOCAMPUS = Path(__file__).resolve().parents[1] / "data" / "Task04_Hippocampus"


def monai_chain(data_cfg) -> Compose:
    """Pre-training's transforms as MONAI alone builds them (the reference)."""
    return Compose(deterministic_prefix(data_cfg, ("image", "label"), crop_indices=True) +
                   [PlainTensorSteps(random_suffix(data_cfg, "pretrain", labelled=True))])


def pair(data_cfg, items):
    fast = CacheDataset(items, train_transforms(data_cfg, "pretrain"), progress=False, copy_cache=False)
    ref = CacheDataset(items, monai_chain(data_cfg), progress=False, copy_cache=False)
    assert isinstance(fast.transform.transforms[-1], LabelGuidedCropsFlips)
    return SeededDataset(fast, 7), SeededDataset(ref, 7)


def assert_same_items(fast, ref, epochs=range(3)):
    for epoch in epochs:
        for index in range(len(fast)):
            a, b = fast[(epoch, index)], ref[(epoch, index)]
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert set(x) == set(y)
                assert x["image"].dtype == y["image"].dtype == torch.float32
                assert type(x["image"]) is torch.Tensor and x["image"].is_contiguous()
                assert torch.equal(x["image"], y["image"]), (epoch, index)
                assert x["id"] == y["id"]


def test_the_same_crops_as_monai_on_the_real_hippocampus_sample():
    cfg = load_config(HIPPOCAMPUS.parents[1] / "configs" / "hippocampus" / "pretrain.yaml",
                      ["data.num_workers=0", "data.num_samples=3", "data.flip_prob=0.5"]).data
    items = build(cfg).items("pretrain")[:6]
    fast, ref = pair(cfg, items)
    assert_same_items(fast, ref)
    # the crops differ from item to item and epoch to epoch (the check above is not comparing constants)
    assert not torch.equal(fast[(0, 0)][0]["image"], fast[(1, 0)][0]["image"])


def _volume(tmp_path, name, shape, label_value, seed):
    rng = np.random.default_rng(seed)
    image = rng.uniform(1, 100, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    if label_value:
        label[2:6, 3:9, 1:5] = label_value
    paths = {}
    for key, array in (("image", image), ("label", label)):
        path = tmp_path / f"{name}_{key}.nii.gz"
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
        paths[key] = str(path)
    return {**paths, "id": name}


@pytest.mark.parametrize("pos_neg", [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (2.0, 1.0)])
def test_the_same_crops_as_monai_at_the_edges(tmp_path, pos_neg):
    """Volumes smaller than the crop (padded), exactly its size, without foreground, odd shapes."""
    cfg = load_config(None, ["data.roi_size=[8,8,8]", "data.num_workers=0", "data.num_samples=2",
                             f"data.pos_neg=[{pos_neg[0]},{pos_neg[1]}]", "data.flip_prob=0.5",
                             "data.intensity=none"]).data
    items = [_volume(tmp_path, "small", (6, 9, 7), 1, 0), _volume(tmp_path, "exact", (8, 8, 8), 2, 1),
             _volume(tmp_path, "empty", (11, 13, 9), 0, 2), _volume(tmp_path, "odd", (15, 10, 21), 1, 3)]
    fast, ref = pair(cfg, items)
    assert_same_items(fast, ref)


def test_seed_transform_matches_set_random_state():
    """Re-seeding in place gives the streams of MONAI's own seeding."""
    cfg = load_config(None, ["data.roi_size=[8,8,8]"]).data
    a, b = Compose(random_suffix(cfg, "finetune")), Compose(random_suffix(cfg, "finetune"))
    for seed in (0, 1, 2**31 - 2):
        a.set_random_state(seed=seed)
        seed_transform(b, seed)
        for x, y in zip(a.transforms, b.transforms):
            if hasattr(x, "R"):
                assert x.R.randint(2**31) == y.R.randint(2**31)


def test_late_intensity_keeps_the_monai_chain():
    """Non-zero z-scoring comes after the crops; that recipe keeps MONAI's steps."""
    cfg = load_config(None, ["data.roi_size=[8,8,8]", "data.intensity=nonzero"]).data
    assert isinstance(train_transforms(cfg, "pretrain").transforms[-1], PlainTensorSteps)
