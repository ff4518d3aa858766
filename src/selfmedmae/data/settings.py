"""The rules for the data section's values, checked before anything is read: those common to every format
and those of each kind of data (volumes, images). :mod:`selfmedmae.data.formats` attaches the kind's rules
to its formats and applies them (:func:`~selfmedmae.data.formats.check_data_settings`). Errors name the key
(:mod:`selfmedmae.config.rules`)."""
from __future__ import annotations

from typing import Any

from selfmedmae.config.rules import choice, err, in_range, positive

INTENSITIES = ("ct", "nonzero", "percentile")
CACHES = ("memory", "disk", "none")
AUGMENTS = ("paper", "nnunet")  # data.augment: fine-tuning's random steps (selfmedmae.data.transforms_3d)


def common_settings(cfg: Any) -> None:
    """The data.* values every format reads."""
    d = cfg.data
    positive(cfg, "data.in_chans")
    choice(cfg, "data.cache", CACHES)
    in_range(cfg, "data.cache_rate", 0.0, 1.0, hi_open=False, lo_open=True)
    positive(cfg, "data.num_workers", allow_zero=True)
    in_range(cfg, "data.val_fraction", 0.0, 1.0)
    in_range(cfg, "data.test_fraction", 0.0, 1.0)
    if d.val_fraction + d.test_fraction >= 1.0:
        raise err("data.test_fraction", f"val_fraction {d.val_fraction} + test_fraction {d.test_fraction} leave "
                                         f"no training cases")


def volume_settings(cfg: Any) -> None:
    d = cfg.data
    volume_input(cfg)
    choice(cfg, "data.intensity", INTENSITIES)
    if d.intensity == "ct" and not d.a_min < d.a_max:
        raise err("data.a_max", f"{d.a_max} must be above data.a_min {d.a_min}")
    if d.intensity == "percentile":
        p = list(d.percentiles)
        if len(p) != 2 or not 0 <= p[0] < p[1] <= 100:
            raise err("data.percentiles", f"{p} must be [low, high] with 0 <= low < high <= 100")
    if d.spacing is not None and (len(d.spacing) != 3 or any(not s > 0 for s in d.spacing)):
        raise err("data.spacing", f"{list(d.spacing)} must be three sizes > 0 in mm (or null)")
    positive(cfg, "data.num_samples")
    choice(cfg, "data.augment", AUGMENTS)
    for key in ("flip_prob", "rot90_prob", "intensity_prob"):
        in_range(cfg, f"data.{key}", 0.0, 1.0, hi_open=False)
    if len(d.pos_neg) != 2 or any(v < 0 for v in d.pos_neg) or sum(d.pos_neg) <= 0:
        raise err("data.pos_neg", f"{list(d.pos_neg)} must be two weights >= 0, not both 0")


def volume_input(cfg: Any) -> list[int]:
    roi = list(cfg.data.roi_size)
    if len(roi) != 3:
        raise err("data.roi_size", f"{roi} has {len(roi)} sizes; 3D data needs one per axis, e.g. [96, 96, 96]")
    return [int(s) for s in roi]


def image_settings(cfg: Any) -> None:
    d = cfg.data
    positive(cfg, "data.image_size")
    positive(cfg, "data.crop_size")
    if d.crop_size > d.image_size:
        raise err("data.crop_size", f"{d.crop_size} is larger than data.image_size {d.image_size}")
    positive(cfg, "data.std")
    if int(d.in_chans) not in (1, 3):
        raise err("data.in_chans", f"{d.in_chans}: 2D images are read grey, repeated to 1 or 3 channels")


def image_input(cfg: Any) -> list[int]:
    return [int(cfg.data.crop_size)] * 2
