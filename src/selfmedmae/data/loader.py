"""Datasets of 3D volumes: cached decoding, random crops in worker processes.

As the official code (docs/official-code.md §3.1): a training item is one volume; its
deterministic prefix (load, orient, resample, intensity, foreground crop) is computed once and cached
(``data.cache``: ``memory`` -> MONAI ``CacheDataset``, ``disk`` -> ``PersistentDataset`` under
``data.cache_dir`` or ``<run.dir>/cache``, ``none`` -> plain ``Dataset``); the random crops run on the fly
in ``data.num_workers`` worker processes. ``list_data_collate`` flattens the ``num_samples`` crops of
each volume, so a batch of ``batch_size`` volumes holds ``batch_size * num_samples`` crops.

Commands reach these through :func:`selfmedmae.data.build` (one scan of the datalist); the training
loader is the engine's (:func:`selfmedmae.train.engine.make_loader`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import json_hashing
from torch.utils.data import ConcatDataset

from selfmedmae.data.settings import CACHES
from selfmedmae.data.transforms_3d import eval_transforms, train_transforms
from selfmedmae.errors import UserError
from selfmedmae.runtime.cores import reading_threads



def make_dataset(items: List[dict], transform, data_cfg, cache_dir: Optional[str] = None, cache_rate: float = 1.0,
                 copy_cache: bool = True):
    """A MONAI dataset over ``items`` caching the deterministic prefix of ``transform`` as ``data.cache``.

    ``copy_cache=False`` hands the cached volume to the random suffix without a deep copy (0.1-0.2 s per
    BTCV volume saved); only for transforms that never write into it (the training suffix starts with
    the crop and :class:`~selfmedmae.data.transforms_3d.Detachd`).
    """
    mode = data_cfg.cache
    if mode == "memory":
        return CacheDataset(items, transform, cache_rate=cache_rate, num_workers=reading_threads(data_cfg.num_workers),
                            progress=False, copy_cache=copy_cache)
    if mode == "disk":
        if cache_dir is None:
            raise UserError("data.cache_dir: needed for data.cache=disk")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # hash_transform: a change of the recipe (spacing, window, ...) gets a fresh cache folder
        return PersistentDataset(items, transform, cache_dir=cache_dir, hash_transform=json_hashing)
    if mode == "none":
        return Dataset(items, transform)
    raise UserError(f"data.cache: {mode!r} is not one of {', '.join(CACHES)}")


def train_dataset(data_cfg, items: List[dict], stage: str, cache_dir: Optional[str]):
    """The training dataset over ``items``: one item per volume, a list of ``num_samples`` crops each.
    Pre-training crops labelled volumes around their labels and unlabelled ones uniformly."""
    if stage != "pretrain":
        return make_dataset(items, train_transforms(data_cfg, stage), data_cfg, cache_dir, data_cfg.cache_rate,
                            copy_cache=False)
    parts = []
    for has_label in (True, False):
        part = [item for item in items if ("label" in item) == has_label]
        if part:
            parts.append(make_dataset(part, train_transforms(data_cfg, stage, labelled=has_label), data_cfg,
                                      cache_dir, data_cfg.cache_rate, copy_cache=False))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def eval_dataset(data_cfg, items: List[dict], cache_dir: Optional[str], with_label: bool = True):
    """Whole preprocessed volumes of ``items`` for sliding-window inference: ``image`` [C, *S] float32
    MetaTensor, ``label`` [1, *S] int64 (or [3, *S] float32 regions), ``id``. Invert a prediction with
    ``transforms_3d.invert_to_input(pred, item, dataset.transform)``."""
    if not with_label:
        items = [{k: v for k, v in item.items() if k != "label"} for item in items]
    return make_dataset(items, eval_transforms(data_cfg, with_label), data_cfg, cache_dir)
