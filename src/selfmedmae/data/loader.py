"""Datasets and loaders for 3D volumes: cached decoding, random crops in worker processes.

As the official code (docs/official-code.md §3.1): a training item is one volume; its
deterministic prefix (load, orient, resample, intensity, foreground crop) is computed once and cached
(``data.cache``: ``memory`` -> MONAI ``CacheDataset``, ``disk`` -> ``PersistentDataset`` under
``data.cache_dir`` or ``<run.dir>/cache``, ``none`` -> plain ``Dataset``); the random crops run on the fly
in ``data.num_workers`` worker processes. ``list_data_collate`` flattens the ``num_samples`` crops of
each volume, so a batch of ``batch_size`` volumes holds ``batch_size * num_samples`` crops.

Usage (``cfg`` is the run config)::

    loader = build_train_loader(cfg, mode="finetune")      # or "pretrain"
    for epoch in ...:
        if isinstance(loader.sampler, DistributedSampler): loader.sampler.set_epoch(epoch)
        for batch in loader: batch["image"]  # [B * num_samples, C, *roi] float32
    val = build_eval_dataset(cfg, split="val")              # whole volumes, batch of one each
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, list_data_collate
from monai.data.utils import json_hashing
from torch.utils.data import ConcatDataset, DistributedSampler

from selfmedmae.data.splits import cases_for, pretrain_cases, read_datalist
from selfmedmae.data.transforms_3d import eval_transforms, train_transforms
from selfmedmae.errors import UserError

CACHE_MODES = ("memory", "disk", "none")


@dataclass
class DataInfo:
    """What a model needs to know about the data: channels in and out, and the names behind them."""

    in_chans: int
    out_channels: int  # segmentation outputs: classes incl. background, or 3 regions (brats)
    class_names: List[str]  # by output channel
    multilabel: bool  # True: sigmoid per channel (brats regions); False: softmax over classes
    report_subset: Optional[List[int]] = None  # channels the paper reports (BTCV's 8 organs)


def data_info(data_cfg) -> DataInfo:
    """Channels and class names of a 3D segmentation dataset (reads only the datalist)."""
    if data_cfg.format == "brats":
        from selfmedmae.data.brats import REGIONS

        return DataInfo(data_cfg.in_chans, len(REGIONS), list(REGIONS), True)
    labels = read_datalist(data_cfg).labels
    if not labels:
        raise UserError(f"{data_cfg.root}: the label names are unknown; set data.labels (background first)")
    subset = list(data_cfg.organ_subset) if data_cfg.organ_subset else None
    return DataInfo(data_cfg.in_chans, len(labels), list(labels), False, subset)


def make_dataset(items: List[dict], transform, data_cfg, cache_dir: Optional[str] = None, cache_rate: float = 1.0,
                 copy_cache: bool = True):
    """A MONAI dataset over ``items`` caching the deterministic prefix of ``transform`` as ``data.cache``.

    ``copy_cache=False`` hands the cached volume to the random suffix without a deep copy (0.1-0.2 s per
    BTCV volume saved); only for transforms that never write into it (the training suffix starts with
    the crop and :class:`~selfmedmae.data.transforms_3d.Detachd`).
    """
    mode = data_cfg.cache
    if mode == "memory":
        return CacheDataset(items, transform, cache_rate=cache_rate, num_workers=max(1, data_cfg.num_workers),
                            progress=False, copy_cache=copy_cache)
    if mode == "disk":
        if cache_dir is None:
            raise UserError("data.cache_dir: needed for data.cache=disk")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # hash_transform: a change of the recipe (spacing, window, ...) gets a fresh cache folder
        return PersistentDataset(items, transform, cache_dir=cache_dir, hash_transform=json_hashing)
    if mode == "none":
        return Dataset(items, transform)
    raise UserError(f"data.cache: {mode!r} is not one of {', '.join(CACHE_MODES)}")


def _cache_dir(cfg) -> str:
    return cfg.data.cache_dir or str(Path(cfg.run.dir) / "cache")


def build_train_dataset(cfg, mode: str = "finetune", split: str = "train"):
    """The training dataset: one item per volume, a list of ``num_samples`` crops each.

    Fine-tuning: the labelled cases of ``split``. Pre-training: every image of
    :func:`~selfmedmae.data.splits.pretrain_cases` (``split`` unused): the labelled ones with label-guided
    crop centres, the unlabelled ones (CSV rows without a label, MSD ``test``, ``data.extra_unlabelled``)
    with uniform random crops.
    """
    if mode != "pretrain":
        return make_dataset(cases_for(cfg.data, split), train_transforms(cfg.data, mode), cfg.data,
                            _cache_dir(cfg), cfg.data.cache_rate, copy_cache=False)
    labelled, unlabelled = pretrain_cases(cfg.data)
    parts = []
    for items, has_label in ((labelled, True), (unlabelled, False)):
        if items:
            parts.append(make_dataset(items, train_transforms(cfg.data, mode, labelled=has_label), cfg.data,
                                      _cache_dir(cfg), cfg.data.cache_rate, copy_cache=False))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_train_loader(cfg, mode: str = "finetune", *, split: str = "train", batch_size: Optional[int] = None,
                       rank: int = 0, world_size: int = 1, dataset=None) -> DataLoader:
    """Shuffled training loader; with ``world_size > 1`` a ``DistributedSampler`` (call ``set_epoch``).

    ``batch_size`` counts volumes per process and step (default: ``train.batch_size`` divided by
    ``world_size * train.accum_iter``); each batch holds ``batch_size * data.num_samples`` crops with keys
    ``image`` [N, C, *roi] float32, ``label`` [N, 1, *roi] int64 (or [N, 3, *roi] float32 regions for
    brats; absent in pre-training) and ``id`` (list of case ids).
    """
    if batch_size is None:
        batch_size = max(1, cfg.train.batch_size // (world_size * cfg.train.accum_iter))
    dataset = dataset if dataset is not None else build_train_dataset(cfg, mode, split)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.run.seed)
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=list_data_collate, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, drop_last=False)


def build_eval_dataset(cfg, split: str = "val", *, with_label: bool = True, rank: int = 0, world_size: int = 1):
    """Whole preprocessed volumes of ``split`` (``val`` | ``test`` | ``all``) for sliding-window inference.

    Items: ``image`` [C, *S] float32 MetaTensor, ``label`` [1, *S] int64 (or [3, *S] float32 regions),
    ``id``. With ``world_size > 1`` each rank gets ``items[rank::world_size]`` (no padding duplicates, so
    metrics are not biased). Invert a prediction with ``transforms_3d.invert_to_input(pred, item,
    dataset.transform)``.
    """
    items = cases_for(cfg.data, split)[rank::world_size]
    if not with_label:
        items = [{k: v for k, v in item.items() if k != "label"} for item in items]
    return make_dataset(items, eval_transforms(cfg.data, with_label), cfg.data, _cache_dir(cfg))


def build_eval_loader(cfg, split: str = "val", **kwargs) -> DataLoader:
    """One volume per batch (shapes differ); use ``monai.data.decollate_batch`` before inverting."""
    dataset = build_eval_dataset(cfg, split, **kwargs)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=cfg.data.num_workers,
                      collate_fn=list_data_collate, pin_memory=torch.cuda.is_available())
