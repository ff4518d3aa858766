"""Reconstruction figures during pre-training: a fixed validation sample (or a training one when there is
no validation split), a fixed mask, original / masked / reconstruction as the paper's Fig. 2."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from selfmedmae.errors import UserError
from selfmedmae.eval.figures import plot_mae_reconstruction
from selfmedmae.models.mae import MAE


def _fit(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Centre crop / zero pad [C, *S] to ``size``."""
    for axis, want in enumerate(size, start=1):
        have = x.shape[axis]
        if have > want:
            x = x.narrow(axis, (have - want) // 2, want)
        elif have < want:
            pad = [0, 0] * (x.ndim - 1)
            before = (want - have) // 2
            pad[2 * (x.ndim - 1 - axis)] = before
            pad[2 * (x.ndim - 1 - axis) + 1] = want - have - before
            x = torch.nn.functional.pad(x, pad)
    return x


def sample_images(cfg: DictConfig, size: list[int], count: int = 2) -> Optional[torch.Tensor]:
    """Up to ``count`` evaluation-preprocessed images [N, C, *size] from val (else train)."""
    for split in ("val", "train"):
        try:
            if cfg.data.spatial_dims == 2:
                from selfmedmae.data.dataset_2d import build_2d_dataset

                ds = build_2d_dataset(cfg.data, split, train=False)
            else:
                from selfmedmae.data.loader import make_dataset
                from selfmedmae.data.splits import cases_for
                from selfmedmae.data.transforms_3d import eval_transforms

                items = cases_for(cfg.data, split)[:count]
                ds = make_dataset(items, eval_transforms(cfg.data, False), _no_cache(cfg.data))
        except UserError:
            continue
        if len(ds) == 0:
            continue
        images = [_fit(torch.as_tensor(ds[i]["image"]).float(), size) for i in range(min(count, len(ds)))]
        return torch.stack(images)
    return None


def _no_cache(data_cfg: DictConfig) -> DictConfig:
    from omegaconf import OmegaConf

    out = OmegaConf.create(OmegaConf.to_container(data_cfg))
    out.cache = "none"
    return out


class ReconstructionFigure:
    def __init__(self, cfg: DictConfig, size: list[int], seed: int):
        self.images = sample_images(cfg, size)
        self.seed = seed

    def save(self, model: MAE, path: Path) -> Optional[Path]:
        if self.images is None:
            return None
        x = self.images.to(next(model.parameters()).device)
        noise = torch.rand(x.shape[0], model.encoder.num_patches, generator=torch.Generator().manual_seed(self.seed))
        was_training = model.training
        model.eval()
        out = model.visualize(x, noise.to(x.device))
        model.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        return plot_mae_reconstruction(out["original"].cpu(), out["reconstruction"].cpu(), path,
                                       masked=out["masked"].cpu(), paste=out["paste"].cpu(),
                                       mask=out["mask"].cpu(), patch_size=model.encoder.patch_size,
                                       spatial_dims=model.encoder.spatial_dims)
