"""data.augment: nnunet (nnU-Net v2's fine-tuning augmentations) beside the paper's recipe, which stays as it was."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import (
    Compose, EnsureTyped, FgBgToIndicesd, RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised,
    RandGaussianSmoothd, RandRotate90d, RandScaleIntensityd, RandScaleIntensityFixedMeand, RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

from selfmedmae.config import ConfigError, load_config
from selfmedmae.preflight import validate
from selfmedmae.data.nnunet_3d import RandGammad
from selfmedmae.data.nnunet_spatial import RandCropRotateScaled, margins, nnunet_matrix
from selfmedmae.data.transforms_3d import Detachd, PlainTensorSteps, random_suffix
from selfmedmae.train.rng import SeededDataset

ROI = [16, 16, 16]
DEMO = Path(__file__).resolve().parents[1] / "configs" / "hippocampus" / "finetune.yaml"
INDEX = ("label_fg_indices", "label_bg_indices")


def data_cfg(*overrides):
    return load_config(None, [f"data.roi_size={ROI}", "data.num_workers=0", *overrides]).data


def volume(shape=(30, 34, 28), seed=0) -> dict:
    """A cached training item as the deterministic prefix leaves it: image float32, label uint8, indices."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, *shape, generator=g) + 0.1  # > 0 everywhere: every background voxel is a candidate
    label = torch.zeros(1, *shape, dtype=torch.uint8)
    label[:, 8:20, 10:22, 6:18] = 1
    label[:, 12:16, 14:18, 10:14] = 2
    return FgBgToIndicesd("label", image_key="image", image_threshold=0.0)({"image": image, "label": label,
                                                                             "id": "case"})


def crops(steps, item, seed):
    return steps.set_random_state(seed=seed)(item)


def test_paper_is_the_default_and_its_steps_are_unchanged():
    cfg = data_cfg()
    assert cfg.augment == "paper"
    assert [type(t) for t in random_suffix(cfg, "finetune")] == [
        RandCropByPosNegLabeld, Detachd, RandFlipd, RandFlipd, RandFlipd, RandRotate90d, RandScaleIntensityd,
        RandShiftIntensityd, EnsureTyped, EnsureTyped]


def test_pretraining_ignores_the_option():
    paper, nnunet = random_suffix(data_cfg(), "pretrain"), random_suffix(data_cfg("data.augment=nnunet"), "pretrain")
    assert [type(t) for t in paper] == [type(t) for t in nnunet]


def test_nnunet_steps_in_nnunets_order_with_its_probabilities():
    steps = random_suffix(data_cfg("data.augment=nnunet"), "finetune")
    assert [type(t) for t in steps] == [
        RandCropRotateScaled, RandGaussianNoised, RandGaussianSmoothd, RandScaleIntensityd,
        RandScaleIntensityFixedMeand, RandSimulateLowResolutiond, RandGammad, RandGammad, RandFlipd, RandFlipd,
        RandFlipd, EnsureTyped, EnsureTyped]
    crop = steps[0]
    assert (crop.p_rotation, crop.p_scaling, crop.scaling) == (0.2, 0.2, (0.7, 1.4))
    assert math.isclose(crop.rotation, math.radians(30))
    assert [t.prob for t in steps[1:8]] == pytest.approx([0.1, 0.1, 0.15, 0.15, 0.125, 0.1, 0.3])
    assert [steps[6].adjust.invert_image, steps[7].adjust.invert_image] == [True, False]
    assert [t.prob for t in steps[8:11]] == [0.5] * 3
    # only the crop and the mirrors touch the label
    assert all(tuple(t.keys) == ("image",) for t in steps[1:8])
    assert all(tuple(t.keys) == ("image", "label") for t in steps[8:11])


def test_nnunet_needs_labels():
    with pytest.raises(ValueError, match="data.augment"):
        random_suffix(data_cfg("data.augment=nnunet"), "finetune", labelled=False)


def test_bad_value_is_one_line_naming_the_key():
    cfg = load_config(DEMO, ["data.augment=heavy"])
    with pytest.raises(ConfigError, match=r"^data\.augment: 'heavy' is not one of paper, nnunet$"):
        validate(cfg, "check-data")


def test_batches_are_typed_and_labels_keep_their_values():
    steps = PlainTensorSteps(random_suffix(data_cfg("data.augment=nnunet", "data.num_samples=3"), "finetune"))
    for seed in range(6):
        out = crops(steps, volume(), seed)
        assert len(out) == 3 and all(set(o) == {"id", "image", "label"} for o in out)
        for o in out:
            assert o["image"].shape == (1, *ROI) and o["image"].dtype == torch.float32
            assert o["label"].shape == (1, *ROI) and o["label"].dtype == torch.int64
            assert set(o["label"].unique().tolist()) <= {0, 1, 2}


def test_same_item_seed_and_epoch_give_the_same_crops():
    steps = PlainTensorSteps(random_suffix(data_cfg("data.augment=nnunet", "data.num_samples=2"), "finetune"))
    seeded = SeededDataset(Dataset([volume()], transform=steps), seed=3)
    first, again, later = seeded[(0, 0)], seeded[(0, 0)], seeded[(1, 0)]
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not all(torch.equal(a["image"], c["image"]) for a, c in zip(first, later))


