"""The faster loading and resampling steps give MONAI's values and metadata, and invert like MONAI's."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Orientationd, Spacingd

from selfmedmae.data import resample as resample_module
from selfmedmae.data.nifti_reader import TorchCopyNibabelReader, as_c_float32
from selfmedmae.data.resample import SeparableSpacingd
from selfmedmae.data.transforms_3d import RAS_LABELS, invert_to_input

KEYS = ["image", "label"]
# (file spacing, target spacing): BTCV-like, and ratios that put samples exactly half-way between voxels
# (1.0 -> 1.5, 0.5 -> 1.25), where nearest neighbour must break the tie as grid_sample does
CASES = [((0.81, 0.81, 3.0), (1.5, 1.5, 2.0)), ((1.0, 1.0, 1.0), (1.5, 1.5, 2.0)),
         ((2.0, 0.5, 3.0), (0.5, 1.25, 1.5)), ((0.75, 0.75, 2.5), (3.0, 0.3, 0.7))]


def write_case(folder, spacing, flip_x=True, rotate=0.0, block=1):
    """Random image and labels (constant over ``block``^3 voxels) on a 40 x 37 x 23 grid."""
    rng = np.random.default_rng(0)
    image = (rng.normal(size=(40, 37, 23)) * 300).astype(np.int16)
    label = rng.integers(0, 5, size=(40, 37, 23)).astype(np.uint8)
    label = label[::block, ::block, ::block].repeat(block, 0).repeat(block, 1).repeat(block, 2)[:40, :37, :23]
    affine = np.diag([-spacing[0] if flip_x else spacing[0], spacing[1], spacing[2], 1.0])
    c, s = np.cos(rotate), np.sin(rotate)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ affine[:3, :3]
    affine[:3, 3] = [10.3, -5.0, 2.25]
    paths = {"image": str(folder / "image.nii.gz"), "label": str(folder / "label.nii.gz")}
    nib.save(nib.Nifti1Image(image, affine), paths["image"])
    nib.save(nib.Nifti1Image(label, affine), paths["label"])
    return paths


def prefix(spacing_cls, pixdim, reader=None, **spacing):
    spacing = {"mode": ["bilinear", "nearest"], "dtype": torch.float32, **spacing}
    return Compose([LoadImaged(KEYS, reader=reader, image_only=True, ensure_channel_first=True),
                    Orientationd(KEYS, axcodes="RAS", labels=RAS_LABELS),
                    spacing_cls(KEYS, pixdim=list(pixdim), **spacing)])


def extra_info(tensor):
    return {k: v for k, v in tensor.applied_operations[-1].items() if k not in ("id", "class")}


@pytest.mark.parametrize("spacing,pixdim", CASES)
def test_separable_spacing_gives_monai_values_and_metadata(tmp_path, spacing, pixdim):
    paths = write_case(tmp_path, spacing)
    ours = prefix(SeparableSpacingd, pixdim, TorchCopyNibabelReader())(dict(paths))
    monai = prefix(Spacingd, pixdim)(dict(paths))
    assert ours["image"].shape == monai["image"].shape and ours["image"].shape != (1, 40, 37, 23)
    assert torch.equal(ours["label"], monai["label"])  # nearest: the same voxel, ties included
    scale = float(monai["image"].abs().max())
    assert torch.allclose(ours["image"], monai["image"], rtol=0, atol=4 * scale * 2 ** -23)  # a few ulps
    for key in KEYS:
        assert torch.equal(ours[key].affine, monai[key].affine)
        assert str(extra_info(ours[key])) == str(extra_info(monai[key]))
        assert ours[key].dtype == monai[key].dtype == torch.float32 and ours[key].is_contiguous()


def count_separable_passes(monkeypatch) -> list:
    calls = []
    original = resample_module.resample_axis
    monkeypatch.setattr(resample_module, "resample_axis",
                        lambda *a, **k: calls.append(a[3]) or original(*a, **k))
    return calls


def test_the_separable_path_is_the_one_taken(tmp_path, monkeypatch):
    calls = count_separable_passes(monkeypatch)
    prefix(SeparableSpacingd, (1.5, 1.5, 2.0))(write_case(tmp_path, (0.81, 0.81, 3.0)))
    assert calls == ["bilinear"] * 3 + ["nearest"] * 3


def test_what_it_does_not_cover_goes_to_monai_unchanged(tmp_path, monkeypatch):
    calls = count_separable_passes(monkeypatch)
    oblique = write_case(tmp_path, (0.8, 0.9, 2.0), rotate=0.3)  # off-diagonal map: MONAI's grid path
    ours = prefix(SeparableSpacingd, (1.5, 1.5, 2.0))(dict(oblique))
    monai = prefix(Spacingd, (1.5, 1.5, 2.0))(dict(oblique))
    assert torch.equal(ours["image"], monai["image"]) and torch.equal(ours["label"], monai["label"])
    assert calls == []
    straight = write_case(tmp_path, (0.8, 0.9, 2.0))
    ours = prefix(SeparableSpacingd, (1.5, 1.5, 2.0), padding_mode=["zeros", "border"])(dict(straight))
    monai = prefix(Spacingd, (1.5, 1.5, 2.0), padding_mode=["zeros", "border"])(dict(straight))
    assert calls == ["nearest"] * 3  # zero padding (the image) is MONAI's
    assert torch.equal(ours["image"], monai["image"]) and torch.equal(ours["label"], monai["label"])


def test_inverting_maps_back_onto_the_file_grid_as_monai_does(tmp_path):
    paths = write_case(tmp_path, (0.81, 0.81, 3.0), block=6)
    results = []
    for spacing_cls in (SeparableSpacingd, Spacingd):
        forward = prefix(spacing_cls, (1.5, 1.5, 2.0))
        item = forward(dict(paths))
        results.append(invert_to_input(MetaTensor(item["label"].as_tensor().clone()), item, forward))
    ours, monai = results
    assert ours.shape == monai.shape == (1, 40, 37, 23)
    assert torch.equal(ours, monai) and torch.equal(ours.affine, monai.affine)
    stored = np.asanyarray(nib.load(paths["label"]).dataobj)
    assert (ours[0].numpy() == stored).mean() > 0.8  # back on the file's grid (resampled twice)


@pytest.mark.parametrize("dtype", ["int16", "uint8", "float64", ">i2", "int32"])
@pytest.mark.parametrize("shape", [(70, 9, 45), (33, 40, 20, 4)])
def test_as_c_float32_is_numpys_cast(dtype, shape):
    array = np.asfortranarray((np.random.default_rng(0).normal(size=shape) * 100).astype(dtype))
    expected = np.ascontiguousarray(array, dtype=np.float32)
    out = as_c_float32(array)
    assert out.flags.c_contiguous and out.dtype == np.float32 and np.array_equal(out, expected)
    array.flags.writeable = False
    assert np.array_equal(as_c_float32(array), expected)


SHIPPED = Path(__file__).resolve().parents[1] / "data" / "Task04_Hippocampus"


@pytest.mark.parametrize("pixdim", [(1.5, 1.5, 2.0), (0.7, 0.7, 0.7)])
def test_shipped_hippocampus_scans_resample_as_monai_does(monkeypatch, pixdim):
    images = sorted((SHIPPED / "imagesTr").glob("*.nii.gz"))[:3]
    assert len(images) == 3, f"the shipped sample is missing from {SHIPPED}"
    calls = count_separable_passes(monkeypatch)
    for image in images:
        paths = {"image": str(image), "label": str(SHIPPED / "labelsTr" / image.name)}
        ours = prefix(SeparableSpacingd, pixdim, TorchCopyNibabelReader())(dict(paths))
        monai = prefix(Spacingd, pixdim)(dict(paths))
        assert torch.equal(ours["label"], monai["label"])
        assert torch.equal(ours["image"].affine, monai["image"].affine)
        scale = float(monai["image"].abs().max())
        assert torch.allclose(ours["image"], monai["image"], rtol=0, atol=4 * scale * 2 ** -23)
    assert len(calls) == 3 * 6  # real scans (1 mm, axis-aligned) take the separable path
