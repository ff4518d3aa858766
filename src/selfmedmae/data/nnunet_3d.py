"""nnU-Net's training augmentations for fine-tuning (``data.augment: nnunet``), as MONAI dictionary transforms.

nnU-Net v2's default pipeline (``nnUNetTrainer.get_training_transforms``, batchgeneratorsv2), in its order,
each step as nnU-Net sets it -> what stands in for it here (all on torch tensors, each drawing only from its
own MONAI random state):

* SpatialTransform: rotation p 0.2 (+-30 degrees about each axis), scaling p 0.2 (0.7..1.4, one factor for
  all axes), no elastic deformation -> :class:`~selfmedmae.data.nnunet_spatial.RandCropRotateScaled` (the
  same draws and matrix, one MONAI ``Affine`` per crop; labels nearest; each crop takes the context it needs);
* GaussianNoise p 0.1, "variance" (0, 0.1), which nnU-Net uses as the standard deviation ->
  ``RandGaussianNoised(prob=0.1, std=0.1, sample_std=True)``: sigma ~ U(0, 0.1);
* GaussianBlur p 0.2, sigma 0.5..1 drawn per axis, each channel with p 0.5 ->
  ``RandGaussianSmoothd(sigma_x/y/z=(0.5, 1), prob=0.1)``: 0.2 x 0.5, the chance that a channel is blurred;
* MultiplicativeBrightness p 0.15, x 0.75..1.25 (``BGContrast``: half the draws below 1, half above, which
  for this range is uniform), per channel -> ``RandScaleIntensityd(factors=0.25, prob=0.15, channel_wise=True)``;
* Contrast p 0.15, 0.75..1.25 about the mean, range preserved, per channel ->
  ``RandScaleIntensityFixedMeand(factors=0.25, fixed_mean=True, preserve_range=True, prob=0.15,
  channel_wise=True)``;
* SimulateLowResolution p 0.25, zoom 0.5..1 (all axes alike), each channel with p 0.5, down nearest-exact, up
  trilinear -> ``RandSimulateLowResolutiond(prob=0.125, zoom_range=(0.5, 1), downsample_mode="nearest-exact",
  upsample_mode="trilinear")``: 0.25 x 0.5 per channel;
* Gamma p 0.1 on the inverted image, gamma 0.7..1.5 (``BGContrast``), statistics retained, per channel ->
  :class:`RandGammad` (``prob=0.1, invert_image=True``), on MONAI's ``AdjustContrast``;
* Gamma p 0.3, the same without inversion -> :class:`RandGammad` (``prob=0.3``);
* Mirror along each axis with p 0.5 -> ``RandFlipd(prob=0.5, spatial_axis=a)`` for a = 0, 1, 2.

Where MONAI has no per-channel choice (blur, low resolution) the probability is nnU-Net's chance that a
given channel is transformed, and a multi-channel image (BraTS) has every channel transformed together;
Gaussian noise draws an independent field per channel (nnU-Net one shared field). Labels are touched only
by the crop and the mirrors. nnU-Net normalises intensities before augmenting; the recipe's intensity step
(``data.intensity``) runs before these steps too.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.transforms import (
    AdjustContrast, MapTransform, RandFlipd, RandGaussianNoised, RandGaussianSmoothd, RandScaleIntensityd,
    RandScaleIntensityFixedMeand, RandSimulateLowResolutiond, RandomizableTransform,
)

from selfmedmae.data.nnunet_spatial import RandCropRotateScaled

GAMMA = (0.7, 1.5)


class RandGammad(RandomizableTransform, MapTransform):
    """nnU-Net's ``GammaTransform``: with ``prob``, each channel's intensities mapped through
    ``((x - min) / range) ** gamma * range + min`` with its own gamma, then shifted and scaled back to the
    channel's mean and standard deviation (MONAI's ``AdjustContrast`` with ``retain_stats``);
    ``invert_image`` does it to the negated image. Gamma is drawn as nnU-Net's ``BGContrast``: with
    probability 1/2 uniform in [low, 1), else uniform in [1, high]."""

    def __init__(self, keys: Sequence[str], prob: float, gamma: Sequence[float] = GAMMA,
                 invert_image: bool = False) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.low, self.high = float(gamma[0]), float(gamma[1])
        self.adjust = AdjustContrast(1.0, invert_image=invert_image, retain_stats=True)

    def draw_gamma(self) -> float:
        if self.R.uniform() < 0.5 and self.low < 1:
            return float(self.R.uniform(self.low, 1.0))
        return float(self.R.uniform(max(self.low, 1.0), self.high))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])  # [C, *S]
            d[key] = torch.cat([torch.as_tensor(self.adjust(image[c:c + 1], self.draw_gamma()))
                                for c in range(image.shape[0])])
        return d


def nnunet_crops(cfg, keys: Sequence[str], index_keys: Sequence[str]) -> RandCropRotateScaled:
    """Label-guided crops of ``cfg.roi_size`` (a DataConfig), rotated and scaled as nnU-Net."""
    return RandCropRotateScaled(list(keys), label_key="label", spatial_size=list(cfg.roi_size),
                                pos=cfg.pos_neg[0], neg=cfg.pos_neg[1], num_samples=cfg.num_samples,
                                image_key="image", fg_indices_key=index_keys[0], bg_indices_key=index_keys[1],
                                modes=["bilinear", "nearest"][: len(keys)])


def nnunet_intensity(key: str = "image") -> list:
    """Noise, blur, brightness, contrast, low resolution, inverted gamma, gamma (the table above)."""
    blur = (0.5, 1.0)
    return [
        RandGaussianNoised(key, prob=0.1, mean=0.0, std=0.1, sample_std=True),
        RandGaussianSmoothd(key, sigma_x=blur, sigma_y=blur, sigma_z=blur, prob=0.2 * 0.5),
        RandScaleIntensityd(key, factors=0.25, prob=0.15, channel_wise=True),
        RandScaleIntensityFixedMeand(key, factors=0.25, fixed_mean=True, preserve_range=True, prob=0.15,
                                     channel_wise=True),
        RandSimulateLowResolutiond(key, prob=0.25 * 0.5, zoom_range=(0.5, 1.0), downsample_mode="nearest-exact",
                                   upsample_mode="trilinear"),
        RandGammad(key, prob=0.1, invert_image=True),
        RandGammad(key, prob=0.3),
    ]


def nnunet_mirrors(keys: Sequence[str]) -> list:
    """Mirroring along each spatial axis with p 0.5 (image and label together)."""
    return [RandFlipd(list(keys), prob=0.5, spatial_axis=axis) for axis in range(3)]