def test_without_rotation_or_scaling_the_crops_are_monais_pos_neg_crops():
    ours = RandCropRotateScaled(["image", "label"], "label", ROI, num_samples=4, image_key="image",
                                fg_indices_key=INDEX[0], bg_indices_key=INDEX[1], p_rotation=0, p_scaling=0)
    monai = RandCropByPosNegLabeld(["image", "label"], "label", ROI, num_samples=4, image_key="image",
                                   image_threshold=0.0, fg_indices_key=INDEX[0], bg_indices_key=INDEX[1])
    for seed in range(3):
        a, b = ours.set_random_state(seed=seed)(volume()), monai.set_random_state(seed=seed)(volume())
        for x, y in zip(a, b):
            assert torch.equal(x["image"], y["image"].as_tensor()) and torch.equal(x["label"], y["label"].as_tensor())
            assert x["label"].dtype == torch.uint8 and set(x) == {"id", "image", "label"}


def crop_transform(**kw) -> RandCropRotateScaled:
    return RandCropRotateScaled(["image", "label"], "label", ROI, image_key="image", **kw)


def test_a_quarter_turn_about_the_centre_is_rot90_of_the_plain_crop():
    item = volume()
    vol = torch.arange(item["image"].numel(), dtype=torch.float32).reshape(item["image"].shape)
    t, centre = crop_transform(), [15, 17, 14]
    plain = t.sample(vol, centre, None, "nearest")
    turned = t.sample(vol, centre, nnunet_matrix([math.pi / 2, 0, 0], 1.0), "nearest")
    assert not torch.equal(turned, plain)
    assert any(torch.equal(turned, torch.rot90(plain, k, dims=(2, 3))) for k in (1, -1))


def test_rotated_and_scaled_crops_take_context_instead_of_zeros():
    # a volume of ones much larger than the crop: any zero would be padding inside the volume
    ones = torch.ones(1, 64, 64, 64)
    t = crop_transform()
    for angles, scale in [([0.5, -0.5, 0.5], 1.4), ([-0.52, 0.52, -0.52], 1.0), ([0, 0, 0], 0.7)]:
        out = t.sample(ones, [32, 32, 32], nnunet_matrix(angles, scale), "bilinear")
        assert out.shape == (1, *ROI) and float(out.min()) > 1 - 1e-4
    assert margins(np.eye(3), ROI) == [1, 1, 1]  # no rotation, no scaling: only the interpolation's voxel
    assert min(margins(nnunet_matrix([0.5, 0.5, 0.5], 1.4), ROI)) > 4


def test_scaling_above_one_shrinks_objects_as_in_nnunet():
    label = torch.zeros(1, 48, 48, 48, dtype=torch.uint8)
    label[:, 20:28, 20:28, 20:28] = 1
    t = crop_transform()
    sizes = {s: int(t.sample(label, [24, 24, 24], nnunet_matrix([0, 0, 0], s), "nearest").sum()) for s in (0.7, 1.4)}
    assert sizes[0.7] > 8 ** 3 > sizes[1.4] > 0


def test_image_and_label_move_together_and_labels_stay_integers():
    item = volume()
    item["image"] = item["label"].float()  # the image is the label: nearest on both must give the same map
    t = crop_transform(num_samples=4, modes=("nearest", "nearest"), p_rotation=1, p_scaling=1,
                       fg_indices_key=INDEX[0], bg_indices_key=INDEX[1])
    for out in t.set_random_state(seed=5)(item):
        assert out["label"].dtype == torch.uint8 and set(out["label"].unique().tolist()) <= {0, 1, 2}
        assert torch.equal(out["image"], out["label"].float())


def test_gamma_draws_each_channel_as_bgcontrast_and_keeps_its_statistics():
    t = RandGammad(["image"], prob=1.0).set_random_state(seed=0)
    draws = np.array([t.draw_gamma() for _ in range(4000)])
    assert draws.min() >= 0.7 and draws.max() <= 1.5 and abs((draws < 1).mean() - 0.5) < 0.03
    image = torch.rand(2, 8, 8, 8) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1)  # [C, *S], channels apart
    out = t({"image": image.clone()})["image"]
    assert out.shape == image.shape and not torch.allclose(out, image)
    for c in range(2):
        assert float(out[c].mean()) == pytest.approx(float(image[c].mean()), rel=1e-4)
        assert float(out[c].std()) == pytest.approx(float(image[c].std()), rel=1e-3)


def test_brats_volumes_get_regions_after_the_crop(tmp_path):
    from selfmedmae.data import build
    from selfmedmae.data.synthetic import make_brats

    root = make_brats(tmp_path / "brats", n=3, size=(24, 24, 20), seed=2)
    cfg = load_config(None, ["data.format=brats", f"data.root={root}", "data.in_chans=4", "data.intensity=nonzero",
                             "data.spacing=null", f"data.roi_size={ROI}", "data.num_workers=0", "data.val_fraction=0",
                             "data.augment=nnunet", "data.num_samples=2"])
    for crop in SeededDataset(build(cfg.data).dataset("train", train=True), seed=0)[0]:
        assert crop["image"].shape == (4, *ROI) and crop["label"].shape == (3, *ROI)  # TC, WT, ET
        assert crop["label"].dtype == torch.float32 and set(crop["label"].unique().tolist()) <= {0.0, 1.0}
